"""Wires the simulated kubelets and NVIDIA node components to the real API server.

One process, watch-driven: informers feed caches; every change enqueues the
node it concerns; a pool of workers reconciles a node by running the
components in order (kubelet, operator labelling, MIG manager, device plugin,
feature discovery), each a small stage that writes only what differs.

The GPU Operator's controller is either NVIDIA's real one (``operator="real"``:
installed by its Helm chart, its pod run by the kubelet's container runtime; it
labels nodes and creates the operand DaemonSets itself) or, for scale runs, the
simulated one (``operator="simulated"``: ``sim/operator.py``, every pod simulated).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from migrollout import clusterpolicy, kube
from migrollout.kube import KubeClient, KubeError
from migrollout.migconfig import GpuLayout
from simcluster.fleet import Fleet
from simcluster.sim import hardware
from simcluster.sim.containers import ContainerRuntime
from simcluster.sim.kubelet import Kubelet
from simcluster.sim.mig_manager import MigManagerSim
from simcluster.sim.operands import DevicePluginSim, FeatureDiscoverySim
from simcluster.sim.operator import MANAGED_BY, OPERATOR_NAME, OperatorSim
from simcluster.sim.world import Informer, WorkQueue

log = logging.getLogger("simcluster")

CRD_FILE = Path(__file__).resolve().parent.parent / "data" / "clusterpolicy-crd.yaml"
POLICY_NAME = "cluster-policy"
REAL, SIMULATED = "real", "simulated"  # who runs the GPU Operator's controller


def default_policy(strategy: str = "mixed") -> dict[str, Any]:
    """The ClusterPolicy a stock chart install renders, with the given MIG strategy."""
    return {
        "apiVersion": clusterpolicy.GROUP_VERSION,
        "kind": "ClusterPolicy",
        "metadata": {"name": POLICY_NAME},
        "spec": {
            "mig": {"strategy": strategy},
            "daemonsets": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                           "priorityClassName": "system-node-critical", "updateStrategy": "RollingUpdate",
                           "rollingUpdate": {"maxUnavailable": "1"}},
            "driver": {"enabled": True}, "toolkit": {"enabled": True}, "devicePlugin": {"enabled": True},
            "gfd": {"enabled": True}, "dcgmExporter": {"enabled": True}, "dcgm": {"enabled": False},
            "migManager": {"enabled": True, "env": [], "config": {"name": "", "default": "all-disabled"}},
        },
    }


@dataclass
class NodeView:
    """A consistent snapshot of one node and the pods bound to it, for one reconcile."""

    name: str
    node: dict[str, Any]
    pods: list[dict[str, Any]]
    operator_namespace: str

    @property
    def labels(self) -> dict[str, str]:
        return self.node.get("metadata", {}).get("labels") or {}

    def running_operand(self, app: str) -> dict[str, Any] | None:
        """The live operand pod with this app label (Running, not being deleted)."""
        for pod in self.pods:
            meta = pod["metadata"]
            if (meta.get("namespace") == self.operator_namespace and (meta.get("labels") or {}).get("app") == app
                    and not meta.get("deletionTimestamp") and pod.get("status", {}).get("phase") == "Running"):
                return pod
        return None


class Simulator:
    OPERATOR_KEY = "\x00operator"

    def __init__(self, api: KubeClient, fleet: Fleet, status_file: Path | None = None, workers: int = 8,
                 operator: str = SIMULATED, runtime: ContainerRuntime | None = None):
        self.api = api
        self.fleet = fleet
        self.simulated_operator = operator == SIMULATED
        self.runtime = runtime
        self.status_file = status_file
        self.workers = workers
        self.queue = WorkQueue()
        self.stopped = threading.Event()
        self.pods_by_node: dict[str, dict[str, dict[str, Any]]] = {}
        self.index_lock = threading.Lock()
        self.boot_epoch: dict[str, int] = {}
        self.known_namespaces: set[str] = set()
        self.default_config_written: dict[str, str] = {}
        self.runtime_class_written = False
        self.kubelet = Kubelet(self)
        self.operator = OperatorSim(self)
        self.mig_manager = MigManagerSim(self)
        self.device_plugin = DevicePluginSim(self)
        self.feature_discovery = FeatureDiscoverySim(self)
        self.nodes = Informer(api, "/api/v1/nodes", "nodes", self._on_node)
        self.pods = Informer(api, "/api/v1/pods", "pods", self._on_pod, field_selector="spec.nodeName!=")
        self.policies = Informer(api, clusterpolicy.path(), "clusterpolicies", self._on_policy)
        self.daemonsets = Informer(api, "/apis/apps/v1/daemonsets", "operand daemonsets", self._on_daemonset,
                                   label_selector=f"{MANAGED_BY}={OPERATOR_NAME}")
        self.informers = [self.nodes, self.pods, self.policies]
        if self.simulated_operator:
            self.informers.append(self.daemonsets)

    # -- event routing -----------------------------------------------------------------------------------------

    def _on_node(self, old: dict | None, new: dict | None) -> None:
        self.queue.add((new or old)["metadata"]["name"])

    def _on_pod(self, old: dict | None, new: dict | None) -> None:
        for obj in (old, new):
            if obj is None:
                continue
            node = obj.get("spec", {}).get("nodeName")
            if not node:
                continue
            key = f"{obj['metadata'].get('namespace')}/{obj['metadata']['name']}"
            with self.index_lock:
                bucket = self.pods_by_node.setdefault(node, {})
                if obj is new:
                    bucket[key] = new
                elif new is None or new.get("spec", {}).get("nodeName") != node:
                    bucket.pop(key, None)
            self.queue.add(node)
        if new is None and old is not None:
            self.kubelet.forget_pod(old["metadata"]["uid"])
            self.device_plugin.forget_pod(old["metadata"]["uid"])

    def _on_policy(self, old: dict | None, new: dict | None) -> None:
        if self.simulated_operator:
            self.queue.add(self.OPERATOR_KEY)
        for node in self.nodes.items():
            self.queue.add(node["metadata"]["name"])

    def _on_daemonset(self, old: dict | None, new: dict | None) -> None:
        self.queue.add(self.OPERATOR_KEY)

    # -- writes (each records the server's answer so the next reconcile sees it) ---------------------------------

    def patch_node_labels(self, name: str, values: dict[str, str | None]) -> None:
        if not values:
            return
        self.nodes.observe(self.api.patch(kube.node_path(name), {"metadata": {"labels": values}},
                                          what=f"label node {name}"))

    def patch_node_annotations(self, name: str, values: dict[str, str | None]) -> None:
        self.nodes.observe(self.api.patch(kube.node_path(name), {"metadata": {"annotations": values}},
                                          what=f"annotate node {name}"))

    def patch_node_status(self, name: str, body: dict[str, Any]) -> None:
        self.nodes.observe(self.api.patch(kube.node_status_path(name), body, content_type=kube.STRATEGIC_PATCH,
                                          what=f"update status of node {name}"))

    def patch_pod_status(self, pod: dict[str, Any], body: dict[str, Any]) -> bool:
        meta = pod["metadata"]
        try:
            result = self.api.patch(kube.pod_path(meta["namespace"], meta["name"]) + "/status", body,
                                    content_type=kube.STRATEGIC_PATCH,
                                    what=f"update status of pod {meta['namespace']}/{meta['name']}")
        except KubeError as exc:
            if exc.not_found or exc.conflict:
                return False
            raise
        self.pods.observe(result)
        return True

    def delete_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        try:
            self.api.delete(kube.pod_path(meta["namespace"], meta["name"]),
                            body={"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}},
                            what=f"remove pod {meta['namespace']}/{meta['name']}")
        except KubeError as exc:
            if not (exc.not_found or exc.conflict):
                raise

    def set_layouts(self, name: str, layouts: list[GpuLayout]) -> None:
        self.patch_node_annotations(name, {hardware.MIG_LAYOUT: hardware.encode_layouts(layouts)})

    # -- services the components share ---------------------------------------------------------------------------

    def policy(self) -> dict[str, Any] | None:
        """The ClusterPolicy in force: the oldest, as the operator takes it."""
        policies = self.policies.items()
        return sorted(policies, key=lambda p: p["metadata"]["creationTimestamp"])[0] if policies else None

    def operator_namespace(self) -> str:
        return clusterpolicy.namespace(self.policy(), self.fleet.simulation.operator_namespace)

    def ready_for(self, pod: dict[str, Any]) -> float:
        """Seconds since the (simulated) kubelet made this pod ready; long ago if before a restart."""
        started = self.kubelet.ready_at.get(pod["metadata"]["uid"])
        return time.monotonic() - started if started is not None else 1e9

    def reboot(self, name: str) -> None:
        self.kubelet.reboot(name, self.fleet.simulation.reboot_s)

    def after_reboot(self, name: str) -> None:
        node = self.nodes.get(name)
        if node is None:
            return
        self.set_layouts(name, self.mig_manager.after_reboot(node))
        # Every process on the node restarted, the MIG manager included.
        self.boot_epoch[name] = self.boot_epoch.get(name, 0) + 1

    # -- reconcile -------------------------------------------------------------------------------------------------

    def reconcile(self, key: str) -> None:
        if key == self.OPERATOR_KEY:
            self.operator.reconcile()
            return
        node = self.nodes.get(key)
        if node is None or hardware.annotations_of(node).get(hardware.SIMULATED) != "true":
            return
        with self.index_lock:
            pods = list(self.pods_by_node.get(key, {}).values())
        view = NodeView(key, node, pods, self.operator_namespace())
        self.kubelet.reconcile(view)
        if self.kubelet.rebooting(key):
            return
        if self.simulated_operator:
            # The real operator labels nodes itself.
            wanted = self.operator.label_node(view)
            if wanted:
                self.patch_node_labels(key, wanted)
        view = NodeView(key, self.nodes.get(key) or node, pods, view.operator_namespace)
        self.mig_manager.reconcile(view)
        view = NodeView(key, self.nodes.get(key) or node, pods, view.operator_namespace)
        self.device_plugin.reconcile(view)
        self.feature_discovery.reconcile(view)

    def _worker(self) -> None:
        while True:
            key = self.queue.get()
            if key is None:
                return
            try:
                self.reconcile(key)
            except KubeError as exc:
                log.warning("reconcile %s: %s", key.strip("\x00"), exc.one_line())
                self.queue.add_after(key, 1.0)
            except Exception:
                log.exception("reconcile %s failed", key.strip("\x00"))
                self.queue.add_after(key, 2.0)
            finally:
                self.queue.done(key)

    # -- start-up ----------------------------------------------------------------------------------------------

    def install_operator(self, strategy: str = "mixed") -> None:
        """Install the ClusterPolicy CRD and a ClusterPolicy, as if the GPU Operator chart had been installed."""
        crd = yaml.safe_load(CRD_FILE.read_text())
        try:
            self.api.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd,
                            what="create the ClusterPolicy CRD")
        except KubeError as exc:
            if exc.status != 409:
                raise
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            current = self.api.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}")
            conditions = {c["type"]: c["status"] for c in (current.get("status") or {}).get("conditions") or []}
            if conditions.get("Established") == "True":
                break
            time.sleep(0.2)
        try:
            self.api.create(clusterpolicy.path(), default_policy(strategy), what="create the ClusterPolicy")
        except KubeError as exc:
            if exc.status != 409:
                raise

    def register_nodes(self) -> None:
        def register(index: int, spec) -> None:
            layouts = hardware.initial_layouts(spec)
            self.kubelet.register(spec, index, hardware.encode_layouts(layouts) if layouts else None)

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            list(pool.map(register, *zip(*enumerate(self.fleet.nodes()), strict=True)))

    def _heartbeats(self) -> None:
        names = [spec.name for spec in self.fleet.nodes()]
        # Renew each lease well inside the controller-manager's 300 s grace period, spreading the load.
        interval = min(120.0, max(20.0, len(names) / 10))
        while not self.stopped.wait(interval):
            self.kubelet.renew_leases(names)

    def _report(self) -> None:
        while not self.stopped.wait(1.0):
            if self.status_file is None:
                continue
            self.status_file.write_text(json.dumps({"registered": True, "idle": self.queue.idle(),
                                                    "nodes": len(self.fleet.nodes()), "time": time.time()}))

    def run(self, install_operator: bool) -> None:
        """``install_operator``: create the simulated operator's ClusterPolicy (the real operator's chart is
        installed with helm by ``simcluster up``)."""
        for informer in self.informers:
            informer.start()
        for informer in self.informers:
            informer.synced.wait(60)
        self.register_nodes()
        if install_operator and self.simulated_operator:
            self.install_operator()
        threads = [threading.Thread(target=self._worker, name=f"worker-{i}", daemon=True)
                   for i in range(self.workers)]
        threads.append(threading.Thread(target=self._heartbeats, name="heartbeats", daemon=True))
        threads.append(threading.Thread(target=self._report, name="report", daemon=True))
        for thread in threads:
            thread.start()
        for node in self.nodes.items():
            self.queue.add(node["metadata"]["name"])
        if self.simulated_operator:
            self.queue.add(self.OPERATOR_KEY)
        log.info("simulating %d nodes (GPU Operator controller: %s)", len(self.fleet.nodes()),
                 "simulated" if self.simulated_operator else "NVIDIA's, run by the kubelets")
        self.stopped.wait()
        self.queue.shutdown()
        if self.runtime is not None:
            self.runtime.shutdown()

    def stop(self) -> None:
        self.stopped.set()

