#!/usr/bin/python
# mig_strategy_check: before switching to the single strategy, every MIG node must be homogeneous.
# Docs, argument spec and the adapter to the core (migrollout) in one file; see plugins/module_utils/kube_task.py.

from __future__ import annotations

DOCUMENTATION = r"""
module: mig_strategy_check
short_description: Refuse the single MIG strategy while some MIG node's layout would break the device plugin
description:
  - Under the C(single) strategy the NVIDIA device plugin refuses to start on a node whose MIG-enabled GPUs
    hold more than one MIG profile, hold none, or are mixed with MIG-disabled GPUs.
  - For O(strategy=single), checks the current layout of every node labelled C(nvidia.com/mig.config)
    (its config, resolved with the MIG config ConfigMap the cluster uses) and fails, listing the offending
    nodes and their configs, if any would break. A node whose last apply did not succeed counts as offending.
  - Other strategies pass. Changes nothing.
version_added: "0.1.0"
seealso:
  - module: nvidia_mig.rollout.mig_config_check
  - module: nvidia_mig.rollout.gpu_operator_wait
options:
  strategy:
    description: The MIG strategy about to be set.
    type: str
    required: true
    choices: [none, single, mixed]
  operator_namespace:
    description: The GPU Operator's namespace. Default, the ClusterPolicy's C(status.namespace).
    type: str
extends_documentation_fragment:
  - nvidia_mig.rollout.kube_connection
  - nvidia_mig.rollout.read_only
author: NVIDIA MIG rollout toolkit maintainers (@nvidia-mig-rollout)
"""

EXAMPLES = r"""
- name: Every MIG node must be homogeneous before the switch
  mig_strategy_check:
    strategy: single
"""

RETURN = r"""
checked:
  description: The MIG nodes checked.
  returned: always
  type: list
  elements: str
offending:
  description: Nodes whose layout the single strategy rejects, with their config and the reason.
  returned: always
  type: list
  elements: dict
  sample: [{node: gpu-7, config: all-balanced, reason: more than one MIG device type present on node}]
"""

from typing import Any

from ansible_collections.nvidia_mig.rollout.plugins.module_utils.kube_task import (
    TaskContext,
    TaskFailed,
    TaskSpec,
    run_module,
)

try:
    from migrollout import clusterpolicy, labels, nodes
    from migrollout.advertised import single_strategy_error
    from migrollout.default_config import default_mig_config
    from migrollout.migconfig.document import MigPartedConfig
    from migrollout.migconfig.layouts import DISABLED, resolve
    from migrollout.migsetup import SetupError, read_config_map, read_policy
except ImportError:  # run_module reports the missing package
    pass

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "strategy": {"type": "str", "required": True, "choices": ["none", "single", "mixed"]},
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
            cache[key] = ("default (to be created)", default_mig_config())
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
        model = nodes.gpu_model(node)
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


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
