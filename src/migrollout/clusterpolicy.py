"""Reading the NVIDIA GPU Operator's ClusterPolicy: strategy, MIG manager settings, namespace.

The operator's settings live in one cluster-scoped ``ClusterPolicy`` (nvidia.com/v1);
its ``status.namespace`` names the namespace the operands run in.
"""

from __future__ import annotations

from typing import Any

from migrollout import labels
from migrollout.default_config import DEFAULT_CONFIGMAP_NAME

GROUP_VERSION = "nvidia.com/v1"
PLURAL = "clusterpolicies"
DEFAULT_NAMESPACE = "gpu-operator"
# An absent spec.mig.strategy: the operator passes no MIG_STRATEGY to the device plugin and feature
# discovery, whose own default is "none" (the chart's "single" is a chart value, not the CRD's default).
DEFAULT_STRATEGY = "none"

Policy = dict[str, Any]


def _get(policy: Policy | None, *path: str, default: Any = None) -> Any:
    value: Any = policy or {}
    for part in path:
        if not isinstance(value, dict):
            return default
        value = value.get(part)
    return default if value is None else value


def strategy(policy: Policy | None) -> str:
    """The MIG strategy the device plugin and feature discovery run with under this ClusterPolicy."""
    return str(_get(policy, "spec", "mig", "strategy", default="") or DEFAULT_STRATEGY)


def namespace(policy: Policy | None, fallback: str = DEFAULT_NAMESPACE) -> str:
    """The operand namespace: the status the operator reports, else the helm release namespace."""
    annotations = _get(policy, "metadata", "annotations", default={})
    return str(_get(policy, "status", "namespace") or annotations.get("meta.helm.sh/release-namespace") or fallback)


def mig_manager_enabled(policy: Policy | None) -> bool:
    return bool(_get(policy, "spec", "migManager", "enabled", default=True))


def mig_manager_env(policy: Policy | None) -> dict[str, str]:
    return {item.get("name", ""): str(item.get("value", "")) for item in _get(policy, "spec", "migManager", "env",
                                                                              default=[])}


def custom_config_name(policy: Policy | None) -> str:
    return str(_get(policy, "spec", "migManager", "config", "name", default=""))


def default_mig_config(policy: Policy | None) -> str:
    return str(_get(policy, "spec", "migManager", "config", "default", default="all-disabled"))


def config_map_candidates(policy: Policy | None, node_name: str) -> list[str]:
    """The MIG config ConfigMaps the MIG manager on ``node_name`` uses, in order of precedence.

    A ConfigMap named in the ClusterPolicy wins. Otherwise MIG managers from v0.14
    publish a config generated from the node's hardware as ``<node>-mig-config`` and
    fall back to the operator's ``default-mig-parted-config``.
    """
    named = custom_config_name(policy)
    if named:
        return [named]
    return [f"{node_name}-mig-config", DEFAULT_CONFIGMAP_NAME]


def is_ready(policy: Policy | None) -> bool:
    return _get(policy, "status", "state") == "ready"


def path(name: str | None = None) -> str:
    return f"/apis/{GROUP_VERSION}/{PLURAL}" + (f"/{name}" if name else "")


def _container_env(daemonset: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for container in _get(daemonset, "spec", "template", "spec", "containers", default=[]):
        for item in container.get("env") or []:
            if "value" in item:
                found[item.get("name", "")] = str(item["value"])
    return found


def _volume_config_map(daemonset: dict[str, Any], volume: str) -> str | None:
    for item in _get(daemonset, "spec", "template", "spec", "volumes", default=[]):
        if item.get("name") == volume:
            return (item.get("configMap") or {}).get("name")
    return None


# The MIG manager's volume that holds its mig-parted file (the operator's state-mig-manager DaemonSet).
MIG_CONFIG_VOLUME = "mig-parted-config"


def operand_lag(policy: Policy | None, daemonset: dict[str, Any]) -> str | None:
    """Why an operand DaemonSet does not yet carry what this ClusterPolicy asks of it (None when it does).

    The ClusterPolicy has no observedGeneration, and its ``state`` stays ``ready`` from the last reconcile
    until the operator has looked at a new spec; so a wait right after an install or upgrade compares the
    settings the toolkit changes with the DaemonSets the operator renders from them: the MIG strategy of the
    device plugin and feature discovery, and the MIG manager's config ConfigMap and environment.
    """
    app = _get(daemonset, "spec", "template", "metadata", "labels", default={}).get("app", "")
    env = _container_env(daemonset)
    if app in (labels.APP_DEVICE_PLUGIN, labels.APP_GFD):
        wanted = str(_get(policy, "spec", "mig", "strategy", default="") or "")
        running = env.get("MIG_STRATEGY", "")
        if wanted and running != wanted:
            return f"runs MIG_STRATEGY={running or '(unset)'}, the ClusterPolicy asks for {wanted}"
    if app == labels.APP_MIG_MANAGER:
        wanted_map = custom_config_name(policy) or DEFAULT_CONFIGMAP_NAME
        mounted = _volume_config_map(daemonset, MIG_CONFIG_VOLUME)
        if mounted is not None and mounted != wanted_map:
            return f"reads MIG configs from ConfigMap {mounted}, the ClusterPolicy names {wanted_map}"
        for name, value in mig_manager_env(policy).items():
            if env.get(name) != value:
                return f"runs {name}={env.get(name, '(unset)')}, the ClusterPolicy sets {value}"
    return None
