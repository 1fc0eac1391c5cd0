"""k8s_node_evacuate: move a node's GPU workloads (or a selection of pods) off it and wait until they are gone."""

from __future__ import annotations

from typing import Any

from migrollout import nodes
from migrollout.ansible_glue import TaskContext, TaskFailed, TaskSpec
from migrollout.evacuation.engine import Evacuator
from migrollout.evacuation.selection import Options

# Which pods leave, and which the filters let go: shared with the rollout's plan (its check-mode listing).
SELECTION_SPEC: dict[str, dict[str, Any]] = {
    "gpu_only": {"type": "bool", "default": True},
    "gpu_runtime_classes": {"type": "list", "elements": "str", "default": ["nvidia"]},
    "pod_selector": {"type": "str"},
    "ignore_daemonsets": {"type": "bool", "default": True},
    "delete_emptydir_data": {"type": "bool", "default": False},
    "force": {"type": "bool", "default": False},
}

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "name": {"type": "str", "required": True},
    **SELECTION_SPEC,
    "disable_eviction": {"type": "bool", "default": False},
    "grace_period": {"type": "int", "default": -1},
    "timeout": {"type": "int", "default": 600},
    "max_parallel": {"type": "int", "default": 10},
    "require_gpu": {"type": "bool", "default": True},
}


def _names(entries: list[dict[str, Any]]) -> str:
    shown = ", ".join(f"{e['namespace']}/{e['name']}" for e in entries[:5])
    return shown + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")


def selection_options(params: dict[str, Any]) -> Options:
    return Options(gpu_only=params["gpu_only"], gpu_runtime_classes=tuple(params["gpu_runtime_classes"]),
                   ignore_daemonsets=params["ignore_daemonsets"], delete_emptydir_data=params["delete_emptydir_data"],
                   force=params["force"])


def run(ctx: TaskContext) -> dict[str, Any]:
    params = ctx.params
    name = params["name"]
    if params["grace_period"] < -1:
        raise TaskFailed(f"grace_period must be -1 (each pod's own) or >= 0, not {params['grace_period']}")
    if params["timeout"] <= 0 or params["max_parallel"] <= 0:
        raise TaskFailed("timeout and max_parallel must be positive")
    node = nodes.read(ctx.api, name)
    if params["require_gpu"]:
        nodes.require_gpu_node(node)
    if not nodes.is_cordoned(node) and not any(
            t.get("effect") in ("NoSchedule", "NoExecute") for t in nodes.node_taints(node)):
        ctx.warn(f"node {name} is neither cordoned nor tainted NoSchedule: evicted pods may be scheduled "
                 f"right back onto it (taint it first with k8s_node_taint)")
    evacuator = Evacuator(ctx.api, name, selection_options(params), pod_selector=params.get("pod_selector"),
                          timeout=params["timeout"], max_parallel=params["max_parallel"],
                          grace_period=params["grace_period"], disable_eviction=params["disable_eviction"])
    if ctx.check_mode:
        planned = evacuator.check()
        for warning in planned.warnings:
            ctx.warn(warning)
        if planned.refused:
            raise TaskFailed(f"node {name}: cannot evacuate {_names(planned.refused)}: "
                             f"{planned.refused[0]['reason']}", refused=planned.refused, **planned.as_dict())
        data = planned.as_dict()
        data["would_evict"] = data.pop("evicted")
        return {"changed": bool(data["would_evict"]), "name": name, "evicted": [], **data}

    pods, version = evacuator.list_pods()
    outcome = evacuator.run(pods, version)
    for warning in outcome.warnings:
        ctx.warn(warning)
    data = {"name": name, **outcome.as_dict()}
    if outcome.refused:
        raise TaskFailed(f"node {name}: cannot evacuate {_names(outcome.refused)}: {outcome.refused[0]['reason']}"
                         + ("" if not outcome.evicted else f" ({len(outcome.evicted)} pods already left)"),
                         changed=bool(outcome.evicted), refused=outcome.refused, **data)
    if outcome.pending:
        blockers = data["blocking_pdbs"]
        blocked = f"; blocked by PodDisruptionBudget {', '.join(blockers)}" if blockers else ""
        raise TaskFailed(f"node {name}: {len(outcome.pending)} pods still there after {params['timeout']} s: "
                         f"{_names(outcome.pending)}{blocked}", changed=bool(outcome.evicted), **data)
    return {"changed": bool(outcome.evicted), **data}


SPEC = TaskSpec("k8s_node_evacuate", ARGUMENT_SPEC, run)
