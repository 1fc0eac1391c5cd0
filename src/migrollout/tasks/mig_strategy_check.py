"""mig_strategy_check: before switching to the single strategy, every MIG node must be homogeneous."""

from __future__ import annotations

from typing import Any

from migrollout import catalogue, clusterpolicy, labels, nodes
from migrollout.advertised import STRATEGIES, single_strategy_error
from migrollout.ansible_glue import TaskContext, TaskFailed, TaskSpec
from migrollout.default_config import build_default_config
from migrollout.migconfig import DISABLED, MigPartedConfig, parse_config, resolve
from migrollout.migsetup import SetupError, read_config_map, read_policy

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "strategy": {"type": "str", "required": True, "choices": list(STRATEGIES)},
    "operator_namespace": {"type": "str"},
}


def _config_for(ctx: TaskContext, policy: dict[str, Any] | None, namespace: str, node: str,
                cache: dict[str, tuple[str, MigPartedConfig]]) -> tuple[str, MigPartedConfig]:
    candidates = clusterpolicy.config_map_candidates(policy, node)
    key = ",".join(candidates)
    if key not in cache:
        try:
            cache[key] = read_config_map(ctx.api, namespace, candidates)
        except SetupError:
            # No ConfigMap yet (the operator is being installed): it will be the default one.
            cache[key] = ("default (to be created)", parse_config(build_default_config()))
    return cache[key]


def run(ctx: TaskContext) -> dict[str, Any]:
    params = ctx.params
    result: dict[str, Any] = {"changed": False, "strategy": params["strategy"], "checked": [], "offending": []}
    if params["strategy"] != "single":
        return result
    labelled, _ = ctx.api.list("/api/v1/nodes", what="list MIG nodes", label_selector=labels.MIG_CONFIG)
    if not labelled:
        return result
    try:
        policy: dict[str, Any] | None = read_policy(ctx.api)
    except SetupError:
        policy = None
    namespace = params.get("operator_namespace") or clusterpolicy.namespace(policy)
    cache: dict[str, tuple[str, MigPartedConfig]] = {}
    for node in labelled:
        name = node["metadata"]["name"]
        config, state = nodes.mig_config(node), nodes.mig_state(node)
        model = catalogue.find_model(nodes.node_labels(node).get(labels.GPU_PRODUCT, ""))
        if model is None or not model.mig_capable:
            continue
        result["checked"].append(name)
        source, mig_config = _config_for(ctx, policy, namespace, name, cache)
        if state != "success":
            result["offending"].append({"node": name, "config": config,
                                        "reason": f"state is {state or 'unset'}, so its layout is not known"})
            continue
        if config not in mig_config:
            result["offending"].append({"node": name, "config": config, "reason": f"{config} is not in {source}"})
            continue
        count = nodes.physical_gpu_count(node, mig_config, model)
        if count is None:
            result["offending"].append({"node": name, "config": config, "reason": "GPU count unknown"})
            continue
        layouts = [layout or DISABLED for layout in resolve(mig_config, config, model, count)]
        error = single_strategy_error(layouts)
        if error:
            result["offending"].append({"node": name, "config": config, "reason": error})
    if result["offending"]:
        listed = ", ".join(f"{o['node']} ({o['config']}: {o['reason']})" for o in result["offending"][:6])
        more = f" and {len(result['offending']) - 6} more" if len(result["offending"]) > 6 else ""
        raise TaskFailed(f"cannot switch to the single MIG strategy: {len(result['offending'])} node(s) have layouts "
                         f"the device plugin rejects under it: {listed}{more}. Give every MIG node one profile "
                         f"type (or MIG disabled) first", **result)
    return result


SPEC = TaskSpec("mig_strategy_check", ARGUMENT_SPEC, run)
