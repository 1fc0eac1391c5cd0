"""The simulated hardware of a node: its GPUs, their MIG mode and instances, as NVML would show them.

The facts live on the Node object as ``simcluster.dev/*`` annotations (as kwok keeps its fake-node
settings), so they survive a restart of the simulator and tests can inject a fault into a live node with
``kubectl annotate``. The toolkit never reads them.

A GPU's state is what NVML reports: the current MIG mode, a pending mode (set, waiting for a GPU reset
or a reboot), and its GPU instances, each at a placement (its first memory slice) with its compute
instances. Creating instances follows the model's profile table: a profile the GPU does not have, more
instances than the profile allows, a placement that overlaps another instance, or more JPEG or OFA engines
than the whole GPU has (two media-extension instances on an A30, which has one of each) is refused, as
``nvmlDeviceCreateGpuInstance`` refuses it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from simcluster.sim.gpus import ComputeProfile, GpuInstanceProfile, GpuModel

PREFIX = "simcluster.dev/"
GPU_MODEL = PREFIX + "gpu-model"
GPU_COUNT = PREFIX + "gpu-count"
GPU_STATE = PREFIX + "gpus"
RUN_SECONDS = PREFIX + "run-seconds"  # on a pod: complete (Succeeded) after this long
SIMULATED = PREFIX + "simulated"  # marks the nodes the simulator is the kubelet of

# NVML's answers, in the words nvidia-smi prints them.
INSUFFICIENT_RESOURCES = "Insufficient Resources"
NOT_SUPPORTED = "Not Supported"
IN_USE = "In use by another client"


@dataclass(frozen=True)
class GpuInstance:
    profile: str                    # the GPU-instance profile, e.g. 3g.40gb
    start: int                      # its placement: the first memory slice it holds
    compute: tuple[str, ...] = ()   # its compute instances, each a MIG device (1c.3g.40gb, or 3g.40gb)


@dataclass(frozen=True)
class Gpu:
    mig_enabled: bool = False
    pending_mig: bool | None = None  # a mode change that takes effect at the next reset or reboot
    instances: tuple[GpuInstance, ...] = ()

    def devices(self) -> list[str]:
        """Its MIG devices (one per compute instance), by profile name; none when MIG is disabled."""
        if not self.mig_enabled:
            return []
        return [name for instance in self.instances for name in instance.compute]

    def device_counts(self) -> dict[str, int]:
        """The MIG config it carries, as mig-parted reads it back (profile name -> count)."""
        return dict(Counter(self.devices()))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"mig": self.mig_enabled}
        if self.pending_mig is not None:
            data["pending"] = self.pending_mig
        if self.instances:
            data["instances"] = [{"profile": i.profile, "start": i.start, "compute": list(i.compute)}
                                 for i in self.instances]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Gpu:
        return cls(bool(data["mig"]), data.get("pending"),
                   tuple(GpuInstance(str(i["profile"]), int(i["start"]), tuple(i.get("compute") or ()))
                         for i in data.get("instances") or ()))


MIG_DISABLED = Gpu()


# -- NVML's instance management -------------------------------------------------------------------------------------

@dataclass
class Creation:
    """The result of an NVML create call: the GPU after it, or NVML's error."""

    gpu: Gpu
    error: str = ""
    index: int = -1  # the GPU instance created or used
    notes: list[str] = field(default_factory=list)


def _occupied(model: GpuModel, gpu: Gpu) -> set[int]:
    taken: set[int] = set()
    for instance in gpu.instances:
        profile = model.profile(instance.profile)
        size = profile.memory_slices if profile else 1
        taken.update(range(instance.start, instance.start + size))
    return taken


def _exclusive(profile: GpuInstanceProfile) -> tuple[int, ...]:
    # What instances hold exclusively. Not decoders or copy engines: NVIDIA's recorded A100-80GB table gives each
    # of the seven 1g.10gb instances (the default all-1g.10gb) a decoder, on a GPU whose whole has five.
    return profile.compute_slices, profile.jpegs, profile.ofas


def create_gpu_instance(model: GpuModel, gpu: Gpu, profile: GpuInstanceProfile) -> Creation:
    """``nvmlDeviceCreateGpuInstance``: the first free placement of the profile, if any."""
    if not gpu.mig_enabled:
        return Creation(gpu, NOT_SUPPORTED)
    if sum(1 for i in gpu.instances if i.profile == profile.name) >= profile.instances:
        return Creation(gpu, INSUFFICIENT_RESOURCES)
    # Together the instances hold no more compute slices, JPEG and OFA engines than the whole-GPU profile.
    whole = _exclusive(max(model.profiles, key=lambda p: p.compute_slices))
    used = _exclusive(profile)
    for instance in gpu.instances:
        found = model.profile(instance.profile)
        if found is not None:
            used = tuple(a + b for a, b in zip(used, _exclusive(found), strict=True))
    if any(need > have for need, have in zip(used, whole, strict=True)):
        return Creation(gpu, INSUFFICIENT_RESOURCES)
    taken = _occupied(model, gpu)
    for start in profile.starts:
        if taken.isdisjoint(range(start, start + profile.memory_slices)):
            added = GpuInstance(profile.name, start)
            return Creation(replace(gpu, instances=(*gpu.instances, added)), index=len(gpu.instances))
    return Creation(gpu, INSUFFICIENT_RESOURCES)


def create_compute_instance(gpu: Gpu, index: int, gpu_profile: GpuInstanceProfile,
                            compute: ComputeProfile) -> Creation:
    """``nvmlGpuInstanceCreateComputeInstance`` in GPU instance ``index``."""
    instance = gpu.instances[index]
    used = 0
    for name in instance.compute:
        existing = gpu_profile.compute_profile(name)
        used += existing.slices if existing else gpu_profile.compute_slices
    same = sum(1 for name in instance.compute if name == compute.name)
    if used + compute.slices > gpu_profile.compute_slices or same >= compute.instances:
        return Creation(gpu, INSUFFICIENT_RESOURCES, index)
    updated = replace(instance, compute=(*instance.compute, compute.name))
    instances = (*gpu.instances[:index], updated, *gpu.instances[index + 1:])
    return Creation(replace(gpu, instances=instances), index=index)


def cleared(gpu: Gpu) -> Gpu:
    return replace(gpu, instances=())


def with_mode(gpu: Gpu, enabled: bool) -> Gpu:
    """``nvmlDeviceSetMigMode``: recorded as pending until the GPU is reset (or the node rebooted)."""
    if gpu.mig_enabled == enabled and gpu.pending_mig is None:
        return gpu
    return replace(gpu, pending_mig=enabled)


def after_reset(gpu: Gpu) -> Gpu:
    """A GPU reset: a pending mode takes effect and every MIG instance is gone."""
    mode = gpu.mig_enabled if gpu.pending_mig is None else gpu.pending_mig
    return Gpu(mode)


def after_reboot(gpu: Gpu, mode_change_takes: bool = True) -> Gpu:
    """A reboot: MIG instances are not persistent; a pending mode takes effect unless the fault says not."""
    if not mode_change_takes:
        return Gpu(gpu.mig_enabled)
    return after_reset(gpu)


# -- the node annotations ------------------------------------------------------------------------------------------

def annotations_of(node: dict[str, Any]) -> dict[str, str]:
    return node.get("metadata", {}).get("annotations") or {}


def model_key(node: dict[str, Any]) -> str | None:
    return annotations_of(node).get(GPU_MODEL) or None


def gpu_count(node: dict[str, Any]) -> int:
    try:
        return int(annotations_of(node).get(GPU_COUNT, "0"))
    except ValueError:
        return 0


def gpus(node: dict[str, Any]) -> list[Gpu]:
    """The node's GPUs as the annotations describe them (MIG disabled when not recorded yet)."""
    count = gpu_count(node)
    raw = annotations_of(node).get(GPU_STATE)
    if raw:
        try:
            stored = [Gpu.from_dict(item) for item in json.loads(raw)]
            if len(stored) == count:
                return stored
        except (ValueError, TypeError, KeyError, AttributeError):
            pass
    return [MIG_DISABLED] * count


def encode(states: list[Gpu] | tuple[Gpu, ...]) -> str:
    return json.dumps([gpu.to_dict() for gpu in states], separators=(",", ":"))


def decode(raw: str) -> list[Gpu]:
    """The GPUs ``encode`` wrote."""
    return [Gpu.from_dict(item) for item in json.loads(raw)]
