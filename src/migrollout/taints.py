"""Node taints: matching and merging, as pure functions.

A taint is identified by its key and effect (as the API server and kubectl do):
adding one whose key and effect exist updates its value; removing one ignores
the value. Taints the caller did not name, ``node.kubernetes.io/*`` included,
are never touched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from migrollout.timestamps import time_text

EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

# The API server's rules for a taint key (a qualified name) and value (a label value).
_QUALIFIED_NAME = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                             r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


@dataclass(frozen=True)
class Taint:
    key: str
    effect: str
    value: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Taint:
        return cls(str(data["key"]), str(data["effect"]), str(data.get("value") or ""))

    @classmethod
    def parse(cls, text: str) -> Taint:
        """``key[=value]:Effect``, as kubectl writes taints."""
        head, _, effect = text.rpartition(":")
        key, _, value = head.partition("=")
        if not key or effect not in EFFECTS:
            raise ValueError(f"taint {text!r} is not key[=value]:Effect with Effect one of {', '.join(EFFECTS)}")
        return cls(key, effect, value)

    @classmethod
    def checked(cls, data: Mapping[str, Any]) -> Taint:
        """A taint from ``{key, value, effect}``, refused (ValueError) where the API server would refuse it."""
        key, value, effect = str(data.get("key") or ""), str(data.get("value") or ""), str(data.get("effect") or "")
        prefix, _, name = key.rpartition("/")
        if not _QUALIFIED_NAME.match(key) or len(name) > 63 or len(prefix) > 253:
            raise ValueError(f"taint key {key!r} is not a valid Kubernetes qualified name")
        if len(value) > 63 or not _LABEL_VALUE.match(value):
            raise ValueError(f"taint value {value!r} (key {key}) is not a valid label value")
        if effect not in EFFECTS:
            raise ValueError(f"taint {key}: effect {effect!r} is not one of {', '.join(EFFECTS)}")
        return cls(key, effect, value)

    def identity(self) -> tuple[str, str]:
        return self.key, self.effect

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"

    def to_dict(self) -> dict[str, str]:
        data = {"key": self.key, "effect": self.effect}
        if self.value:
            data["value"] = self.value
        return data


def matches(existing: Mapping[str, Any], taint: Taint) -> bool:
    return existing.get("key") == taint.key and existing.get("effect") == taint.effect


def add(current: list[dict[str, Any]], wanted: Iterable[Taint]) -> list[dict[str, Any]]:
    """``current`` with every ``wanted`` taint present (values updated in place, new ones appended)."""
    result = [dict(item) for item in current]
    for taint in wanted:
        found = next((item for item in result if matches(item, taint)), None)
        if found is None:
            entry: dict[str, Any] = taint.to_dict()
            if taint.effect == "NoExecute":
                entry["timeAdded"] = time_text()  # as kubectl does; eviction timing counts from here
            result.append(entry)
        elif str(found.get("value") or "") != taint.value:
            found["value"] = taint.value
            if not taint.value:
                found.pop("value", None)
    return result


def remove(current: list[dict[str, Any]], unwanted: Iterable[Taint]) -> list[dict[str, Any]]:
    """``current`` without the taints that match ``unwanted`` on key and effect."""
    unwanted = list(unwanted)
    return [dict(item) for item in current if not any(matches(item, taint) for taint in unwanted)]


def same(left: list[dict[str, Any]], right: list[dict[str, Any]]) -> bool:
    def norm(items: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
        return [(i.get("key", ""), i.get("effect", ""), str(i.get("value") or "")) for i in items]
    return norm(left) == norm(right)


def present(current: list[dict[str, Any]], taint: Taint) -> bool:
    return any(matches(item, taint) and str(item.get("value") or "") == taint.value for item in current)


def tolerates(toleration: Mapping[str, Any], taint: Taint) -> bool:
    """Kubernetes' rule: does this toleration let a pod past this taint?"""
    if toleration.get("effect") and toleration["effect"] != taint.effect:
        return False
    operator = toleration.get("operator", "Equal")
    if not toleration.get("key"):
        return operator == "Exists"
    if toleration["key"] != taint.key:
        return False
    return operator == "Exists" or str(toleration.get("value") or "") == taint.value


def checked_list(items: Iterable[Mapping[str, Any]]) -> list[Taint]:
    return [Taint.checked(item) for item in items]
