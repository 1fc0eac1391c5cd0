"""mig-parted configuration files: parsing exactly as the MIG manager does, resolution onto a node's GPUs,
and fit checks.

A mig-parted file (``version: v1``, ``mig-configs: {name: [entry, ...]}``) is what the NVIDIA MIG manager
applies when a node is labelled ``nvidia.com/mig.config=<name>``. Each entry selects GPUs by ``devices``
(``all`` or indices) and optionally ``device-filter`` (PCI ids ``0x<device><vendor>``); GPUs no entry
selects are left as they are, exactly as mig-parted does.

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

import math
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import yaml

from migrollout.catalogue import GpuModel, MigProfile, ProfileName

CONFIG_KEY = "config.yaml"
ENTRY_FIELDS = ("devices", "device-filter", "mig-enabled", "mig-devices")
INT64_MAX = 2**63 - 1


class MigConfigError(ValueError):
    """The mig-parted file itself is malformed (what mig-parted would refuse to load)."""

    def __init__(self, message: str, problems: Sequence[str] = ()):
        super().__init__(message)
        self.problems = list(problems) or [message]


# -- dialects ----------------------------------------------------------------------------------------------

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


# -- YAML as the MIG manager reads it -----------------------------------------------------------------------

_GO_SCALAR_TAG = "tag:migrollout,2026:go-yaml-scalar"
_GO_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_GO_SPECIAL_FLOATS = {".nan": math.nan, ".NaN": math.nan, ".NAN": math.nan,
                      **{f"{sign}.{inf}": (-math.inf if sign == "-" else math.inf)
                         for sign in ("", "+", "-") for inf in ("inf", "Inf", "INF")}}


def go_yaml_scalar(text: str) -> Any:
    """What go-yaml v2 makes of a plain scalar starting with a sign, a digit or a dot: int, float or the
    string itself (its booleans and nulls are PyYAML's, plus ``y``/``n``)."""
    if text in _GO_SPECIAL_FLOATS:
        return _GO_SPECIAL_FLOATS[text]
    if text.startswith("."):
        return float(text) if "_" not in text and _GO_FLOAT.fullmatch(text) else text
    plain = text.replace("_", "")
    for signed in (True, False):
        value = go_parse_int(plain, signed=signed, bits=64) if plain else None
        if value is not None:
            return value
    if _GO_FLOAT.fullmatch(plain):
        return float(plain)
    return text


_GO_BOOLS = {word: truth for truth, words in ((True, ("y", "yes", "true", "on")), (False, ("n", "no", "false", "off")))
             for base in words for word in (base, base.capitalize(), base.upper())}
_GO_NULLS = ("", "~", "null", "Null", "NULL")


def _go_plain_scalar(text: str) -> Any:
    """What go-yaml v2 makes of ``text`` written as a plain (unquoted) scalar."""
    if text in _GO_BOOLS:
        return _GO_BOOLS[text]
    if text in _GO_NULLS:
        return None
    if text[0] in "-+.0123456789":
        return go_yaml_scalar(text)
    return text


# libyaml's parser when PyYAML has it (much faster on large files); the resolvers below are Python either way.
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _GoYamlLoader(_BaseLoader):
    """PyYAML's safe loader with go-yaml v2's scalar rules: ``y``/``n`` are booleans, numbers are read by
    Go's rules (``1e3``, ``0o17``; no base 60), timestamps stay strings."""


_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp")
_GoYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _NUMBER_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_GoYamlLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:y|Y|n|N)$"), list("yYnN"))
_GoYamlLoader.add_implicit_resolver(_GO_SCALAR_TAG, re.compile(r"^[-+.0-9]", re.DOTALL), list("-+.0123456789"))


def _construct_bool(loader: Any, node: yaml.ScalarNode) -> bool:
    return str(loader.construct_scalar(node)).lower() in ("y", "yes", "true", "on")


def _construct_go_scalar(loader: Any, node: yaml.ScalarNode) -> Any:
    return go_yaml_scalar(str(loader.construct_scalar(node)))


_GoYamlLoader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)
_GoYamlLoader.add_constructor(_GO_SCALAR_TAG, _construct_go_scalar)


def load_yaml(text: str) -> Any:
    """The first YAML document of ``text``, as go-yaml v2 reads it (later documents are ignored, as there)."""
    for document in yaml.load_all(text, Loader=_GoYamlLoader):
        return document
    return None


# -- the profile-name grammar (go-nvlib) --------------------------------------------------------------------

_NUMBER = re.compile(r"[+-]?[0-9]+")


def _profile_field(text: str, suffix: str) -> tuple[int | None, str]:
    if text.strip() != text:
        return None, f"leading or trailing spaces on '<n>{suffix}'"
    if not text.endswith(suffix):
        return None, f"missing '{suffix}' from '<n>{suffix}'"
    number = text[: -len(suffix)]
    if not _NUMBER.fullmatch(number) or abs(int(number)) > INT64_MAX:
        return None, f"malformed number in '<n>{suffix}'"
    return int(number), ""


def _profile_attributes(text: str, dotted: bool) -> tuple[list[str] | None, str]:
    seen: set[str] = set()
    attributes = text.split(",")
    for attribute in attributes:
        if attribute in seen:
            return None, "non unique attribute in list"
        if attribute == "":
            return None, "empty attribute in list"
        if attribute.strip() != attribute:
            return None, "leading or trailing spaces in attribute"
        if attribute[0].isascii() and attribute[0].isdigit():
            return None, "attribute begins with a number"
        if dotted and (attribute[0] == "." or attribute[-1] == "."):
            return None, "attribute begins/ends with a dot"
        allowed = r"[A-Za-z0-9.]+" if dotted else r"[A-Za-z0-9]+"
        if not re.fullmatch(allowed, attribute):
            return None, "non alpha-numeric character or digit in attribute"
        seen.add(attribute)
    return attributes, ""


@cache
def parse_profile_name(name: str, extended: bool = True) -> tuple[ProfileName | None, str]:
    """go-nvlib's reading of a profile name: (parts, "") or (None, why it is malformed).

    ``extended``: the grammar of go-nvlib 0.7.4 and later (``-me``, ``+me.all``); without it, only
    ``+<alnum>,...`` attributes (MIG managers before v0.12.3).
    """
    if name == "":
        return None, "profile is the empty string"
    positive = name.split("+", 1)
    negative = name.split("-", 1) if extended else [name]
    if len(positive) == 2 and len(negative) == 2:
        return None, f"profile '{name}' contains both '+/-' attributes"
    parts = positive if len(positive) == 2 else negative
    fields = parts[0].split(".", 2)
    values: list[int] = []
    suffixes = ("c", "g", "gb") if len(fields) == 3 else ("g", "gb") if len(fields) == 2 else ()
    if not suffixes:
        return None, f"cannot parse fields of '{name}': parsed wrong number of fields, expected 2 or 3"
    for text, suffix in zip(fields, suffixes, strict=True):
        value, error = _profile_field(text, suffix)
        if value is None:
            return None, f"cannot parse fields of '{name}': {error}"
        values.append(value)
    if len(values) == 2:
        values.insert(0, values[0])
    attributes: list[str] = []
    if len(parts) == 2:
        found, error = _profile_attributes(parts[1], dotted=extended)
        if found is None:
            return None, f"cannot parse attributes of '{name}': {error}"
        attributes = found
    is_negative = len(parts) == 2 and parts is negative
    return ProfileName(values[0], values[1], values[2],
                       frozenset() if is_negative else frozenset(attributes),
                       frozenset(attributes) if is_negative else frozenset()), ""


def profile_format_error(name: str, dialect: Dialect = DEFAULT_DIALECT) -> str:
    """Why mig-parted rejects ``name`` as a profile name ("" when it is well formed)."""
    return parse_profile_name(name, dialect.extended_profile_names)[1]


# -- device filters (Go's base-0 integer syntax) ------------------------------------------------------------

def _underscores_ok(text: str) -> bool:
    saw = "^"
    index = 0
    if text[:1] in ("+", "-"):
        text = text[1:]
    hexadecimal = False
    if len(text) >= 2 and text[0] == "0" and text[1].lower() in "box":
        index, saw, hexadecimal = 2, "0", text[1].lower() == "x"
    for char in text[index:]:
        if char.isascii() and (char.isdigit() or (hexadecimal and char.lower() in "abcdef")):
            saw = "0"
        elif char == "_":
            if saw != "0":
                return False
            saw = "_"
        elif saw == "_":
            return False
        else:
            saw = "!"
    return saw != "_"


def go_parse_int(text: str, signed: bool, bits: int = 32) -> int | None:
    """Go's ``strconv.ParseInt``/``ParseUint(text, 0, bits)``: ``0x``/``0o``/``0b``/leading-``0`` prefixes,
    ``_`` separators; anything else is decimal. None when Go reports an error."""
    original = text
    negative = False
    if signed and text[:1] in ("+", "-"):
        negative, text = text[0] == "-", text[1:]
    if text == "":
        return None
    base = 10
    if text[0] == "0":
        if len(text) >= 3 and text[1].lower() in "box":
            base, text = {"b": 2, "o": 8, "x": 16}[text[1].lower()], text[2:]
        else:
            base, text = 8, text[1:]
    value = 0
    underscores = False
    for char in text:
        if char == "_":
            underscores = True
            continue
        digit = int(char, 36) if char.isascii() and char.isalnum() else 99
        if digit >= base:
            return None
        value = value * base + digit
    if underscores and not _underscores_ok(original):
        return None
    if signed:
        limit = 2 ** (bits - 1)
        if (negative and value > limit) or (not negative and value > limit - 1):
            return None
        return -value if negative else value
    return value if value < 2**bits else None


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


# -- parsed configs -----------------------------------------------------------------------------------------

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

_UNSUPPORTED = object()


def _go_float32_text(value: float) -> str:
    """Go's ``strconv.FormatFloat(value, 'g', -1, 32)``, which sigs.k8s.io/yaml uses for float keys."""
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    single = struct.unpack("<f", struct.pack("<f", value))[0]
    if single == 0:
        return "-0" if math.copysign(1, single) < 0 else "0"
    for digits in range(1, 10):
        text = f"{single:.{digits - 1}e}"
        if struct.unpack("<f", struct.pack("<f", float(text)))[0] == single:
            break
    mantissa, exponent = text.split("e")
    sign = "-" if mantissa.startswith("-") else ""
    figures = mantissa.lstrip("-").replace(".", "").rstrip("0") or "0"
    power = int(exponent)
    if power < -4 or power >= 6:
        rest = f".{figures[1:]}" if len(figures) > 1 else ""
        return f"{sign}{figures[0]}{rest}e{'-' if power < 0 else '+'}{abs(power):02d}"
    if power < 0:
        return f"{sign}0.{'0' * (-power - 1)}{figures}"
    whole, fraction = figures[: power + 1].ljust(power + 1, "0"), figures[power + 1:]
    return f"{sign}{whole}{'.' + fraction if fraction else ''}"


def _json_key(key: Any) -> str | object:
    """How sigs.k8s.io/yaml turns a YAML mapping key into a JSON object key (None has no JSON form)."""
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, str):
        return key
    if isinstance(key, int):
        return str(key)
    if isinstance(key, float):
        return _go_float32_text(key)
    return _UNSUPPORTED


def _json_int(value: Any) -> int | None:
    """A JSON number decoded into a Go int (null is 0); None when Go's decoder refuses it."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    return value if -INT64_MAX - 1 <= value <= INT64_MAX else None


def _json_mapping(value: Any, where: str, problems: list[str]) -> dict[str, Any] | None:
    converted: dict[str, Any] = {}
    for key, item in value.items():
        json_key = _json_key(key)
        if json_key is _UNSUPPORTED:
            problems.append(f"{where}: the key {key!r} cannot be a JSON object key, so mig-parted cannot read "
                            f"the file")
            return None
        converted[str(json_key)] = item
    return converted


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, Mapping):
        return any(_non_finite(item) for item in value.values())
    if isinstance(value, list):
        return any(_non_finite(item) for item in value)
    return False


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
        count = _json_int(value)
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
        indices = [_json_int(item) for item in raw]
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
    if _non_finite(data):
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


def plain_data(value: Any) -> Any:
    """``value`` with str/int/float/dict/list subclasses (e.g. Ansible's tagged strings) as the plain types."""
    if isinstance(value, Mapping):
        return {plain_data(key): plain_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain_data(item) for item in value]
    for kind in (bool, str, int, float):
        if isinstance(value, kind):
            return kind(value)
    return value


class _GoYamlDumper(yaml.SafeDumper):
    """Quotes a string when PyYAML or go-yaml v2 would read it back as something else (``y``, ``1e3``)."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        tag = super().resolve(kind, value, implicit)
        if (kind is yaml.ScalarNode and implicit[0] and tag == "tag:yaml.org,2002:str"
                and _go_plain_scalar(value) != value):
            return _GO_SCALAR_TAG
        return tag


def dump_yaml(data: Mapping[str, Any]) -> str:
    return yaml.dump(plain_data(data), Dumper=_GoYamlDumper, sort_keys=False, default_flow_style=False)


def mig_parted_yaml(configs: Mapping[str, Any]) -> str:
    """A mig-parted file (version v1) for ``configs``, in a stable form so re-runs compare equal."""
    return dump_yaml({"version": "v1", "mig-configs": dict(sorted(configs.items()))})


# -- layouts on GPUs ----------------------------------------------------------------------------------------

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
class Step:
    """One step of mig-parted's walk: entry ``entry`` of the config applied to GPU ``index``."""

    entry: int
    index: int


def walk(config: MigPartedConfig, name: str, device_ids: Sequence[int],
         subsystem_ids: Sequence[int | None] | None = None) -> list[Step]:
    """mig-parted's walk over config ``name`` for GPUs with these PCI ids: each entry in order, each GPU
    it selects in index order. A GPU more than one entry selects ends with the last one.
    Raises ``KeyError`` for an unknown config name."""
    subsystems = list(subsystem_ids) if subsystem_ids is not None else [None] * len(device_ids)
    steps = []
    for number, entry in enumerate(config.entries(name)):
        for index, device_id in enumerate(device_ids):
            if entry.matches_device(device_id, subsystems[index]) and entry.matches_index(index):
                steps.append(Step(number, index))
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


# -- custom configs against the GPU models they target ------------------------------------------------------

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
