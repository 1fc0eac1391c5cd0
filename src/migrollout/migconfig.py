"""mig-parted configuration files: parsing, resolution onto a node's GPUs, and fit checks.

A mig-parted file (``version: v1``, ``mig-configs: {name: [entry, ...]}``) is what the
NVIDIA MIG manager applies when a node is labelled ``nvidia.com/mig.config=<name>``.
Each entry selects GPUs by ``devices`` (``all`` or indices) and optionally
``device-filter`` (PCI ids ``0x<device><vendor>``); GPUs no entry selects are left
as they are, exactly as mig-parted does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from migrollout.catalogue import GpuModel

CONFIG_KEY = "config.yaml"


class MigConfigError(ValueError):
    """The mig-parted file itself is malformed."""


@dataclass(frozen=True)
class GpuLayout:
    """What one physical GPU looks like: MIG mode and its MIG devices by profile name."""

    mig_enabled: bool
    devices: Mapping[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"mig-enabled": self.mig_enabled, "mig-devices": dict(sorted(self.devices.items()))}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GpuLayout:
        return cls(bool(data.get("mig-enabled", False)), dict(data.get("mig-devices") or {}))

    def normalized(self) -> GpuLayout:
        if not self.mig_enabled:
            return GpuLayout(False, {})
        return GpuLayout(True, {name: count for name, count in sorted(self.devices.items()) if count > 0})


DISABLED = GpuLayout(False, {})


@dataclass(frozen=True)
class ConfigEntry:
    devices: str | tuple[int, ...]
    mig_enabled: bool
    mig_devices: Mapping[str, int]
    device_filter: tuple[str, ...]

    def selects(self, index: int, model: GpuModel) -> bool:
        if self.device_filter and model.device_filter not in self.device_filter:
            return False
        return self.devices == "all" or index in self.devices  # type: ignore[operator]


@dataclass(frozen=True)
class MigPartedConfig:
    configs: Mapping[str, tuple[ConfigEntry, ...]]

    def names(self) -> list[str]:
        return sorted(self.configs)

    def __contains__(self, name: object) -> bool:
        return name in self.configs

    def entries(self, name: str) -> tuple[ConfigEntry, ...]:
        return self.configs[name]


def _normalize_filter(raw: Any, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise MigConfigError(f"{where}: device-filter must be a string or a list of strings")
    # mig-parted v0.15 accepts an optional ":<subsystem>" suffix; the subsystem is not modelled.
    return tuple(_canonical_pci_id(item.split(":")[0]) for item in items)


def _canonical_pci_id(text: str) -> str:
    digits = text.strip()
    if digits[:2].lower() == "0x":
        digits = digits[2:]
    return "0x" + digits.upper()


def _parse_entry(raw: Any, where: str) -> ConfigEntry:
    if not isinstance(raw, Mapping):
        raise MigConfigError(f"{where}: each entry must be a mapping")
    unknown = set(raw) - {"devices", "mig-enabled", "mig-devices", "device-filter"}
    if unknown:
        raise MigConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    devices = raw.get("devices")
    if devices == "all":
        selected: str | tuple[int, ...] = "all"
    elif isinstance(devices, list) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in devices):
        selected = tuple(devices)
    else:
        raise MigConfigError(f"{where}: devices must be 'all' or a list of GPU indices")
    enabled = raw.get("mig-enabled")
    if not isinstance(enabled, bool):
        raise MigConfigError(f"{where}: mig-enabled must be true or false")
    mig_devices = raw.get("mig-devices") or {}
    if not isinstance(mig_devices, Mapping):
        raise MigConfigError(f"{where}: mig-devices must be a mapping of profile to count")
    for profile, count in mig_devices.items():
        if not isinstance(profile, str) or not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise MigConfigError(f"{where}: mig-devices entry {profile!r}: {count!r} must be a profile and a count >= 0")
    if mig_devices and not enabled:
        raise MigConfigError(f"{where}: mig-devices given with mig-enabled: false")
    return ConfigEntry(selected, enabled, dict(mig_devices), _normalize_filter(raw.get("device-filter"), where))


def parse_config(data: Mapping[str, Any]) -> MigPartedConfig:
    if not isinstance(data, Mapping):
        raise MigConfigError("a mig-parted config must be a mapping with 'version' and 'mig-configs'")
    if data.get("version") != "v1":
        raise MigConfigError(f"unsupported mig-parted config version {data.get('version')!r} (expected v1)")
    raw_configs = data.get("mig-configs")
    if not isinstance(raw_configs, Mapping) or not raw_configs:
        raise MigConfigError("'mig-configs' must be a non-empty mapping of config name to entries")
    configs: dict[str, tuple[ConfigEntry, ...]] = {}
    for name, entries in raw_configs.items():
        if not isinstance(entries, list) or not entries:
            raise MigConfigError(f"mig-configs.{name}: must be a non-empty list of entries")
        configs[str(name)] = tuple(
            _parse_entry(entry, f"mig-configs.{name}[{index}]") for index, entry in enumerate(entries)
        )
    return MigPartedConfig(configs)


def parse_config_text(text: str) -> MigPartedConfig:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MigConfigError(f"not valid YAML: {exc}") from None
    return parse_config(data)


def parse_configmap(configmap: Mapping[str, Any]) -> MigPartedConfig:
    name = configmap.get("metadata", {}).get("name", "?")
    text = (configmap.get("data") or {}).get(CONFIG_KEY)
    if text is None:
        raise MigConfigError(f"ConfigMap {name} has no key {CONFIG_KEY!r}")
    try:
        return parse_config_text(text)
    except MigConfigError as exc:
        raise MigConfigError(f"ConfigMap {name}: {exc}") from None


def layout_problems(layout: GpuLayout, model: GpuModel) -> list[str]:
    """Why ``layout`` cannot exist on one GPU of ``model`` (empty when it can)."""
    if not layout.mig_enabled:
        return []
    if not model.mig_capable:
        return [f"{model.key} does not support MIG"]
    problems = []
    compute = memory = 0
    for name, count in layout.devices.items():
        profile = model.profile(name)
        if profile is None:
            problems.append(
                f"profile {name} does not exist on {model.key} (valid: {', '.join(model.profile_names())})"
            )
            continue
        if count > profile.max_count:
            problems.append(f"{count} x {name} exceeds the maximum of {profile.max_count} per {model.key} GPU")
        compute += count * profile.compute_slices
        memory += count * profile.memory_slices
    if not problems and (compute > model.compute_slices or memory > model.memory_slices):
        problems.append(
            f"{format_devices(layout.devices)} needs {compute} compute and {memory} memory slices; "
            f"one {model.key} GPU has {model.compute_slices} and {model.memory_slices}"
        )
    media = sum(count for name, count in layout.devices.items() if "+me" in name)
    if media > 1:
        problems.append(f"at most one media-extension (+me) instance fits on a {model.key} GPU")
    return problems


def resolve(config: MigPartedConfig, name: str, model: GpuModel, gpu_count: int) -> list[GpuLayout | None]:
    """The layout each GPU of a node gets from config ``name``; ``None`` = left untouched.

    Later entries win for a GPU more than one entry selects, as in mig-parted's walk.
    Raises ``KeyError`` for an unknown config name.
    """
    layouts: list[GpuLayout | None] = [None] * gpu_count
    for entry in config.entries(name):
        for index in range(gpu_count):
            if not entry.selects(index, model):
                continue
            if not entry.mig_enabled and not model.mig_capable:
                # mig-parted skips 'mig-enabled: false' on GPUs without MIG.
                continue
            layouts[index] = GpuLayout(entry.mig_enabled, dict(entry.mig_devices)).normalized()
    return layouts


def fit_problems(config: MigPartedConfig, name: str, model: GpuModel, gpu_count: int) -> list[str]:
    """Why config ``name`` cannot be applied to ``gpu_count`` GPUs of ``model`` (empty when it can)."""
    if name not in config:
        return [f"MIG config {name} is not defined"]
    resolved = resolve(config, name, model, gpu_count)
    if gpu_count and all(layout is None for layout in resolved):
        filters = sorted({f for entry in config.entries(name) for f in entry.device_filter})
        hint = f" (its device-filter: {', '.join(filters)}; this GPU: {model.device_filter})" if filters else ""
        return [f"MIG config {name} selects none of the {model.key} GPUs{hint}"]
    gpus_by_problem: dict[str, list[int]] = {}
    for index, layout in enumerate(resolved):
        if layout is not None:
            for problem in layout_problems(layout, model):
                gpus_by_problem.setdefault(problem, []).append(index)
    return [f"{_gpu_list(indices, gpu_count)}: {problem}" for problem, indices in gpus_by_problem.items()]


def _gpu_list(indices: list[int], gpu_count: int) -> str:
    if len(indices) == gpu_count and gpu_count > 1:
        return f"all {gpu_count} GPUs"
    return ("GPU " if len(indices) == 1 else "GPUs ") + ",".join(map(str, indices))


def devices_per_gpu(config: MigPartedConfig, name: str, model: GpuModel) -> int | None:
    """MIG devices config ``name`` puts on one GPU of ``model`` (None if unknown or MIG off)."""
    if name not in config:
        return None
    layout = resolve(config, name, model, 1)[0]
    if layout is None or not layout.mig_enabled:
        return None
    return sum(layout.devices.values())


def apply_layouts(current: list[GpuLayout], desired: list[GpuLayout | None]) -> list[GpuLayout]:
    return [want if want is not None else have for have, want in zip(current, desired, strict=True)]


def format_devices(devices: Mapping[str, int]) -> str:
    if not devices:
        return "no MIG devices"
    return " + ".join(f"{count}x{name}" for name, count in sorted(devices.items()))


def describe_layouts(layouts: list[GpuLayout]) -> str:
    """A compact human description, e.g. ``8 GPUs: MIG 7x1g.10gb``."""
    groups: dict[str, int] = {}
    for layout in layouts:
        text = f"MIG {format_devices(layout.devices)}" if layout.mig_enabled else "MIG disabled"
        groups[text] = groups.get(text, 0) + 1
    return "; ".join(f"{count} GPU{'s' if count != 1 else ''}: {text}" for text, count in groups.items())
