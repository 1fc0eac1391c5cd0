"""A simulated node's GPUs as a GPU-less NVML host, and back: the seam for running NVIDIA's real mig-parted
on the nodes of the simulated cluster (issue 17, item 5; the MIG manager does not use it yet).

The simulator keeps a node's GPUs as ``sim.hardware.Gpu`` values (MIG mode, pending mode, GPU instances at a
placement with their compute instances, by profile name). ``host_state`` writes them as a host state file
(``simcluster.nvml``), with NVML's profile ids from the model's tables; ``node_gpus`` reads a host state back.
A round trip keeps everything the simulator knows; the host state adds what only NVML has (UUIDs, instance
ids, compute placements).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simcluster import nvml, nvml_build
from simcluster.sim import hardware
from simcluster.sim.mig_parted import Outcome


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


# -- NVIDIA's mig-parted on a node's GPUs ------------------------------------------------------------------------------

_LOGRUS_MESSAGE = re.compile(r'level=(?:fatal|error) msg="((?:[^"\\]|\\.)*)"')


def _message(stderr: str) -> str:
    """mig-parted's own last error (logrus prints ``level=fatal msg="..."``), else its last line."""
    found = _LOGRUS_MESSAGE.findall(stderr)
    if found:
        return found[-1].replace('\\"', '"')
    lines = [line for line in stderr.strip().splitlines() if "IOMMU FD" not in line]
    return lines[-1] if lines else ""


@dataclass
class RealMigParted:
    """``nvidia-mig-parted apply --mode-only`` and ``apply`` run for real on a simulated node's GPUs: the
    node's GPUs are written as a host state in ``workdir`` (one per node, UUIDs kept between calls), the real
    binary runs in that host's view, and the GPUs are read back. Same results as ``sim.mig_parted``'s mirrored
    ``apply_mode`` and ``apply`` (an ``Outcome``), so the simulated MIG manager can take either."""

    binary: Path
    library: Path
    workdir: Path

    def _run(self, node: str, model: str, gpus: list[hardware.Gpu], gpu_in_use: bool, document: str,
             config: str, args: list[str], host_faults: dict[str, bool]) -> Outcome:
        self.workdir.mkdir(parents=True, exist_ok=True)
        state = (self.workdir / f"{node}.json").resolve()
        uuids = None
        if state.exists():
            previous = nvml.load(state)
            if len(previous["gpus"]) == len(gpus) and previous["model"]["key"] == model:
                uuids = [gpu["uuid"] for gpu in previous["gpus"]]
        data = host_state(model, gpus, uuids)
        data["faults"] = {name: True for name, on in host_faults.items() if on}
        if gpu_in_use:
            for gpu in data["gpus"]:
                gpu["clients"] = [f"a running pod on {node}"]
        with nvml.locked(state):
            nvml.save(state, data)
        script = nvml.run_script(state)
        if not script.exists() or shlex.quote(str(self.library)) not in script.read_text():
            nvml.prepare_host(state, data, library=self.library)
        config_file = self.workdir / f"{node}.config.yaml"
        config_file.write_text(document)
        result = subprocess.run([str(script), str(self.binary), *args, "-f", str(config_file), "-c", config],
                                capture_output=True, text=True, timeout=300)
        after = node_gpus(nvml.load(state))
        if result.returncode != 0:
            return Outcome(after, False, _message(result.stderr))
        return Outcome(after, True)

    def apply_mode(self, node: str, model: str, gpus: list[hardware.Gpu], gpu_in_use: bool, document: str,
                   config: str, reset_needs_reboot: bool = False) -> Outcome:
        return self._run(node, model, gpus, gpu_in_use, document, config, ["apply", "--mode-only"],
                         {"reset_keeps_pending": reset_needs_reboot})

    def apply(self, node: str, model: str, gpus: list[hardware.Gpu], gpu_in_use: bool, document: str,
              config: str, create_fails: bool = False, reset_needs_reboot: bool = False) -> Outcome:
        # A full apply changes the mode first when it is wrong (and resets): the reset fault holds here too.
        return self._run(node, model, gpus, gpu_in_use, document, config, ["apply"],
                         {"create_fails": create_fails, "reset_keeps_pending": reset_needs_reboot})


REAL_MIG_PARTED_ENV = "SIMCLUSTER_REAL_MIG_PARTED"


def from_environment(state_dir: Path | None) -> RealMigParted | None:
    """The switch of issue 17's item 5, off unless ``SIMCLUSTER_REAL_MIG_PARTED=1``: the simulated MIG manager
    then applies with NVIDIA's real mig-parted on per-node host states in ``<state dir>/nvml/``. Off by default:
    it costs some 2 s of CPU per 8-GPU node (docs/simcluster.md)."""
    if os.environ.get(REAL_MIG_PARTED_ENV) != "1":
        return None
    from simcluster import upstream

    built = upstream.find()
    library = nvml_build.find()
    if built is None or library is None:
        raise nvml.NvmlError(f"{REAL_MIG_PARTED_ENV}=1 needs nvidia-mig-parted and {nvml_build.LIBRARY_NAME} built: "
                             f"run 'simcluster build'")
    workdir = (state_dir if state_dir is not None else Path(tempfile.mkdtemp(prefix="simcluster-nvml-"))) / "nvml"
    return RealMigParted(built.mig_parted, library, workdir)
