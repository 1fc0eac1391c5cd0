"""NVIDIA's driver upgrade state, as the rollout reads it: which nodes are under way, what the controller did."""

import pytest

from migrollout import driver_upgrade


def node(name, state=None):
    labels = {} if state is None else {driver_upgrade.STATE_LABEL: state}
    return {"metadata": {"name": name, "labels": labels}}


@pytest.mark.parametrize(("state", "under_way"), [
    (None, False), ("", False), ("upgrade-done", False), ("upgrade-failed", False),
    *[(state, True) for state in driver_upgrade.IN_PROGRESS],
    ("a-state-of-a-later-version", True),
])
def test_which_states_are_under_way(state, under_way):
    assert bool(driver_upgrade.under_way([node("n", state)])) is under_way


def test_every_state_has_what_the_rollout_does():
    for state in ("", driver_upgrade.DONE, driver_upgrade.FAILED, *driver_upgrade.IN_PROGRESS):
        assert driver_upgrade.ACTION[state]


def test_the_refusal_names_the_nodes_and_their_states_and_how_many_more():
    upgrading = driver_upgrade.under_way([node(f"gpu-{i:02d}", "upgrade-required") for i in range(12)]
                                         + [node("gpu-a", "cordon-required")])
    text = driver_upgrade.refusal(upgrading, limit=2)
    assert "13 node(s)" in text and "gpu-00 (upgrade-required), gpu-01 (upgrade-required) and 11 more" in text
    assert "mig_rollout_capacity_policy: wait" in text


def event(node_name, at, note, reason="GPUDriverUpgrade", kind="Node"):
    return {"reason": reason, "regarding": {"kind": kind, "name": node_name}, "note": note,
            "deprecatedLastTimestamp": at}


def test_what_the_controller_did_during_the_run_by_node_oldest_first():
    events = [event("a", "2026-12-07T10:00:05Z", "Successfully drained the node"),
              event("a", "2026-12-07T10:00:01Z", "Scheduling drain of the node"),
              event("b", "2026-12-07T09:59:59Z", "before the run"),
              event("b", "2026-12-07T10:00:02Z", "other reason", reason="MigConfigApplied"),
              event("c", "2026-12-07T10:00:03Z", "a pod", kind="Pod")]
    assert driver_upgrade.during_run(events, "2026-12-07T10:00:00.000000Z") == {
        "a": ["Scheduling drain of the node", "Successfully drained the node"]}


def test_a_node_excluded_from_driver_upgrades_waits_in_upgrade_required_for_good_and_is_not_under_way():
    excluded = node("n", "upgrade-required")
    excluded["metadata"]["labels"][driver_upgrade.SKIP_LABEL] = "true"
    assert driver_upgrade.under_way([excluded]) == []
    # Excluded after it started: the controller finishes what it began.
    started = node("m", "cordon-required")
    started["metadata"]["labels"][driver_upgrade.SKIP_LABEL] = "true"
    assert [u.node for u in driver_upgrade.under_way([started])] == ["m"]


TOLERATION = [{"key": "mig", "operator": "Exists"}]


@pytest.mark.parametrize(("deployed", "wanted", "charts", "restarts"), [
    # A first install restarts nothing, whatever it sets (the maintenance toleration at install time).
    (None, {"daemonsets": {"tolerations": TOLERATION}}, ("", "gpu-operator-v26.7.0"), []),
    # The same values and chart: nothing.
    ({"mig": {"strategy": "mixed"}}, {"mig": {"strategy": "mixed"}}, ("c-1", "c-1"), []),
    # The MIG strategy or the MIG manager's settings do not reach the driver's pod template.
    ({"mig": {"strategy": "mixed"}}, {"mig": {"strategy": "single"}, "migManager": {"env": []}}, ("c-1", "c-1"), []),
    # Nor does the upgrade policy itself.
    ({}, {"driver": {"upgradePolicy": {"maxParallelUpgrades": 4}}}, ("c-1", "c-1"), []),
    # A toleration, a driver setting, a chart version: every GPU node's driver restarts.
    ({}, {"daemonsets": {"tolerations": TOLERATION}}, ("c-1", "c-1"), ["daemonsets.tolerations"]),
    ({"driver": {"version": "570"}}, {"driver": {"version": "580"}}, ("c-1", "c-1"), ["driver.version"]),
    ({}, {}, ("c-1", "c-2"), ["the chart changes from c-1 to c-2"]),
    # Unless the operator does not manage the driver, or does not upgrade it by itself.
    ({"driver": {"enabled": False}}, {"driver": {"enabled": False}, "daemonsets": {"tolerations": TOLERATION}},
     ("c-1", "c-2"), []),
    ({"driver": {"upgradePolicy": {"autoUpgrade": False}}},
     {"driver": {"upgradePolicy": {"autoUpgrade": False}}, "daemonsets": {"tolerations": TOLERATION}},
     ("c-1", "c-1"), []),
])
def test_which_operator_changes_restart_the_driver_everywhere(deployed, wanted, charts, restarts):
    reasons = driver_upgrade.restart_reasons(deployed, wanted, *charts)
    assert [r.split(" changes")[0] for r in reasons] == [r.split(" changes")[0] for r in restarts]
    if reasons:
        assert "every GPU node" in driver_upgrade.restart_sentence(reasons)


def test_the_reports_lines_say_what_the_controller_did_by_node():
    assert driver_upgrade.report_lines({}) == []
    lines = driver_upgrade.report_lines({"a": ["Scheduling drain of the node", "Successfully drained the node"]})
    assert lines == ["NVIDIA's driver upgrade controller acted on 1 node(s) during the run (GPUDriverUpgrade Events):",
                     "  a: 2 event(s), last: Successfully drained the node"]
