"""What a GPU node advertises for a given GPU layout and MIG strategy.

These are the rules of NVIDIA's device plugin (extended resources) and GPU
feature discovery (node labels) for the strategies ``none``, ``single`` and
``mixed``, as the toolkit predicts them; verification compares a node with
them. (The simulated cluster publishes by its own rules, written from NVIDIA's
device plugin, so a mistake here shows up in the integration tests.)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from migrollout.catalogue import GpuModel
from migrollout.labels import GPU_RESOURCE, MIG_RESOURCE_PREFIX
from migrollout.migconfig.layouts import GpuLayout

STRATEGIES = ("none", "single", "mixed")



@dataclass(frozen=True)
class Advertisement:
    """Device-plugin resources and GFD labels of one node."""

    resources: dict[str, int]
    labels: dict[str, str]
    # Set when the device plugin refuses the layout (single strategy); it then advertises nothing.
    plugin_error: str | None = None
    mig_devices: Counter = field(default_factory=Counter)


def mig_device_totals(layouts: list[GpuLayout]) -> Counter:
    totals: Counter = Counter()
    for layout in layouts:
        if layout.mig_enabled:
            totals.update({name: count for name, count in layout.devices.items() if count})
    return totals


def single_strategy_error(layouts: list[GpuLayout]) -> str | None:
    """The device plugin's complaint about a layout under the single strategy, if any."""
    enabled = {layout.mig_enabled for layout in layouts}
    if len(enabled) > 1:
        return "all devices on the node must be configured with the same migEnabled value"
    if enabled != {True}:
        return None
    for index, layout in enumerate(layouts):
        if not any(layout.devices.values()):
            return f"invalid MIG configuration: device {index} has no MIG devices configured"
    if len(mig_device_totals(layouts)) > 1:
        return "more than one MIG device type present on node"
    return None


def resource_name(profile_name: str) -> str:
    return MIG_RESOURCE_PREFIX + profile_name.replace("+", ".")


def mixed_resource(model: GpuModel, device: str) -> str | None:
    """The resource a MIG device counts under with the mixed strategy, or None when it matches none.

    The device plugin (v0.17) makes one resource pattern per whole-instance profile of the node's GPUs, in
    NVML's profile order, and a device counts under the first pattern found anywhere in its profile name (the
    patterns are not anchored). A media-extension variant comes after its plain profile in NVML's order, so a
    ``1g.10gb+me`` device counts as ``nvidia.com/mig-1g.10gb``, and a ``1c.3g.40gb`` device as
    ``nvidia.com/mig-3g.40gb``: the shortest whole-instance profile name inside the device's name."""
    profile = model.profile(device)
    name = profile.name if profile is not None else device
    inside = [candidate.name for candidate in model.profiles if candidate.name in name]
    return resource_name(min(inside, key=len)) if inside else None


def device_plugin_resources(model: GpuModel, layouts: list[GpuLayout],
                            strategy: str) -> tuple[dict[str, int], str | None]:
    """Extended resources the device plugin registers, and its start-up error if it fails."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown MIG strategy {strategy!r}")
    whole = sum(1 for layout in layouts if not layout.mig_enabled)
    totals = mig_device_totals(layouts)
    if strategy == "none":
        return ({GPU_RESOURCE: len(layouts)} if layouts else {}), None
    if strategy == "single":
        error = single_strategy_error(layouts)
        if error:
            return {}, error
        count = sum(totals.values()) if totals else whole
        return ({GPU_RESOURCE: count} if count else {}), None
    resources: Counter = Counter()
    for name, count in sorted(totals.items()):
        resource = mixed_resource(model, name)
        if resource is None:
            return {}, f"MIG profile '{name}' does not match any resource patterns"
        resources[resource] += count
    if whole:
        resources[GPU_RESOURCE] = whole
    return dict(sorted(resources.items())), None


def _base_labels(model: GpuModel, layouts: list[GpuLayout]) -> dict[str, str]:
    # What the GPUs and their layout decide; the driver's and CUDA's labels are the node's business.
    # GFD labels a model's MIG-enabled GPUs "without sharing" (replicas 0); its MIG-disabled GPUs, labelled
    # after them, override that with replicas 1. The MIG strategy does not matter here.
    whole_gpus = any(not layout.mig_enabled for layout in layouts)
    labels = {
        "nvidia.com/gpu.count": str(len(layouts)),
        "nvidia.com/gpu.replicas": "1" if whole_gpus or not layouts else "0",
        "nvidia.com/gpu.sharing-strategy": "none",
        "nvidia.com/gpu.product": model.product,
        "nvidia.com/gpu.memory": str(model.memory_mib),
        "nvidia.com/gpu.family": model.family,
        "nvidia.com/gpu.compute.major": str(model.compute_capability[0]),
        "nvidia.com/gpu.compute.minor": str(model.compute_capability[1]),
        "nvidia.com/gpu.mode": "compute",
        "nvidia.com/mig.capable": "true" if model.mig_capable else "false",
        "nvidia.com/mps.capable": "false",
    }
    return labels


def _profile_labels(prefix: str, model: GpuModel, profile_name: str, count: int) -> dict[str, str]:
    """A MIG device type's labels: NVML's attributes of such a device (the catalogue's profile table)."""
    profile = model.profile(profile_name)
    if profile is None:
        raise ValueError(f"profile {profile_name} does not exist on {model.key}")
    labels = {
        f"{prefix}.count": str(count),
        f"{prefix}.replicas": "1",
        f"{prefix}.sharing-strategy": "none",
        f"{prefix}.memory": str(profile.memory_mib),
        f"{prefix}.multiprocessors": str(profile.multiprocessors),
        f"{prefix}.slices.gi": str(profile.compute_slices),
        f"{prefix}.slices.ci": str(profile.ci_slices),
    }
    labels.update({f"{prefix}.engines.{engine}": str(n) for engine, n in profile.engines.items()})
    return labels


def gfd_labels(model: GpuModel, layouts: list[GpuLayout], strategy: str) -> dict[str, str]:
    """The labels GPU feature discovery writes for this node (without the timestamp)."""
    labels = _base_labels(model, layouts)
    if strategy == "none":
        return labels
    labels["nvidia.com/mig.strategy"] = strategy
    totals = mig_device_totals(layouts)
    if strategy == "mixed":
        for name, count in sorted(totals.items()):
            suffix = name.replace("+", ".")
            labels.update(_profile_labels(f"nvidia.com/mig-{suffix}", model, name, count))
            labels[f"nvidia.com/mig-{suffix}.product"] = f"{model.product}-MIG-{suffix}"
        return labels
    if not any(layout.mig_enabled for layout in layouts):
        return labels
    if single_strategy_error(layouts):
        labels.update({
            "nvidia.com/gpu.product": f"{model.product}-MIG-INVALID",
            "nvidia.com/gpu.count": "0",
            "nvidia.com/gpu.replicas": "0",
            "nvidia.com/gpu.memory": "0",
            "nvidia.com/gpu.sharing-strategy": "",
        })
        return labels
    ((name, count),) = totals.items()
    suffix = name.replace("+", ".")
    labels.update(_profile_labels("nvidia.com/gpu", model, name, count))
    labels["nvidia.com/gpu.product"] = f"{model.product}-MIG-{suffix}"
    return labels


def advertise(model: GpuModel, layouts: list[GpuLayout], strategy: str) -> Advertisement:
    resources, error = device_plugin_resources(model, layouts, strategy)
    return Advertisement(resources, gfd_labels(model, layouts, strategy), error, mig_device_totals(layouts))


def verified_label_keys(labels: dict[str, str]) -> dict[str, str]:
    """The GFD labels verification compares: strategy, count, product and MIG counts."""
    keep = {"nvidia.com/mig.strategy", "nvidia.com/gpu.count", "nvidia.com/gpu.product"}
    return {
        key: value
        for key, value in labels.items()
        if key in keep or (key.startswith(MIG_RESOURCE_PREFIX) and key.endswith(".count"))
    }
