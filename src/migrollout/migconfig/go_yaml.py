"""YAML and JSON as mig-parted's Go libraries read them, apart from what mig-parted then makes of the data.

mig-parted reads its file with sigs.k8s.io/yaml: go-yaml v2 turns the YAML into data (its own booleans,
nulls and numbers, which are not YAML 1.1's nor PyYAML's), that data is written as JSON (mapping keys
become strings; a non-finite number has no JSON form) and Go's ``encoding/json`` decodes the JSON into
mig-parted's types (a count must be a whole number). Device filters are read with Go's ``strconv``.
Every rule here is one of those libraries'; ``document`` applies mig-parted's own rules on top.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Mapping
from typing import Any

import yaml

INT64_MAX = 2**63 - 1


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


# -- Go's base-0 integer syntax (strconv), which device filters use ------------------------------------------

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



# -- the JSON view of the YAML (sigs.k8s.io/yaml, encoding/json) ---------------------------------------------

NO_JSON_FORM = object()


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


def json_key(key: Any) -> str | object:
    """How sigs.k8s.io/yaml turns a YAML mapping key into a JSON object key (None has no JSON form)."""
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, str):
        return key
    if isinstance(key, int):
        return str(key)
    if isinstance(key, float):
        return _go_float32_text(key)
    return NO_JSON_FORM


def json_int(value: Any) -> int | None:
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


def non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, Mapping):
        return any(non_finite(item) for item in value.values())
    if isinstance(value, list):
        return any(non_finite(item) for item in value)
    return False



# -- writing YAML that go-yaml reads back as written ---------------------------------------------------------

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
