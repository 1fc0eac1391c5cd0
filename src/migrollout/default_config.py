"""The GPU Operator's own default MIG configs (``default-mig-parted-config``), per operator release.

Which configs exist and what they select changes between operator releases (v26.7.0 scopes
``all-1g.35gb`` to H200-141GB and GB300, adds B300/GB300 configs ...). The toolkit merges them into custom
ConfigMaps and predicts layouts from them, so it must use the deployed release's, not one hand-typed list.
Each release's configs are a data file, ``data/default-mig-configs-<version>.yaml``, transcribed from that
release's ``assets/state-mig-manager/0400_configmap.yaml``; the conformance tests compare the one of the
release the simulated cluster runs with NVIDIA's file.

Which release's data applies (``defaults_version``): the exact release when recorded; else the newest
recorded release older than it (the defaults change only with releases, and a patch release rarely changes
them); a release older than every recorded one gets the oldest recorded data. Record a new file when a
release changes the defaults.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml

from migrollout.catalogue import NVIDIA_VENDOR_ID
from migrollout.migconfig.document import MigPartedConfig, parse_config, version_tuple
from migrollout.migconfig.go_yaml import dump_yaml

DEFAULT_CONFIGMAP_NAME = "default-mig-parted-config"
# The chart version the role installs unless told otherwise (roles/gpu_operator/defaults).
DEFAULT_OPERATOR_VERSION = "v26.7.0"
DATA_PREFIX = "default-mig-configs-"


class UnknownOperatorVersion(ValueError):
    """A GPU Operator version the toolkit cannot read."""


@cache
def _recorded() -> dict[tuple[int, int, int], str]:
    found = {}
    for entry in resources.files("migrollout").joinpath("data").iterdir():
        if entry.name.startswith(DATA_PREFIX) and entry.name.endswith(".yaml"):
            version = version_tuple(entry.name.removeprefix(DATA_PREFIX).removesuffix(".yaml"))
            if version is not None:
                found[version] = entry.name
    return dict(sorted(found.items()))


def recorded_versions() -> list[str]:
    return ["v" + ".".join(map(str, version)) for version in _recorded()]


def operator_version(text: str) -> tuple[int, int, int]:
    """A GPU Operator (chart) version: ``v26.7.0``, ``26.7.0`` or ``v25.3``."""
    parsed = version_tuple(str(text))
    if parsed is None or parsed[0] < 22:
        # Calendar versions start at v22.9.0; older ("1.11") and development builds ("v1.0.0-devel")
        # do not say which MIG manager or defaults they carry.
        raise UnknownOperatorVersion(f"{text!r} is not a GPU Operator release version such as v26.7.0")
    return parsed


def defaults_version(version: str | None = None) -> str:
    """The recorded release whose default configs stand for GPU Operator ``version`` (the module's rule)."""
    wanted = operator_version(version or DEFAULT_OPERATOR_VERSION)
    recorded = list(_recorded())
    older = [found for found in recorded if found <= wanted]
    chosen = older[-1] if older else recorded[0]
    return "v" + ".".join(map(str, chosen))


@cache
def _data(version: str) -> dict[str, Any]:
    name = _recorded()[operator_version(version)]
    text = resources.files("migrollout").joinpath("data", name).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def mig_manager_version(version: str | None = None) -> str:
    """The MIG manager the recorded release standing for ``version`` deploys."""
    return str(_data(defaults_version(version))["mig_manager_version"])


def _entries(spec: Any) -> list[dict[str, Any]]:
    if spec == "disabled":
        return [{"devices": "all", "mig-enabled": False}]
    if isinstance(spec, dict):
        return [{"devices": "all", "mig-enabled": True, "mig-devices": dict(spec)}]
    return [
        {"device-filter": [f"0x{gpu}{NVIDIA_VENDOR_ID}" for gpu in item["gpus"]], "devices": "all",
         "mig-enabled": True, "mig-devices": dict(item["devices"])}
        for item in spec
    ]


@cache
def _build(version: str) -> dict[str, Any]:
    configs = {str(name): _entries(spec) for name, spec in _data(version)["configs"].items()}
    return {"version": "v1", "mig-configs": configs}


def build_default_config(version: str | None = None) -> dict[str, Any]:
    """The operator's default mig-parted file (as data) for GPU Operator ``version`` (default: the role's)."""
    built = _build(defaults_version(version))
    # A copy: callers merge into it.
    return {"version": "v1", "mig-configs": {name: [dict(entry) for entry in entries]
                                             for name, entries in built["mig-configs"].items()}}


@cache
def default_mig_config(version: str | None = None) -> MigPartedConfig:
    """The parsed default configs (cached: fleets resolve them per node)."""
    return parse_config(_build(defaults_version(version)))


def default_config_yaml(version: str | None = None) -> str:
    return dump_yaml(build_default_config(version))
