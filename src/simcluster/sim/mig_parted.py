"""nvidia-mig-parted, as the MIG manager runs it on a simulated node.

What needs no GPU is NVIDIA's own code: ``assert --valid-config`` runs the real CLI (built by
``simcluster build``) on the very file the MIG manager's pod reads, and which config entry applies to
which GPU is mig-parted's selection (device-filter and devices), asked of the ``mig-oracle`` helper
with each simulated GPU's PCI id. What touches GPUs is mirrored here from mig-parted v0.10.0's
``cmd/nvidia-mig-parted/{assert,apply}`` and ``pkg/mig/config``, on the simulated NVML of ``hardware``:

* ``assert`` passes only when every GPU of the node matches its entry (a GPU no entry selects fails it);
  an entry with ``mig-enabled: false`` matches a disabled GPU, or an enabled one without MIG devices;
* ``apply --mode-only`` clears the MIG devices of every selected MIG-enabled GPU, sets the mode (pending)
  and, when any change is pending, resets all GPUs: refused while a GPU is in use, and on a node whose
  mode changes need a reboot the reset leaves the change pending;
* ``apply`` skips GPUs already at their entry and rebuilds the others, trying every ordering of the
  devices (as ``iteratePermutationsUntilSuccess`` does) before giving up and clearing the GPU.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from simcluster.sim import hardware
from simcluster.sim.gpus import GpuModel, parse_profile
from simcluster.sim.hardware import Gpu

MAX_ORDERINGS = 20000  # far above any real layout (at most 7 MIG devices per GPU)


class Selector(Protocol):
    """mig-oracle's ``select``: for each (index, PCI id) GPU, the entry of the config that applies to it."""

    def select(self, document: str, config: str, devices: list[tuple[int, str]]) -> list[dict]: ...


@dataclass(frozen=True)
class Entry:
    """The part of a config entry that mig-parted applies to one GPU."""

    mig_enabled: bool
    mig_devices: dict[str, int]


@dataclass(frozen=True)
class Selection:
    """Which entry applies to each GPU (None: no entry selects it, so nothing touches it)."""

    entries: tuple[Entry | None, ...]

    def selected(self) -> list[tuple[int, Entry]]:
        return [(index, entry) for index, entry in enumerate(self.entries) if entry is not None]


@dataclass
class Outcome:
    """The GPUs after a command, whether it succeeded, and what it printed."""

    gpus: list[Gpu]
    ok: bool
    message: str = ""
    log: list[str] = field(default_factory=list)


def validate(binary: Path, document: str, config: str) -> tuple[bool, str]:
    """``nvidia-mig-parted assert --valid-config -f <file> -c <config>``, run for real: (valid, its message)."""
    with tempfile.NamedTemporaryFile("w", prefix="mig-parted-config-", suffix=".yaml") as file:
        file.write(document)
        file.flush()
        result = subprocess.run([str(binary), "assert", "--valid-config", "-f", file.name, "-c", config],
                                capture_output=True, text=True, timeout=60)
    output = (result.stderr.strip() or result.stdout.strip()).splitlines()
    message = output[-1] if output else f"exit {result.returncode}"
    if 'msg="' in message:  # logrus: time="..." level=fatal msg="Error ...": keep what it said
        message = message.split('msg="', 1)[1].rstrip('"')
    return result.returncode == 0, message


def select(selector: Selector, document: str, config: str, model: GpuModel, count: int) -> Selection:
    answers = selector.select(document, config, [(index, model.device_id) for index in range(count)])
    entries: list[Entry | None] = [None] * count
    for answer in answers:
        if answer.get("entry") is None:
            continue
        devices = answer.get("mig_devices") or {}
        entries[int(answer["index"])] = Entry(bool(answer["mig_enabled"]), {str(k): int(v) for k, v in devices.items()})
    return Selection(tuple(entries))


# -- assert ------------------------------------------------------------------------------------------------------

def _mode_matches(model: GpuModel, gpu: Gpu, entry: Entry) -> bool:
    if not model.mig_capable:
        return not entry.mig_enabled
    return gpu.mig_enabled == entry.mig_enabled


def assert_mode(model: GpuModel, gpus: list[Gpu], selection: Selection) -> bool:
    """``assert --mode-only``: every selected GPU's current mode is its entry's."""
    return all(_mode_matches(model, gpus[index], entry) for index, entry in selection.selected())


def _equals(current: dict[str, int], wanted: dict[str, int]) -> bool:
    # types.MigConfig.Equals: same number of keys, and each key of current present (count > 0) and equal.
    if len(current) != len(wanted):
        return False
    return all(wanted.get(name, 0) > 0 and wanted[name] == count for name, count in current.items())


def assert_applied(model: GpuModel, gpus: list[Gpu], selection: Selection) -> bool:
    """``assert``: the mode and the MIG devices of every GPU on the node are those of its entry."""
    if not assert_mode(model, gpus, selection):
        return False
    matched = [False] * len(gpus)
    for index, entry in selection.selected():
        gpu = gpus[index]
        if (not model.mig_capable and not entry.mig_enabled) or (not entry.mig_enabled and not gpu.mig_enabled):
            matched[index] = True
        elif gpu.mig_enabled:
            matched[index] = _equals(gpu.device_counts(), entry.mig_devices)
    return all(matched)


# -- apply --mode-only -----------------------------------------------------------------------------------------

def apply_mode(model: GpuModel, gpus: list[Gpu], selection: Selection, gpu_in_use: bool,
               reset_needs_reboot: bool) -> Outcome:
    result = list(gpus)
    log: list[str] = []
    pending = False
    for index, entry in selection.selected():
        if not model.mig_capable:
            continue  # skipped: a non MIG-capable GPU under "devices: all"
        gpu = result[index]
        if gpu.mig_enabled:
            if gpu.instances and gpu_in_use:
                return Outcome(result, False, f"error clearing existing MIG configurations: error destroying GPU "
                                              f"instance: {hardware.IN_USE}", log)
            gpu = hardware.cleared(gpu)
        gpu = hardware.with_mode(gpu, entry.mig_enabled)
        result[index] = gpu
        pending = pending or gpu.pending_mig is not None
    if not pending:
        return Outcome(result, True, "", log)
    # A pending change needs all GPUs reset (nvidia-smi -r over every GPU of the node).
    if gpu_in_use:
        return Outcome(result, False, f"error resetting all GPUs: {hardware.IN_USE}", log)
    if reset_needs_reboot:
        log.append("GPU reset done; the MIG mode change is pending a reboot")
        return Outcome(result, True, "", log)
    return Outcome([hardware.after_reset(gpu) for gpu in result], True, "", log)


# -- apply -----------------------------------------------------------------------------------------------------------

def flatten(devices: dict[str, int]) -> list[str]:
    """types.MigConfig.Flatten: one name per device; larger GPU instances first, then larger compute instances,
    then attributes in descending order."""
    names = [name for name, count in devices.items() for _ in range(max(count, 0))]

    def key(name: str) -> tuple[int, int, str]:
        parsed = parse_profile(name)
        return (parsed.gpu, parsed.compute, ",".join(parsed.attributes)) if parsed else (0, 0, name)

    return sorted(names, key=key, reverse=True)


def orderings(items: list[str]) -> Iterator[list[str]]:
    """Every distinct ordering, in the order mig-parted's swap-based iteration visits them."""
    items = list(items)

    def visit(i: int) -> Iterator[list[str]]:
        if i >= len(items):
            yield list(items)
            return
        seen: set[str] = set()
        for j in range(i, len(items)):
            if items[j] in seen:
                continue
            seen.add(items[j])
            items[i], items[j] = items[j], items[i]
            yield from visit(i + 1)
            items[i], items[j] = items[j], items[i]

    return visit(0)


def _try_ordering(model: GpuModel, start: Gpu, names: list[str]) -> tuple[Gpu | None, str]:
    gpu = start
    last_profile = ""
    index = -1
    for name in names:
        resolved = model.device_profile(name)
        if resolved is None:
            return None, f"unsupported MIG device {name}"
        gi_profile, ci_profile = resolved
        reuse = index >= 0 and last_profile == gi_profile.name
        last_profile = gi_profile.name
        while True:
            if not reuse:
                created = hardware.create_gpu_instance(model, gpu, gi_profile)
                if created.error:
                    return None, f"error creating GPU instance for '{name}': {created.error}"
                gpu, index = created.gpu, created.index
            computed = hardware.create_compute_instance(gpu, index, gi_profile, ci_profile)
            if computed.error:
                if reuse:
                    reuse = False
                    continue
                return None, f"error creating Compute instance for '{name}': {computed.error}"
            gpu = computed.gpu
            break
    return gpu, ""


def set_mig_config(model: GpuModel, gpu: Gpu, devices: dict[str, int]) -> tuple[Gpu, str]:
    """pkg/mig/config SetMigConfig: clear the GPU, then create the devices in the first ordering that fits.
    When none fits the GPU is cleared and left empty, as mig-parted leaves it."""
    names = flatten(devices)
    unknown = sorted({name for name in names if model.device_profile(name) is None})
    if unknown:
        # NVML refuses the profile in every ordering; say which one once.
        return hardware.cleared(gpu), (f"error attempting multiple config orderings: all orderings failed "
                                       f"({', '.join(unknown)}: not a MIG profile of {model.product})")
    last = ""
    for attempt, ordering in enumerate(orderings(names)):
        if attempt >= MAX_ORDERINGS:
            break
        placed, last = _try_ordering(model, hardware.cleared(gpu), ordering)
        if placed is not None:
            return placed, ""
    return hardware.cleared(gpu), f"error attempting multiple config orderings: all orderings failed ({last})"


def apply(model: GpuModel, gpus: list[Gpu], selection: Selection, gpu_in_use: bool,
          fails: Callable[[int], str] | None = None) -> Outcome:
    """``apply`` (the full config): every selected GPU in index order, stopping at the first error."""
    result = list(gpus)
    for index, entry in selection.selected():
        gpu = result[index]
        if not model.mig_capable:
            continue
        if entry.mig_enabled and not gpu.mig_enabled:
            return Outcome(result, False, "unable to apply MIG config with MIG mode disabled")
        if not entry.mig_enabled and gpu.mig_enabled:
            return Outcome(result, False, "MIG mode is currently enabled, but the configuration specifies it "
                                          "should be disabled")
        if not entry.mig_enabled:
            continue
        if _equals(gpu.device_counts(), entry.mig_devices):
            continue
        if gpu.instances and gpu_in_use:
            return Outcome(result, False, f"error setting MIGConfig: error clearing MigConfig: {hardware.IN_USE}")
        injected = fails(index) if fails else ""
        if injected:
            return Outcome(result, False, f"error setting MIGConfig: {injected}")
        placed, error = set_mig_config(model, gpu, entry.mig_devices)
        result[index] = placed
        if error:
            return Outcome(result, False, f"error setting MIGConfig: {error}")
    return Outcome(result, True)


class Mirrored:
    """The mirrored commands above behind the interface of ``nvml_node.RealMigParted`` (which the running
    simulator uses): the MIG manager's unit tests drive its state machine with this one, without binaries.
    The conformance suite holds the two to the same results."""

    def __init__(self, selector: Selector):
        self.selector = selector

    def _selection(self, model: GpuModel, document: str, config: str, count: int) -> Selection:
        return select(self.selector, document, config, model, count)

    def assert_config(self, node: str, model: GpuModel, gpus: list[Gpu], gpu_in_use: bool, document: str,
                      config: str, faults: Any) -> bool:
        return assert_applied(model, gpus, self._selection(model, document, config, len(gpus)))

    def assert_mode(self, node: str, model: GpuModel, gpus: list[Gpu], gpu_in_use: bool, document: str,
                    config: str, faults: Any) -> bool:
        return assert_mode(model, gpus, self._selection(model, document, config, len(gpus)))

    def apply_mode(self, node: str, model: GpuModel, gpus: list[Gpu], gpu_in_use: bool, document: str,
                   config: str, faults: Any) -> Outcome:
        return apply_mode(model, gpus, self._selection(model, document, config, len(gpus)), gpu_in_use,
                          reset_needs_reboot=faults.reboot_required)

    def apply(self, node: str, model: GpuModel, gpus: list[Gpu], gpu_in_use: bool, document: str,
              config: str, faults: Any) -> Outcome:
        injected = "injected fault (apply_fails)" if faults.apply_fails else ""
        return apply(model, gpus, self._selection(model, document, config, len(gpus)), gpu_in_use,
                     fails=lambda _index: injected)
