"""NVIDIA's device plugin asked, through the GPU-less NVML, what it makes of a simulated node's GPUs: how the
simulated device plugin and GPU feature discovery read a node's MIG devices as the real ones do.

``device-plugin-probe`` (``device_plugin_build``) runs in the node's host view (``nvml.prepare_host``) on its
host state ``<state dir>/nvml/<node>.json``, the file NVIDIA's mig-parted left (``nvml_node.RealMigParted``):

* ``resources``: the device plugin's start under a MIG strategy: the resources it registers, or the error it
  exits with (its own device map and checks);
* ``devices``: what GFD's labelers read: driver versions, and per GPU its name, memory, compute capability, MIG
  mode, PCI class and MIG devices with their NVML attributes.

An answer depends only on the GPUs' layout (MIG modes and instances; UUIDs appear in neither), so the probe runs
once per distinct layout, strategy and question, and nodes meeting it again get the remembered answer, without
reading their host state (GFD asks at every reconcile of its node: some 450 times per node in a rollout).
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simcluster import device_plugin_build, nvml
from simcluster.nvml_node import RealMigParted, RunCounts, RunOnce
from simcluster.sim import hardware
from simcluster.sim.gpus import GpuModel


class ProbeError(RuntimeError):
    """The probe itself could not answer (not the device plugin refusing the GPUs)."""


@dataclass
class DevicePluginProbe:
    """Asks ``device-plugin-probe`` about a node (see the module docstring); ``counts`` in
    ``<the mig-parted runner's workdir>/device-plugin-probe-runs.json``."""

    binary: Path
    mig_parted: RealMigParted
    counts: RunCounts = field(init=False, repr=False)
    _answers: RunOnce = field(default_factory=RunOnce, repr=False)

    COUNTS_FILE = "device-plugin-probe-runs.json"

    def __post_init__(self) -> None:
        self.counts = RunCounts(self.mig_parted.workdir / self.COUNTS_FILE)

    def _ask(self, node: str, model: GpuModel, gpus: list[hardware.Gpu], args: list[str]) -> dict[str, Any]:
        # A remembered answer touches no file (GFD asks at every reconcile of its node).
        answer, ran = self._answers.get((model.key, hardware.encode(gpus), tuple(args)),
                                        lambda: self._run(node, model, gpus, args))
        if not ran:
            self.counts.replayed()
        return answer

    def _run(self, node: str, model: GpuModel, gpus: list[hardware.Gpu], args: list[str]) -> dict[str, Any]:
        # The node's host state holds its GPUs (written when they differ: a node no MIG manager has run on yet,
        # or one whose reboot changed its GPUs since mig-parted last wrote it), and has its host view.
        state = self.mig_parted.record(node, model.key, gpus)
        started = time.monotonic()
        result = subprocess.run([str(nvml.run_script(state)), str(self.binary), *args],
                                capture_output=True, text=True, timeout=120)
        self.counts.ran(time.monotonic() - started)
        if result.returncode != 0:
            lines = result.stderr.strip().splitlines()
            raise ProbeError(f"{device_plugin_build.PROBE_NAME} {' '.join(args)} on {node}: "
                             f"{lines[-1] if lines else f'exit {result.returncode}'}")
        return json.loads(result.stdout)

    def resources(self, node: str, model: GpuModel, gpus: list[hardware.Gpu],
                  strategy: str) -> tuple[dict[str, int], str]:
        """What the device plugin registers on this node under ``strategy``, or the error it exits with."""
        answer = self._ask(node, model, gpus, ["resources", "--mig-strategy", strategy])
        return dict(answer.get("resources") or {}), answer.get("error", "")

    def devices(self, node: str, model: GpuModel, gpus: list[hardware.Gpu]) -> dict[str, Any]:
        """What GFD reads of this node's GPUs (see the module docstring)."""
        return self._ask(node, model, gpus, ["devices"])


def for_cluster(mig_parted: RealMigParted) -> DevicePluginProbe:
    """The probe over the cluster's host states (the one ``simcluster build`` built)."""
    binary = device_plugin_build.find()
    if binary is None:
        raise nvml.NvmlError(f"the simulated device plugin and GFD need {device_plugin_build.PROBE_NAME} built: "
                             f"run 'simcluster build'")
    return DevicePluginProbe(binary, mig_parted)
