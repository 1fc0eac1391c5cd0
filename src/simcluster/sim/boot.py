"""The GPUs a fleet node boots with: MIG disabled, its pool's ``mig_config`` already applied (as the MIG
manager would have applied it from the operator's default MIG ConfigMap), or ``mig_devices`` made outside
Kubernetes. The same mig-parted steps as a live change, so a fleet cannot boot into a layout a real node
could not have."""

from __future__ import annotations

from collections.abc import Callable

import yaml

from simcluster import upstream
from simcluster.sim import hardware, mig_parted
from simcluster.sim.gpus import GpuModel
from simcluster.sim.hardware import Gpu
from simcluster.sim.mig_parted import Selector


def default_mig_document() -> str:
    """The mig-parted config file of the operator module's default MIG ConfigMap."""
    built = upstream.find()
    if built is None:
        raise upstream.BuildError(f"NVIDIA's components are not built (expected in {upstream.upstream_dir()}): "
                                  f"run 'simcluster build'")
    return str(yaml.safe_load(built.default_mig_config.read_text())["data"]["config.yaml"])


def validator() -> Callable[[str, str], tuple[bool, str]]:
    """``nvidia-mig-parted assert --valid-config`` of the built CLI, as (document, config) -> (valid, message)."""
    built = upstream.find()
    if built is None:
        raise upstream.BuildError(f"nvidia-mig-parted is not built (expected in {upstream.upstream_dir()}): "
                                  f"run 'simcluster build'")
    return lambda document, config: mig_parted.validate(built.mig_parted, document, config)


def booted_gpus(model: GpuModel, count: int, mig_config: str | None, mig_devices: dict[str, int] | None,
                selector: Selector, validate: Callable[[str, str], tuple[bool, str]],
                document: str | None = None) -> tuple[list[Gpu], str]:
    """The node's GPUs at boot, or why that layout cannot be (the problem, in mig-parted's words)."""
    gpus = [hardware.MIG_DISABLED] * count
    if mig_devices:
        booted = []
        for index in range(count):
            placed, error = mig_parted.set_mig_config(model, Gpu(True), dict(mig_devices))
            if error:
                return gpus, f"GPU {index}: {error}"
            booted.append(placed)
        return booted, ""
    if not mig_config:
        return gpus, ""
    document = document if document is not None else default_mig_document()
    valid, message = validate(document, mig_config)
    if not valid:
        return gpus, message
    selection = mig_parted.select(selector, document, mig_config, model, count)
    moded = mig_parted.apply_mode(model, gpus, selection, gpu_in_use=False, reset_needs_reboot=False)
    if not moded.ok:
        return gpus, moded.message
    applied = mig_parted.apply(model, moded.gpus, selection, gpu_in_use=False)
    if not applied.ok:
        return gpus, applied.message
    return applied.gpus, ""
