"""NVIDIA's device plugin (k8s-device-plugin v0.17.4, the chart's), simulated where its pod runs.

What it registers is NVIDIA's own answer: when the plugin's pod starts, the device plugin's resource managers
(``internal/rm``: its default resource patterns, its device map and the MIG strategy's checks) run for real
over the node's GPUs as NVML reports them from the node's host state (``simcluster.device_plugin_probe``), with
the ``MIG_STRATEGY`` of its pod's environment (absent: ``none``, its default). What that gives, for reading the
tests: ``none`` counts every GPU as ``nvidia.com/gpu``; ``single`` counts GPUs without MIG and MIG devices as
``nvidia.com/gpu`` and refuses mixed or unlike MIG devices and empty MIG-enabled GPUs; ``mixed`` counts GPUs
without MIG as ``nvidia.com/gpu`` and a MIG device under the first whole-instance profile found in its name
(its resource patterns are not anchored: a ``1g.10gb+me`` device as ``nvidia.com/mig-1g.10gb``, a
``1c.3g.40gb`` device as ``nvidia.com/mig-3g.40gb``).

The plugin reads the devices once, when it starts (the MIG manager restarts it around a change by pausing its
deploy label); a refusal crash-loops its pod. The kubelet keeps the capacity of a plugin that has gone away but
can allocate none of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from migrollout.timestamps import time_text
from simcluster.sim import hardware, names
from simcluster.sim.gpus import GpuModel
from simcluster.sim.pod_env import pod_env
from simcluster.sim.view import Clock, NodeView, Wake, Writer, start_delay_left


@dataclass(frozen=True)
class Registration:
    """The resources the plugin registers with the kubelet, or why it exits instead."""

    resources: dict[str, int]
    error: str = ""


class Probe(Protocol):
    """``simcluster.device_plugin_probe.DevicePluginProbe``: the device plugin's own answer for a node."""

    def resources(self, node: str, model: GpuModel, gpus: list[hardware.Gpu],
                  strategy: str) -> tuple[dict[str, int], str]: ...


class DevicePlugin:
    """Publishes the registered resources on the node's status while the plugin's pod runs."""

    def __init__(self, writer: Writer, clock: Clock, wake: Wake, start_delay_s: float,
                 ready_at: dict[str, float], model_of: Callable[[str], GpuModel | None],
                 boot_epoch: Callable[[str], int], probe: Probe):
        self.writer = writer
        self.probe = probe
        self.clock = clock
        self.wake = wake
        self.start_delay_s = start_delay_s
        self.ready_at = ready_at            # pod uid -> when the kubelet made it ready (the kubelet's table)
        self.model_of = model_of
        self.boot_epoch = boot_epoch
        self.started: dict[str, Registration] = {}  # "<pod uid>/<boot>" -> what that process registered

    def reconcile(self, view: NodeView) -> None:
        key = hardware.model_key(view.node)
        model = self.model_of(key) if key else None
        if model is None:
            return
        pod = view.running_operand(names.APP_DEVICE_PLUGIN)
        registration: Registration | None = None
        if pod is not None:
            process = f"{pod['metadata']['uid']}/{self.boot_epoch(view.name)}"
            registration = self.started.get(process)
            if registration is None:
                left = start_delay_left(self.ready_at, pod, self.clock(), self.start_delay_s)
                if left > 0:
                    self.wake(view.name, left)
                    return
                strategy = pod_env(pod, "MIG_STRATEGY") or "none"
                resources, error = self.probe.resources(view.name, model, hardware.gpus(view.node), strategy)
                registration = self.started[process] = Registration(resources, error)
                if registration.error:
                    self._crash(pod, registration.error)
        status = view.node.get("status", {})
        capacity = {k: v for k, v in (status.get("capacity") or {}).items() if names.is_nvidia_resource(k)}
        allocatable = {k: v for k, v in (status.get("allocatable") or {}).items() if names.is_nvidia_resource(k)}
        if registration is None or registration.error:
            # The kubelet keeps the capacity of a vanished plugin but can allocate none of it.
            want_capacity = capacity
            want_allocatable = {k: "0" for k in set(capacity) | set(allocatable)}
        else:
            keys = set(capacity) | set(allocatable) | set(registration.resources)
            want_capacity = {k: str(registration.resources.get(k, 0)) for k in keys}
            want_allocatable = dict(want_capacity)
        if want_capacity == capacity and want_allocatable == allocatable:
            return
        self.writer.patch_node_status(view.name, {"status": {"capacity": want_capacity,
                                                             "allocatable": want_allocatable}})

    def _crash(self, pod: dict[str, Any], error: str) -> None:
        now = time_text()
        containers = [
            {"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": False, "restartCount": 1,
             "started": False, "state": {"waiting": {"reason": "CrashLoopBackOff", "message": error}},
             "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": error, "finishedAt": now}}}
            for c in pod.get("spec", {}).get("containers") or []
        ]
        conditions = [{"type": kind, "status": "False", "reason": "ContainersNotReady",
                       "lastTransitionTime": now} for kind in ("Ready", "ContainersReady")]
        self.writer.patch_pod_status(pod, {"status": {"conditions": conditions, "containerStatuses": containers}})

    def forget_pod(self, uid: str) -> None:
        for key in [k for k in self.started if k.startswith(uid + "/")]:
            del self.started[key]
