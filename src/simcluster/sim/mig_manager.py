"""NVIDIA's k8s-mig-manager, simulated on every node that runs its pod.

It follows the label protocol of mig-parted v0.15 (``pkg/mig/reconfigure``):

* a run starts when the MIG manager process starts (it applies the current
  ``nvidia.com/mig.config``) or when that label changes to a new non-empty value;
  changes during a run collapse to the latest value; re-writing the same value does nothing;
* unknown config -> ``failed`` (no ``pending``); already applied -> ``success``;
* otherwise ``pending``, operand labels ``paused-for-mig-change``, wait for the
  operand pods to go, change MIG mode (a reboot when needed and ``WITH_REBOOT=true``:
  ``rebooting``), apply the layout, restore the operand labels, ``success``;
* an apply error -> ``failed``; a GPU in use by a pod makes the GPU reset fail;
* the pod-wait bug of v0.15.0 (fault ``stuck_pending``) leaves ``pending`` and paused labels.

It acts only where a MIG manager pod runs (the operator's DaemonSet, found by its app label) and
reads its settings where the real one does: ``WITH_REBOOT`` from the pod's environment, the config
file as ``mig_configs`` finds it for the manager's version.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from migrollout import labels
from migrollout.evacuation.selection import requests_gpu
from migrollout.migconfig import GpuLayout
from simcluster.sim import hardware
from simcluster.sim.hardware import NodeFaults
from simcluster.sim.mig_configs import MigConfigs, MigManagerPod, apply_problems, resolve_config

if TYPE_CHECKING:
    from simcluster.sim.simulator import NodeView, Simulator

log = logging.getLogger("simcluster.mig-manager")

POD_WAIT_TIMEOUT_S = 300.0  # each of the real manager's pod waits gives up after 5 minutes
OPERAND_APPS = (labels.APP_DEVICE_PLUGIN, labels.APP_GFD, labels.APP_DCGM_EXPORTER, labels.APP_DCGM)


@dataclass
class Run:
    config: str
    desired: list[GpuLayout]
    mode_change: bool
    phase: str = "waiting-operands"
    deadline: float = 0.0
    apply_at: float = 0.0
    mode_failed: str = ""
    started: float = field(default_factory=time.monotonic)


def pod_env(pod: dict, name: str) -> str | None:
    for container in pod.get("spec", {}).get("containers") or []:
        for item in container.get("env") or []:
            if item.get("name") == name:
                return item.get("value")
    return None


class MigManagerSim:
    def __init__(self, sim: Simulator):
        self.sim = sim
        self.runs: dict[str, Run] = {}
        self.process: dict[str, str] = {}   # node -> identity of the running manager process
        self.observed: dict[str, str] = {}  # node -> label value last seen
        self.wanted: dict[str, str] = {}    # node -> value a change asked for, not yet run
        self.mode_after_reboot: dict[str, list[bool]] = {}
        self.configs = MigConfigs(sim)

    # -- triggering ------------------------------------------------------------------------------------------

    def reconcile(self, view: NodeView) -> None:
        name = view.name
        pod = view.running_operand(labels.APP_MIG_MANAGER)
        if pod is None or hardware.gpu_model(view.node) is None:
            # No MIG manager process on the node: a run in flight dies with it.
            for table in (self.runs, self.process, self.wanted):
                table.pop(name, None)
            self.configs.forget(name)
            return
        identity = f"{pod['metadata']['uid']}/{self.sim.boot_epoch.get(name, 0)}"
        label = view.labels.get(labels.MIG_CONFIG, "")
        if self.process.get(name) != identity:
            # A (re)started manager applies the current label, whatever happened before.
            self.process[name] = identity
            self.runs.pop(name, None)
            self.observed[name] = label
            if label:
                self.wanted[name] = label
        elif label != self.observed.get(name):
            self.observed[name] = label
            if label:
                self.wanted[name] = label

        run = self.runs.get(name)
        if run is not None:
            self._step(view, pod, run)
            return
        config = self.wanted.pop(name, None)
        if config:
            self._start(view, pod, config)

    def _finish(self, view: NodeView, run: Run | None, state: str | None, reason: str = "") -> None:
        name = view.name
        if state is not None:
            patch: dict[str, str | None] = {labels.MIG_CONFIG_STATE: state}
            for operand in labels.PAUSABLE_OPERANDS:
                key = labels.DEPLOY_PREFIX + operand
                if view.labels.get(key) == labels.PAUSED:
                    patch[key] = "true"
            self.sim.patch_node_labels(name, patch)
        if reason:
            log.info("node %s: mig config %s -> %s: %s", name, run.config if run else "-", state or "(no state)",
                     reason)
        self.runs.pop(name, None)
        if run is not None and self.wanted.get(name) == run.config:
            # Set() to the value just applied while it ran: Get() would not return it again.
            self.wanted.pop(name, None)
        if self.wanted.get(name):
            self.sim.queue.add(name)

    # -- the run -----------------------------------------------------------------------------------------------

    def _start(self, view: NodeView, pod: dict, config: str) -> None:
        name = view.name
        model = hardware.gpu_model(view.node)
        assert model is not None
        current = hardware.layouts(view.node)
        loaded = self.configs.load(view, MigManagerPod.of(pod), model)
        if loaded.config is None:
            self._finish(view, Run(config, current, False), "failed", loaded.error)
            return
        resolution = resolve_config(loaded.config, config, model, current)
        if resolution.desired is None:
            self._finish(view, Run(config, current, False), "failed", resolution.error)
            return
        desired = resolution.desired
        if [d.normalized() for d in desired] == [c.normalized() for c in current]:
            self._finish(view, Run(config, desired, False), "success", "already applied")
            return
        mode_change = any(d.mig_enabled != c.mig_enabled for d, c in zip(desired, current, strict=True))
        run = Run(config, desired, mode_change, deadline=time.monotonic() + POD_WAIT_TIMEOUT_S)
        if mode_change and view.labels.get(labels.MIG_CONFIG_STATE) == "rebooting":
            self._finish(view, run, "failed", "MIG mode change did not take effect after rebooting")
            return
        self.sim.patch_node_labels(name, {labels.MIG_CONFIG_STATE: "pending"})
        pause: dict[str, str | None] = {}
        for operand in labels.PAUSABLE_OPERANDS:
            key = labels.DEPLOY_PREFIX + operand
            value = view.labels.get(key)
            if value == "false" or (operand == "client" and value is None):
                continue
            pause[key] = labels.PAUSED
        self.sim.patch_node_labels(name, pause)
        if NodeFaults.from_annotations(hardware.annotations_of(view.node)).stuck_pending:
            # mig-parted <= v0.15.0 returns from a failed pod wait without setting a state.
            self._finish(view, run, None, "timed out waiting for operand pods; state left pending (upstream bug)")
            return
        self.runs[name] = run
        self.sim.queue.add_after(name, 0.2)

    def _step(self, view: NodeView, pod: dict, run: Run) -> None:
        now = time.monotonic()
        if run.phase == "waiting-operands":
            remaining = [p for p in view.pods if p["metadata"].get("labels", {}).get("app") in OPERAND_APPS
                         or self._is_gpu_client_daemon(p)]
            if remaining:
                if now > run.deadline:
                    self._finish(view, run, None, "operand pods did not terminate; state left pending")
                else:
                    self.sim.queue.add_after(view.name, 1.0)
                return
            self._change_mode(view, pod, run)
            return
        if run.phase == "applying":
            if now < run.apply_at:
                self.sim.queue.add_after(view.name, run.apply_at - now)
                return
            self._apply(view, run)

    def _is_gpu_client_daemon(self, pod: dict) -> bool:
        owners = pod["metadata"].get("ownerReferences") or []
        selector = pod.get("spec", {}).get("nodeSelector") or {}
        return any(o.get("kind") == "DaemonSet" for o in owners) and labels.DEPLOY_PREFIX + "client" in selector

    def _gpu_in_use(self, view: NodeView) -> bool:
        return any(requests_gpu(p) and p.get("status", {}).get("phase") == "Running" for p in view.pods)

    def _change_mode(self, view: NodeView, pod: dict, run: Run) -> None:
        name = view.name
        faults = NodeFaults.from_annotations(hardware.annotations_of(view.node))
        if run.mode_change:
            busy = self._gpu_in_use(view)
            if busy or faults.reboot_required:
                if MigManagerPod.of(pod).with_reboot:
                    self.sim.patch_node_labels(name, {labels.MIG_CONFIG_STATE: "rebooting"})
                    self.mode_after_reboot[name] = [layout.mig_enabled for layout in run.desired]
                    log.info("node %s: MIG mode change needs a reboot; rebooting", name)
                    self.runs.pop(name, None)
                    self.sim.reboot(name)
                    return
                run.mode_failed = ("GPU reset failed: In use by another client" if busy
                                   else "MIG mode change is pending a reboot (WITH_REBOOT is not true)")
            else:
                current = hardware.layouts(view.node)
                changed = [GpuLayout(want.mig_enabled, {}) if want.mig_enabled != have.mig_enabled else have
                           for want, have in zip(run.desired, current, strict=True)]
                self.sim.set_layouts(name, changed)
        delay = faults.apply_delay_s if faults.apply_delay_s is not None else self.sim.fleet.simulation.apply_delay_s
        run.phase = "applying"
        run.apply_at = time.monotonic() + delay
        self.sim.queue.add_after(name, delay)

    def _apply(self, view: NodeView, run: Run) -> None:
        model = hardware.gpu_model(view.node)
        assert model is not None
        faults = NodeFaults.from_annotations(hardware.annotations_of(view.node))
        if run.mode_failed:
            self._finish(view, run, "failed", run.mode_failed)
            return
        if faults.apply_fails:
            self._finish(view, run, "failed", "nvidia-mig-parted apply failed (injected fault)")
            return
        problems = apply_problems(run.desired, model)
        if problems:
            self._finish(view, run, "failed", "nvidia-mig-parted apply failed: " + "; ".join(problems))
            return
        current = hardware.layouts(view.node)
        changing = any(d.normalized() != c.normalized() for d, c in zip(run.desired, current, strict=True))
        if changing and self._gpu_in_use(view):
            self._finish(view, run, "failed", "destroying GPU instances failed: In use by another client")
            return
        self.sim.set_layouts(view.name, run.desired)
        self._finish(view, run, "success", f"applied in {time.monotonic() - run.started:.1f} s")

    # -- reboots -------------------------------------------------------------------------------------------------

    def after_reboot(self, node: dict) -> list[GpuLayout]:
        """GPU state after a reboot: a pending mode change takes effect (unless the fault says it
        does not), and MIG devices are gone, as they are not persistent across reboots."""
        name = node["metadata"]["name"]
        faults = NodeFaults.from_annotations(hardware.annotations_of(node))
        modes = self.mode_after_reboot.pop(name, None)
        current = hardware.layouts(node)
        if modes is None or faults.reboot_fails:
            modes = [layout.mig_enabled for layout in current]
        return [GpuLayout(enabled, {}) for enabled in modes]
