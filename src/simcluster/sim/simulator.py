"""Wires the simulated kubelets and NVIDIA node components to the real API server.

One process, watch-driven: informers feed caches; every change enqueues the
node it concerns; a pool of workers reconciles a node by running the
components in order (kubelet, operator labelling, MIG manager, device plugin,
feature discovery), each a small stage that writes only what differs.

The Simulator only wires: it owns the caches, the work queue and the writes to
the API server, and hands each component what it needs (the writer, the
caches, the clock, the settings, NVIDIA's mig-parted and mig-oracle). The
components keep their own state.

The GPU Operator's controller is either NVIDIA's real one (``operator="real"``:
installed by its Helm chart, its pod run by the kubelet's container runtime; it
labels nodes and creates the operand DaemonSets itself) or, for scale runs, the
simulated one (``operator="simulated"``: ``sim/operator.py``, every pod simulated).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from migrollout import kube
from migrollout.kube import KubeClient, KubeError
from simcluster import device_plugin_probe, nvml_node
from simcluster.fleet import Fleet, NodeSpec
from simcluster.nvml_node import RunOnce
from simcluster.sim import boot, gpus, hardware, names
from simcluster.sim.containers import ContainerRuntime
from simcluster.sim.device_plugin import DevicePlugin
from simcluster.sim.faults import NodeFaults
from simcluster.sim.feature_discovery import FeatureDiscovery
from simcluster.sim.gpus import Catalogue, GpuModel
from simcluster.sim.kubelet import Kubelet
from simcluster.sim.mig_configs import MigConfigs
from simcluster.sim.mig_manager import MigManager, Tools
from simcluster.sim.operator import MANAGED_BY, OPERATOR_NAME, OperatorSim, oldest_policy, policy_namespace
from simcluster.sim.view import NodeView
from simcluster.sim.world import Informer, WorkQueue

log = logging.getLogger("simcluster")

REAL, SIMULATED = "real", "simulated"  # who runs the GPU Operator's controller

__all__ = ["REAL", "SIMULATED", "NodeView", "Simulator"]


class Simulator:
    OPERATOR_KEY = "\x00operator"

    def __init__(self, api: KubeClient, fleet: Fleet, status_file: Path | None = None, workers: int = 8,
                 operator: str = SIMULATED, runtime: ContainerRuntime | None = None,
                 catalogue: Catalogue | None = None):
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
        self._booted: dict[tuple, tuple[hardware.Gpu, ...]] = {}
        self._check_config = boot.validator()  # NVIDIA's nvidia-mig-parted assert --valid-config
        self._verdicts = RunOnce(512)
        self.catalogue = catalogue if catalogue is not None else gpus.catalogue()

        self.nodes = Informer(api, "/api/v1/nodes", "nodes", self._on_node)
        self.pods = Informer(api, "/api/v1/pods", "pods", self._on_pod, field_selector="spec.nodeName!=")
        self.policies = Informer(api, names.POLICY_PATH, "clusterpolicies", self._on_policy)
        self.daemonsets = Informer(api, "/apis/apps/v1/daemonsets", "operand daemonsets", self._on_daemonset,
                                   label_selector=f"{MANAGED_BY}={OPERATOR_NAME}")
        self.informers = [self.nodes, self.pods, self.policies]
        if self.simulated_operator:
            self.informers.append(self.daemonsets)

        settings = fleet.simulation
        clock = time.monotonic
        self.kubelet = Kubelet(api, self, self.nodes.observe, runtime, settings, self.wake, self.after_reboot)
        self.operator = OperatorSim(api, self.policies, self.daemonsets, settings,
                                    lambda delay: self.queue.add_after(self.OPERATOR_KEY, delay))
        configs = MigConfigs(self._read_configmap, self._publish_configmap)
        self.mig_parted = mig_parted = nvml_node.for_cluster(status_file.parent if status_file else None)
        self.mig_manager = MigManager(
            Tools(writer=self, clock=clock, wake=self.wake, settings=settings, configs=configs,
                  validate=self.validate, reboot=self.reboot, mig_parted=mig_parted),
            self.model, self.epoch)
        probe = device_plugin_probe.for_cluster(mig_parted)
        self.device_plugin = DevicePlugin(self, clock, self.wake, settings.device_plugin_delay_s,
                                          self.kubelet.ready_at, self.model, self.epoch, probe)
        self.feature_discovery = FeatureDiscovery(self, clock, self.wake, settings.gfd_delay_s,
                                                  self.kubelet.ready_at, self.model, probe)

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

    # -- the writer the components share (each write records the server's answer for the next reconcile) -------

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

    def delete_pod(self, pod: dict[str, Any], grace_seconds: int | None = 0) -> None:
        """Delete a pod: at once (the kubelet completing a deletion), or with its grace period (``None``, as
        ``kubectl delete pod`` does)."""
        meta = pod["metadata"]
        body: dict[str, Any] = {"preconditions": {"uid": meta["uid"]}}
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        try:
            self.api.delete(kube.pod_path(meta["namespace"], meta["name"]), body=body,
                            what=f"remove pod {meta['namespace']}/{meta['name']}")
        except KubeError as exc:
            if not (exc.not_found or exc.conflict):
                raise

    def _read_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.api.get_or_none(kube.configmap_path(namespace, name), what=f"read ConfigMap {namespace}/{name}")

    def _publish_configmap(self, manifest: dict[str, Any]) -> None:
        meta = manifest["metadata"]
        self.api.apply(kube.configmap_path(meta["namespace"], meta["name"]), manifest,
                       field_manager="nvidia-mig-manager", what=f"publish ConfigMap {meta['name']}")

    # -- services ----------------------------------------------------------------------------------------------

    def wake(self, node: str, delay: float) -> None:
        self.queue.add_after(node, delay)

    def model(self, key: str) -> GpuModel | None:
        return self.catalogue.find(key)

    def epoch(self, node: str) -> int:
        """How many times the node has rebooted: every process on it restarted that often."""
        return self.boot_epoch.get(node, 0)

    def policy(self) -> dict[str, Any] | None:
        return oldest_policy(self.policies.items())

    def operator_namespace(self) -> str:
        return policy_namespace(self.policy(), self.fleet.simulation.operator_namespace)

    def validate(self, document: str, config: str) -> tuple[bool, str]:
        """NVIDIA's verdict on a config file, remembered: the same file and config always get the same answer from
        the same binary, so a thousand MIG managers starting on one ConfigMap ask once."""
        key = (hashlib.sha256(document.encode()).hexdigest(), config)
        return self._verdicts.get(key, lambda: self._check_config(document, config))[0]

    def reboot(self, name: str) -> None:
        self.kubelet.reboot(name, self.fleet.simulation.reboot_s)

    def after_reboot(self, name: str) -> None:
        node = self.nodes.get(name)
        if node is None:
            return
        takes = not NodeFaults.from_annotations(hardware.annotations_of(node)).reboot_fails
        after = [hardware.after_reboot(gpu, takes) for gpu in hardware.gpus(node)]
        self.patch_node_annotations(name, {hardware.GPU_STATE: hardware.encode(after)})
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
        for component in (self.mig_manager, self.device_plugin, self.feature_discovery):
            # Each sees what the previous ones wrote.
            component.reconcile(NodeView(key, self.nodes.get(key) or node, pods, view.operator_namespace))

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

    def booted(self, spec: NodeSpec) -> list[hardware.Gpu]:
        """The GPUs a fleet node boots with (the fleet file was checked against the same code)."""
        if spec.gpu is None:
            return []
        key = (spec.gpu.key, spec.gpu_count, spec.mig_config, tuple(sorted((spec.mig_devices or {}).items())))
        with self.index_lock:
            known = self._booted.get(key)
        if known is None:  # a pool's nodes all boot alike: ask NVIDIA's code once per pool
            model = self.catalogue.get(spec.gpu.key)
            states, problem = boot.booted_gpus(model, spec.gpu_count, spec.mig_config, spec.mig_devices,
                                               self.mig_parted, self.validate)
            if problem:
                raise ValueError(f"node {spec.name}: cannot boot with {spec.mig_config or spec.mig_devices}: "
                                 f"{problem}")
            known = tuple(states)
            with self.index_lock:
                self._booted[key] = known
        return list(known)

    def register_nodes(self) -> None:
        def register(index: int, spec: NodeSpec) -> None:
            states = self.booted(spec)
            # As a kubelet does, try again until the API server answers: one that restarts while the simulator
            # starts (simcluster up after a crash) must not end it.
            delay = 0.5
            while not self.stopped.is_set():
                try:
                    self.kubelet.register(spec, index, hardware.encode(states) if states else None)
                    return
                except KubeError as exc:
                    log.warning("register node %s: %s; trying again in %.1f s", spec.name, exc.one_line(), delay)
                    self.stopped.wait(delay)
                    delay = min(delay * 2, 5.0)

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            list(pool.map(register, *zip(*enumerate(self.fleet.nodes()), strict=True)))

    def _heartbeats(self) -> None:
        node_names = [spec.name for spec in self.fleet.nodes()]
        # Renew each lease well inside the controller-manager's 300 s grace period, spreading the load.
        interval = min(120.0, max(20.0, len(node_names) / 10))
        while not self.stopped.wait(interval):
            self.kubelet.renew_leases(node_names)

    def _report(self) -> None:
        while not self.stopped.wait(1.0):
            if self.status_file is None:
                continue
            self.status_file.write_text(json.dumps({"registered": True, "idle": self.queue.idle(),
                                                    "nodes": len(self.fleet.nodes()), "time": time.time()}))

    def run(self) -> None:
        """Run until stopped. The GPU Operator's chart (and so its ClusterPolicy) is installed with helm, by
        ``simcluster up`` or a playbook; the simulated controller, when chosen, reconciles that ClusterPolicy."""
        for informer in self.informers:
            informer.start()
        for informer in self.informers:
            informer.synced.wait(60)
        self.register_nodes()
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
