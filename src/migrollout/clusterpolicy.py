"""Reading the NVIDIA GPU Operator's ClusterPolicy: strategy, MIG manager settings, namespace.

The operator's settings live in one cluster-scoped ``ClusterPolicy`` (nvidia.com/v1);
its ``status.namespace`` names the namespace the operands run in.
"""

from __future__ import annotations

from typing import Any

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
