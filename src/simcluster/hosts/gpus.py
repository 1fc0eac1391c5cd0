"""A test host's GPUs: the GPU-less NVML's state and view (PCI tree, module list, nvidia-smi), with the fleet's
fault knobs that mean something on a bare-metal host.

The fleet file is the cluster's (:mod:`simcluster.fleet`), so a host takes the knobs of
:class:`simcluster.sim.faults.NodeFaults`. On a host they are the hardware's, not a simulator's:

- ``apply_fails``: NVML refuses to create GPU instances (the state's ``create_fails``), so NVIDIA's
  ``nvidia-mig-parted apply`` fails after the MIG mode change, as on the cluster;
- ``reboot_required``: no GPU can be reset (no ``reset`` file in its PCI function, which NVIDIA's ``service.sh``
  checks, and a reset leaves a mode change pending: ``reset_keeps_pending``), so a mode change takes a reboot;
- ``reboot_fails``: a reboot does not apply a pending MIG mode change either (the host's reboot hook,
  :func:`reboot`); the GPUs come back in the mode they had.

The mapping of the first two to the NVML state is :func:`simcluster.nvml_node.host_faults`, the one the
cluster's real-mig-parted MIG manager uses. ``apply_delay_s`` and ``stuck_pending``/``stuck_pending_once``
have no meaning here (see docs/baremetal.md).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from simcluster import nvml
from simcluster.nvml_node import host_faults
from simcluster.sim.faults import NodeFaults

# Knobs a host acts on; the others are refused by `simcluster hosts up`, so a fleet does not promise what a host
# does not do.
HOST_KNOBS = ("apply_fails", "reboot_required", "reboot_fails")


def unsupported(faults: dict[str, Any]) -> list[str]:
    """The knobs set in ``faults`` that a test host does not act on."""
    return sorted(knob for knob, value in faults.items() if value and knob not in HOST_KNOBS)


def init(state: Path, model: str, count: int, faults: dict[str, Any]) -> Path:
    """The host's GPUs (MIG disabled) with its fault knobs; returns the host view's directory."""
    nvml.init(state, model, count)
    knobs = NodeFaults().merged({knob: value for knob, value in faults.items() if knob in HOST_KNOBS})
    with nvml.mutating(state) as data:
        data["faults"] = {name: True for name, on in host_faults(knobs).items() if on}
    view = nvml.host_dir(state)
    if not knobs.reboot_required:
        for function in (view / "pci-devices").iterdir():
            (function / "reset").write_text("")
    return view


def reboot(state: Path, mode_change_takes: bool) -> None:
    """The GPUs' side of a host reboot (:func:`simcluster.nvml.reboot`); with ``reboot_fails`` a pending MIG mode
    change does not take effect: a GPU whose mode survives a reboot (A100, A30) keeps the mode it had."""
    before = [gpu["mig"]["current"] for gpu in nvml.load(state)["gpus"]]
    nvml.reboot(state)
    if mode_change_takes:
        return
    with nvml.mutating(state) as data:
        if data["model"]["mig_mode_change"] == "immediate":
            return  # Hopper's MIG mode is lost at every reboot
        for gpu, mode in zip(data["gpus"], before, strict=True):
            gpu["mig"] = {"current": mode, "pending": mode}


def main(argv: list[str]) -> int:
    """``python -m simcluster.hosts.gpus reboot STATE [--mode-change-fails]``: the host's reboot hook."""
    if len(argv) < 2 or argv[0] != "reboot":
        print("usage: python -m simcluster.hosts.gpus reboot STATE [--mode-change-fails]", file=sys.stderr)
        return 2
    reboot(Path(argv[1]), "--mode-change-fails" not in argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
