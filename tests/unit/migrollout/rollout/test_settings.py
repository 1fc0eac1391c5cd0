"""Every rollout setting is checked (type and range) before the lock: one table, one sentence per problem
naming the setting and the bad value (issue 12 items 3, 7 and 11, and issue 11's per-pool settings)."""

import pytest

from migrollout.rollout.settings import SETTINGS, CountOrPercent, SettingError, check, unknown

# (setting, value, the error's end, or None when the value is fine)
TABLE = [
    ("mig_rollout_serial", 1, None),
    ("mig_rollout_serial", "10%", None),
    ("mig_rollout_serial", "100%", None),
    ("mig_rollout_serial", "3", None),
    ("mig_rollout_serial", 0, "it must be at least 1 node (or a percentage such as 10%)"),
    ("mig_rollout_serial", -1, "it must be at least 1 node (or a percentage such as 10%)"),
    ("mig_rollout_serial", "150%", "it must be a percentage between 1% and 100%"),
    ("mig_rollout_serial", "0%", "it must be a percentage between 1% and 100%"),
    ("mig_rollout_serial", "abc", "it must be a count of nodes or a whole percentage such as 10%, not the text 'abc'"),
    ("mig_rollout_serial", "2.5%", "it must be a count of nodes or a whole percentage such as 10%, not '2.5%'"),
    ("mig_rollout_serial", True, "it must be a count of nodes or a whole percentage such as 10%"),
    ("mig_rollout_max_fail_percentage", 0, None),
    ("mig_rollout_max_fail_percentage", 101, "it must be between 0 and 100%"),
    ("mig_rollout_evacuation_timeout", 0, "it must be a whole number of seconds, at least 1"),
    ("mig_rollout_evacuation_timeout", "600", None),
    ("mig_rollout_apply_timeout", 0, "it must be a whole number of seconds, at least 1"),
    ("mig_rollout_verify_timeout", -1, "it must be a whole number of seconds, at least 1"),
    ("mig_rollout_verify_timeout", 1.5, "it must be a whole number of seconds, not a fraction"),
    ("mig_rollout_evacuation_parallel", 0, "it must be between 1 and 100"),
    ("mig_rollout_grace_period", -2, "it must be at least -1 (-1: each pod's own)"),
    ("mig_rollout_lock_duration", 5, "it must be between 10 and 3600 seconds"),
    ("mig_rollout_lock_wait", -1, "it must be a whole number of seconds, at least 0"),
    ("mig_rollout_cordon", "yes", None),
    ("mig_rollout_cordon", "maybe", "it must be true or false, not the text 'maybe'"),
    ("mig_rollout_pod_selector", "tier in (a,b)", None),
    ("mig_rollout_pod_selector", "tier in (a", "it must be a valid label selector"),
    ("mig_rollout_maintenance_taints", [{"key": "mig", "value": "maintenance", "effect": "NoSchedule"}], None),
    ("mig_rollout_maintenance_taints", [{"key": "mig", "effect": "NoExecute"}],
     "(mig:NoExecute: NoExecute is refused: the taint manager would delete every pod on the node"),
    ("mig_rollout_maintenance_taints", [{"key": "bad key", "effect": "NoSchedule"}], "it must be a list of valid taints"),
    ("mig_rollout_gpu_runtime_classes", "nvidia", "it must be a list of names, not the text 'nvidia'"),
    ("mig_config", ["all-1g.10gb"], "it must be the name of one MIG config (such as all-1g.10gb), not a list"),
    ("mig_config", None, None),
]


@pytest.mark.parametrize(("name", "value", "error"), TABLE)
def test_table(name, value, error):
    # serial batches only with the batches schedule (the window is the default)
    settings = {name: value, **({"mig_rollout_schedule": "batches"} if name == "mig_rollout_serial" else {})}
    if error is None:
        check(settings)
        return
    with pytest.raises(SettingError) as raised:
        check(settings)
    [problem] = raised.value.problems
    assert problem.startswith(f"{name} is {value!r}" if isinstance(value, str) else f"{name} is {value}")
    assert error in problem


def test_normalized_values():
    checked = check({"mig_rollout_schedule": "batches", "mig_rollout_serial": "10%",
                     "mig_rollout_evacuation_timeout": "60", "mig_rollout_cordon": "yes"})
    assert checked["mig_rollout_serial"] == CountOrPercent(10, percent=True)
    assert checked["mig_rollout_serial"].of(25) == 2 and CountOrPercent(1, percent=True).of(10) == 1
    assert checked["mig_rollout_evacuation_timeout"] == 60 and checked["mig_rollout_cordon"] is True


def test_per_pool_values_are_checked_and_name_their_nodes():
    with pytest.raises(SettingError) as raised:
        check({"mig_rollout_evacuation_timeout": 600},
              {"a-1": {"mig_rollout_evacuation_timeout": 0}, "a-2": {"mig_rollout_evacuation_timeout": 0},
               "b-1": {"mig_rollout_evacuation_timeout": 30}})
    assert raised.value.problems == ["mig_rollout_evacuation_timeout is 0 (nodes a-1, a-2); it must be a whole number "
                                     "of seconds, at least 1"]


def test_run_wide_settings_must_agree():
    with pytest.raises(SettingError) as raised:
        check({}, {"a-1": {"mig_rollout_serial": 2}, "b-1": {}})
    assert raised.value.problems[0].startswith("mig_rollout_serial differs between nodes (2 on a-1; the default on b-1)")
    check({}, {"a-1": {"mig_rollout_serial": 2}, "b-1": {"mig_rollout_serial": 2}})


def test_a_typo_is_warned_about():
    assert unknown(["mig_rollout_evacuaton_timeout", "mig_rollout_slot"]) == [
        "mig_rollout_evacuaton_timeout is not a rollout setting (did you mean mig_rollout_evacuation_timeout?): its "
        "value is ignored"]


def test_every_setting_has_a_role_default():
    from pathlib import Path

    import yaml

    defaults = yaml.safe_load((Path(__file__).resolve().parents[4] / "roles/mig_rollout/defaults/main.yml").read_text())
    assert {s.name for s in SETTINGS} == {name for name in defaults if name.startswith("mig_rollout_")}
    assert check({name: value for name, value in defaults.items() if "{{" not in str(value)})


SCHEDULING = [
    ("mig_rollout_schedule", "window", None),
    ("mig_rollout_schedule", "batches", None),
    ("mig_rollout_schedule", "serial", "it must be one of window, batches, not the text 'serial'"),
    ("mig_rollout_max_unavailable", "10%", None),
    ("mig_rollout_max_unavailable", 0, "it must be at least 1 node (or a percentage such as 10%)"),
    ("mig_rollout_serial", None, None),
    ("mig_rollout_max_unavailable_per_pool", None, None),
    ("mig_rollout_max_unavailable_per_pool", "25%", None),
    ("mig_rollout_max_unavailable_per_pool", {"a100": 2, "h100": "10%"}, None),
    ("mig_rollout_max_unavailable_per_pool", {"a100": 0}, "(pool a100: 0 is not; it must be at least 1 node"),
    ("mig_rollout_pool_by", "product", None),
    ("mig_rollout_pool_by", "zone", "it must be one of pool, product"),
    ("mig_rollout_capacity_policy", "wait", None),
    ("mig_rollout_capacity_policy", "skip", "it must be one of refuse, wait, ignore"),
    ("mig_rollout_capacity_timeout", 0, "it must be a whole number of seconds, at least 1"),
    ("mig_rollout_events", "no", None),
    ("mig_rollout_progress", "off", None),
    ("mig_rollout_progress", "sometimes", "mig_rollout_progress is "),
]


@pytest.mark.parametrize(("name", "value", "error"), SCHEDULING)
def test_scheduling_settings(name, value, error):
    settings = {"mig_rollout_schedule": "batches", name: value}   # batches: serial may be set
    if error is None:
        check(settings)
        return
    with pytest.raises(SettingError) as raised:
        check(settings)
    [problem] = raised.value.problems
    assert problem.startswith(f"{name} is ") and error in problem


def test_serial_with_the_window_is_refused_naming_both_settings():
    with pytest.raises(SettingError) as raised:
        check({"mig_rollout_serial": "10%"})
    [problem] = raised.value.problems
    assert problem.startswith("mig_rollout_serial is 10% but mig_rollout_schedule is window (the default)")
    assert "mig_rollout_max_unavailable" in problem and "mig_rollout_schedule: batches" in problem
    assert check({"mig_rollout_serial": "10%", "mig_rollout_schedule": "batches"})["mig_rollout_serial"] \
        == CountOrPercent(10, percent=True)
    assert check({"mig_rollout_serial": None})["mig_rollout_serial"] is None
