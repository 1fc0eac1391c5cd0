#!/usr/bin/python
# k8s_node_evacuate: move a node's GPU workloads (or a selection of pods) off it and wait until they are gone.
# Docs, argument spec and the adapter to the core (migrollout) in one file; see plugins/module_utils/kube_task.py.

from __future__ import annotations

DOCUMENTATION = r"""
module: k8s_node_evacuate
short_description: Move a node's GPU workloads off it and wait until they are gone
description:
  - Selects pods on one node, evicts them through the Eviction API (so PodDisruptionBudgets are honoured)
    and waits until every one of them is gone, matched by UID, so a same-name replacement is not
    mistaken for the old pod.
  - Selection, with O(gpu_only=true) (the default), is pods whose containers or init containers request
    C(nvidia.com/gpu) or any C(nvidia.com/mig-*) resource, or that use a runtime class in
    O(gpu_runtime_classes); O(pod_selector) narrows it further.
  - Then kubectl drain's filters, in kubectl's order and with its semantics. Pods already terminating are
    waited for. DaemonSet pods (by controller reference) are skipped with O(ignore_daemonsets), else
    refused; pods of a DaemonSet that no longer exists are refused unless O(force). Mirror pods are
    skipped. Pods with emptyDir volumes are refused unless O(delete_emptydir_data). Pods without a
    controller are refused unless O(force). Finished pods are deleted.
  - A refused pod fails the task before any pod is evicted.
  - Up to O(max_parallel) evictions run at once. An eviction refused with HTTP 429 (a PodDisruptionBudget
    allows no disruption now) is retried with backoff until O(timeout). GPU pods that land on the node
    while it is being evacuated are handled too.
  - A timeout fails the task, listing the pods still there and naming the PodDisruptionBudgets that
    blocked them.
  - A selected pod whose replacement would be let straight back onto the node (it tolerates every
    NoSchedule and NoExecute taint of the node, and the cordon if the node is cordoned) is named in
    RV(returning); with O(returning_pods=refuse) such a pod fails the task before any pod is evicted.
  - The module does not cordon or taint the node; use M(nvidia_mig.rollout.k8s_node_taint) first so nothing new lands there.
version_added: "0.1.0"
seealso:
  - module: nvidia_mig.rollout.k8s_node_taint
  - module: nvidia_mig.rollout.mig_rollout_node
options:
  name:
    description: Node name.
    type: str
    required: true
  disable_eviction:
    description: Delete pods instead of evicting them, bypassing PodDisruptionBudgets.
    type: bool
    default: false
  grace_period:
    description: Termination grace period in seconds; V(-1) uses each pod's own, V(0) stops pods at once.
    type: int
    default: -1
  timeout:
    description: Seconds to wait, overall, for every selected pod to be gone.
    type: int
    default: 600
  max_parallel:
    description: How many evictions run at the same time.
    type: int
    default: 10
  require_gpu:
    description: Refuse, before evicting anything, a node without an NVIDIA GPU.
    type: bool
    default: true
  returning_pods:
    description:
      - What to do with a selected pod whose replacement would be let straight back onto the node (see above).
      - V(warn) evicts it and warns; V(refuse) fails before evicting anything, naming it (cordon the node, or remove
        the pod's toleration, first).
    type: str
    default: warn
    choices: [warn, refuse]
extends_documentation_fragment:
  - nvidia_mig.rollout.kube_connection
  - nvidia_mig.rollout.evacuation_selection
  - nvidia_mig.rollout.rollout_lock
attributes:
  check_mode:
    support: full
    description: Lists the pods that would leave, and asks the server (dry run) whether each eviction would be
      allowed now, naming the PodDisruptionBudgets that would block.
  diff_mode:
    support: none
    description: No diff, the module moves pods and edits no object; RV(evicted) and RV(skipped_pods) list what happened.
author: NVIDIA MIG rollout toolkit maintainers (@nvidia-mig-rollout)
"""

EXAMPLES = r"""
- name: Move GPU jobs off the node, honouring their disruption budgets
  k8s_node_evacuate:
    name: gpu-node-17
    timeout: 900

- name: Evacuate only the training pods, deleting their scratch space
  k8s_node_evacuate:
    name: gpu-node-17
    pod_selector: app=train
    delete_emptydir_data: true

- name: What would leave, and would any budget block it?
  k8s_node_evacuate:
    name: gpu-node-17
  check_mode: true
  register: plan
"""

RETURN = r"""
name:
  description: The node.
  returned: always
  type: str
evicted:
  description: Pods that are gone, with how they left (evict, delete, or wait for one already terminating)
    and when, in seconds from the start.
  returned: always
  type: list
  elements: dict
  sample: [{namespace: ml, name: train-7d9f-abcde, uid: 0c1e..., method: evict, seconds: 1.42}]
would_evict:
  description: In check mode, the pods that would leave.
  returned: check mode
  type: list
  elements: dict
skipped_pods:
  description: Selected pods that stay, with the reason (DaemonSet-managed, mirror pod).
  returned: always
  type: list
  elements: dict
  sample: [{namespace: gpu-operator, name: nvidia-dcgm-exporter-x7k2p, uid: 9a1f..., reason: DaemonSet-managed}]
pending:
  description: Pods still on the node when the task gave up, with the budget that blocked each, if any.
  returned: always
  type: list
  elements: dict
refused:
  description: Pods the filters refused to evict, with the reason.
  returned: failure
  type: list
  elements: dict
returning:
  description: Selected pods whose replacement would be let straight back onto the node.
  returned: always
  type: list
  elements: dict
blocking_pdbs:
  description: PodDisruptionBudgets (namespace/name) that refused an eviction.
  returned: always
  type: list
  elements: str
  sample: [ml/train-pdb]
duration_s:
  description: Seconds the evacuation took.
  returned: always
  type: float
"""

from typing import Any

from ansible_collections.nvidia_mig.rollout.plugins.module_utils.kube_task import (
    TaskContext,
    TaskFailed,
    TaskSpec,
    run_module,
)
from ansible_collections.nvidia_mig.rollout.plugins.module_utils.option_specs import (
    EVACUATION_SPEC,
    ROLLOUT_LOCK_SPEC,
)

try:
    from migrollout import nodes
    from migrollout.evacuation.engine import Evacuator, options_problem, pod_names
    from migrollout.evacuation.selection import Options, keeping_off
    from migrollout.rollout import fence
except ImportError:  # run_module reports the missing package
    pass

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "name": {"type": "str", "required": True},
    **EVACUATION_SPEC,
    "require_gpu": {"type": "bool", "default": True},
    "returning_pods": {"type": "str", "default": "warn", "choices": ["warn", "refuse"]},
    **ROLLOUT_LOCK_SPEC,
}


def run(ctx: TaskContext) -> dict[str, Any]:
    params = ctx.params
    name = params["name"]
    problem = options_problem(params)
    if problem:
        raise TaskFailed(f"node {name}: {problem}")
    node = nodes.read(ctx.api, name)
    if params["require_gpu"]:
        nodes.require_gpu_node(node)
    guard = fence.NoFence() if ctx.check_mode else fence.from_params(params.get("rollout_lock"))
    evacuator = Evacuator(ctx.api, name, Options.from_params(params), pod_selector=params.get("pod_selector"),
                          timeout=params["timeout"], max_parallel=params["max_parallel"],
                          grace_period=params["grace_period"], disable_eviction=params["disable_eviction"],
                          keeping_off=keeping_off(nodes.node_taints(node), nodes.is_cordoned(node)),
                          returning=params["returning_pods"], stop_check=lambda: guard.check(f"node {name}"))
    if ctx.check_mode:
        planned = evacuator.check()
        for warning in planned.warnings:
            ctx.warn(warning)
        if planned.refused:
            raise TaskFailed(f"node {name}: cannot evacuate {pod_names(planned.refused)}: "
                             f"{planned.refused[0]['reason']}", refused=planned.refused, **planned.as_dict())
        data = planned.as_dict()
        data["would_evict"] = data.pop("evicted")
        return {"changed": bool(data["would_evict"]), "name": name, "evicted": [], **data}

    pods, version = evacuator.list_pods()
    outcome = evacuator.run(pods, version)
    for warning in outcome.warnings:
        ctx.warn(warning)
    data = {"name": name, **outcome.as_dict()}
    problem = outcome.problem(name, params["timeout"])
    if problem:
        extra = {"refused": outcome.refused} if outcome.refused else {}
        raise TaskFailed(problem, changed=bool(outcome.evicted), **extra, **data)
    return {"changed": bool(outcome.evicted), **data}


SPEC = TaskSpec("k8s_node_evacuate", ARGUMENT_SPEC, run)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
