"""The GPUs a fleet node boots with: MIG disabled, its pool's ``mig_config`` already applied (as the MIG
manager would have applied it from the operator's default MIG ConfigMap), or ``mig_devices`` made outside
Kubernetes (applied as a one-entry config file of their own). NVIDIA's mig-parted applies them for real on a
host state of the pool's model (``nvml_node.RealMigParted``), so a fleet cannot boot into a layout a real node
could not have."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import yaml

from simcluster import upstream
from simcluster.sim import hardware, mig_parted
from simcluster.sim.faults import NodeFaults
from simcluster.sim.gpus import GpuModel
from simcluster.sim.hardware import Gpu

if TYPE_CHECKING:
    from simcluster.nvml_node import RealMigParted

# The config name of the file that carries a pool's mig_devices.
DEVICES_CONFIG = "fleet-mig-devices"


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


def devices_document(mig_devices: dict[str, int]) -> str:
    """A mig-parted config file whose one config puts these MIG devices on every GPU."""
    return yaml.safe_dump({"version": "v1", "mig-configs": {DEVICES_CONFIG: [
        {"devices": "all", "mig-enabled": True, "mig-devices": dict(mig_devices)}]}}, sort_keys=False)


def booted_gpus(model: GpuModel, count: int, mig_config: str | None, mig_devices: dict[str, int] | None,
                real: RealMigParted, validate: Callable[[str, str], tuple[bool, str]],
                document: str | None = None) -> tuple[list[Gpu], str]:
    """The node's GPUs at boot, or why that layout cannot be (the problem, in mig-parted's words)."""
    gpus = [hardware.MIG_DISABLED] * count
    if mig_devices:
        document, config = devices_document(mig_devices), DEVICES_CONFIG
    elif mig_config:
        document, config = (document if document is not None else default_mig_document()), mig_config
    else:
        return gpus, ""
    valid, message = validate(document, config)
    if not valid:
        return gpus, message
    host = f"boot-{model.key}-{count}"
    faults = NodeFaults()
    moded = real.apply_mode(host, model, gpus, False, document, config, faults)
    if not moded.ok:
        return gpus, moded.message
    applied = real.apply(host, model, moded.gpus, False, document, config, faults)
    if not applied.ok:
        return gpus, applied.message
    if not real.assert_config(host, model, applied.gpus, False, document, config, faults):
        # mig-parted drops MIG device names the GPU has no profile for and succeeds: the node could not
        # hold what the pool asks for.
        return gpus, (f"nvidia-mig-parted apply succeeded but its assert fails: mig-parted drops MIG device names "
                      f"that {model.product} has no profile for")
    return applied.gpus, ""
