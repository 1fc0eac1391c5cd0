"""A simulated node's GPUs as a GPU-less NVML host, and back: how the simulated cluster's MIG manager runs
NVIDIA's real mig-parted on its nodes.

The simulator keeps a node's GPUs as ``sim.hardware.Gpu`` values (MIG mode, pending mode, GPU instances at a
placement with their compute instances, by profile name). ``host_state`` writes them as a host state file
(``simcluster.nvml``), with NVML's profile ids from the model's tables; ``node_gpus`` reads a host state back.
A round trip keeps everything the simulator knows; the host state adds what only NVML has (UUIDs, instance
ids, compute placements).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simcluster import nvml, nvml_build
from simcluster.sim import hardware
from simcluster.sim.faults import NodeFaults
from simcluster.sim.gpus import GpuModel
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


def host_state(model: str, gpus: list[hardware.Gpu], uuids: list[str] | None = None,
               previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """A host state holding these GPUs of ``model`` (a ``simcluster models`` key), as the library serves it.
    With ``previous`` (the host's last state), the GPUs keep their UUIDs and every compute instance still at
    the same place keeps its MIG device UUID, as on hardware."""
    if previous is not None and previous["model"]["key"] == model and len(previous["gpus"]) == len(gpus):
        uuids = [gpu["uuid"] for gpu in previous["gpus"]]
    else:
        previous = None
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
            kept = _mig_uuids(previous["gpus"][index]) if previous is not None else {}
            compute_instances: list[dict[str, Any]] = []
            taken: list[tuple[int, int]] = []
            for ci_id, name in enumerate(instance.compute):
                compute = computes.get(name)
                if compute is None:
                    raise ConversionError(f"GPU {index}: {name} is not a compute instance profile of "
                                          f"{instance.profile}")
                start = _first_free(taken, profile["slice_count"], compute["slice_count"])
                taken.append((start, compute["slice_count"]))
                place = (instance.start, profile["id"], start, compute["id"])
                compute_instances.append({"id": ci_id, "profile_id": compute["id"], "start": start,
                                          "size": compute["slice_count"],
                                          "uuid": kept.get(place) or nvml.new_mig_uuid()})
            record["gpu_instances"].append({"id": number, "profile_id": profile["id"], "start": instance.start,
                                            "size": size, "compute_instances": compute_instances})
    return data


def _mig_uuids(gpu: dict[str, Any]) -> dict[tuple[int, int, int, int], str]:
    """A GPU's MIG device UUIDs by where they are: (GPU instance start, its profile, compute start, profile)."""
    return {(gi["start"], gi["profile_id"], ci["start"], ci["profile_id"]): ci["uuid"]
            for gi in gpu["gpu_instances"] for ci in gi["compute_instances"]}


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


def host_faults(faults: NodeFaults) -> dict[str, bool]:
    """The node's fault knobs that are the host's hardware: ``reboot_required`` is a reset that leaves a MIG
    mode change pending, ``apply_fails`` a GPU instance creation that NVML refuses."""
    return {"reset_keeps_pending": faults.reboot_required, "create_fails": faults.apply_fails}


class RunCounts:
    """How often a memoized tool ran for real, for how long, and how often its answer was replayed, kept in a
    JSON file (``bench/rollout.py`` reports it) written at most every half second: a write costs about as much
    as a replay."""

    DELAY_S = 0.5

    def __init__(self, path: Path):
        self.path = path
        self.runs = 0
        self.replays = 0
        self.run_seconds = 0.0
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def ran(self, seconds: float) -> None:
        with self._lock:
            self.runs += 1
            self.run_seconds += seconds
        self._schedule()

    def replayed(self) -> None:
        with self._lock:
            self.replays += 1
        self._schedule()

    def _schedule(self) -> None:
        with self._lock:
            if self._timer is not None:
                return
            self._timer = threading.Timer(self.DELAY_S, self._flush)
            self._timer.daemon = True
            self._timer.start()

    def _flush(self) -> None:
        with self._lock:
            self._timer = None
            counts = {"runs": self.runs, "run_seconds": round(self.run_seconds, 3), "replays": self.replays}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.path.with_name(f".{self.path.name}.{threading.get_ident()}")
        scratch.write_text(json.dumps(counts))
        scratch.replace(self.path)

    def close(self) -> None:
        """Write the counts now and stop the pending write (before the directory goes away)."""
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            self._flush()


class RunOnce:
    """Answers remembered by input: the first caller of an input computes it while later callers of the same
    input wait for that answer; other inputs go on meanwhile. At most ``size`` answers are kept (then all are
    forgotten)."""

    def __init__(self, size: int = 4096):
        self.size = size
        self._answers: dict[Hashable, Any] = {}
        self._gates: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], Any]) -> tuple[Any, bool]:
        """The answer for ``key`` and whether this call computed it."""
        with self._lock:
            if key in self._answers:
                return self._answers[key], False
            gate = self._gates.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                if key in self._answers:  # computed by another caller meanwhile
                    return self._answers[key], False
            answer = compute()
            with self._lock:
                if len(self._answers) >= self.size:
                    self._answers.clear()
                    self._gates = {key: gate}
                self._answers[key] = answer
            return answer, True


@dataclass
class RealMigParted:
    """NVIDIA's ``nvidia-mig-parted`` (``assert``, ``assert --mode-only``, ``apply --mode-only``, ``apply``) run
    for real on a simulated node's GPUs through the GPU-less NVML: the node's GPUs are written as the host state
    ``<workdir>/<node>.json`` (UUIDs kept between calls), the binary runs in that host's view, and the GPUs are
    read back from what it left.

    A command's outcome depends only on its input: the GPUs (mode, pending mode, instances), whether a process
    holds them, the host's fault knobs, the config file and the config name. mig-parted is deterministic on
    that input (UUIDs aside), so the binary runs once per distinct input, and a node that meets the same input
    later gets the remembered outcome (exit status, mig-parted's message, the GPUs it left), with its own
    UUIDs kept: a 200-node rollout of two models runs the binary a handful of times, not a thousand
    (``docs/simcluster.md`` has the cost of each). ``counts`` counts both, in ``<workdir>/mig-parted-runs.json``."""

    binary: Path
    library: Path
    workdir: Path
    counts: RunCounts = field(init=False, repr=False)
    _outcomes: RunOnce = field(default_factory=RunOnce, repr=False)

    COUNTS_FILE = "mig-parted-runs.json"

    def __post_init__(self) -> None:
        self.counts = RunCounts(self.workdir / self.COUNTS_FILE)

    def state_file(self, node: str) -> Path:
        return (self.workdir / f"{node}.json").resolve()

    def _previous(self, state: Path) -> dict[str, Any] | None:
        try:
            return nvml.load(state) if state.exists() else None
        except nvml.NvmlError:
            return None  # a damaged file is rewritten from the node's GPUs

    def record(self, node: str, model: str, gpus: list[hardware.Gpu]) -> Path:
        """Write the node's host state for these GPUs (when they differ from what it holds), and the host's view
        (what programs run on the host see: ``nvml.prepare_host``) when it has none yet."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        state = self.state_file(node)
        with nvml.locked(state):
            previous = self._previous(state)
            same_host = previous is not None and previous["model"]["key"] == model and \
                len(previous["gpus"]) == len(gpus)
            if not (same_host and node_gpus(previous) == gpus):
                data = host_state(model, gpus, previous=previous)
                if previous is not None:
                    data["faults"] = previous.get("faults", {})
                nvml.save(state, data)
        if not same_host or not nvml.host_view_current(state, self.library):
            nvml.prepare_host(state, library=self.library)
        return state

    def _run(self, node: str, model: str, gpus: list[hardware.Gpu], gpu_in_use: bool, document: str,
             config: str, args: list[str], faults: dict[str, bool]) -> tuple[bool, str, str]:
        """Run the binary on the node's host; its exit, its message and the GPUs it left (encoded)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        state = self.state_file(node)
        with nvml.locked(state):
            previous = self._previous(state)
            data = host_state(model, gpus, previous=previous)
            data["faults"] = {name: True for name, on in faults.items() if on}
            if gpu_in_use:
                for gpu in data["gpus"]:
                    gpu["clients"] = [f"a running pod on {node}"]
            nvml.save(state, data)
        script = nvml.run_script(state)
        same_host = previous is not None and previous["model"]["key"] == model and len(previous["gpus"]) == len(gpus)
        if not same_host or not nvml.host_view_current(state, self.library):
            nvml.prepare_host(state, data, library=self.library)  # the PCI tree shows the host's GPUs
        config_file = self.workdir / f"{node}.config.yaml"
        config_file.write_text(document)
        started = time.monotonic()
        result = subprocess.run([str(script), str(self.binary), *args, "-f", str(config_file), "-c", config],
                                capture_output=True, text=True, timeout=300)
        self.counts.ran(time.monotonic() - started)
        with nvml.locked(state):
            after = nvml.load(state)
            for gpu in after["gpus"]:
                gpu.pop("clients", None)  # the pod's hold is the kubelet's to say, call by call
            nvml.save(state, after)
        return (result.returncode == 0, "" if result.returncode == 0 else _message(result.stderr),
                hardware.encode(node_gpus(after)))

    def _command(self, node: str, model: GpuModel, gpus: list[hardware.Gpu], gpu_in_use: bool, document: str,
                 config: str, args: list[str], faults: NodeFaults) -> Outcome:
        knobs = host_faults(faults)
        key = (model.key, hardware.encode(gpus), gpu_in_use, tuple(sorted(k for k, on in knobs.items() if on)),
               tuple(args), hashlib.sha256(document.encode()).hexdigest(), config)
        # Nodes meeting the same input at once wait for one run of the binary.
        (ok, message, encoded), ran = self._outcomes.get(key, lambda: self._run(
            node, model.key, gpus, gpu_in_use, document, config, args, knobs))
        after = hardware.decode(encoded)
        if not ran:
            self.counts.replayed()
            self.record(node, model.key, after)
        return Outcome(after, ok, message)

    def close(self) -> None:
        self.counts.close()

    # The four commands of the MIG manager's sequence (reconfigure-mig.sh and its Go port).

    def assert_config(self, node: str, model: GpuModel, gpus: list[hardware.Gpu], gpu_in_use: bool,
                      document: str, config: str, faults: NodeFaults) -> bool:
        return self._command(node, model, gpus, gpu_in_use, document, config, ["assert"], faults).ok

    def assert_mode(self, node: str, model: GpuModel, gpus: list[hardware.Gpu], gpu_in_use: bool,
                    document: str, config: str, faults: NodeFaults) -> bool:
        return self._command(node, model, gpus, gpu_in_use, document, config, ["assert", "--mode-only"], faults).ok

    def apply_mode(self, node: str, model: GpuModel, gpus: list[hardware.Gpu], gpu_in_use: bool,
                   document: str, config: str, faults: NodeFaults) -> Outcome:
        return self._command(node, model, gpus, gpu_in_use, document, config, ["apply", "--mode-only"], faults)

    def apply(self, node: str, model: GpuModel, gpus: list[hardware.Gpu], gpu_in_use: bool,
              document: str, config: str, faults: NodeFaults) -> Outcome:
        return self._command(node, model, gpus, gpu_in_use, document, config, ["apply"], faults)


def for_cluster(state_dir: Path | None) -> RealMigParted:
    """The real mig-parted for a simulated cluster's MIG manager, its host states in ``<state dir>/nvml/``."""
    from simcluster import upstream

    built = upstream.find()
    library = nvml_build.find()
    if built is None or library is None:
        raise nvml.NvmlError(f"the simulated MIG manager needs nvidia-mig-parted and {nvml_build.LIBRARY_NAME} "
                             f"built: run 'simcluster build'")
    workdir = (state_dir if state_dir is not None else Path(tempfile.mkdtemp(prefix="simcluster-nvml-"))) / "nvml"
    return RealMigParted(built.mig_parted, library, workdir)
