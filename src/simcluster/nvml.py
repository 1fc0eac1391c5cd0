"""A GPU-less NVML: one GPU host's state in one file, served by a built ``libnvidia-ml.so.1``.

What it is for: NVIDIA's real ``nvidia-mig-parted`` (``apply``, ``assert``, ``export``) partitions the GPUs
of a host that has none. The pieces:

- the library (``gobuild/nvml/``, built by ``simcluster build`` with cgo ``-buildmode=c-shared`` into the
  cache: ``simcluster.nvml_build``; ``simcluster path nvml``): NVML's C ABI, every answer read from the state
  file named by ``SIMCLUSTER_NVML_STATE`` and every mutation written back under the file's lock. The entry points that
  mig-parted and go-nvlib call are implemented; every other one declared in go-nvml's ``nvml.h`` is
  generated at build time and answers ``NVML_ERROR_NOT_SUPPORTED``.
- the state file (``simcluster nvml init``): the model's MIG tables (go-nvml's recorded tables through
  mig-oracle for A100 and A30; the MIG user guide's, from ``data/gpus.yaml``, for H100 on), and per GPU its
  UUID, PCI bus id, MIG mode (current and pending), GPU and compute instances with their placements, and the
  processes that hold it (a fault knob: a reset is refused while one does).
- the host's view (``<state>.host/run COMMAND``, or ``simcluster nvml exec``): a private mount namespace in
  which ``/proc/modules`` lists the ``nvidia`` module, ``/sys/bus/pci/devices`` holds one NVIDIA PCI function
  per GPU, ``nvidia-smi`` is a stand-in that supports exactly ``-r -i`` and ``--query-gpu``, and the library is
  the one the dynamic loader finds. mig-parted reads all three (``cmd/nvidia-mig-parted/util`` in v0.10.0).
- a reset (the ``nvidia-smi`` stand-in) and a reboot (``simcluster nvml reboot``) act on the file as the
  hardware does: see ``reset_gpus`` and ``reboot``.

This module imports only the standard library (and ``nvml_build``, which does too) at the top: the
``nvidia-smi`` stand-in starts once per reset.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from simcluster.nvml_build import library_dir

STATE_ENV = "SIMCLUSTER_NVML_STATE"
STATE_VERSION = 1

# A host with no GPU driver has no driver version; these are what the library reports (the NVML major
# version must be 11 or more for mig-parted to use NVML at all).
DRIVER_VERSION = "580.95.05"
NVML_VERSION = "13.580.95.05"
CUDA_DRIVER_VERSION = 13000

MIG_DISABLED, MIG_ENABLED = 0, 1

# nvmlDeviceArchitecture_t by CUDA compute capability major.minor (nvml.h's NVML_DEVICE_ARCH_*).
_ARCHITECTURES = {(7, 5): 6, (8, 0): 7, (8, 6): 7, (8, 9): 8, (9, 0): 9, (10, 0): 10}

# NVML's GPU instance profile ids (nvml.h NVML_GPU_INSTANCE_PROFILE_*), for the models whose tables come from
# the MIG user guide: by compute slices; "+me" is the REV1 profile of 1 and 2 slices; a 1-slice profile with
# two memory slices (1g.20gb on H100) is the REV2 one.
_GI_PROFILE_BY_SLICES = {1: 0, 2: 1, 3: 2, 4: 3, 7: 4, 8: 5, 6: 6}
_GI_PROFILE_MEDIA_EXTENSIONS = {1: 7, 2: 8}
_GI_PROFILE_1_SLICE_REV2 = 9
# NVML's compute instance profile ids (NVML_COMPUTE_INSTANCE_PROFILE_*), by compute slices.
_CI_PROFILE_BY_SLICES = {1: 0, 2: 1, 3: 2, 4: 3, 7: 4, 8: 5, 6: 6}


class NvmlError(RuntimeError):
    """A one-line problem with the host state or the command line."""


# -- the state file ---------------------------------------------------------------------------------------------------

def lock_path(state: Path) -> Path:
    return Path(f"{state}.lock")


def host_dir(state: Path) -> Path:
    """Beside the state file: the PCI tree, the fake module list and the nvidia-smi stand-in."""
    return Path(f"{state}.host")


@contextlib.contextmanager
def locked(state: Path) -> Iterator[None]:
    """The host's lock, held exclusively (the library takes the same one around every mutation)."""
    with open(lock_path(state), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load(state: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(state).read_text())
    except FileNotFoundError:
        raise NvmlError(f"{state}: no such GPU host state (create it with 'simcluster nvml init')") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise NvmlError(f"{state}: not a GPU host state: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        raise NvmlError(f"{state}: not a GPU host state of version {STATE_VERSION}")
    return data


def save(state: Path, data: dict[str, Any]) -> None:
    """Replace the file whole (the library reads it without the lock, so never a half-written file)."""
    state = Path(state)
    fd, tmp = tempfile.mkstemp(prefix=state.name + ".tmp-", dir=state.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            # Compact: the C encoder (pretty-printing takes Python's, ten times slower; the simulated cluster
            # writes a node's state at each mig-parted command). `simcluster nvml show --json` indents it.
            handle.write(json.dumps(data, separators=(",", ":")) + "\n")
        os.replace(tmp, state)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def mutating(state: Path) -> Iterator[dict[str, Any]]:
    """Read, let the caller change, and write the state, all under the lock."""
    with locked(state):
        data = load(state)
        yield data
        save(state, data)


def _documented_profiles(model: Any) -> list[dict[str, Any]]:
    profiles = []
    for profile in model.profiles:
        slices = profile.compute_slices
        if "+me" in profile.name:
            profile_id = _GI_PROFILE_MEDIA_EXTENSIONS[slices]
        elif slices == 1 and profile.memory_slices == 2:
            profile_id = _GI_PROFILE_1_SLICE_REV2
        else:
            profile_id = _GI_PROFILE_BY_SLICES[slices]
        profiles.append({
            "id": profile_id, "name": profile.name, "slice_count": slices,
            "instance_count": profile.instances, "memory_mib": profile.memory_mib,
            "multiprocessor_count": profile.multiprocessors, "copy_engines": profile.copy_engines,
            "decoders": profile.decoders, "encoders": profile.encoders, "jpegs": profile.jpegs,
            "ofas": profile.ofas, "p2p": False,
            "placements": [{"start": start, "size": profile.memory_slices} for start in profile.starts],
            "compute_profiles": [{"id": _CI_PROFILE_BY_SLICES[compute.slices], "name": compute.name,
                                  "slice_count": compute.slices, "instance_count": compute.instances,
                                  "multiprocessor_count": compute.multiprocessors}
                                 for compute in profile.compute_profiles],
        })
    return profiles


def model_table(name: str) -> dict[str, Any]:
    """The ``model`` part of a host state: what NVML says of one GPU of this model, MIG tables included."""
    from simcluster.sim import gpus  # the catalogue (and, for recorded tables, mig-oracle)

    described = gpus.described().find(name)
    if described is None:
        raise NvmlError(f"unknown GPU model {name!r} (simcluster models lists them: "
                        f"{', '.join(gpus.described().keys())})")
    capability = described.compute_capability
    architecture = _ARCHITECTURES.get(capability)
    if architecture is None:
        raise NvmlError(f"{described.key}: no NVML architecture known for compute capability "
                        f"{capability[0]}.{capability[1]}")
    table: dict[str, Any] = {
        "key": described.key, "product": described.product, "pci_device_id": int(described.device_id, 16),
        "pci_subsystem_id": 0, "memory_mib": described.memory_mib, "compute_capability": list(capability),
        "architecture": architecture, "mig_capable": described.mig_capable,
        # A100 and A30 (Ampere) apply a MIG mode change at the next GPU reset; from Hopper on, at once.
        "mig_mode_change": "reset" if capability[0] < 9 else "immediate",
        "gpu_instance_profiles": [],
    }
    if described.mig == "recorded":
        recorded = gpus.shared_oracle().tables()[described.recorded_table]
        table["memory_mib"] = int(recorded["memory_mib"])
        table["gpu_instance_profiles"] = [
            {key: profile[key] for key in ("id", "name", "slice_count", "instance_count", "memory_mib",
                                           "multiprocessor_count", "copy_engines", "decoders", "encoders",
                                           "jpegs", "ofas", "p2p", "placements")}
            | {"compute_profiles": [{key: compute[key] for key in ("id", "name", "slice_count", "instance_count",
                                                                   "multiprocessor_count")}
                                    for compute in profile["compute_profiles"]]}
            for profile in recorded["profiles"]
        ]
    elif described.mig == "documented":
        table["gpu_instance_profiles"] = _documented_profiles(described)
    return table


def new_mig_uuid() -> str:
    """A MIG device UUID in NVML's form (the library makes its own the same way)."""
    return f"MIG-{uuid.uuid4()}"


def pci_bus_id(index: int) -> str:
    """NVML's form of the PCI address of GPU ``index`` on a simulated host."""
    return f"00000000:{0x10 + index:02X}:00.0"


def new_state(model: str, count: int) -> dict[str, Any]:
    if not 1 <= count <= 16:
        raise NvmlError(f"--count must be between 1 and 16, not {count}")
    return {
        "version": STATE_VERSION, "faults": {},
        "driver_version": DRIVER_VERSION, "nvml_version": NVML_VERSION,
        "cuda_driver_version": CUDA_DRIVER_VERSION, "model": model_table(model),
        "gpus": [{"index": index, "uuid": f"GPU-{uuid.uuid4()}", "pci_bus_id": pci_bus_id(index),
                  "mig": {"current": MIG_DISABLED, "pending": MIG_DISABLED}, "clients": [], "gpu_instances": []}
                 for index in range(count)],
    }


def init(state: Path, model: str, count: int) -> dict[str, Any]:
    """Create (or replace) the host state with ``count`` GPUs of ``model``, MIG disabled, and its host view."""
    state = Path(state)
    data = new_state(model, count)
    state.parent.mkdir(parents=True, exist_ok=True)
    with locked(state):
        save(state, data)
    prepare_host(state, data)
    return data


# -- what a reset and a reboot do ---------------------------------------------------------------------------------

def _find_gpu(data: dict[str, Any], wanted: str) -> dict[str, Any]:
    """A GPU by index, UUID or PCI bus id (either form), as nvidia-smi's -i accepts them."""
    wanted = wanted.strip()
    for gpu in data["gpus"]:
        if wanted == str(gpu["index"]) or wanted == gpu["uuid"]:
            return gpu
        if _bus_key(wanted) is not None and _bus_key(wanted) == _bus_key(gpu["pci_bus_id"]):
            return gpu
    raise NvmlError(f"No devices were found matching {wanted!r}")


def _bus_key(text: str) -> tuple[int, ...] | None:
    match = re.fullmatch(r"([0-9a-fA-F]+):([0-9a-fA-F]+):([0-9a-fA-F]+)\.([0-9a-fA-F]+)", text.strip())
    return tuple(int(part, 16) for part in match.groups()) if match else None


def reset_gpus(state: Path, targets: list[str]) -> list[str]:
    """A GPU reset of each target: the pending MIG mode takes effect and every GPU instance is gone.

    Refused as a whole (nothing changes) while a process holds one of them. With the host's fault
    ``reset_keeps_pending`` the mode change stays pending (only a reboot applies it). Returns the bus ids reset.
    """
    with mutating(state) as data:
        gpus = [_find_gpu(data, target) for target in targets]
        busy = [gpu for gpu in gpus if gpu["clients"]]
        if busy:
            gpu = busy[0]
            raise NvmlError(f"Unable to reset GPU {gpu['pci_bus_id']} because it's being used by some other "
                            f"process ({', '.join(gpu['clients'])})")
        keeps_pending = bool((data.get("faults") or {}).get("reset_keeps_pending"))
        for gpu in gpus:
            if not keeps_pending:
                gpu["mig"]["current"] = gpu["mig"]["pending"]
            gpu["gpu_instances"] = []
    return [gpu["pci_bus_id"] for gpu in gpus]


def reboot(state: Path) -> None:
    """A host reboot: no process holds a GPU any more and no GPU instance survives. A100 and A30 keep their
    MIG mode, the pending one taking effect; from H100 on the MIG mode is lost (disabled)."""
    with mutating(state) as data:
        immediate = data["model"]["mig_mode_change"] == "immediate"
        for gpu in data["gpus"]:
            mode = MIG_DISABLED if immediate else gpu["mig"]["pending"]
            gpu["mig"] = {"current": mode, "pending": mode}
            gpu["gpu_instances"] = []
            gpu["clients"] = []


def hold(state: Path, index: int, client: str) -> None:
    """The fault knob: a process (``client``, e.g. 'pid 4242 cuda-app') now holds GPU ``index``."""
    with mutating(state) as data:
        _find_gpu(data, str(index))["clients"].append(client)


def release(state: Path, index: int | None) -> None:
    with mutating(state) as data:
        for gpu in data["gpus"]:
            if index is None or gpu["index"] == index:
                gpu["clients"] = []


# -- reading it -----------------------------------------------------------------------------------------------------

def _mode(value: int) -> str:
    return "Enabled" if value == MIG_ENABLED else "Disabled"


def describe(data: dict[str, Any]) -> str:
    model = data["model"]
    profiles = {profile["id"]: profile for profile in model["gpu_instance_profiles"]}
    change = {"reset": "pending until a GPU reset or reboot", "immediate": "at once; lost at reboot"}
    lines = [f"{len(data['gpus'])} x {model['product']} ({model['key']}); "
             + (f"MIG mode change: {change[model['mig_mode_change']]}" if model["mig_capable"] else "no MIG")]
    for gpu in data["gpus"]:
        mig = gpu["mig"]
        mode = _mode(mig["current"]) + (f" (pending: {_mode(mig['pending'])})" if mig["pending"] != mig["current"]
                                        else "")
        holders = ", ".join(gpu["clients"]) or "none"
        lines.append(f"GPU {gpu['index']} {gpu['pci_bus_id']} {gpu['uuid']}  MIG {mode}  held by: {holders}")
        for gi in sorted(gpu["gpu_instances"], key=lambda item: item["start"]):
            profile = profiles.get(gi["profile_id"], {})
            lines.append(f"  GPU instance {gi['id']:<2} {profile.get('name', gi['profile_id']):<12} "
                         f"memory slices {gi['start']}-{gi['start'] + gi['size'] - 1}")
            computes = {compute["id"]: compute for compute in profile.get("compute_profiles", [])}
            for ci in gi["compute_instances"]:
                name = computes.get(ci["profile_id"], {}).get("name", ci["profile_id"])
                lines.append(f"    compute instance {ci['id']} {name:<12} slices {ci['start']}-"
                             f"{ci['start'] + ci['size'] - 1}  {ci['uuid']}")
    return "\n".join(lines)


def mig_layout(data: dict[str, Any]) -> list[dict[str, int]]:
    """Per GPU, how many MIG devices of each name it holds (what mig-parted's export counts)."""
    profiles = {profile["id"]: profile for profile in data["model"]["gpu_instance_profiles"]}
    layout = []
    for gpu in data["gpus"]:
        counts: dict[str, int] = {}
        for gi in gpu["gpu_instances"]:
            computes = {c["id"]: c for c in profiles[gi["profile_id"]]["compute_profiles"]}
            for ci in gi["compute_instances"]:
                name = computes[ci["profile_id"]]["name"]
                counts[name] = counts.get(name, 0) + 1
        layout.append(counts)
    return layout


# -- the host's view: PCI tree, module list, nvidia-smi ---------------------------------------------------------

def prepare_host(state: Path, data: dict[str, Any] | None = None, library: Path | None = None) -> Path:
    """Write the host view beside the state file (idempotent): what mig-parted reads besides NVML, and the
    ``run`` script that enters it. ``library``: the directory of the built library (default: where
    ``simcluster build`` puts it)."""
    state = Path(state).resolve()
    data = data if data is not None else load(state)
    root = host_dir(state)
    pci = root / "pci-devices"
    shutil.rmtree(pci, ignore_errors=True)
    pci.mkdir(parents=True)
    device_id = data["model"]["pci_device_id"]
    for gpu in data["gpus"]:
        domain, bus, dev, function = _bus_key(gpu["pci_bus_id"])  # type: ignore[misc]
        function_dir = pci / f"{domain:04x}:{bus:02x}:{dev:02x}.{function:x}"
        function_dir.mkdir()
        # What go-nvlib's nvpci reads of a PCI function: an NVIDIA (0x10de) 3D controller (class 0x0302).
        for name, value in (("vendor", "0x10de"), ("device", f"0x{device_id >> 16:04x}"), ("class", "0x030200"),
                            ("subsystem_vendor", "0x10de"), ("subsystem_device", "0x0000"), ("numa_node", "-1"),
                            ("resource", "0x0000000000000000 0x0000000000000000 0x0000000000000000")):
            (function_dir / name).write_text(value + "\n")
    (root / "modules").write_text("nvidia 0 0 - Live 0x0000000000000000\n")
    caps = root / "proc-driver" / "nvidia-caps"
    caps.mkdir(parents=True, exist_ok=True)
    (caps / "mig-minors").write_text(mig_minors(len(data["gpus"])))
    bin_dir = root / "bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\n# simcluster's nvidia-smi stand-in: -r -i and --query-gpu only\n"
                   f"exec {shlex.quote(sys.executable)} -m simcluster.nvml smi \"$@\"\n")
    smi.chmod(0o755)
    run = root / "run"
    run.write_text(_RUN_SCRIPT.format(
        version=HOST_VIEW_VERSION, state=shlex.quote(str(state)), root=shlex.quote(str(root)),
        library=shlex.quote(str(library if library is not None else library_dir()))))
    run.chmod(0o755)
    return root


# Runs a command inside the host's view: a private mount namespace (util-linux unshare; root needed) in which
# /proc/modules lists the nvidia module, /sys/bus/pci/devices is the host's PCI tree, /proc/driver holds the
# driver's MIG capability minors, the library comes first for the dynamic loader and nvidia-smi is the stand-in. A kernel without /proc/modules (no loadable modules)
# has nothing to bind over: a tmpfs on /proc holds the list and links the rest to a fresh proc inside it
# (not the numbered process directories: /proc/self is what programs read). A shell script, not Python: it
# runs once per mig-parted call, and starts in milliseconds.
_RUN_SCRIPT = """#!/bin/sh
# Generated by simcluster (simcluster.nvml.prepare_host, host view {version}): run a command on the GPU host {state}.
[ $# -gt 0 ] || {{ echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }}
export SIMCLUSTER_NVML_STATE={state}
export LD_LIBRARY_PATH={library}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}
export PATH={root}/bin:$PATH
exec unshare --mount --propagation private /bin/sh -c '
set -e
if [ -e /proc/modules ]; then
    mount --bind "$0/modules" /proc/modules
else
    mount -t tmpfs -o mode=0555 simcluster-proc /proc
    mkdir /proc/.proc
    mount -t proc proc /proc/.proc
    ln -s /proc/.proc/[!0-9]* /proc/
    cp "$0/modules" /proc/modules
fi
mount --bind "$0/pci-devices" /sys/bus/pci/devices
mount --bind "$0/proc-driver" /proc/driver
exec "$@"' {root} "$@"
"""


# The driver's numbering of MIG capability device minors (the MIG user guide, "Device Nodes and
# Capabilities"): the config and monitor capabilities, then per GPU each GPU instance id 0-14 followed by
# its compute instance ids 0-7.
_MIG_CAP_GPU_INSTANCES = 15
_MIG_CAP_COMPUTE_INSTANCES = 8


def mig_minors(gpu_count: int) -> str:
    """``/proc/driver/nvidia-caps/mig-minors`` of a host with ``gpu_count`` GPUs: where NVIDIA's device plugin
    finds the device node of each MIG device's GPU and compute instance capability."""
    lines = ["config 1", "monitor 2"]
    minor = 3
    for gpu in range(gpu_count):
        for gi in range(_MIG_CAP_GPU_INSTANCES):
            lines.append(f"gpu{gpu}/gi{gi}/access {minor}")
            minor += 1
            for ci in range(_MIG_CAP_COMPUTE_INSTANCES):
                lines.append(f"gpu{gpu}/gi{gi}/ci{ci}/access {minor}")
                minor += 1
    return "\n".join(lines) + "\n"


# Raised whenever the host view gains something (2: /proc/driver/nvidia-caps), so that older views are rewritten.
HOST_VIEW_VERSION = 2


def host_view_current(state: Path, library: Path) -> bool:
    """Whether the host's ``run`` script exists, is of this version and loads ``library``."""
    script = run_script(state)
    if not script.exists():
        return False
    text = script.read_text()
    return f"host view {HOST_VIEW_VERSION})" in text and shlex.quote(str(library)) in text


def run_script(state: Path) -> Path:
    """The host's ``run`` script (see ``prepare_host``)."""
    return host_dir(Path(state).resolve()) / "run"


def exec_on_host(state: Path, argv: list[str], library: Path) -> None:
    """Become ``argv`` inside the host's view (never returns)."""
    state = Path(state).resolve()
    if not argv:
        raise NvmlError("nothing to run: give a command after --")
    script = run_script(state)
    if not host_view_current(state, library):
        prepare_host(state, library=library)
    os.execv(str(script), [str(script), *argv])


# -- the nvidia-smi stand-in -----------------------------------------------------------------------------------------

_QUERY_FIELDS = {
    "index": lambda data, gpu: str(gpu["index"]),
    "pci.bus_id": lambda data, gpu: gpu["pci_bus_id"],
    "uuid": lambda data, gpu: gpu["uuid"],
    "name": lambda data, gpu: data["model"]["product"],
    "memory.total": lambda data, gpu: f"{data['model']['memory_mib']} MiB",
    "mig.mode.current": lambda data, gpu: _mode(gpu["mig"]["current"]) if data["model"]["mig_capable"] else "[N/A]",
    "mig.mode.pending": lambda data, gpu: _mode(gpu["mig"]["pending"]) if data["model"]["mig_capable"] else "[N/A]",
}


def smi(argv: list[str], out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> int:
    """``nvidia-smi -r -i ID[,ID...]`` and ``nvidia-smi --query-gpu=F,... --format=csv[,noheader]``."""
    state_name = os.environ.get(STATE_ENV)
    if not state_name:
        print(f"nvidia-smi (simcluster stand-in): {STATE_ENV} is not set", file=err)
        return 9
    state = Path(state_name)
    try:
        if len(argv) == 3 and argv[0] in ("-r", "--gpu-reset") and argv[1] in ("-i", "--id"):
            for bus_id in reset_gpus(state, argv[2].split(",")):
                print(f"GPU {bus_id} was successfully reset.", file=out)
            print("All done.", file=out)
            return 0
        queries = [a.split("=", 1)[1] for a in argv if a.startswith("--query-gpu=")]
        formats = [a.split("=", 1)[1] for a in argv if a.startswith("--format=")]
        if len(queries) == 1 and len(argv) == len(queries) + len(formats) and formats and \
                formats[0].split(",")[0] == "csv":
            fields = [f.strip() for f in queries[0].split(",")]
            unknown = [f for f in fields if f not in _QUERY_FIELDS]
            if unknown:
                print(f'Field "{unknown[0]}" is not a valid field to query.', file=err)
                return 2
            data = load(state)
            if "noheader" not in formats[0].split(","):
                print(", ".join(fields), file=out)
            for gpu in data["gpus"]:
                print(", ".join(_QUERY_FIELDS[f](data, gpu) for f in fields), file=out)
            return 0
    except NvmlError as exc:
        print(str(exc), file=err)
        return 255
    print("nvidia-smi (simcluster stand-in) supports only '-r -i ID[,ID...]' and "
          "'--query-gpu=FIELDS --format=csv[,noheader]'", file=err)
    return 2


def main(argv: list[str] | None = None) -> int:
    """``python -m simcluster.nvml smi ARGS``: the nvidia-smi stand-in, quick to start without the CLI's
    imports, as it runs once per reset (``simcluster nvml exec`` runs a command on a host)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["smi"]:
        return smi(args[1:])
    print("usage: python -m simcluster.nvml smi ARGS", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
