"""The GPU Operator chart values the role installs with, computed from its flat, prefixed variables."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from migrollout import default_config
from migrollout.migconfig.document import (
    Dialect,
    check_document,
    mig_parted_yaml,
    profile_format_error,
    version_tuple,
)

__all__ = ["MergedConfigs", "MigConfigsRefused", "build_values", "chart_versions", "deep_merge",
           "merged_mig_configs", "mig_manager_for", "mig_parted_yaml"]

CHART_DEFAULT_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]

def deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# The MIG manager each GPU Operator release line deploys (its chart's migManager.version): a release uses the
# last row not newer than it. Only the boundaries where mig-parted's parser changed matter to the toolkit
# (v0.12.3: "-me" and "+me.all" names; v0.15.0: subsystem device filters). Releases before v24.9.0 deploy
# older MIG managers, which parse as v0.10.0 does; they get its row.
OPERATOR_MIG_MANAGERS: tuple[tuple[tuple[int, int, int], str], ...] = (
    ((24, 9, 0), "v0.10.0"),
    ((25, 3, 0), "v0.12.1"),
    ((25, 3, 2), "v0.12.2"),
    ((25, 3, 3), "v0.12.3"),
    ((25, 10, 0), "v0.13.0"),
    ((25, 10, 1), "v0.13.1"),
    ((26, 3, 0), "v0.14.0"),
    ((26, 3, 2), "v0.14.2"),
    ((26, 7, 0), "v0.15.0"),
)


class MigConfigsRefused(ValueError):
    """The MIG configs cannot go into the ConfigMap of this chart: one sentence says why."""


@dataclass(frozen=True)
class MergedConfigs:
    """The configs for the custom ConfigMap, and what was decided on the way."""

    configs: dict[str, Any]
    mig_manager_version: str
    defaults_version: str | None = None
    # Standard configs the deployed MIG manager could not parse, left out (name -> the profile it chokes on).
    left_out: dict[str, str] = field(default_factory=dict)


def mig_manager_for(chart_version: str | None = None, mig_manager_version: str | None = None) -> str:
    """The MIG manager version a chart deploys: the image tag when given (``v0.12.3-ubuntu20.04``), else
    the chart release's (default: the role's chart version)."""
    if mig_manager_version:
        parsed = version_tuple(str(mig_manager_version))
        if parsed is None:
            raise MigConfigsRefused(f"MIG manager image tag {mig_manager_version!r} does not start with a version "
                                    f"such as v0.15.0, so the toolkit cannot tell which MIG configs it can parse")
        return "v" + ".".join(map(str, parsed))
    try:
        release = default_config.operator_version(chart_version or default_config.DEFAULT_OPERATOR_VERSION)
    except default_config.UnknownOperatorVersion as exc:
        raise MigConfigsRefused(f"{exc}, so the toolkit cannot tell which MIG manager it deploys: give the chart's "
                                f"release version or the MIG manager image tag (migManager.version)") from None
    found = [manager for first, manager in OPERATOR_MIG_MANAGERS if first <= release]
    return found[-1] if found else OPERATOR_MIG_MANAGERS[0][1]


def chart_versions(chart_dir: str | Path) -> tuple[str, str | None]:
    """(the chart's version, its MIG manager image tag) from a GPU Operator chart on disk, for
    ``merged_mig_configs`` when the role installs from a chart directory."""
    chart = Path(chart_dir)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text()) or {}
    values_file = chart / "values.yaml"
    values = (yaml.safe_load(values_file.read_text()) or {}) if values_file.exists() else {}
    tag = ((values.get("migManager") or {}).get("version")) if isinstance(values, dict) else None
    return str(meta.get("version", "")), (str(tag) if tag else None)


def _operator_for_mig_manager(mig_manager: str) -> str:
    """The newest recorded operator release whose MIG manager is not newer than ``mig_manager``."""
    wanted = version_tuple(mig_manager) or (0, 0, 0)
    releases = [first for first, manager in OPERATOR_MIG_MANAGERS if (version_tuple(manager) or (0, 0, 0)) <= wanted]
    chosen = releases[-1] if releases else OPERATOR_MIG_MANAGERS[0][0]
    return "v" + ".".join(map(str, chosen))


def _is_release(version: str) -> bool:
    try:
        default_config.operator_version(version)
    except default_config.UnknownOperatorVersion:
        return False
    return True


def _unparsable_profile(entries: Any, dialect: Dialect) -> str:
    for entry in entries:
        for profile in (entry.get("mig-devices") or {}):
            if profile_format_error(str(profile), dialect):
                return str(profile)
    return ""


def merged_mig_configs(custom: Mapping[str, Any], chart_version: str | None = None,
                       mig_manager_version: str | None = None, with_defaults: bool = True) -> MergedConfigs:
    """The configs for the role's custom ConfigMap: the operator's standard configs of that chart release
    (``with_defaults``) with the custom ones on top, limited to what the chart's MIG manager can parse.

    The MIG manager rejects the whole file for one name it cannot parse, and then every MIG change on every
    node fails; MIG managers before v0.12.3 (GPU Operator before v25.3.3) cannot parse ``-me`` or
    ``+me.all`` profiles. So a standard config it cannot parse is left out (and reported in ``left_out``),
    and custom configs it cannot parse are refused (``MigConfigsRefused``) before anything is installed.
    """
    manager = mig_manager_for(chart_version, mig_manager_version)
    dialect = Dialect.for_mig_manager(manager)
    problems = check_document(mig_parted_yaml(dict(custom)), dialect)
    if problems:
        shown = "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
        raise MigConfigsRefused(f"the MIG manager {manager} of this chart would reject the whole MIG config "
                                f"ConfigMap, so every MIG change would fail: {shown}")
    if not with_defaults:
        return MergedConfigs(dict(custom), manager)
    if chart_version and _is_release(chart_version):
        release = chart_version
    elif mig_manager_version:
        release = _operator_for_mig_manager(manager)
    else:
        release = default_config.DEFAULT_OPERATOR_VERSION
    used = default_config.defaults_version(release)
    configs: dict[str, Any] = {}
    left_out: dict[str, str] = {}
    for name, entries in default_config.build_default_config(release)["mig-configs"].items():
        profile = _unparsable_profile(entries, dialect)
        if profile and name not in custom:
            left_out[name] = profile
        elif not profile:
            configs[name] = entries
    configs.update(custom)
    return MergedConfigs(configs, manager, used, left_out)


def build_values(strategy: str, *, driver: bool = True, toolkit: bool = True, dcgm: bool = False,
                 dcgm_exporter: bool = True, mig_manager: bool = True, mig_manager_env: Mapping[str, Any] | None = None,
                 mig_configs: Mapping[str, Any] | None = None, mig_config_map: str = "custom-mig-parted-config",
                 mig_configs_with_defaults: bool = True,
                 tolerations: list[dict[str, Any]] | None = None,
                 extra: Mapping[str, Any] | None = None, chart_version: str | None = None,
                 mig_manager_version: str | None = None) -> dict[str, Any]:
    """The chart values. ``chart_version`` (default: the role's) and ``mig_manager_version`` (default: an
    override in ``extra``'s migManager.version, else the chart's) decide which standard MIG configs are merged
    into custom ones and what the MIG manager can parse; ``MigConfigsRefused`` when it cannot parse them."""
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
        override = ((extra or {}).get("migManager") or {}).get("version")
        configs = merged_mig_configs(mig_configs, chart_version, mig_manager_version or override,
                                     with_defaults=mig_configs_with_defaults).configs
        values["migManager"]["config"] = {"create": True, "name": mig_config_map, "default": "all-disabled",
                                          "data": {"config.yaml": mig_parted_yaml(configs)}}
    return deep_merge(values, extra or {})
