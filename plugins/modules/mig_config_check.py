#!/usr/bin/python
# mig_config_check: refuse custom MIG configs that the GPUs they target cannot hold.
# Docs, argument spec and the adapter to the core (migrollout) in one file; see plugins/module_utils/kube_task.py.

from __future__ import annotations

DOCUMENTATION = r"""
module: mig_config_check
short_description: Check custom mig-parted configs against the MIG catalogue before they are installed
description:
  - Refuses exactly what the MIG manager refuses when it loads its ConfigMap. It reads the whole file first,
    so one bad entry fails every MIG change on every node. Refused, each named by its entry with
    mig-parted's reason, are MIG enabled without C(mig-devices), all counts 0, malformed profile names,
    unknown fields and the other errors of mig-parted's parser. Accepted is what mig-parted accepts,
    negative indices, an empty file and compute-instance profiles included.
  - Which MIG manager reads the file decides what it can parse. MIG managers before v0.12.3 (GPU Operator
    before v25.3.3) cannot parse C(-me) or C(+me.all) names. The version comes from O(mig_manager_version),
    else the chart at O(chart_path), else O(chart_version).
  - Stricter than mig-parted in one respect, on purpose. Each profile must exist on and fit the GPUs its
    entry targets, which mig-parted finds out only when it applies the config to a node (the node then ends
    C(failed)). An entry with a C(device-filter) must fit every GPU model it names; an entry without one
    must fit at least one of the GPU models it could land on (O(models), else the MIG-capable models found
    on the cluster's nodes, else the whole catalogue). Fitting means the profiles exist on that model,
    their counts stay within each profile's maximum, and NVML's placements hold them all.
  - Changes nothing.
version_added: "0.1.0"
seealso:
  - module: nvidia_mig.rollout.mig_node_label
  - module: nvidia_mig.rollout.mig_strategy_check
options:
  configs:
    description: Config name to list of mig-parted entries (C(devices), C(mig-enabled), C(mig-devices), C(device-filter)).
    type: dict
    required: true
  models:
    description: GPU models (catalogue keys, aliases or GFD product names) the configs may target.
    type: list
    elements: str
  chart_version:
    description: The GPU Operator chart release that will read the configs (default, the toolkit's default release).
    type: str
  chart_path:
    description: A GPU Operator chart on disk; its version and MIG manager image tag are read from it.
    type: path
  mig_manager_version:
    description: The MIG manager image tag (for example C(v0.12.3-ubuntu20.04)), overriding the chart's.
    type: str
extends_documentation_fragment:
  - nvidia_mig.rollout.kube_connection
  - nvidia_mig.rollout.read_only
author: NVIDIA MIG rollout toolkit maintainers (@nvidia-mig-rollout)
"""

EXAMPLES = r"""
- name: Refuse configs the A100s cannot hold, before installing them
  nvidia_mig.rollout.mig_config_check:
    configs:
      training-a100:
        - devices: all
          mig-enabled: true
          mig-devices: {3g.40gb: 2}
"""

RETURN = r"""
fits:
  description: For each config, the GPU models it fits.
  returned: always
  type: dict
  sample: {training-a100: [A100-SXM4-80GB, H100-SXM5-80GB]}
models:
  description: The GPU models the configs were checked against.
  returned: always
  type: list
  elements: str
mig_manager_version:
  description: The MIG manager release whose parser the configs were checked with.
  returned: success
  type: str
  sample: v0.12.3
problems:
  description: Every problem found, one sentence each.
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

try:
    from migrollout import catalogue, labels, nodes
    from migrollout.catalogue import GpuModel
    from migrollout.kube import KubeError
    from migrollout.migconfig.document import Dialect
    from migrollout.migconfig.layouts import check_custom_configs
    from migrollout.operator_values import MigConfigsRefused, chart_versions, mig_manager_for
except ImportError:  # run_module reports the missing package
    pass

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "configs": {"type": "dict", "required": True},
    "models": {"type": "list", "elements": "str"},
    "chart_version": {"type": "str"},
    "chart_path": {"type": "path"},
    "mig_manager_version": {"type": "str"},
}


def cluster_models(ctx: TaskContext) -> list[GpuModel]:
    """The MIG-capable GPU models GPU feature discovery reports on the cluster's nodes."""
    try:
        listed, _ = ctx.api.list("/api/v1/nodes", what="list GPU nodes", label_selector=labels.GPU_PRODUCT)
    except KubeError as exc:
        ctx.warn(f"cannot list the cluster's GPU models ({exc.one_line()}); checking against the whole catalogue")
        return []
    found: dict[str, GpuModel] = {}
    for node in listed:
        model = nodes.gpu_model(node)
        if model is not None and model.mig_capable:
            found[model.key] = model
    return list(found.values())


def run(ctx: TaskContext) -> dict[str, Any]:
    params = ctx.params
    if params.get("models"):
        candidates = []
        for key in params["models"]:
            model = catalogue.find_model(key)
            if model is None:
                raise TaskFailed(f"unknown GPU model {key!r} (known: {', '.join(catalogue.model_keys())})")
            candidates.append(model)
    else:
        candidates = cluster_models(ctx) or [m for m in catalogue.MODELS if m.mig_capable]
    chart_version, mig_manager_version = params.get("chart_version"), params.get("mig_manager_version")
    if params.get("chart_path"):
        chart_version, chart_tag = chart_versions(params["chart_path"])
        mig_manager_version = mig_manager_version or chart_tag
    try:
        manager = mig_manager_for(chart_version, mig_manager_version)
    except MigConfigsRefused as exc:
        raise TaskFailed(str(exc)) from None
    fits, problems = check_custom_configs(params["configs"], candidates, catalogue.MODELS,
                                          Dialect.for_mig_manager(manager))
    result = {"changed": False, "fits": fits, "models": [m.key for m in candidates], "mig_manager_version": manager}
    if problems:
        raise TaskFailed(f"{len(problems)} problem(s) in the custom MIG configs: " + "; ".join(problems[:5]),
                         problems=problems, **result)
    return result


SPEC = TaskSpec("mig_config_check", ARGUMENT_SPEC, run)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
