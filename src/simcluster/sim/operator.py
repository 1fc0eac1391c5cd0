"""The NVIDIA GPU Operator's controller, simulated (the opt-in for scale runs; NVIDIA's own runs by default).

Only what the cluster can observe is reproduced: the operator reads one
ClusterPolicy, runs its operands as DaemonSets gated by ``nvidia.com/gpu.deploy.*``
node labels, labels GPU nodes, publishes ``default-mig-parted-config`` (the content
of the pinned operator module's own default MIG ConfigMap), and reports
``status.state``. The operand pods are scheduled by the real scheduler and
DaemonSet controller onto the simulated kubelets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from migrollout.kube import KubeClient, KubeError
from migrollout.timestamps import time_text
from simcluster import upstream
from simcluster.fleet import Simulation
from simcluster.sim import names
from simcluster.sim.view import NodeView
from simcluster.sim.world import Informer

log = logging.getLogger("simcluster.operator")

MANAGED_BY = "app.kubernetes.io/managed-by"
OPERATOR_NAME = "gpu-operator"
DEFAULT_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


@dataclass(frozen=True)
class Operand:
    name: str
    app: str
    deploy_label: str
    spec_key: str
    default_image: str
    publishes_strategy: bool = False


OPERANDS = (
    Operand("nvidia-device-plugin-daemonset", names.APP_DEVICE_PLUGIN, "device-plugin", "devicePlugin",
            "nvcr.io/nvidia/k8s-device-plugin:v0.18.1", publishes_strategy=True),
    Operand("gpu-feature-discovery", names.APP_GFD, "gpu-feature-discovery", "gfd",
            "nvcr.io/nvidia/k8s-device-plugin:v0.18.1", publishes_strategy=True),
    Operand("nvidia-mig-manager", names.APP_MIG_MANAGER, "mig-manager", "migManager",
            "nvcr.io/nvidia/cloud-native/k8s-mig-manager:v0.15.0"),
    Operand("nvidia-dcgm-exporter", names.APP_DCGM_EXPORTER, "dcgm-exporter", "dcgmExporter",
            "nvcr.io/nvidia/k8s/dcgm-exporter:4.4.1-4.6.0-ubuntu22.04"),
)


def _spec(policy: dict[str, Any], *path: str, default: Any = None) -> Any:
    value: Any = policy.get("spec") or {}
    for part in path:
        if not isinstance(value, dict):
            return default
        value = value.get(part)
    return default if value is None else value


def policy_namespace(policy: dict[str, Any] | None, fallback: str) -> str:
    """The operand namespace: what the operator reports, else the helm release's namespace."""
    if policy is None:
        return fallback
    annotations = policy.get("metadata", {}).get("annotations") or {}
    return str((policy.get("status") or {}).get("namespace") or annotations.get("meta.helm.sh/release-namespace")
               or fallback)


def default_mig_config_data() -> dict[str, str]:
    """The data of the operator module's own default MIG ConfigMap (assets/state-mig-manager/0400_configmap.yaml)."""
    built = upstream.find()
    if built is None:
        raise RuntimeError(f"NVIDIA's components are not built (expected in {upstream.upstream_dir()}): "
                           f"run 'simcluster build'")
    return dict(yaml.safe_load(built.default_mig_config.read_text())["data"])


def operand_enabled(policy: dict[str, Any], operand: Operand) -> bool:
    return bool(_spec(policy, operand.spec_key, "enabled", default=True))


def _image(policy: dict[str, Any], operand: Operand) -> str:
    repository = _spec(policy, operand.spec_key, "repository")
    image = _spec(policy, operand.spec_key, "image")
    version = _spec(policy, operand.spec_key, "version")
    if repository and image and version:
        return f"{repository}/{image}:{version}"
    return operand.default_image


def daemonset_manifest(policy: dict[str, Any], operand: Operand, namespace: str) -> dict[str, Any]:
    env: list[dict[str, Any]] = [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
    strategy = _spec(policy, "mig", "strategy", default="")
    if operand.publishes_strategy and strategy:
        # applyMIGConfiguration: no strategy in the policy, no MIG_STRATEGY (the plugin's default, none).
        env.append({"name": "MIG_STRATEGY", "value": str(strategy)})
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if operand.spec_key == "migManager":
        # As the pinned operator's assets/state-mig-manager DaemonSet: the config file always named, from
        # the ConfigMap the ClusterPolicy names, else the operator's default one; operand pods waited for in
        # the manager's own namespace.
        config_name = _spec(policy, "migManager", "config", "name", default="") or names.DEFAULT_MIG_CONFIGMAP
        env.append({"name": "CONFIG_FILE", "value": "/mig-parted-config/config.yaml"})
        env.append({"name": "DEFAULT_GPU_CLIENTS_NAMESPACE",
                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}})
        for item in _spec(policy, "migManager", "env", default=[]):
            env.append({"name": item.get("name", ""), "value": str(item.get("value", ""))})
        volumes.append({"name": "mig-parted-config", "configMap": {"name": config_name}})
        mounts.append({"name": "mig-parted-config", "mountPath": "/mig-parted-config"})
    for item in _spec(policy, operand.spec_key, "env", default=[]) if operand.spec_key != "migManager" else []:
        env.append({"name": item.get("name", ""), "value": str(item.get("value", ""))})
    update = {"type": _spec(policy, "daemonsets", "updateStrategy", default="RollingUpdate")}
    if update["type"] == "RollingUpdate":
        max_unavailable = _spec(policy, "daemonsets", "rollingUpdate", "maxUnavailable", default="1")
        # The chart passes "1" as a string; the operator turns digits into a count, keeps "25%" a percentage.
        if isinstance(max_unavailable, str) and max_unavailable.isdigit():
            max_unavailable = int(max_unavailable)
        update["rollingUpdate"] = {"maxUnavailable": max_unavailable}
    metadata = policy["metadata"]
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": operand.name, "namespace": namespace,
            "labels": {"app": operand.app, MANAGED_BY: OPERATOR_NAME},
            "ownerReferences": [{"apiVersion": names.POLICY_GROUP_VERSION, "kind": "ClusterPolicy",
                                 "name": metadata["name"], "uid": metadata["uid"], "controller": True,
                                 "blockOwnerDeletion": True}],
        },
        "spec": {
            "selector": {"matchLabels": {"app": operand.app}},
            "updateStrategy": update,
            "template": {
                "metadata": {"labels": {"app": operand.app, "app.kubernetes.io/part-of": "nvidia-gpu"}},
                "spec": {
                    "nodeSelector": {names.DEPLOY_PREFIX + operand.deploy_label: "true"},
                    "tolerations": _spec(policy, "daemonsets", "tolerations", default=DEFAULT_TOLERATIONS),
                    "priorityClassName": _spec(policy, "daemonsets", "priorityClassName",
                                               default="system-node-critical"),
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{"name": operand.app, "image": _image(policy, operand), "env": env,
                                    "volumeMounts": mounts}],
                    "volumes": volumes,
                },
            },
        },
    }


def daemonset_ready(ds: dict[str, Any]) -> bool:
    status = ds.get("status") or {}
    desired = status.get("desiredNumberScheduled", -1)
    return (
        status.get("observedGeneration", 0) >= ds["metadata"].get("generation", 0)
        and desired == status.get("numberReady", -2) == status.get("updatedNumberScheduled", -3)
        and status.get("numberUnavailable", 0) == 0
    )


def mig_capable(node_labels: dict[str, str]) -> bool:
    if node_labels.get(names.MIG_CAPABLE) == "true":
        return True
    # The operator's fallback when GFD has not labelled the node yet.
    product = node_labels.get(names.GPU_PRODUCT, "").lower()
    return any(name in product for name in ("a100", "a30", "h100"))


def oldest_policy(policies: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ClusterPolicy in force: the oldest, as the operator takes it."""
    return sorted(policies, key=lambda p: p["metadata"]["creationTimestamp"])[0] if policies else None


class OperatorSim:
    """The operator's reconcile: what it needs is passed in (the API, the ClusterPolicy and DaemonSet caches,
    the settings, a way to be called again)."""

    def __init__(self, api: KubeClient, policies: Informer, daemonsets: Informer, settings: Simulation,
                 again: Callable[[float], None]):
        self.api = api
        self.policies = policies
        self.daemonsets = daemonsets
        self.settings = settings
        self.again = again
        self.applied: dict[str, tuple[str, int]] = {}  # DaemonSet name -> (policy uid, generation) applied
        self.known_namespaces: set[str] = set()
        self.default_config_written: set[str] = set()  # namespaces
        self.runtime_class_written = False

    def policy(self) -> dict[str, Any] | None:
        return oldest_policy(self.policies.items())

    # -- cluster-wide ----------------------------------------------------------------------------------------

    def reconcile(self) -> None:
        policy = self.policy()
        if policy is None or policy["metadata"].get("deletionTimestamp"):
            self.applied.clear()
            self.runtime_class_written = False
            self.default_config_written.clear()
            return
        namespace = policy_namespace(policy, self.settings.operator_namespace)
        self._ensure_namespace(namespace)
        self._ensure_runtime_class(policy)
        self._ensure_default_config(namespace, policy)
        key = (policy["metadata"]["uid"], policy["metadata"].get("generation", 0))
        ready = True
        for operand in OPERANDS:
            path = f"/apis/apps/v1/namespaces/{namespace}/daemonsets/{operand.name}"
            current = self.daemonsets.get(f"{namespace}/{operand.name}")
            if not operand_enabled(policy, operand):
                if current is not None:
                    self._delete(path, f"delete DaemonSet {operand.name}")
                continue
            if current is None or self.applied.get(operand.name) != key:
                result = self.api.apply(path, daemonset_manifest(policy, operand, namespace),
                                        field_manager=OPERATOR_NAME, what=f"apply DaemonSet {operand.name}")
                self.daemonsets.observe(result)
                self.applied[operand.name] = key
                current = result
            ready = ready and daemonset_ready(current)
        self._report(policy, namespace, ready)
        if not ready:
            self.again(1.0)

    def _ensure_namespace(self, namespace: str) -> None:
        if namespace in self.known_namespaces:
            return
        try:
            self.api.create("/api/v1/namespaces", {"metadata": {"name": namespace}},
                            what=f"create namespace {namespace}")
        except KubeError as exc:
            if exc.status != 409:
                raise
        self.known_namespaces.add(namespace)

    def _ensure_runtime_class(self, policy: dict[str, Any]) -> None:
        # The operator's container-toolkit state registers the "nvidia" runtime class GPU pods may ask for.
        if self.runtime_class_written:
            return
        manifest = {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                    "metadata": {"name": "nvidia", "labels": {MANAGED_BY: OPERATOR_NAME},
                                 "ownerReferences": [{"apiVersion": names.POLICY_GROUP_VERSION,
                                                      "kind": "ClusterPolicy", "name": policy["metadata"]["name"],
                                                      "uid": policy["metadata"]["uid"], "controller": True}]},
                    "handler": "nvidia"}
        self.api.apply("/apis/node.k8s.io/v1/runtimeclasses/nvidia", manifest, field_manager=OPERATOR_NAME,
                       what="apply RuntimeClass nvidia")
        self.runtime_class_written = True

    def _ensure_default_config(self, namespace: str, policy: dict[str, Any]) -> None:
        if namespace in self.default_config_written:
            return
        path = f"/api/v1/namespaces/{namespace}/configmaps/{names.DEFAULT_MIG_CONFIGMAP}"
        manifest = {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": names.DEFAULT_MIG_CONFIGMAP, "namespace": namespace,
                         "labels": {MANAGED_BY: OPERATOR_NAME},
                         "ownerReferences": [{"apiVersion": names.POLICY_GROUP_VERSION, "kind": "ClusterPolicy",
                                              "name": policy["metadata"]["name"],
                                              "uid": policy["metadata"]["uid"], "controller": True}]},
            "data": default_mig_config_data(),
        }
        self.api.apply(path, manifest, field_manager=OPERATOR_NAME, what="apply default-mig-parted-config")
        self.default_config_written.add(namespace)

    def _delete(self, path: str, what: str) -> None:
        try:
            self.api.delete(path, what=what)
        except KubeError as exc:
            if not exc.not_found:
                raise

    def _report(self, policy: dict[str, Any], namespace: str, ready: bool) -> None:
        state = "ready" if ready else "notReady"
        status = policy.get("status") or {}
        if status.get("state") == state and status.get("namespace") == namespace:
            return
        body = {"status": {
            "state": state, "namespace": namespace,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                            "reason": "Reconciled" if ready else "OperandNotReady",
                            "message": "" if ready else "ClusterPolicy is not ready, operands are being deployed",
                            "lastTransitionTime": time_text()}],
        }}
        try:
            result = self.api.patch(f"{names.POLICY_PATH}/{policy['metadata']['name']}/status", body,
                                    what="update ClusterPolicy status")
            self.policies.observe(result)
        except KubeError as exc:
            if not exc.not_found:
                raise

    # -- per node --------------------------------------------------------------------------------------------

    def label_node(self, view: NodeView) -> dict[str, str | None]:
        """Labels the operator would add to this node (it never overwrites a non-empty value)."""
        policy = self.policy()
        node_labels = view.labels
        if policy is None or not any(node_labels.get(key) == "true" for key in names.NFD_NVIDIA_PCI):
            return {}
        if node_labels.get(names.DEPLOY_OPERANDS) == "false":
            return {}
        wanted: dict[str, str | None] = {}
        if node_labels.get(names.GPU_PRESENT) != "true":
            wanted[names.GPU_PRESENT] = "true"
        for operand in names.OPERATOR_OPERANDS:
            if not node_labels.get(names.DEPLOY_PREFIX + operand):
                wanted[names.DEPLOY_PREFIX + operand] = "true"
        capable = mig_capable(node_labels)
        if capable and _spec(policy, "migManager", "enabled", default=True):
            if not node_labels.get(names.DEPLOY_MIG_MANAGER):
                wanted[names.DEPLOY_MIG_MANAGER] = "true"
            default = _spec(policy, "migManager", "config", "default", default="all-disabled")
            if not node_labels.get(names.MIG_CONFIG) and default == "all-disabled":
                wanted[names.MIG_CONFIG] = "all-disabled"
        return wanted

