#!/usr/bin/python
# mig_config_check: refuse custom MIG configs that the GPUs they target cannot hold.
# Docs, argument spec and the adapter to the core (migrollout) in one file; see plugins/module_utils/kube_task.py.

from __future__ import annotations

DOCUMENTATION = r"""
module: mig_config_check
short_description: Check custom mig-parted configs against the MIG catalogue before they are installed
description:
  - Parses O(configs) (the C(mig-configs) mapping of a mig-parted file) and refuses unknown fields and
    malformed entries.
  - An entry with a C(device-filter) must fit every GPU model it names; an entry without one must fit at
    least one of the GPU models it could land on (O(models), else the MIG-capable models found on the
    cluster's nodes, else the whole catalogue). Fitting means the profiles exist on that model, their counts
    stay within each profile's maximum, and the slices add up (MIG catalogue).
  - Changes nothing.
options:
  configs:
    description: Config name to list of mig-parted entries (C(devices), C(mig-enabled), C(mig-devices), C(device-filter)).
    type: dict
    required: true
  models:
    description: GPU models (catalogue keys, aliases or GFD product names) the configs may target.
    type: list
    elements: str
extends_documentation_fragment:
  - nvidia_mig.rollout.kube_connection
  - nvidia_mig.rollout.read_only
author: NVIDIA MIG rollout toolkit maintainers (@nvidia-mig-rollout)
"""

EXAMPLES = r"""
- name: Refuse configs the A100s cannot hold, before installing them
  mig_config_check:
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
    from migrollout import catalogue, labels
    from migrollout.catalogue import GpuModel
    from migrollout.kube import KubeError
    from migrollout.migconfig import GpuLayout, MigConfigError, format_devices, layout_problems, parse_config
except ImportError:  # run_module reports the missing package
    pass

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "configs": {"type": "dict", "required": True},
    "models": {"type": "list", "elements": "str"},
}


def cluster_models(ctx: TaskContext) -> list[GpuModel]:
    """The MIG-capable GPU models GPU feature discovery reports on the cluster's nodes."""
    try:
        nodes, _ = ctx.api.list("/api/v1/nodes", what="list GPU nodes", label_selector=labels.GPU_PRODUCT)
    except KubeError as exc:
        ctx.warn(f"cannot list the cluster's GPU models ({exc.one_line()}); checking against the whole catalogue")
        return []
    found: dict[str, GpuModel] = {}
    for node in nodes:
        model = catalogue.find_model(node["metadata"]["labels"][labels.GPU_PRODUCT])
        if model is not None and model.mig_capable:
            found[model.key] = model
    return list(found.values())


def check(configs: dict[str, Any], candidates: list[GpuModel]) -> tuple[dict[str, list[str]], list[str]]:
    """(config -> models each config fits, problems). An entry with a device-filter must fit every model it
    names; an entry without one must fit at least one of the candidate models."""
    try:
        parsed = parse_config({"version": "v1", "mig-configs": configs})
    except MigConfigError as exc:
        return {}, [str(exc)]
    problems: list[str] = []
    fits: dict[str, list[str]] = {}
    for name in parsed.names():
        targets: set[str] = set()
        for index, entry in enumerate(parsed.entries(name)):
            where = f"mig-configs.{name}[{index}]"
            layout = GpuLayout(entry.mig_enabled, dict(entry.mig_devices))
            if entry.device_filter:
                models = [m for m in catalogue.MODELS if m.device_filter in entry.device_filter]
                unknown = [f for f in entry.device_filter if not any(m.device_filter == f for m in catalogue.MODELS)]
                if unknown:
                    problems.append(f"{where}: device-filter {', '.join(unknown)} matches no GPU in the catalogue")
                for model in models:
                    for problem in layout_problems(layout, model):
                        problems.append(f"{where}: {problem}")
                targets.update(m.key for m in models if not layout_problems(layout, m))
                continue
            if not entry.mig_enabled:
                targets.update(m.key for m in candidates)
                continue
            good = [m for m in candidates if not layout_problems(layout, m)]
            if not good:
                reasons = sorted({p for m in candidates for p in layout_problems(layout, m)})
                problems.append(f"{where}: {format_devices(layout.devices)} fits none of the GPU models it could "
                                f"target ({', '.join(m.key for m in candidates)}): " + "; ".join(reasons[:3]))
            targets.update(m.key for m in good)
        fits[name] = sorted(targets)
    return fits, problems


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
    fits, problems = check(params["configs"], candidates)
    result = {"changed": False, "fits": fits, "models": [m.key for m in candidates]}
    if problems:
        raise TaskFailed(f"{len(problems)} problem(s) in the custom MIG configs: " + "; ".join(problems[:5]),
                         problems=problems, **result)
    return result


SPEC = TaskSpec("mig_config_check", ARGUMENT_SPEC, run)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
