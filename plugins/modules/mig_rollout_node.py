#!/usr/bin/python
# mig_rollout_node: put a node into MIG maintenance, record a failure, or return it to service.
# Docs, argument spec and the adapter to the core (migrollout) in one file; see plugins/module_utils/kube_task.py.

from __future__ import annotations

DOCUMENTATION = r"""
module: mig_rollout_node
short_description: Put a GPU node into MIG maintenance, record a failure, or return it to service
description:
  - One step of the rolling MIG reconfiguration, on one node, in one conflict-safe write.
  - O(step=begin) adds the maintenance taints (and cordons with O(cordon)) and writes the rollout record,
    the annotation C(mig-rollout.nvidia-mig-rollout.io/record), in the same write. The record says which
    taints and cordon this rollout added (taints and a cordon an admin set before are not recorded, so
    they are never removed) and the node's config before the rollout. A record left by an interrupted
    run is kept and continued.
  - O(step=failed) marks the record failed with the step and error; the node keeps its maintenance taints,
    so no broken GPUs go back into service. A node that no longer exists is reported (RV(node_gone)), not
    failed.
  - O(step=finish) removes exactly what the record says a rollout added, and the record.
  - O(step=finish) and O(step=failed) write only while the node's record still names this O(run). A record
    naming another run means that run took the node over, and the step stops (C(lock_lost)).
options:
  name:
    description: Node name.
    type: str
    required: true
  step:
    description: The step.
    type: str
    required: true
    choices: [begin, finish, failed]
  run:
    description: The rollout run's identity (the lock holder).
    type: str
    required: true
  to_config:
    description: The MIG config the node is being brought to (O(step=begin)).
    type: str
  cordon:
    description:
      - Also cordon the node (O(step=begin)), for example because GPU pods on it tolerate the maintenance taints
        (the plan says so in C(cordon)). The record says the rollout cordoned it, so O(step=finish) uncordons it.
      - An admin's cordon is never recorded, so never undone.
    type: bool
    default: false
  failed_step:
    description: The step that failed (O(step=failed)).
    type: str
    default: ""
  error:
    description: The error (O(step=failed)).
    type: str
    default: ""
extends_documentation_fragment:
  - nvidia_mig.rollout.kube_connection
  - nvidia_mig.rollout.maintenance_taints
  - nvidia_mig.rollout.rollout_lock
attributes:
  check_mode:
    support: full
    description: The API server validates the write (dry run); nothing is stored.
  diff_mode:
    support: full
    description: Shows the node's taints and cordon before and after.
author: NVIDIA MIG rollout toolkit maintainers (@nvidia-mig-rollout)
"""

EXAMPLES = r"""
- name: Put the node into maintenance
  mig_rollout_node:
    name: gpu-node-17
    step: begin
    run: "{{ mig_rollout_run }}"
    to_config: all-1g.10gb
    maintenance_taints: [{key: mig, value: maintenance, effect: NoSchedule}]
"""

RETURN = r"""
record:
  description: The rollout record after the step (C(null) when the node had none to finish).
  returned: always
  type: dict
  sample: {run: host-4242-ab12cd, from_config: all-disabled, to_config: all-1g.10gb, step: maintenance,
           added_taints: [{key: mig, value: maintenance, effect: NoSchedule}], cordoned: false}
taints:
  description: The node's taints after the step.
  returned: always
  type: list
  elements: dict
cordoned:
  description: Whether the node is cordoned after the step.
  returned: when the node exists
  type: bool
node_gone:
  description: The node no longer exists (O(step=failed)), so nothing was recorded and nothing stays in maintenance.
  returned: O(step=failed)
  type: bool
lock_lost:
  description: The step stopped before writing because this run no longer holds the rollout lock.
  returned: failure
  type: bool
"""

from typing import Any

from ansible_collections.nvidia_mig.rollout.plugins.module_utils.kube_task import (
    TaskContext,
    TaskFailed,
    TaskSpec,
    run_module,
)
from ansible_collections.nvidia_mig.rollout.plugins.module_utils.option_specs import (
    ROLLOUT_LOCK_SPEC,
    TAINT_OPTIONS,
)

try:
    from migrollout import nodes, taints
    from migrollout.rollout import fence, record
except ImportError:  # run_module reports the missing package
    pass

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "name": {"type": "str", "required": True},
    "step": {"type": "str", "required": True, "choices": ["begin", "finish", "failed"]},
    "run": {"type": "str", "required": True},
    "to_config": {"type": "str"},
    "maintenance_taints": {"type": "list", "elements": "dict", "default": [], "options": TAINT_OPTIONS},
    "cordon": {"type": "bool", "default": False},
    "failed_step": {"type": "str", "default": ""},
    "error": {"type": "str", "default": ""},
    **ROLLOUT_LOCK_SPEC,
}


def run(ctx: TaskContext) -> dict[str, Any]:
    params = ctx.params
    name, step = params["name"], params["step"]
    if step == "begin" and not params.get("to_config"):
        raise TaskFailed(f"node {name}: to_config is required with step=begin")
    try:
        maintenance = taints.checked_list(params["maintenance_taints"])
    except ValueError as exc:
        raise TaskFailed(f"node {name}: {exc}") from None
    refused = [str(t) for t in maintenance if t.effect == "NoExecute"]
    if refused:
        raise TaskFailed(f"node {name}: maintenance taint {', '.join(refused)} refused: a NoExecute taint makes the "
                         f"taint manager delete every pod on the node that does not tolerate it, CPU pods too, without "
                         f"honouring PodDisruptionBudgets; use NoSchedule")
    guard = fence.NoFence() if ctx.check_mode else fence.from_params(params.get("rollout_lock"))
    written: dict[str, Any] = {}

    def mutate(node: dict[str, Any]) -> dict[str, Any] | None:
        if step != "failed":
            nodes.require_mig_node(node)
        if step == "begin":
            patch, rec = record.begin_patch(node, params["run"], params["to_config"], maintenance, params["cordon"])
        elif step == "finish":
            patch, rec = record.finish_patch(node, params["run"])
        else:
            patch, rec = record.failed_patch(node, params["run"], params["failed_step"], params["error"])
        written["record"] = rec
        if patch:
            guard.check(f"node {name}")  # right before the write: this run must still hold the lock
        return patch

    try:
        before, after, changed = nodes.update(ctx.api, name, mutate, dry_run=ctx.check_mode,
                                              what=f"{step} MIG maintenance of node {name}")
    except nodes.NodeGone:
        if step == "failed":
            return {"changed": False, "name": name, "step": step, "record": None, "node_gone": True,
                    "taints": [], "cordoned": False}
        raise
    rec = written.get("record")
    result: dict[str, Any] = {
        "changed": changed, "name": name, "step": step,
        "record": vars(rec) if rec is not None else None,
        "taints": nodes.node_taints(after), "cordoned": nodes.is_cordoned(after),
    }
    if step == "failed":
        result["node_gone"] = False
    if ctx.diff and changed:
        result["diff"] = {"before": {"taints": nodes.node_taints(before), "unschedulable": nodes.is_cordoned(before)},
                          "after": {"taints": nodes.node_taints(after), "unschedulable": nodes.is_cordoned(after)},
                          "before_header": f"node/{name}", "after_header": f"node/{name}"}
    return result


SPEC = TaskSpec("mig_rollout_node", ARGUMENT_SPEC, run)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
