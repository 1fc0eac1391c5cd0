"""A mig-parted file read as mig-parted reads it: the document model (configs, entries, device filters,
dialects) and the parser that accepts or refuses a file.

Why the parser copies mig-parted's rules instead of having its own: the MIG manager reads the whole file
before it looks for the config a node asks for, so one entry it rejects fails every MIG change on every
node that uses the file. The toolkit must therefore refuse exactly what mig-parted refuses, before any
change, and accept what it accepts. The rules below are those of mig-parted's ``api/spec/v1`` (through
sigs.k8s.io/yaml, which turns the YAML into JSON first) and go-nvlib's profile-name grammar:

* top level: ``version`` must be ``v1``; the only other field is ``mig-configs``, which, when present,
  needs at least one config, each with at least one entry. A file with ``version: v1`` alone, and an empty
  file, are valid: they have no configs, so a node label naming one fails later, as in mig-parted;
* entry: ``devices`` (``all`` or a list of integers, negative ones included: they select nothing) and
  ``mig-enabled`` (``null`` reads as false) are required; ``device-filter`` is a string or a list of strings
  (``null`` and ``""`` mean no filter); no other field;
* ``mig-devices``: profile name -> count; every name well formed, every count >= 0 and, when the mapping is
  not empty, at least one count above 0; required (``{}`` allowed) when ``mig-enabled`` is true, empty when
  it is false;
* numbers are JSON numbers: ``7.0`` is 7, ``7.5`` is no count; ``null`` in a list or count is 0.

One deliberate difference: mig-parted reports the first problem it meets (in map order, which Go
randomises); the toolkit reports all of them, each naming the config entry.

Differences between MIG manager releases (``Dialect``): releases before v0.12.3 (go-nvlib < 0.7.4, GPU
Operator < v25.3.3) cannot parse ``-me`` and dotted attributes such as ``+me.all``; releases from v0.15.0
accept a ``:<subsystem>`` qualifier in device filters, which then must match exactly, and read filters as
unsigned numbers (earlier ones: signed 32-bit, no qualifier, so a qualified filter matches no GPU).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from migrollout.catalogue import GpuModel, parse_profile_name
from migrollout.migconfig.go_yaml import (
    NO_JSON_FORM,
    dump_yaml,
    go_parse_int,
    json_int,
    json_key,
    load_yaml,
    non_finite,
    plain_data,
)

CONFIG_KEY = "config.yaml"
ENTRY_FIELDS = ("devices", "device-filter", "mig-enabled", "mig-devices")


class MigConfigError(ValueError):
    """The mig-parted file itself is malformed (what mig-parted would refuse to load)."""

    def __init__(self, message: str, problems: Sequence[str] = ()):
        super().__init__(message)
        self.problems = list(problems) or [message]


# -- dialects ------------------------------------------------------------------------------------------------

def version_tuple(text: str) -> tuple[int, int, int] | None:
    """``v0.12.3``, ``0.12.3-ubuntu20.04`` or ``v25.3`` as a tuple; None when it is not such a version."""
    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.(\d+))?(?:[-+].*)?", text.strip())
    if not match:
        return None
    return int(match[1]), int(match[2]), int(match[3] or 0)


@dataclass(frozen=True)
class Dialect:
    """What one MIG manager release's mig-parted accepts where releases differ (see the module docstring)."""

    mig_manager_version: tuple[int, int, int]

    @property
    def extended_profile_names(self) -> bool:
        """``-me`` (negative attributes) and dotted attributes (``+me.all``): go-nvlib 0.7.4, MIG manager 0.12.3."""
        return self.mig_manager_version >= (0, 12, 3)

    @property
    def subsystem_filters(self) -> bool:
        return self.mig_manager_version >= (0, 15, 0)

    @property
    def label(self) -> str:
        return "v" + ".".join(map(str, self.mig_manager_version))

    @classmethod
    def for_mig_manager(cls, version: str) -> Dialect:
        parsed = version_tuple(version)
        if parsed is None:
            raise ValueError(f"{version!r} is not a MIG manager version such as v0.15.0")
        return cls(parsed)

    @classmethod
    def for_image(cls, image: str) -> Dialect | None:
        """The dialect of a MIG manager container image (``nvcr.io/.../k8s-mig-manager:v0.12.3-ubuntu20.04``);
        None when its tag names no version (a digest, ``latest``)."""
        reference = image.split("@", 1)[0]
        name, _, tag = reference.rpartition(":")
        if not name or "/" in tag:
            return None
        parsed = version_tuple(tag)
        return cls(parsed) if parsed is not None else None


# The MIG manager of the GPU Operator release real clusters get by default (v26.7.0).
DEFAULT_DIALECT = Dialect((0, 15, 0))


def profile_format_error(name: str, dialect: Dialect = DEFAULT_DIALECT) -> str:
    """Why mig-parted rejects ``name`` as a profile name ("" when it is well formed)."""
    return parse_profile_name(name, dialect.extended_profile_names)[1]



# -- the document model --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeviceFilter:
    """One ``device-filter`` item as mig-parted reads it; ``device_id`` None matches no GPU."""

    text: str
    device_id: int | None
    subsystem_id: int | None = None

    @classmethod
    def parse(cls, text: str, dialect: Dialect) -> DeviceFilter:
        if not dialect.subsystem_filters:
            value = go_parse_int(text, signed=True)
            # Go stores the signed result in a uint32: a negative number wraps around.
            return cls(text, None if value is None else value & 0xFFFFFFFF)
        parts = text.split(":")
        if len(parts) > 2:
            return cls(text, None)
        device = go_parse_int(parts[0], signed=False)
        subsystem = go_parse_int(parts[1], signed=False) if len(parts) == 2 else None
        if device is None or (len(parts) == 2 and subsystem is None):
            return cls(text, None)
        return cls(text, device, subsystem)

    def matches(self, device_id: int, subsystem_id: int | None = None) -> bool:
        """Does this filter select a GPU with this PCI id (and subsystem id, when the node's is known)?"""
        if self.device_id is None or self.device_id != device_id:
            return False
        return self.subsystem_id is None or self.subsystem_id == subsystem_id



@dataclass(frozen=True)
class ConfigEntry:
    devices: str | tuple[int, ...]
    mig_enabled: bool
    mig_devices: Mapping[str, int]
    # The filter items as written; ``filters`` holds how mig-parted reads them.
    device_filter: tuple[str, ...] = ()
    filters: tuple[DeviceFilter, ...] = ()

    def matches_device(self, device_id: int, subsystem_id: int | None = None) -> bool:
        return not self.filters or any(f.matches(device_id, subsystem_id) for f in self.filters)

    def matches_index(self, index: int) -> bool:
        return self.devices == "all" or index in self.devices

    def selects(self, index: int, model: GpuModel, subsystem_id: int | None = None) -> bool:
        return self.matches_device(model.device_id, subsystem_id) and self.matches_index(index)

    def filter_models(self, models: Iterable[GpuModel]) -> list[GpuModel]:
        """The models this entry's device-filter names (every model when it has none)."""
        return [model for model in models if self.matches_device(model.device_id)]


@dataclass(frozen=True)
class MigPartedConfig:
    configs: Mapping[str, tuple[ConfigEntry, ...]]
    dialect: Dialect = DEFAULT_DIALECT

    def names(self) -> list[str]:
        return sorted(self.configs)

    def __contains__(self, name: object) -> bool:
        return name in self.configs

    def entries(self, name: str) -> tuple[ConfigEntry, ...]:
        return self.configs[name]



# -- validation: the JSON view of the YAML, then mig-parted's spec rules -------------------------------------

def _json_mapping(value: Any, where: str, problems: list[str]) -> dict[str, Any] | None:
    converted: dict[str, Any] = {}
    for key, item in value.items():
        key_text = json_key(key)
        if key_text is NO_JSON_FORM:
            problems.append(f"{where}: the key {key!r} cannot be a JSON object key, so mig-parted cannot read "
                            f"the file")
            return None
        converted[str(key_text)] = item
    return converted



def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


def _parse_mig_devices(raw: Any, where: str, dialect: Dialect, problems: list[str]) -> dict[str, int] | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: mig-devices must be a mapping of profile name to count, not {_type_name(raw)}")
        return {}
    converted = _json_mapping(raw, where, problems)
    if converted is None:
        return {}
    devices: dict[str, int] = {}
    bad = False
    for profile, value in converted.items():
        count = json_int(value)
        if count is None:
            problems.append(f"{where}: mig-devices {profile!r}: the count must be a whole number, not {value!r}")
            bad = True
            continue
        devices[profile] = count
    if bad:
        return devices
    for profile, count in devices.items():
        error = profile_format_error(profile, dialect)
        if error:
            problems.append(f"{where}: mig-devices {profile!r} is not a MIG profile name ({error})")
            bad = True
        elif count < 0:
            problems.append(f"{where}: mig-devices {profile!r}: the count {count} is negative")
            bad = True
    if devices and not bad and all(count == 0 for count in devices.values()):
        problems.append(f"{where}: every count in mig-devices is 0 (mig-parted: all counts for all MigProfiles are 0);"
                        f" use mig-devices: {{}} for MIG enabled without devices")
    return devices


def _parse_filter(raw: Any, where: str, problems: list[str]) -> tuple[str, ...]:
    if raw is None or raw == "":
        return ()
    if isinstance(raw, str):
        return (raw,)
    if isinstance(raw, list) and all(item is None or isinstance(item, str) for item in raw):
        # A null item is Go's empty string: a filter that matches no GPU.
        return tuple("" if item is None else item for item in raw)
    problems.append(f"{where}: device-filter must be a string or a list of strings, not {_type_name(raw)}")
    return ()


def _parse_devices(raw: Any, where: str, problems: list[str]) -> str | tuple[int, ...]:
    if raw == "all":
        return "all"
    if isinstance(raw, list):
        indices = [json_int(item) for item in raw]
        if all(index is not None for index in indices):
            return tuple(index for index in indices if index is not None)
    problems.append(f"{where}: devices must be 'all' or a list of GPU indices, not {raw!r}")
    return ()


def _parse_entry(raw: Any, where: str, dialect: Dialect, problems: list[str]) -> ConfigEntry | None:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: each entry must be a mapping with devices and mig-enabled, not {_type_name(raw)}")
        return None
    before = len(problems)
    entry = _json_mapping(raw, where, problems)
    if entry is None:
        return None
    unknown = sorted(set(entry) - set(ENTRY_FIELDS))
    if unknown:
        problems.append(f"{where}: unknown field(s) {', '.join(unknown)} (mig-parted accepts only "
                        f"{', '.join(ENTRY_FIELDS)})")
    missing = [name for name in ("devices", "mig-enabled") if name not in entry]
    if missing:
        problems.append(f"{where}: missing required field(s) {', '.join(missing)}")
    devices = _parse_devices(entry["devices"], where, problems) if "devices" in entry else ()
    enabled_raw = entry.get("mig-enabled")
    if enabled_raw is not None and not isinstance(enabled_raw, bool):
        problems.append(f"{where}: mig-enabled must be true or false, not {enabled_raw!r}")
    enabled = enabled_raw is True
    filters = _parse_filter(entry.get("device-filter"), where, problems)
    mig_devices = _parse_mig_devices(entry.get("mig-devices"), where, dialect, problems)
    if "mig-enabled" in entry and isinstance(enabled_raw, bool | None):
        if enabled and mig_devices is None:
            problems.append(f"{where}: mig-enabled is true but mig-devices is missing or null (mig-parted requires "
                            f"it; use mig-devices: {{}} for MIG enabled without devices)")
        if not enabled and mig_devices:
            problems.append(f"{where}: mig-devices given with mig-enabled: false")
    if len(problems) > before:
        return None
    parsed_filters = tuple(DeviceFilter.parse(text, dialect) for text in filters)
    return ConfigEntry(devices, enabled, dict(mig_devices or {}), filters, parsed_filters)


def validate(data: Any, dialect: Dialect = DEFAULT_DIALECT) -> tuple[MigPartedConfig | None, list[str]]:
    """mig-parted's reading of a loaded file: (config, []) when it loads, else (None, every problem)."""
    problems: list[str] = []
    if non_finite(data):
        return None, ["the file holds a non-finite number (.nan, .inf), which mig-parted cannot turn into JSON"]
    if data is None:
        # An empty document is JSON null, which Go's decoder stores without calling mig-parted's own
        # validation: a valid file without configs.
        return MigPartedConfig({}, dialect), []
    if not isinstance(data, Mapping):
        return None, [f"a mig-parted file must be a mapping with 'version' and 'mig-configs', not {_type_name(data)}"]
    top = _json_mapping(data, "the file", problems)
    if top is None:
        return None, problems
    if "version" not in top and top:
        return None, ["the file has no 'version' field (mig-parted needs version: v1)"]
    version = top.get("version")
    if version != "v1":
        shown = "" if version is None else version
        return None, [f"unsupported mig-parted file version {shown!r} (mig-parted needs version: v1)"]
    for key in sorted(set(top) - {"version", "mig-configs"}):
        problems.append(f"unknown top-level field {key} (mig-parted accepts only version and mig-configs)")
    configs: dict[str, tuple[ConfigEntry, ...]] = {}
    if "mig-configs" in top:
        raw_configs = top["mig-configs"]
        if raw_configs is None:
            raw_configs = {}
        if not isinstance(raw_configs, Mapping):
            problems.append(f"mig-configs must be a mapping of config name to entries, not {_type_name(raw_configs)}")
        else:
            named = _json_mapping(raw_configs, "mig-configs", problems)
            if named is not None and not named:
                problems.append("mig-configs is empty (mig-parted needs at least one config)")
            for name, entries in (named or {}).items():
                where = f"mig-configs.{name}"
                if entries is None:
                    entries = []
                if not isinstance(entries, list):
                    problems.append(f"{where}: must be a list of entries, not {_type_name(entries)}")
                    continue
                if not entries:
                    problems.append(f"{where}: has no entries (mig-parted needs at least one)")
                    continue
                parsed = [_parse_entry(entry, f"{where}[{index}]", dialect, problems)
                          for index, entry in enumerate(entries)]
                configs[name] = tuple(entry for entry in parsed if entry is not None)
    if problems:
        return None, problems
    return MigPartedConfig(configs, dialect), []


def check_document(text: str, dialect: Dialect = DEFAULT_DIALECT) -> list[str]:
    """Every reason mig-parted (of ``dialect``'s MIG manager) refuses this file; empty when it loads it."""
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        return [f"not valid YAML: {' '.join(str(exc).split())}"]
    return validate(data, dialect)[1]


def _raise(problems: list[str], prefix: str = "") -> None:
    shown = "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
    raise MigConfigError(prefix + shown, [prefix + problem for problem in problems])


def parse_config(data: Mapping[str, Any], dialect: Dialect = DEFAULT_DIALECT) -> MigPartedConfig:
    """mig-parted's reading of a file already loaded into Python data (check the text itself with
    ``check_document`` where YAML's spelling matters)."""
    config, problems = validate(plain_data(data), dialect)
    if config is None:
        _raise(problems)
    assert config is not None
    return config


def parse_config_text(text: str, dialect: Dialect = DEFAULT_DIALECT) -> MigPartedConfig:
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise MigConfigError(f"not valid YAML: {' '.join(str(exc).split())}") from None
    config, problems = validate(data, dialect)
    if config is None:
        _raise(problems)
    assert config is not None
    return config


def parse_configmap(configmap: Mapping[str, Any], dialect: Dialect = DEFAULT_DIALECT) -> MigPartedConfig:
    name = configmap.get("metadata", {}).get("name", "?")
    text = (configmap.get("data") or {}).get(CONFIG_KEY)
    if text is None:
        raise MigConfigError(f"ConfigMap {name} has no key {CONFIG_KEY!r}")
    try:
        return parse_config_text(text, dialect)
    except MigConfigError as exc:
        _raise(exc.problems, f"ConfigMap {name}: ")
        raise



def mig_parted_yaml(configs: Mapping[str, Any]) -> str:
    """A mig-parted file (version v1) for ``configs``, in a stable form so re-runs compare equal."""
    return dump_yaml({"version": "v1", "mig-configs": dict(sorted(configs.items()))})
