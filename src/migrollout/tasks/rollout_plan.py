"""mig_rollout_plan: check every target node before anything changes, and decide what to do with each."""

from __future__ import annotations

from typing import Any

from migrollout import clusterpolicy, kube, labels
from migrollout.ansible_glue import TaskContext, TaskFailed, TaskSpec
from migrollout.migconfig import MigConfigError, parse_configmap
from migrollout.migsetup import read_policy
from migrollout.rollout.plan import CHANGE, REFUSE, RESUME, SKIP, ClusterView, order, plan_node, untolerated
from migrollout.tasks.evacuate import SELECTION_SPEC, selection_options
from migrollout.tasks.taint import TAINT_OPTIONS, parse_taints

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "nodes": {"type": "dict", "required": True},
    "maintenance_taints": {"type": "list", "elements": "dict", "default": [], "options": TAINT_OPTIONS},
    "cordon": {"type": "bool", "default": False},
    "operator_namespace": {"type": "str"},
    "list_pods": {"type": "bool", "default": False},
    **SELECTION_SPEC,
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
    maintenance = parse_taints(params["maintenance_taints"])
    if not maintenance and not params["cordon"]:
        raise TaskFailed("give at least one maintenance taint or cordon: otherwise evicted GPU pods land right "
                         "back on the node being reconfigured")
    view = gather(ctx, params["list_pods"])
    options = selection_options(params)
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
