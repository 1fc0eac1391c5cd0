"""The device plugin and GPU feature discovery, simulated per node.

Each acts only while its operand pod runs on the node, with the MIG strategy
from that pod's environment (as the operator passes it). The device plugin
publishes extended resources through the (simulated) kubelet; when it is gone
the kubelet keeps the capacity but allocatable drops to zero. Feature discovery
rewrites its labels; while it is paused they stay as they were (stale).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from migrollout import labels
from migrollout.advertised import device_plugin_resources, gfd_labels, is_gfd_label
from migrollout.timestamps import time_text
from simcluster.sim import hardware
from simcluster.sim.mig_manager import pod_env

if TYPE_CHECKING:
    from simcluster.sim.simulator import NodeView, Simulator


def _is_nvidia_resource(name: str) -> bool:
    return name == "nvidia.com/gpu" or name.startswith("nvidia.com/mig-")


class DevicePluginSim:
    def __init__(self, sim: Simulator):
        self.sim = sim
        self.crashed: set[str] = set()

    def reconcile(self, view: NodeView) -> None:
        model = hardware.gpu_model(view.node)
        if model is None:
            return
        pod = view.running_operand(labels.APP_DEVICE_PLUGIN)
        advertised: dict[str, int] = {}
        if pod is not None and pod["metadata"]["uid"] not in self.crashed:
            waited = self.sim.ready_for(pod)
            delay = self.sim.fleet.simulation.device_plugin_delay_s
            if waited < delay:
                self.sim.queue.add_after(view.name, delay - waited)
                return
            strategy = pod_env(pod, "MIG_STRATEGY") or "none"
            advertised, error = device_plugin_resources(hardware.layouts(view.node), strategy)
            if error:
                self._crash(pod, error)
                advertised = {}
        status = view.node.get("status", {})
        capacity = {k: v for k, v in (status.get("capacity") or {}).items() if _is_nvidia_resource(k)}
        allocatable = {k: v for k, v in (status.get("allocatable") or {}).items() if _is_nvidia_resource(k)}
        if pod is None or pod["metadata"]["uid"] in self.crashed:
            # The kubelet keeps the capacity of a vanished plugin but can allocate none of it.
            want_capacity = capacity
            want_allocatable = {k: "0" for k in set(capacity) | set(allocatable)}
        else:
            names = set(capacity) | set(allocatable) | set(advertised)
            want_capacity = {k: str(advertised.get(k, 0)) for k in names}
            want_allocatable = dict(want_capacity)
        if want_capacity == capacity and want_allocatable == allocatable:
            return
        self.sim.patch_node_status(view.name, {"status": {"capacity": want_capacity,
                                                          "allocatable": want_allocatable}})

    def _crash(self, pod: dict[str, Any], error: str) -> None:
        self.crashed.add(pod["metadata"]["uid"])
        now = time_text()
        containers = [
            {"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": False, "restartCount": 1,
             "started": False, "state": {"waiting": {"reason": "CrashLoopBackOff", "message": error}},
             "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": error, "finishedAt": now}}}
            for c in pod.get("spec", {}).get("containers") or []
        ]
        conditions = [{"type": kind, "status": "False", "reason": "ContainersNotReady",
                       "lastTransitionTime": now} for kind in ("Ready", "ContainersReady")]
        self.sim.patch_pod_status(pod, {"status": {"conditions": conditions, "containerStatuses": containers}})

    def forget_pod(self, uid: str) -> None:
        self.crashed.discard(uid)


class FeatureDiscoverySim:
    def __init__(self, sim: Simulator):
        self.sim = sim

    def reconcile(self, view: NodeView) -> None:
        model = hardware.gpu_model(view.node)
        pod = view.running_operand(labels.APP_GFD)
        if model is None or pod is None:
            return
        waited = self.sim.ready_for(pod)
        delay = self.sim.fleet.simulation.gfd_delay_s
        if waited < delay:
            self.sim.queue.add_after(view.name, delay - waited)
            return
        strategy = pod_env(pod, "MIG_STRATEGY") or "none"
        desired = gfd_labels(model, hardware.layouts(view.node), strategy)
        current = {k: v for k, v in view.labels.items() if is_gfd_label(k) and k != "nvidia.com/gfd.timestamp"}
        if current == desired:
            return
        patch: dict[str, str | None] = {key: None for key in current if key not in desired}
        patch.update(desired)
        # The timestamp changes only with the labels, to keep large simulated fleets cheap.
        patch["nvidia.com/gfd.timestamp"] = str(int(time.time()))
        self.sim.patch_node_labels(view.name, patch)
