"""A simulated kubelet for every fleet node: registration, leases, readiness, pod lifecycle.

Modelled on kwok's stages: pods bound to a node go Pending -> Running/Ready,
pods with a deletion timestamp are removed, Job pods complete, and a rebooting
node reports NotReady until it is back. Pods whose images simcluster can run
(``images``) are not simulated: the container runtime (``containers``) runs them
and the kubelet reports what their processes do.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from migrollout import kube
from migrollout.kube import KubeClient, KubeError
from migrollout.timestamps import micro_time_text, time_text
from simcluster.binaries import KUBERNETES_VERSION
from simcluster.fleet import NodeSpec, Simulation
from simcluster.sim import hardware, names, node_os
from simcluster.sim.containers import ContainerRuntime
from simcluster.sim.view import NodeView, Wake, Writer

log = logging.getLogger("simcluster.kubelet")

LEASE_NAMESPACE = "kube-node-lease"
NODE_NETWORK = ipaddress.ip_network("10.200.0.0/16")


def node_ready(node: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in node.get("status", {}).get("conditions") or [])


def node_manifest(spec: NodeSpec, index: int, initial_gpus: str | None) -> dict[str, Any]:
    address = str(NODE_NETWORK.network_address + index + 10)
    labels = {
        "kubernetes.io/hostname": spec.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": f"sim-{spec.pool}",
        "simcluster.dev/pool": spec.pool,
        **node_os.nfd_labels(),
        **spec.labels,
    }
    annotations = {hardware.SIMULATED: "true", **spec.faults.annotations()}
    if spec.gpu is not None:
        # node-feature-discovery's view of the PCI bus: an NVIDIA (vendor 10de) device.
        labels[names.NFD_NVIDIA_PCI[0]] = "true"
        annotations[hardware.GPU_MODEL] = spec.gpu.key
        annotations[hardware.GPU_COUNT] = str(spec.gpu_count)
        if initial_gpus:
            annotations[hardware.GPU_STATE] = initial_gpus
        if spec.mig_config:
            labels[names.MIG_CONFIG] = spec.mig_config
    resources = {"cpu": spec.cpu, "memory": spec.memory, "pods": "110", "ephemeral-storage": "1Ti"}
    now = time_text()
    pressure_reasons = {"MemoryPressure": "KubeletHasSufficientMemory", "DiskPressure": "KubeletHasNoDiskPressure",
                        "PIDPressure": "KubeletHasSufficientPID"}
    conditions = [
        {"type": kind, "status": "False", "reason": reason, "lastHeartbeatTime": now, "lastTransitionTime": now}
        for kind, reason in pressure_reasons.items()
    ]
    conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                       "message": "kubelet is posting ready status", "lastHeartbeatTime": now,
                       "lastTransitionTime": now})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": spec.name, "labels": labels, "annotations": annotations},
        "spec": {"providerID": f"simcluster://{spec.name}"},
        "status": {
            "capacity": resources,
            "allocatable": dict(resources),
            "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": spec.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "kubeletVersion": f"v{KUBERNETES_VERSION}", "kubeProxyVersion": "", **node_os.node_info(),
                "machineID": f"{index:032x}", "systemUUID": f"{index:032x}", "bootID": f"{index:032x}",
            },
        },
    }


def lease_manifest(node: dict[str, Any]) -> dict[str, Any]:
    name = node["metadata"]["name"]
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name, "namespace": LEASE_NAMESPACE,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name,
                                 "uid": node["metadata"]["uid"]}],
        },
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": micro_time_text()},
    }


def is_job_pod(pod: dict[str, Any]) -> bool:
    return any(ref.get("kind") == "Job" and ref.get("controller") for ref in
               pod.get("metadata", {}).get("ownerReferences") or [])


class Kubelet:
    """Every simulated node's kubelet. What it needs is passed in: the API client (registration and leases),
    the writer (status and deletions), the node cache to record what it registered, the container runtime
    for pods that run for real, the settings, a way to be called again, and who to tell when a node is back
    from a reboot."""

    def __init__(self, api: KubeClient, writer: Writer, observe_node: Callable[[dict[str, Any]], None],
                 runtime: ContainerRuntime | None, settings: Simulation, wake: Wake,
                 after_reboot: Callable[[str], None]):
        self.api = api
        self.writer = writer
        self.observe_node = observe_node
        self.runtime = runtime
        self.settings = settings
        self.wake = wake
        self.after_reboot = after_reboot
        self.reboot_until: dict[str, float] = {}
        self.started_at: dict[str, float] = {}  # pod uid -> monotonic time it became Running
        self.ready_at: dict[str, float] = {}    # pod uid -> monotonic time it became Ready
        self.pod_ips: dict[str, str] = {}       # pod uid -> IP, for pods that run for real
        self.reported: dict[str, dict[str, Any]] = {}  # pod uid -> status last written, for pods that run for real
        self._ip_counter = 0
        self._ip_lock = threading.Lock()

    # -- registration and heartbeats -------------------------------------------------------------------------

    def register(self, spec: NodeSpec, index: int, initial_gpus: str | None) -> None:
        api = self.api
        manifest = node_manifest(spec, index, initial_gpus)
        try:
            node = api.create("/api/v1/nodes", manifest, what=f"register node {spec.name}")
        except KubeError as exc:
            if exc.status != 409:
                raise
            node = api.get(kube.node_path(spec.name), what=f"read node {spec.name}")
        self.observe_node(node)
        try:
            api.create(f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases", lease_manifest(node),
                       what=f"create lease of node {spec.name}")
        except KubeError as exc:
            if exc.status != 409:
                raise

    def renew_leases(self, names: list[str]) -> None:
        body = {"spec": {"renewTime": micro_time_text()}}
        for name in names:
            if self.rebooting(name):
                continue
            try:
                self.api.patch(f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{name}", body,
                               what=f"renew lease of node {name}")
            except KubeError as exc:
                if not exc.not_found:
                    log.warning("%s", exc.one_line())

    # -- reboots ---------------------------------------------------------------------------------------------

    def reboot(self, name: str, seconds: float) -> None:
        self.reboot_until[name] = time.monotonic() + seconds
        if self.runtime is not None:
            self.runtime.stop_node(name)  # a reboot kills every process on the node
        self.wake(name, 0)
        self.wake(name, seconds + 0.05)

    def rebooting(self, name: str) -> bool:
        until = self.reboot_until.get(name)
        return until is not None and time.monotonic() < until

    # -- reconcile ---------------------------------------------------------------------------------------------

    def reconcile(self, view: NodeView) -> None:
        self._readiness(view)
        if self.rebooting(view.name):
            return
        for pod in view.pods:
            self._pod(view, pod)

    def _readiness(self, view: NodeView) -> None:
        rebooting = self.rebooting(view.name)
        if not rebooting and view.name in self.reboot_until:
            del self.reboot_until[view.name]
            self.after_reboot(view.name)
        want_ready = not rebooting
        if node_ready(view.node) == want_ready:
            return
        now = time_text()
        ready = {"type": "Ready", "status": "True" if want_ready else "False",
                 "reason": "KubeletReady" if want_ready else "KubeletNotReady",
                 "message": "kubelet is posting ready status" if want_ready else "simulated reboot in progress",
                 "lastHeartbeatTime": now, "lastTransitionTime": now}
        self.writer.patch_node_status(view.name, {"status": {"conditions": [ready]}})

    def _pod(self, view: NodeView, pod: dict[str, Any]) -> None:
        if self.runtime is not None and self.runtime.runnable(pod):
            self._real_pod(view, pod)
            return
        meta, status = pod["metadata"], pod.get("status", {})
        uid = meta["uid"]
        phase = status.get("phase", "Pending")
        settings = self.settings
        now = time.monotonic()
        if meta.get("deletionTimestamp"):
            if phase in ("Succeeded", "Failed") or not meta.get("finalizers"):
                grace = min(settings.pod_stop_s, float(meta.get("deletionGracePeriodSeconds") or 0))
                first_seen = self.started_at.setdefault("deleting-" + uid, now)
                if now - first_seen < grace:
                    self.wake(view.name, grace - (now - first_seen))
                    return
                self.writer.delete_pod(pod)
                self.started_at.pop("deleting-" + uid, None)
            return
        if phase == "Pending":
            first_seen = self.started_at.setdefault("pending-" + uid, now)
            if now - first_seen < settings.pod_start_s:
                self.wake(view.name, settings.pod_start_s - (now - first_seen))
                return
            self.started_at.pop("pending-" + uid, None)
            self._start(view, pod)
            return
        if phase == "Running" and is_job_pod(pod):
            run_for = float(meta.get("annotations", {}).get(hardware.RUN_SECONDS, "1"))
            started = self.started_at.setdefault(uid, now)
            if now - started < run_for:
                self.wake(view.name, run_for - (now - started))
                return
            self._complete(pod)

    def _next_ip(self) -> str:
        with self._ip_lock:
            self._ip_counter += 1
            return str(ipaddress.ip_address("10.244.0.0") + self._ip_counter)

    @staticmethod
    def _node_ip(view: NodeView) -> str:
        return next((a["address"] for a in view.node.get("status", {}).get("addresses", [])
                     if a.get("type") == "InternalIP"), "10.200.0.1")

    def _real_pod(self, view: NodeView, pod: dict[str, Any]) -> None:
        """A pod whose processes run: start, restart and stop them, and report what they do."""
        runtime = self.runtime
        assert runtime is not None
        meta = pod["metadata"]
        uid = meta["uid"]
        if meta.get("deletionTimestamp"):
            if runtime.stop(pod, float(meta.get("deletionGracePeriodSeconds") or 0)):
                self.writer.delete_pod(pod)
            else:
                self.wake(view.name, 0.5)
            return
        if runtime.sandbox(uid) is None and pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            return  # finished before this kubelet knew it
        node_ip = self._node_ip(view)
        if uid not in self.pod_ips:
            self.pod_ips[uid] = node_ip if pod.get("spec", {}).get("hostNetwork") else self._next_ip()
        pod_ip = self.pod_ips[uid]
        status, wake = runtime.sync(pod, pod_ip, node_ip)
        if self.reported.get(uid) != status and self.writer.patch_pod_status(pod, {"status": status}):
            self.reported[uid] = status
        if wake is not None:
            self.wake(view.name, wake)

    def _start(self, view: NodeView, pod: dict[str, Any]) -> None:
        now = time_text()
        spec = pod.get("spec", {})
        node_ip = self._node_ip(view)
        pod_ip = node_ip if spec.get("hostNetwork") else self._next_ip()
        containers = [
            {"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": True, "restartCount": 0,
             "started": True, "containerID": f"sim://{pod['metadata']['uid']}-{c['name']}",
             "state": {"running": {"startedAt": now}}}
            for c in spec.get("containers") or []
        ]
        init = [
            {"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": True, "restartCount": 0,
             "started": False, "containerID": f"sim://{pod['metadata']['uid']}-{c['name']}",
             "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}}}
            for c in spec.get("initContainers") or []
        ]
        conditions = [{"type": kind, "status": "True", "lastTransitionTime": now} for kind in
                      ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")]
        body = {"status": {
            "phase": "Running", "conditions": conditions, "hostIP": node_ip, "hostIPs": [{"ip": node_ip}],
            "podIP": pod_ip, "podIPs": [{"ip": pod_ip}], "startTime": now, "containerStatuses": containers,
            "initContainerStatuses": init,
        }}
        if self.writer.patch_pod_status(pod, body):
            uid = pod["metadata"]["uid"]
            self.started_at[uid] = self.ready_at[uid] = time.monotonic()

    def _complete(self, pod: dict[str, Any]) -> None:
        now = time_text()
        containers = [
            {"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": False, "restartCount": 0,
             "started": False, "state": {"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": now}}}
            for c in pod.get("spec", {}).get("containers") or []
        ]
        conditions = [{"type": kind, "status": "False", "reason": "PodCompleted", "lastTransitionTime": now}
                      for kind in ("Ready", "ContainersReady")]
        self.writer.patch_pod_status(pod, {"status": {"phase": "Succeeded", "conditions": conditions,
                                                      "containerStatuses": containers}})

    def forget_pod(self, uid: str) -> None:
        for key in (uid, "pending-" + uid, "deleting-" + uid):
            self.started_at.pop(key, None)
        self.ready_at.pop(uid, None)
        self.pod_ips.pop(uid, None)
        self.reported.pop(uid, None)
        if self.runtime is not None:
            self.runtime.forget(uid)
