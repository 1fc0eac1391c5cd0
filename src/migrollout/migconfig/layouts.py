"""Layouts on GPUs: what a parsed mig-parted config makes of a node's GPUs (mig-parted's walk, resolved per
GPU), whether a layout fits one GPU of a model (NVML's profiles, maximum counts and placements), and the
role's custom configs checked against the GPU models they target."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from migrollout.catalogue import GpuModel, MigProfile
from migrollout.migconfig.document import (
    DEFAULT_DIALECT,
    Dialect,
    MigPartedConfig,
    check_document,
    mig_parted_yaml,
    parse_config_text,
)

# -- one GPU's layout ----------------------------------------------------------------------------------------

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



# -- layouts on GPUs -----------------------------------------------------------------------------------------

def _placement_exists(instances: list[MigProfile], total_memory_slices: int) -> bool:
    """Can every GPU instance get one of its placements without overlapping another? (NVML's rule; mig-parted
    tries every creation order, so any valid placement will be found.)"""
    order = sorted(instances, key=lambda p: (-p.memory_slices, len(p.placements)))

    def place(index: int, used: int) -> bool:
        if index == len(order):
            return True
        profile = order[index]
        for start in profile.placements:
            mask = ((1 << profile.memory_slices) - 1) << start
            if start + profile.memory_slices <= total_memory_slices and not used & mask and place(index + 1,
                                                                                                    used | mask):
                return True
        return False

    return place(0, 0)


def layout_problems(layout: GpuLayout, model: GpuModel) -> list[str]:
    """Why ``layout`` cannot exist on one GPU of ``model`` (empty when it can)."""
    if not layout.mig_enabled:
        return []
    if not model.mig_capable:
        return [f"{model.key} does not support MIG"]
    problems = []
    compute = memory = media = 0
    instances: list[MigProfile] = []
    counts: dict[str, int] = {}
    for name, count in layout.devices.items():
        profile = model.profile(name)
        if profile is None:
            problems.append(
                f"profile {name} does not exist on {model.key} (valid: {', '.join(model.profile_names())})"
            )
            continue
        # NVML's maximum is per GPU-instance profile, whichever compute instances they hold.
        counts[profile.gpu_instance_name] = counts.get(profile.gpu_instance_name, 0) + count
        compute += count * profile.compute_slices
        memory += count * profile.memory_slices
        media += count if profile.has_media_extensions else 0
        instances.extend([profile] * count)
    for name, count in counts.items():
        profile = model.profile(name)
        if profile is not None and count > profile.max_count:
            problems.append(f"{count} x {name} exceeds the maximum of {profile.max_count} per {model.key} GPU")
    if problems:
        return problems
    if compute > model.compute_slices or memory > model.memory_slices:
        problems.append(
            f"{format_devices(layout.devices)} needs {compute} compute and {memory} memory slices; "
            f"one {model.key} GPU has {model.compute_slices} and {model.memory_slices}"
        )
    elif not _placement_exists(instances, model.memory_slices):
        problems.append(f"{format_devices(layout.devices)} has no valid placement on a {model.key} GPU "
                        f"(the instances' possible positions overlap)")
    if media > 1:
        problems.append(f"at most one media-extension (+me) instance fits on a {model.key} GPU")
    return problems


def canonical_layout(layout: GpuLayout, model: GpuModel) -> GpuLayout:
    """The layout with profile names as NVML reports them (``1c.1g.10gb`` is ``1g.10gb``); unknown names stay."""
    if not layout.mig_enabled:
        return layout
    devices: dict[str, int] = {}
    for name, count in layout.devices.items():
        profile = model.profile(name)
        key = profile.name if profile is not None else name
        devices[key] = devices.get(key, 0) + count
    return GpuLayout(True, devices).normalized()


@dataclass(frozen=True)
class WalkStep:
    """One step of mig-parted's walk: entry ``entry`` of the config applied to GPU ``index``."""

    entry: int
    index: int


def walk(config: MigPartedConfig, name: str, device_ids: Sequence[int],
         subsystem_ids: Sequence[int | None] | None = None) -> list[WalkStep]:
    """mig-parted's walk over config ``name`` for GPUs with these PCI ids: each entry in order, each GPU
    it selects in index order. A GPU more than one entry selects ends with the last one.
    Raises ``KeyError`` for an unknown config name."""
    subsystems = list(subsystem_ids) if subsystem_ids is not None else [None] * len(device_ids)
    steps = []
    for number, entry in enumerate(config.entries(name)):
        for index, device_id in enumerate(device_ids):
            if entry.matches_device(device_id, subsystems[index]) and entry.matches_index(index):
                steps.append(WalkStep(number, index))
    return steps


def resolve(config: MigPartedConfig, name: str, model: GpuModel, gpu_count: int,
            subsystem_id: int | None = None) -> list[GpuLayout | None]:
    """The layout each GPU of a node gets from config ``name``; ``None`` = left untouched.

    Later entries win for a GPU more than one entry selects, as in mig-parted's walk. On a GPU without
    MIG, mig-parted skips an entry for ``all`` devices or with MIG disabled. Profile names come out as
    NVML names them. Raises ``KeyError`` for an unknown config name.
    """
    layouts: list[GpuLayout | None] = [None] * gpu_count
    entries = config.entries(name)
    for step in walk(config, name, [model.device_id] * gpu_count, [subsystem_id] * gpu_count):
        entry = entries[step.entry]
        if not model.mig_capable and (entry.devices == "all" or not entry.mig_enabled):
            continue
        layout = GpuLayout(entry.mig_enabled, dict(entry.mig_devices)).normalized()
        layouts[step.index] = canonical_layout(layout, model)
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


# -- custom configs against the GPU models they target -------------------------------------------------------

def check_custom_configs(configs: Mapping[str, Any], candidates: Sequence[GpuModel], models: Sequence[GpuModel],
                         dialect: Dialect = DEFAULT_DIALECT) -> tuple[dict[str, list[str]], list[str]]:
    """(config -> models each config fits, problems) for the role's custom configs.

    First the file the role writes (``mig_parted_yaml(configs)``) must load in mig-parted; then an entry
    with a device-filter must fit every model it names, and one without must fit at least one of the
    ``candidates`` (the cluster's MIG models). ``models`` is the whole catalogue.

    The fit check is stricter than mig-parted's load on purpose: mig-parted checks only the form of profile
    names when it reads the file, and finds out that a profile does not exist on a GPU, or does not fit
    it, when it applies the config to that node (the node's state goes to ``failed``). The toolkit checks
    that before any change, with NVML's profiles (compute-instance profiles such as ``1c.3g.40gb``
    included) and placements.
    """
    problems = check_document(mig_parted_yaml(configs), dialect)
    if problems:
        return {}, problems
    parsed = parse_config_text(mig_parted_yaml(configs), dialect)
    fits: dict[str, list[str]] = {}
    for name in parsed.names():
        targets: set[str] = set()
        for index, entry in enumerate(parsed.entries(name)):
            where = f"mig-configs.{name}[{index}]"
            layout = GpuLayout(entry.mig_enabled, dict(entry.mig_devices))
            if entry.filters:
                named = entry.filter_models(models)
                unknown = [f.text for f in entry.filters if not any(f.matches(m.device_id) for m in models)]
                if unknown:
                    problems.append(f"{where}: device-filter {', '.join(unknown)} matches no GPU in the catalogue "
                                    f"(a filter is 0x<device><vendor>, e.g. 0x20B010DE)")
                for model in named:
                    problems.extend(f"{where}: {problem}" for problem in layout_problems(layout, model))
                targets.update(m.key for m in named if not layout_problems(layout, m))
                continue
            if not entry.mig_enabled:
                targets.update(m.key for m in candidates)
                continue
            good = [m for m in candidates if not layout_problems(layout, m)]
            if not good:
                reasons = sorted({p for m in candidates for p in layout_problems(layout, m)})
                problems.append(f"{where}: {format_devices(layout.devices)} fits none of the GPU models it could "
                                f"target ({', '.join(m.key for m in candidates)}): " + "; ".join(reasons[:3]))
            targets.update(m.key for m in good)
        fits[name] = sorted(targets)
    return fits, problems
