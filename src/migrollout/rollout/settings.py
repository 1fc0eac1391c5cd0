"""Every rollout setting (the ``mig_rollout_*`` variables) with its type and range, checked before the lock.

One table: a setting is one line, ``Setting(name, kind, scope)``. The rollout's first task hands each node's
settings to :func:`check`, which refuses the whole run, before the lock is taken or a node is read, with one
sentence per problem naming the setting and the bad value. Values come back normalized (``"10%"`` parsed
once into a :class:`CountOrPercent`, ``"5"`` from ``-e`` into 5, ``"yes"`` into True). Pure.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from migrollout import selectors, taints

PREFIX = "mig_rollout_"
RUN, NODE = "run", "node"  # read once for the whole run (from the first node), or per node (per pool)

# Ansible's boolean spellings (ansible.module_utils.parsing.convert_bool).
_TRUE = {"y", "yes", "on", "1", "true", "t"}
_FALSE = {"n", "no", "off", "0", "false", "f"}


class SettingError(ValueError):
    """Settings the rollout refuses; ``problems`` holds one sentence each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class CountOrPercent:
    """A number of nodes, or a percentage of them (``"10%"``), as Ansible's ``serial`` takes it."""

    value: int
    percent: bool = False

    def of(self, total: int) -> int:
        """How many of ``total`` nodes: a percentage rounds down, but never below one node."""
        if not self.percent:
            return self.value
        return max(1, total * self.value // 100)

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)


Parser = Callable[[Any], Any]


@dataclass(frozen=True)
class Kind:
    """How to read one setting: ``parse`` returns the normalized value or raises ValueError saying what it
    must be (the sentence's end: "must be ...")."""

    parse: Parser


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("a whole number, not true/false")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError(f"a whole number, not {_type_name(value)}")


def _type_name(value: Any) -> str:
    if isinstance(value, str):
        return f"the text {value!r}"
    return {list: "a list", dict: "a mapping", float: "a fraction", type(None): "empty"}.get(type(value),
                                                                                            type(value).__name__)


def integer(minimum: int | None = None, maximum: int | None = None, unit: str = "") -> Kind:
    def parse(value: Any) -> int:
        number = _integer(value)
        low_ok = minimum is None or number >= minimum
        high_ok = maximum is None or number <= maximum
        if not (low_ok and high_ok):
            if maximum is None:
                raise ValueError(f"at least {minimum}{unit}")
            if minimum is None:
                raise ValueError(f"at most {maximum}{unit}")
            raise ValueError(f"between {minimum} and {maximum}{unit}")
        return number
    return Kind(parse)


def _seconds(minimum: int) -> Kind:
    def parse(value: Any) -> int:
        try:
            number = _integer(value)
        except ValueError as exc:
            raise ValueError(str(exc).replace("a whole number", "a whole number of seconds", 1)) from None
        if number < minimum:
            raise ValueError(f"a whole number of seconds, at least {minimum}")
        return number
    return Kind(parse)


def boolean() -> Kind:
    def parse(value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"true or false, not {_type_name(value)}")
    return Kind(parse)


def count_or_percent(minimum: int = 1) -> Kind:
    """A count (at least ``minimum``) or a whole percentage from 1% to 100%."""
    def parse(value: Any) -> CountOrPercent:
        if isinstance(value, str) and value.strip().endswith("%"):
            text = value.strip()[:-1].strip()
            try:
                percent = int(text)
            except ValueError:
                raise ValueError(f"a count of nodes or a whole percentage such as 10%, not {value!r}") from None
            if not 1 <= percent <= 100:
                raise ValueError("a percentage between 1% and 100%")
            return CountOrPercent(percent, percent=True)
        try:
            count = _integer(value)
        except ValueError:
            raise ValueError(f"a count of nodes or a whole percentage such as 10%, not {_type_name(value)}") from None
        if count < minimum:
            raise ValueError(f"at least {minimum} node{'s' if minimum != 1 else ''} (or a percentage such as 10%)")
        return CountOrPercent(count)
    return Kind(parse)


def text(allow_empty: bool = True) -> Kind:
    def parse(value: Any) -> str:
        if value is None and allow_empty:
            return ""
        if not isinstance(value, str):
            raise ValueError(f"text, not {_type_name(value)}")
        if not value and not allow_empty:
            raise ValueError("a non-empty text")
        return value
    return Kind(parse)


def choice(*options: str) -> Kind:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value not in options:
            raise ValueError(f"one of {', '.join(options)}, not {_type_name(value)}")
        return value
    return Kind(parse)


def unset_or(kind: Kind) -> Kind:
    """``kind``, or unset (null or empty: None)."""
    def parse(value: Any) -> Any:
        if value is None or value == "":
            return None
        return kind.parse(value)
    return Kind(parse)


def pool_budgets() -> Kind:
    """No budget (unset), one count or percentage for every pool, or a mapping pool -> count or percentage."""
    one = count_or_percent(minimum=1)

    def parse(value: Any) -> CountOrPercent | dict[str, CountOrPercent] | None:
        if value is None or value == "" or value == {}:
            return None
        if isinstance(value, Mapping):
            budgets = {}
            for pool, amount in value.items():
                try:
                    budgets[str(pool)] = one.parse(amount)
                except ValueError as exc:
                    raise ValueError(f"a count or a percentage for each pool (pool {pool}: {_shown(amount)} is not; it "
                                     f"must be {exc})") from None
            return budgets
        return one.parse(value)
    return Kind(parse)


def text_list() -> Kind:
    def parse(value: Any) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ValueError(f"a list of names, not {_type_name(value)}")
        return list(value)
    return Kind(parse)


def label_selector() -> Kind:
    def parse(value: Any) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise ValueError(f"a label selector (text such as app=train), not {_type_name(value)}")
        try:
            selectors.parse(value)
        except selectors.SelectorError as exc:
            raise ValueError(f"a valid label selector ({exc})") from None
        return value
    return Kind(parse)


NO_EXECUTE_REFUSED = (
    "NoExecute is refused: the taint manager would delete every pod on the node that does not tolerate it, CPU "
    "pods too, without honouring PodDisruptionBudgets; the rollout evicts GPU pods through the Eviction API, "
    "and cordons a node whose GPU pods tolerate the taint")


def maintenance_taints() -> Kind:
    def parse(value: Any) -> list[dict[str, str]]:
        if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
            raise ValueError(f"a list of taints ({{key, value, effect}}), not {_type_name(value)}")
        checked = []
        for item in value:
            try:
                taint = taints.Taint.checked(item)
            except ValueError as exc:
                raise ValueError(f"a list of valid taints ({exc})") from None
            if taint.effect == "NoExecute":
                raise ValueError(f"a list of taints with effect NoSchedule or PreferNoSchedule ({taint}: "
                                 f"{NO_EXECUTE_REFUSED})")
            checked.append(taint.to_dict())
        return checked
    return Kind(parse)


def mig_config_name() -> Kind:
    def parse(value: Any) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise ValueError(f"the name of one MIG config (such as all-1g.10gb), not {_type_name(value)}")
        return value
    return Kind(parse)


@dataclass(frozen=True)
class Setting:
    name: str
    kind: Kind
    scope: str = NODE


# Every setting. RUN settings are read once for the whole run (from the first node); NODE settings may differ
# per pool or node (group_vars/gpu_pool_<pool>.yml, host_vars/).
SETTINGS: tuple[Setting, ...] = (
    Setting("mig_rollout_hosts", text(allow_empty=False), RUN),
    Setting("mig_rollout_schedule", choice("window", "batches"), RUN),
    Setting("mig_rollout_max_unavailable", count_or_percent(minimum=1), RUN),
    Setting("mig_rollout_serial", unset_or(count_or_percent(minimum=1)), RUN),
    Setting("mig_rollout_max_unavailable_per_pool", pool_budgets(), RUN),
    Setting("mig_rollout_pool_by", choice("pool", "product"), RUN),
    Setting("mig_rollout_pool_label", text(allow_empty=False), RUN),
    Setting("mig_rollout_capacity_policy", choice("refuse", "wait", "ignore")),
    Setting("mig_rollout_capacity_timeout", _seconds(1)),
    Setting("mig_rollout_events", boolean(), RUN),
    Setting("mig_rollout_progress", boolean(), RUN),
    Setting("mig_rollout_max_fail_percentage", integer(0, 100, "%"), RUN),
    Setting("mig_rollout_maintenance_taints", maintenance_taints()),
    Setting("mig_rollout_cordon", boolean()),
    Setting("mig_rollout_gpu_only", boolean()),
    Setting("mig_rollout_gpu_runtime_classes", text_list()),
    Setting("mig_rollout_pod_selector", label_selector()),
    Setting("mig_rollout_ignore_daemonsets", boolean()),
    Setting("mig_rollout_delete_emptydir_data", boolean()),
    Setting("mig_rollout_force", boolean()),
    Setting("mig_rollout_disable_eviction", boolean()),
    Setting("mig_rollout_grace_period", integer(-1, unit=" (-1: each pod's own)")),
    Setting("mig_rollout_evacuation_timeout", _seconds(1)),
    Setting("mig_rollout_evacuation_parallel", integer(1, 100)),
    Setting("mig_rollout_apply_timeout", _seconds(1)),
    Setting("mig_rollout_pending_timeout", _seconds(0)),
    Setting("mig_rollout_verify_timeout", _seconds(1)),
    Setting("mig_rollout_rollback_on_failure", boolean()),
    Setting("mig_rollout_reapply_failed", boolean()),
    Setting("mig_rollout_lock_duration", integer(10, 3600, " seconds"), RUN),
    Setting("mig_rollout_lock_wait", _seconds(0), RUN),
    Setting("mig_rollout_report_dir", text(allow_empty=False), RUN),
    Setting("mig_rollout_operator_namespace", text(), RUN),
)
BY_NAME = {setting.name: setting for setting in SETTINGS}
# The node's own MIG config (inventory), checked with the settings.
MIG_CONFIG = Setting("mig_config", mig_config_name())


def _shown(value: Any) -> str:
    shown = repr(value) if isinstance(value, str) else str(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _nodes_text(nodes: list[str]) -> str:
    if not nodes:
        return ""
    named = ", ".join(nodes[:5]) + (f" and {len(nodes) - 5} more" if len(nodes) > 5 else "")
    return f" (node{'s' if len(nodes) > 1 else ''} {named})"


def parse(name: str, value: Any) -> Any:
    """One setting's normalized value; ValueError with the sentence naming the setting and the value."""
    setting = MIG_CONFIG if name == MIG_CONFIG.name else BY_NAME.get(name)
    if setting is None:
        raise ValueError(f"{name} is not a rollout setting")
    try:
        return setting.kind.parse(value)
    except ValueError as exc:
        raise ValueError(f"{name} is {_shown(value)}; it must be {exc}") from None


def unknown(names: Iterable[str]) -> list[str]:
    """A warning for each ``mig_rollout_*`` name close to a setting's: most likely a typo, whose value is
    ignored. (Other names may be the role's own facts or another plugin's.)"""
    warnings = []
    for name in sorted(set(names)):
        if not name.startswith(PREFIX) or name in BY_NAME:
            continue
        close = difflib.get_close_matches(name, BY_NAME, n=1, cutoff=0.85)
        if close:
            warnings.append(f"{name} is not a rollout setting (did you mean {close[0]}?): its value is ignored")
    return warnings


def _split(message: str) -> tuple[str, str]:
    """(head naming the setting and value, rest) of a parse error, to put the nodes in between."""
    for marker in ("; it must be",):
        if marker in message:
            at = message.index(marker)
            return message[:at], message[at:]
    return message, ""


def check(settings: Mapping[str, Any], per_node: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Check the rollout's settings before anything is locked or touched (names not in the table are left
    to :func:`unknown`).

    ``settings``: every setting as the first node sees it (role defaults included), normalized and returned.
    ``per_node``: what each node's inventory sets (group_vars per pool, host_vars, -e), each value checked too,
    so a bad value for one pool is refused before the run starts. RUN settings are read once for the whole
    run, so nodes must agree on them. Raises SettingError with one sentence per problem."""
    per_node = per_node or {}
    failures: dict[str, list[str]] = {}
    normalized: dict[str, Any] = {}
    for name, value in settings.items():
        if name != MIG_CONFIG.name and name not in BY_NAME:
            continue
        try:
            normalized[name] = parse(name, value)
        except ValueError as exc:
            failures.setdefault(str(exc), [])
    for node, values in per_node.items():
        for name, value in values.items():
            if name != MIG_CONFIG.name and name not in BY_NAME:
                continue
            try:
                parse(name, value)
            except ValueError as exc:
                failures.setdefault(str(exc), []).append(node)
    problems = []
    for message, nodes in failures.items():
        head, rest = _split(message)
        problems.append(f"{head}{_nodes_text(sorted(nodes))}{rest}")
    problems.extend(_run_wide_disagreements(per_node))
    problems.extend(combination_problems(normalized))
    if problems:
        raise SettingError(problems)
    return normalized


def combination_problems(normalized: Mapping[str, Any]) -> list[str]:
    """Settings that are fine alone but not together."""
    if normalized.get("mig_rollout_schedule", "window") == "window" and normalized.get("mig_rollout_serial"):
        return [f"mig_rollout_serial is {normalized['mig_rollout_serial']} but mig_rollout_schedule is window (the "
                f"default): serial batches are no longer how nodes are scheduled. Set mig_rollout_max_unavailable "
                f"instead (at most that many nodes in maintenance, a node starting as soon as another finishes), "
                f"or set mig_rollout_schedule: batches to keep batches of mig_rollout_serial nodes"]
    return []


_DEFAULT = object()


def _run_wide_disagreements(per_node: Mapping[str, Mapping[str, Any]]) -> list[str]:
    problems = []
    for setting in SETTINGS:
        if setting.scope != RUN:
            continue
        seen: dict[str, list[str]] = {}
        for node, values in per_node.items():
            value = values.get(setting.name, _DEFAULT)
            seen.setdefault("the default" if value is _DEFAULT else _shown(value), []).append(node)
        if len(seen) > 1:
            shown = "; ".join(f"{value} on {', '.join(sorted(nodes)[:3])}{' ...' if len(nodes) > 3 else ''}"
                              for value, nodes in sorted(seen.items()))
            problems.append(f"{setting.name} differs between nodes ({shown}), but it is read once for the whole "
                            f"run: set it for every GPU node (group_vars/gpu_nodes.yml) or with -e")
    return problems
