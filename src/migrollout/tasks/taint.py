"""k8s_node_taint: add or remove taints on one node, touching no other taint."""

from __future__ import annotations

import re
from typing import Any

from migrollout import nodes, taints
from migrollout.ansible_glue import TaskContext, TaskFailed, TaskSpec
from migrollout.taints import Taint

_QUALIFIED_NAME = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                             r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")

TAINT_OPTIONS: dict[str, dict[str, Any]] = {
    "key": {"type": "str", "required": True, "no_log": False},
    "value": {"type": "str", "default": ""},
    "effect": {"type": "str", "required": True, "choices": list(taints.EFFECTS)},
}

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "name": {"type": "str", "required": True},
    "taints": {"type": "list", "elements": "dict", "required": True, "options": TAINT_OPTIONS},
    "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
    "require_gpu": {"type": "bool", "default": True},
}


def parse_taints(raw: list[dict[str, Any]]) -> list[Taint]:
    parsed = []
    for item in raw:
        key, value = item["key"], item.get("value") or ""
        if not _QUALIFIED_NAME.match(key) or len(key.split("/")[-1]) > 63:
            raise TaskFailed(f"taint key {key!r} is not a valid Kubernetes qualified name")
        if len(value) > 63 or not _LABEL_VALUE.match(value):
            raise TaskFailed(f"taint value {value!r} (key {key}) is not a valid label value")
        parsed.append(Taint(key, item["effect"], value))
    return parsed


def run(ctx: TaskContext) -> dict[str, Any]:
    params = ctx.params
    name = params["name"]
    wanted = parse_taints(params["taints"])
    adding = params["state"] == "present"

    def mutate(node: dict[str, Any]) -> dict[str, Any] | None:
        if params["require_gpu"]:
            nodes.require_gpu_node(node)
        current = nodes.node_taints(node)
        updated = taints.add(current, wanted) if adding else taints.remove(current, wanted)
        return None if taints.same(current, updated) else {"spec": {"taints": updated or None}}

    before, after, changed = nodes.update(ctx.api, name, mutate, dry_run=ctx.check_mode,
                                          what=f"{'taint' if adding else 'untaint'} node {name}")
    result: dict[str, Any] = {
        "changed": changed,
        "name": name,
        "taints_before": nodes.node_taints(before),
        "taints_after": nodes.node_taints(after),
    }
    if ctx.diff:
        result["diff"] = {
            "before_header": f"node/{name} taints", "after_header": f"node/{name} taints",
            "before": "".join(f"{taints.Taint.from_dict(t)}\n" for t in result["taints_before"]),
            "after": "".join(f"{taints.Taint.from_dict(t)}\n" for t in result["taints_after"]),
        }
    return result


SPEC = TaskSpec("k8s_node_taint", ARGUMENT_SPEC, run)
