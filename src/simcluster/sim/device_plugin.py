"""NVIDIA's device plugin (k8s-device-plugin v0.17), simulated where its pod runs.

Which resources it registers follows ``internal/rm`` of the plugin (``AddDefaultResourcesToConfig``,
``device_map.go``), with the ``MIG_STRATEGY`` of its pod's environment (absent: ``none``, its default):

* ``none``: every GPU is one ``nvidia.com/gpu``, MIG-enabled or not;
* ``single``: GPUs without MIG and MIG devices are all ``nvidia.com/gpu``; the plugin refuses to start when
  a MIG-enabled GPU has no MIG device, when the MIG devices are not all alike (their NVML attributes
  differ), or when MIG-enabled and MIG-disabled GPUs are mixed;
* ``mixed``: GPUs without MIG are ``nvidia.com/gpu``; each MIG device is ``nvidia.com/mig-<profile>``
  (``+`` written ``.``), for the profiles of the GPU whose compute instance is its whole GPU instance; a
  MIG device of any other profile (``1c.3g.20gb``) matches no resource and the plugin refuses to start; an
  empty MIG-enabled GPU is only a warning.

The plugin reads the devices once, when it starts (the MIG manager restarts it around a change by pausing
its deploy label); a refusal crash-loops its pod. The kubelet keeps the capacity of a plugin that has gone
away but can allocate none of it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from migrollout.timestamps import time_text
from simcluster.sim import hardware, names
from simcluster.sim.gpus import GpuModel
from simcluster.sim.hardware import Gpu
from simcluster.sim.pod_env import pod_env
from simcluster.sim.view import Clock, NodeView, Wake, Writer, start_delay_left

STRATEGIES = ("none", "single", "mixed")


@dataclass(frozen=True)
class Registration:
    """The resources the plugin registers with the kubelet, or why it exits instead."""

    resources: dict[str, int]
    error: str = ""


def resource_name(profile: str) -> str:
    return names.MIG_RESOURCE_PREFIX + profile.replace("+", ".")


def register(model: GpuModel, gpus: list[Gpu], strategy: str) -> Registration:
    """The device map the plugin builds at start for these GPUs under this strategy."""
    if strategy not in STRATEGIES:
        return Registration({}, f"unknown MIG strategy: {strategy}")
    if strategy == "none":
        return Registration({names.GPU_RESOURCE: len(gpus)} if gpus else {})
    whole = sum(1 for gpu in gpus if not gpu.mig_enabled)
    devices = hardware.mig_devices(model, gpus)
    if strategy == "single":
        error = _single_strategy_error(gpus, devices, whole)
        if error:
            return Registration({}, error)
        count = whole + len(devices)
        return Registration({names.GPU_RESOURCE: count} if count else {})
    patterns = {p.name for p in model.profiles}  # VisitMigProfiles: C == G profiles only
    resources: Counter = Counter()
    for device in devices:
        if device.name not in patterns:
            return Registration({}, f"error building device map from config.resources: error building MIG device "
                                    f"map: MIG profile '{device.name}' does not match any resource patterns")
        resources[resource_name(device.name)] += 1
    if whole:
        resources[names.GPU_RESOURCE] = whole
    return Registration(dict(sorted(resources.items())))


def _single_strategy_error(gpus: list[Gpu], devices: list[hardware.MigDevice], whole: int) -> str:
    prefix = "error building device map from config.resources: invalid MIG configuration: "
    for index, gpu in enumerate(gpus):
        if gpu.mig_enabled and not gpu.devices():
            return (prefix + f"at least one device with migEnabled=true was not configured correctly: device "
                    f"{index} has no MIG devices configured")
    if len({tuple(sorted(d.attributes().items())) for d in devices}) > 1:
        return prefix + "More than one MIG device type present on node"
    if whole and devices:
        return ("error building device map from config.resources: all devices on the node must be configured "
                "with the same migEnabled value")
    return ""


class DevicePlugin:
    """Publishes the registered resources on the node's status while the plugin's pod runs."""

    def __init__(self, writer: Writer, clock: Clock, wake: Wake, start_delay_s: float,
                 ready_at: dict[str, float], model_of: Callable[[str], GpuModel | None],
                 boot_epoch: Callable[[str], int]):
        self.writer = writer
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
                registration = self.started[process] = register(model, hardware.gpus(view.node), strategy)
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
