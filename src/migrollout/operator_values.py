"""The GPU Operator chart values the role installs with, computed from its flat, prefixed variables."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import yaml

from migrollout.default_config import build_default_config

CHART_DEFAULT_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]

# Each operand's image repository in the upstream chart, below the registry (nvcr.io).
IMAGE_PATHS = {
    "operator": "nvidia",
    "driver": "nvidia",
    "toolkit": "nvidia/k8s",
    "devicePlugin": "nvidia",
    "dcgm": "nvidia/cloud-native",
    "dcgmExporter": "nvidia/k8s",
    "gfd": "nvidia",
    "migManager": "nvidia/cloud-native",
    "validator": "nvidia/cloud-native",
}


def deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def mig_parted_yaml(configs: Mapping[str, Any]) -> str:
    """A mig-parted file (version v1) for ``configs``, in a stable form so re-runs compare equal."""
    return yaml.safe_dump({"version": "v1", "mig-configs": dict(sorted(configs.items()))}, sort_keys=False,
                          default_flow_style=False)


def build_values(strategy: str, *, driver: bool = True, toolkit: bool = True, dcgm: bool = False,
                 dcgm_exporter: bool = True, mig_manager: bool = True, mig_manager_env: Mapping[str, Any] | None = None,
                 mig_configs: Mapping[str, Any] | None = None, mig_config_map: str = "custom-mig-parted-config",
                 mig_configs_with_defaults: bool = True,
                 tolerations: list[dict[str, Any]] | None = None, registry: str = "",
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    values: dict[str, Any] = {
        "mig": {"strategy": strategy},
        "driver": {"enabled": driver},
        "toolkit": {"enabled": toolkit},
        "dcgm": {"enabled": dcgm},
        "dcgmExporter": {"enabled": dcgm_exporter},
        "migManager": {
            "enabled": mig_manager,
            "env": [{"name": str(k), "value": str(v)} for k, v in sorted((mig_manager_env or {}).items())],
        },
        "daemonsets": {"tolerations": CHART_DEFAULT_TOLERATIONS + [t for t in tolerations or []
                                                                   if t not in CHART_DEFAULT_TOLERATIONS]},
    }
    if mig_configs:
        # The MIG manager reads only this ConfigMap once it is named: without the standard configs a node
        # labelled all-disabled (the operator's default label) would fail to apply.
        configs = {**build_default_config()["mig-configs"], **mig_configs} if mig_configs_with_defaults \
            else dict(mig_configs)
        values["migManager"]["config"] = {"create": True, "name": mig_config_map, "default": "all-disabled",
                                          "data": {"config.yaml": mig_parted_yaml(configs)}}
    if registry:
        for component, path in IMAGE_PATHS.items():
            values.setdefault(component, {})["repository"] = f"{registry.rstrip('/')}/{path}"
    return deep_merge(values, extra or {})
