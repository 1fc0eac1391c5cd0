"""Label selectors, parsed and matched as the API server does (k8s.io/apimachinery/pkg/labels).

Two forms: the text of a ``labelSelector`` query (``app=train,tier in (a,b),!canary``), which the evacuation
hands the server and the plan must match locally the same way; and the ``LabelSelector`` object of
PodDisruptionBudgets (``matchLabels`` and ``matchExpressions``). Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

EXISTS, DOES_NOT_EXIST, IN, NOT_IN, GREATER, LESS = "exists", "!", "in", "notin", "gt", "lt"

_QUALIFIED_NAME = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                             r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
# The lexer's special characters (apimachinery's isSpecialSymbol), and whitespace, end an identifier.
_TOKEN = re.compile(r"\s*(==|!=|=|!|\(|\)|,|<|>|[^\s=!(),<>]+)")


class SelectorError(ValueError):
    """A selector the API server would refuse."""


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, found: Mapping[str, str]) -> bool:
        present = self.key in found
        value = found.get(self.key)
        if self.operator == EXISTS:
            return present
        if self.operator == DOES_NOT_EXIST:
            return not present
        if self.operator == IN:
            return present and value in self.values
        if self.operator == NOT_IN:
            return not present or value not in self.values
        # gt / lt: both sides must be integers, as the API server reads them.
        try:
            have, limit = int(str(value)), int(self.values[0])
        except (TypeError, ValueError):
            return False
        return have > limit if self.operator == GREATER else have < limit


@dataclass(frozen=True)
class Selector:
    """A conjunction of requirements; no requirement matches everything."""

    requirements: tuple[Requirement, ...]
    nothing: bool = False  # a null LabelSelector: selects no object

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self.nothing:
            return False
        found = labels or {}
        return all(r.matches(found) for r in self.requirements)

    def matches_object(self, obj: Mapping[str, Any]) -> bool:
        return self.matches((obj.get("metadata") or {}).get("labels") or {})


EVERYTHING = Selector(())
NOTHING = Selector((), nothing=True)


def _check_key(key: str, text: str) -> str:
    prefix, _, name = key.rpartition("/")
    if not _QUALIFIED_NAME.match(key) or len(name) > 63 or len(prefix) > 253:
        raise SelectorError(f"label selector {text!r}: {key!r} is not a valid label key")
    return key


def _check_value(value: str, text: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise SelectorError(f"label selector {text!r}: {value!r} is not a valid label value")
    return value


def _tokens(text: str) -> list[str]:
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:  # only trailing whitespace is left
            break
        tokens.append(match[1])
        position = match.end()
    return tokens


def parse(text: str | None) -> Selector:
    """The selector of a ``labelSelector`` query string; empty matches everything. Raises SelectorError."""
    if not text or not text.strip():
        return EVERYTHING
    tokens = _tokens(text)
    at = 0

    def peek() -> str | None:
        return tokens[at] if at < len(tokens) else None

    def take() -> str | None:
        nonlocal at
        token = peek()
        at += 1
        return token

    def identifier(what: str) -> str:
        token = take()
        if token is None or token in ("==", "!=", "=", "!", "(", ")", ",", "<", ">"):
            raise SelectorError(f"label selector {text!r}: expected {what}, found {token or 'the end'}")
        return token

    requirements: list[Requirement] = []
    while True:
        if peek() == "!":
            take()
            requirements.append(Requirement(_check_key(identifier("a label key"), text), DOES_NOT_EXIST))
        else:
            key = _check_key(identifier("a label key"), text)
            operator = peek()
            if operator in (None, ","):
                requirements.append(Requirement(key, EXISTS))
            elif operator in ("=", "==", "!="):
                take()
                value = "" if peek() in (None, ",") else identifier("a label value")
                requirements.append(Requirement(key, NOT_IN if operator == "!=" else IN, (_check_value(value, text),)))
            elif operator in ("in", "notin"):
                take()
                if take() != "(":
                    raise SelectorError(f"label selector {text!r}: expected '(' after {operator}")
                values: list[str] = []
                while True:
                    token = peek()
                    if token == ")":
                        take()
                        if not values:
                            values.append("")  # "()" is the set of the empty value, as the server reads it
                        break
                    if token == ",":
                        take()
                        values.append("")  # an empty value between commas
                        continue
                    values.append(_check_value(identifier("a label value or ')'"), text))
                    if peek() == ",":
                        take()
                        if peek() == ")":
                            values.append("")
                    elif peek() != ")":
                        raise SelectorError(f"label selector {text!r}: expected ',' or ')', found {peek() or 'the end'}")
                requirements.append(Requirement(key, IN if operator == "in" else NOT_IN, tuple(values)))
            elif operator in ("<", ">"):
                take()
                value = identifier("an integer")
                try:
                    int(value)
                except ValueError:
                    raise SelectorError(f"label selector {text!r}: {value!r} is not an integer") from None
                requirements.append(Requirement(key, GREATER if operator == ">" else LESS, (value,)))
            else:
                raise SelectorError(f"label selector {text!r}: unexpected {operator!r} after {key}")
        token = take()
        if token is None:
            return Selector(tuple(requirements))
        if token != ",":
            raise SelectorError(f"label selector {text!r}: expected ',' or the end, found {token!r}")


_OPERATORS = {"In": IN, "NotIn": NOT_IN, "Exists": EXISTS, "DoesNotExist": DOES_NOT_EXIST}


def from_label_selector(selector: Mapping[str, Any] | None) -> Selector:
    """A ``metav1.LabelSelector`` (PodDisruptionBudget, Deployment): null selects nothing, ``{}`` everything."""
    if selector is None:
        return NOTHING
    requirements = [Requirement(key, IN, (str(value),)) for key, value in (selector.get("matchLabels") or {}).items()]
    for expression in selector.get("matchExpressions") or []:
        operator = _OPERATORS.get(expression.get("operator", ""))
        if operator is None:
            raise SelectorError(f"label selector operator {expression.get('operator')!r} is not one of "
                                f"{', '.join(_OPERATORS)}")
        requirements.append(Requirement(expression.get("key", ""), operator,
                                        tuple(str(v) for v in expression.get("values") or ())))
    return Selector(tuple(requirements))
