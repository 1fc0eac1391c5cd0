"""Taint merging: key and effect identify a taint; nothing else is touched."""

import pytest

from migrollout import taints
from migrollout.taints import Taint

SYSTEM = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule", "timeAdded": "2026-01-01T00:00:00Z"}


def test_add_appends_and_keeps_others():
    result = taints.add([SYSTEM], [Taint("mig", "NoSchedule", "maintenance")])
    assert result == [SYSTEM, {"key": "mig", "effect": "NoSchedule", "value": "maintenance"}]


def test_add_updates_the_value_of_the_same_key_and_effect():
    current = [{"key": "mig", "effect": "NoSchedule", "value": "old"}, SYSTEM]
    result = taints.add(current, [Taint("mig", "NoSchedule", "new")])
    assert result == [{"key": "mig", "effect": "NoSchedule", "value": "new"}, SYSTEM]
    assert not taints.same(current, result)


def test_same_key_other_effect_is_another_taint():
    current = [{"key": "mig", "effect": "NoSchedule", "value": "maintenance"}]
    result = taints.add(current, [Taint("mig", "NoExecute", "maintenance")])
    assert [(t["key"], t["effect"]) for t in result] == [("mig", "NoSchedule"), ("mig", "NoExecute")]
    assert "timeAdded" in result[1]  # NoExecute taints carry the time they were added, as kubectl sets it


def test_add_is_idempotent():
    once = taints.add([SYSTEM], [Taint("mig", "NoSchedule", "maintenance")])
    assert taints.same(once, taints.add(once, [Taint("mig", "NoSchedule", "maintenance")]))


def test_remove_matches_key_and_effect_ignoring_value():
    current = [SYSTEM, {"key": "mig", "effect": "NoSchedule", "value": "x"}, {"key": "mig", "effect": "NoExecute"}]
    assert taints.remove(current, [Taint("mig", "NoSchedule")]) == [SYSTEM, {"key": "mig", "effect": "NoExecute"}]
    assert taints.remove([SYSTEM], [Taint("mig", "NoSchedule")]) == [SYSTEM]


@pytest.mark.parametrize("text, taint", [
    ("mig=maintenance:NoSchedule", Taint("mig", "NoSchedule", "maintenance")),
    ("example.com/drain:NoExecute", Taint("example.com/drain", "NoExecute")),
])
def test_parse_kubectl_syntax(text, taint):
    assert Taint.parse(text) == taint
    assert str(taint) == text


def test_parse_rejects_unknown_effects():
    with pytest.raises(ValueError, match="NoSchedule, PreferNoSchedule, NoExecute"):
        Taint.parse("mig=maintenance:Never")
