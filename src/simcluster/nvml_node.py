"""A simulated node's GPUs as a GPU-less NVML host, and back: the seam for running NVIDIA's real mig-parted
on the nodes of the simulated cluster (issue 17, item 5; the MIG manager does not use it yet).

The simulator keeps a node's GPUs as ``sim.hardware.Gpu`` values (MIG mode, pending mode, GPU instances at a
placement with their compute instances, by profile name). ``host_state`` writes them as a host state file
(``simcluster.nvml``), with NVML's profile ids from the model's tables; ``node_gpus`` reads a host state back.
A round trip keeps everything the simulator knows; the host state adds what only NVML has (UUIDs, instance
ids, compute placements).
"""

from __future__ import annotations

from typing import Any

from simcluster import nvml
from simcluster.sim import hardware


class ConversionError(nvml.NvmlError):
    pass


def _profiles_by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for profile in data["model"]["gpu_instance_profiles"]:
        found.setdefault(profile["name"], profile)
    return found


def _compute_by_name(profile: dict[str, Any]) -> dict[str, dict[str, Any]]:
    # NVML lists the 1-slice compute profile twice (a second revision, same name): the first id is the one
    # mig-parted creates, as the simulator's catalogue takes the first.
    found: dict[str, dict[str, Any]] = {}
    for compute in sorted(profile["compute_profiles"], key=lambda item: item["id"]):
        found.setdefault(compute["name"], compute)
    return found


def host_state(model: str, gpus: list[hardware.Gpu], uuids: list[str] | None = None) -> dict[str, Any]:
    """A host state holding these GPUs of ``model`` (a ``simcluster models`` key), as the library serves it."""
    data = nvml.new_state(model, len(gpus))
    profiles = _profiles_by_name(data)
    for index, (gpu, record) in enumerate(zip(gpus, data["gpus"], strict=True)):
        if uuids is not None:
            record["uuid"] = uuids[index]
        current = nvml.MIG_ENABLED if gpu.mig_enabled else nvml.MIG_DISABLED
        pending = current if gpu.pending_mig is None else (nvml.MIG_ENABLED if gpu.pending_mig else nvml.MIG_DISABLED)
        record["mig"] = {"current": current, "pending": pending}
        for number, instance in enumerate(gpu.instances, start=1):
            profile = profiles.get(instance.profile)
            if profile is None:
                raise ConversionError(f"GPU {index}: {instance.profile} is not a GPU instance profile of {model}")
            size = profile["placements"][0]["size"] if profile["placements"] else 1
            computes = _compute_by_name(profile)
            compute_instances: list[dict[str, Any]] = []
            taken: list[tuple[int, int]] = []
            for ci_id, name in enumerate(instance.compute):
                compute = computes.get(name)
                if compute is None:
                    raise ConversionError(f"GPU {index}: {name} is not a compute instance profile of "
                                          f"{instance.profile}")
                start = _first_free(taken, profile["slice_count"], compute["slice_count"])
                taken.append((start, compute["slice_count"]))
                compute_instances.append({"id": ci_id, "profile_id": compute["id"], "start": start,
                                          "size": compute["slice_count"], "uuid": nvml.new_mig_uuid()})
            record["gpu_instances"].append({"id": number, "profile_id": profile["id"], "start": instance.start,
                                            "size": size, "compute_instances": compute_instances})
    return data


def _first_free(taken: list[tuple[int, int]], slices: int, size: int) -> int:
    """The library's rule for compute placements: the first range of ``size`` slices, aligned to it."""
    for start in range(0, slices - size + 1, size):
        if all(start + size <= other or other + length <= start for other, length in taken):
            return start
    raise ConversionError(f"no room for a {size}-slice compute instance in {slices} slices")


def node_gpus(data: dict[str, Any]) -> list[hardware.Gpu]:
    """The simulator's view of a host state's GPUs."""
    profiles = {profile["id"]: profile for profile in data["model"]["gpu_instance_profiles"]}
    result = []
    for record in data["gpus"]:
        mig = record["mig"]
        pending = None if mig["pending"] == mig["current"] else mig["pending"] == nvml.MIG_ENABLED
        instances = []
        for gi in sorted(record["gpu_instances"], key=lambda item: item["id"]):
            profile = profiles[gi["profile_id"]]
            computes = {compute["id"]: compute["name"] for compute in profile["compute_profiles"]}
            names = tuple(computes[ci["profile_id"]] for ci in sorted(gi["compute_instances"], key=lambda c: c["id"]))
            instances.append(hardware.GpuInstance(profile["name"], gi["start"], names))
        result.append(hardware.Gpu(mig["current"] == nvml.MIG_ENABLED, pending, tuple(instances)))
    return result
