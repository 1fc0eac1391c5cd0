"""mig_rollout_node: put a node into MIG maintenance, record a failure, or return it to service."""

from __future__ import annotations

from typing import Any

from migrollout import nodes
from migrollout.ansible_glue import TaskContext, TaskFailed, TaskSpec
from migrollout.rollout import record
from migrollout.tasks.taint import TAINT_OPTIONS, parse_taints

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "name": {"type": "str", "required": True},
    "step": {"type": "str", "required": True, "choices": ["begin", "finish", "failed"]},
    "run": {"type": "str", "required": True},
    "to_config": {"type": "str"},
    "maintenance_taints": {"type": "list", "elements": "dict", "default": [], "options": TAINT_OPTIONS},
    "cordon": {"type": "bool", "default": False},
    "failed_step": {"type": "str", "default": ""},
    "error": {"type": "str", "default": ""},
}


def run(ctx: TaskContext) -> dict[str, Any]:
    params = ctx.params
    name, step = params["name"], params["step"]
    if step == "begin" and not params.get("to_config"):
        raise TaskFailed("to_config is required with step=begin")
    maintenance = parse_taints(params["maintenance_taints"])
    written: dict[str, Any] = {}

    def mutate(node: dict[str, Any]) -> dict[str, Any] | None:
        nodes.require_mig_node(node)
        if step == "begin":
            patch, rec = record.begin_patch(node, params["run"], params["to_config"], maintenance, params["cordon"])
        elif step == "finish":
            patch, rec = record.finish_patch(node)
        else:
            patch, rec = record.failed_patch(node, params["run"], params["failed_step"], params["error"])
        written["record"] = rec
        return patch

    before, after, changed = nodes.update(ctx.api, name, mutate, dry_run=ctx.check_mode,
                                          what=f"{step} MIG maintenance of node {name}")
    rec = written.get("record")
    result: dict[str, Any] = {
        "changed": changed, "name": name, "step": step,
        "record": vars(rec) if rec is not None else None,
        "taints": nodes.node_taints(after), "cordoned": nodes.is_cordoned(after),
    }
    if ctx.diff and changed:
        result["diff"] = {"before": {"taints": nodes.node_taints(before), "unschedulable": nodes.is_cordoned(before)},
                          "after": {"taints": nodes.node_taints(after), "unschedulable": nodes.is_cordoned(after)},
                          "before_header": f"node/{name}", "after_header": f"node/{name}"}
    return result


SPEC = TaskSpec("mig_rollout_node", ARGUMENT_SPEC, run)
