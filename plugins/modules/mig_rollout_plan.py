#!/usr/bin/python
# mig_rollout_plan: check every target node before anything changes, and decide what to do with each.
# Docs, argument spec and the adapter to the core (migrollout) in one file; see plugins/module_utils/kube_task.py.

from __future__ import annotations

DOCUMENTATION = r"""
module: mig_rollout_plan
short_description: Check every node of a MIG rollout before anything changes, and plan the order
description:
  - Reads the cluster once (nodes, the ClusterPolicy, the MIG config ConfigMaps, MIG manager pods and operand
    DaemonSets in the operator's namespace) and decides, for each node in O(nodes), to change, resume,
    skip or refuse it.
  - A node is refused when it does not exist, has no MIG-capable GPU, its config is not in the MIG config
    ConfigMap it uses or does not fit its GPU model and count, its MIG manager is busy (C(pending),
    C(rebooting)) with another config, or no MIG manager runs on it. Any refusal fails the task, listing
    every problem, before a single node is touched.
  - The operand DaemonSets (device plugin, feature discovery, MIG manager) must tolerate the maintenance
    taints, or a node under maintenance could never be verified; otherwise the task fails.
  - A node already at its config, in state C(success) and advertising what the config should produce is
    skipped. A node with a rollout record (an interrupted or failed run) is resumed, first.
  - With O(list_pods), lists the GPU pods that would be evacuated from each node (for check mode).
  - Changes nothing.
options:
  nodes:
    description: Node name to the MIG config it should get (V(null) or empty to leave a node alone).
    type: dict
    required: true
  cordon:
    description: Whether the rollout also cordons nodes.
    type: bool
    default: false
  operator_namespace:
    description: The GPU Operator's namespace. Default, the ClusterPolicy's C(status.namespace).
    type: str
  list_pods:
    description: List the pods that would be evacuated from each node.
    type: bool
    default: false
extends_documentation_fragment:
  - nvidia_mig.rollout.kube_connection
  - nvidia_mig.rollout.maintenance_taints
  - nvidia_mig.rollout.read_only
  - nvidia_mig.rollout.evacuation_selection
author: NVIDIA MIG rollout toolkit maintainers (@nvidia-mig-rollout)
"""

EXAMPLES = r"""
- name: Plan the rollout of the A100 pool
  mig_rollout_plan:
    nodes: {gpu-1: all-1g.10gb, gpu-2: all-1g.10gb}
    maintenance_taints: [{key: mig, value: maintenance, effect: NoSchedule}]
"""

RETURN = r"""
plan:
  description: One entry per node, in the order the rollout will take them (resumed nodes first), with the
    action (change, resume, skip, refuse), configs, reason, GPU model and count, the ConfigMap used, and
    (with O(list_pods)) the pods to evict and the pods whose eviction would be refused.
  returned: always
  type: list
  elements: dict
  sample: [{node: gpu-1, action: change, from_config: all-disabled, to_config: all-1g.10gb,
            reason: "all-disabled -> all-1g.10gb", gpu_model: A100-SXM4-80GB, gpu_count: 8,
            config_map: default-mig-parted-config, evict: [ml/train-0], blocked: []}]
counts:
  description: Nodes per action.
  returned: always
  type: dict
namespace:
  description: The operator's namespace.
  returned: always
  type: str
strategy:
  description: The cluster's MIG strategy.
  returned: always
  type: str
problems:
  description: Every reason the rollout cannot start.
  returned: failure
  type: list
  elements: str
"""

from typing import Any

from ansible_collections.nvidia_mig.rollout.plugins.module_utils.kube_task import (
    TaskContext,
    TaskFailed,
    TaskSpec,
    run_module,
)
from ansible_collections.nvidia_mig.rollout.plugins.module_utils.option_specs import (
    EVACUATION_SELECTION_SPEC,
    TAINT_OPTIONS,
)

try:
    from migrollout import clusterpolicy, kube, labels, taints
    from migrollout.evacuation.selection import Options
    from migrollout.migconfig import MigConfigError, parse_configmap
    from migrollout.migsetup import read_policy
    from migrollout.rollout.plan import (
        CHANGE,
        REFUSE,
        RESUME,
        SKIP,
        ClusterView,
        order,
        plan_node,
        untolerated,
    )
except ImportError:  # run_module reports the missing package
    pass

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "nodes": {"type": "dict", "required": True},
    "maintenance_taints": {"type": "list", "elements": "dict", "default": [], "options": TAINT_OPTIONS},
    "cordon": {"type": "bool", "default": False},
    "operator_namespace": {"type": "str"},
    "list_pods": {"type": "bool", "default": False},
    **EVACUATION_SELECTION_SPEC,
}


def _selector_matcher(selector: str | None):
    """A local reading of simple label selectors (k=v, k!=v, k, !k), for the check-mode pod listing."""
    if not selector:
        return None
    terms = [term.strip() for term in selector.split(",") if term.strip()]

    def matches(pod: dict[str, Any]) -> bool:
        found = pod["metadata"].get("labels") or {}
        for term in terms:
            if "!=" in term:
                key, value = term.split("!=", 1)
                if found.get(key.strip()) == value.strip():
                    return False
            elif "=" in term:
                key, value = term.replace("==", "=").split("=", 1)
                if found.get(key.strip()) != value.strip():
                    return False
            elif term.startswith("!"):
                if term[1:] in found:
                    return False
            elif term not in found:
                return False
        return True
    return matches


def gather(ctx: TaskContext, list_pods: bool) -> ClusterView:
    api = ctx.api
    policy = read_policy(api)
    namespace = ctx.params.get("operator_namespace") or clusterpolicy.namespace(policy)
    listed, _ = api.list("/api/v1/nodes", what="list nodes")
    configmaps, _ = api.list(kube.configmap_path(namespace), what=f"list ConfigMaps in {namespace}")
    parsed = {}
    for configmap in configmaps:
        if "config.yaml" not in (configmap.get("data") or {}):
            continue
        try:
            parsed[configmap["metadata"]["name"]] = parse_configmap(configmap)
        except MigConfigError as exc:
            ctx.warn(str(exc))
    managers, _ = api.list(kube.pods_path(namespace), what=f"list MIG manager pods in {namespace}",
                           label_selector=f"app={labels.APP_MIG_MANAGER}")
    running = {p["spec"].get("nodeName"): True for p in managers
               if p.get("status", {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")}
    daemonsets, _ = api.list(kube.namespaced_path("apps/v1", "daemonsets", namespace),
                             what=f"list DaemonSets in {namespace}")
    pods_by_node = None
    if list_pods:
        pods, _ = api.list(kube.pods_path(), what="list pods", field_selector="spec.nodeName!=")
        pods_by_node = {}
        for pod in pods:
            pods_by_node.setdefault(pod["spec"]["nodeName"], []).append(pod)
    return ClusterView({n["metadata"]["name"]: n for n in listed}, policy, namespace, clusterpolicy.strategy(policy),
                       parsed, running, daemonsets, pods_by_node)


def run(ctx: TaskContext) -> dict[str, Any]:
    params = ctx.params
    maintenance = taints.checked_list(params["maintenance_taints"])
    if not maintenance and not params["cordon"]:
        raise TaskFailed("give at least one maintenance taint or cordon: otherwise evicted GPU pods land right "
                         "back on the node being reconfigured")
    view = gather(ctx, params["list_pods"])
    options = Options.from_params(params)
    matcher = _selector_matcher(params.get("pod_selector"))
    plans = order([plan_node(view, name, desired, options, matcher)
                   for name, desired in params["nodes"].items()])
    tolerations = untolerated(view.daemonsets, maintenance)
    result: dict[str, Any] = {
        "changed": False,
        "plan": [p.as_dict() for p in plans],
        "namespace": view.namespace,
        "strategy": view.strategy,
        "counts": {action: sum(1 for p in plans if p.action == action) for action in (CHANGE, RESUME, SKIP, REFUSE)},
    }
    refused = [p for p in plans if p.action == REFUSE]
    problems = [p.reason for p in refused] + tolerations
    if tolerations:
        problems.append("without that toleration the device plugin cannot return to a node under maintenance and "
                        "the node can never be verified: add it to the operator's daemonsets.tolerations (the "
                        "gpu_operator role does by default) or roll out with cordon and no taint")
    if problems:
        result["problems"] = problems
        raise TaskFailed(f"the rollout cannot start: {len(problems)} problem(s), nothing was changed: "
                         + "; ".join(problems[:6]) + (" ..." if len(problems) > 6 else ""), **result)
    return result


SPEC = TaskSpec("mig_rollout_plan", ARGUMENT_SPEC, run)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
