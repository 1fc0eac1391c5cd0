"""The chart values, and the custom MIG ConfigMap merged with the standard configs the chart's MIG manager parses."""

import pytest

from migrollout.migconfig.document import Dialect, check_document
from migrollout.migconfig.go_yaml import load_yaml
from migrollout.operator_values import (
    MigConfigsRefused,
    build_values,
    chart_versions,
    merged_mig_configs,
    mig_manager_for,
)

CUSTOM = {"half": [{"devices": [0, 1], "mig-enabled": True, "mig-devices": {"3g.40gb": 2}},
                   {"devices": [2, 3], "mig-enabled": False}]}
EXTENDED_NAMES = {"all-1g.24gb-me", "all-1g.24gb.me.all", "all-2g.48gb-me", "all-2g.48gb.me.all"}


@pytest.mark.parametrize("chart, tag, manager", [
    (None, None, "v0.15.0"),
    ("v26.7.0", None, "v0.15.0"),
    ("v26.3.1", None, "v0.14.0"),
    ("v25.10.1", None, "v0.13.1"),
    ("v25.3.4", None, "v0.12.3"),
    ("v25.3.3", None, "v0.12.3"),
    ("v25.3.2", None, "v0.12.2"),
    ("v25.3.0", None, "v0.12.1"),
    ("v24.9.2", None, "v0.10.0"),
    ("v26.7.0", "v0.12.2-ubuntu20.04", "v0.12.2"),  # an image override wins
    ("v1.0.0-devel", "v0.15.0", "v0.15.0"),
])
def test_which_mig_manager_a_chart_deploys(chart, tag, manager):
    assert mig_manager_for(chart, tag) == manager


@pytest.mark.parametrize("chart, tag, message", [
    ("v1.0.0-devel", None, "cannot tell which MIG manager it deploys"),
    ("latest", None, "cannot tell which MIG manager it deploys"),
    (None, "latest", "does not start with a version"),
])
def test_unknown_versions_are_refused(chart, tag, message):
    with pytest.raises(MigConfigsRefused, match=message):
        mig_manager_for(chart, tag)


@pytest.mark.parametrize("chart", ["v25.3.0", "v25.3.2", "v24.9.2"])
def test_old_mig_managers_get_only_the_standard_configs_they_parse(chart):
    merged = merged_mig_configs(CUSTOM, chart)
    assert set(merged.left_out) == EXTENDED_NAMES
    assert not EXTENDED_NAMES & set(merged.configs)
    assert "all-disabled" in merged.configs and "half" in merged.configs
    text = build_values("mixed", mig_configs=CUSTOM, chart_version=chart)["migManager"]["config"]["data"][
        "config.yaml"]
    assert check_document(text, Dialect.for_mig_manager(merged.mig_manager_version)) == []


@pytest.mark.parametrize("chart, defaults", [("v25.3.4", "v25.3.4"), ("v26.7.0", "v26.7.0"), (None, "v26.7.0")])
def test_current_mig_managers_get_every_standard_config_of_their_release(chart, defaults):
    merged = merged_mig_configs(CUSTOM, chart)
    assert merged.left_out == {}
    assert set(merged.configs) >= EXTENDED_NAMES
    assert merged.defaults_version == defaults


def test_custom_configs_win_over_standard_ones_of_the_same_name():
    mine = {"all-1g.24gb-me": [{"devices": "all", "mig-enabled": False}]}
    merged = merged_mig_configs(mine, "v25.3.2")
    assert merged.configs["all-1g.24gb-me"] == mine["all-1g.24gb-me"]
    assert "all-1g.24gb-me" not in merged.left_out


@pytest.mark.parametrize("custom, chart, message", [
    ({"me": [{"devices": "all", "mig-enabled": True, "mig-devices": {"1g.24gb-me": 1}}]}, "v25.3.2",
     "the MIG manager v0.12.2 of this chart would reject the whole MIG config ConfigMap, so every MIG change would "
     "fail: mig-configs.me[0]: mig-devices '1g.24gb-me' is not a MIG profile name"),
    ({"bad": [{"devices": "all", "mig-enabled": True}]}, "v26.7.0",
     "mig-configs.bad[0]: mig-enabled is true but mig-devices is missing or null"),
])
def test_custom_configs_the_mig_manager_cannot_parse_are_refused(custom, chart, message):
    with pytest.raises(MigConfigsRefused, match=message.replace("[", r"\[").replace("]", r"\]")):
        merged_mig_configs(custom, chart)


def test_without_defaults_only_the_custom_configs():
    assert merged_mig_configs(CUSTOM, "v26.7.0", with_defaults=False).configs == CUSTOM


def test_build_values_reads_a_mig_manager_override_from_the_extra_values():
    values = build_values("mixed", mig_configs=CUSTOM, chart_version="v26.7.0",
                          extra={"migManager": {"version": "v0.12.2-ubi9"}})
    names = load_yaml(values["migManager"]["config"]["data"]["config.yaml"])["mig-configs"]
    assert not EXTENDED_NAMES & set(names)
    assert values["migManager"]["version"] == "v0.12.2-ubi9"


def test_build_values_without_custom_configs_creates_no_configmap():
    values = build_values("single", chart_version="v1.0.0-devel")
    assert "config" not in values["migManager"]
    assert values["mig"] == {"strategy": "single"}


def test_versions_of_a_chart_on_disk(tmp_path):
    (tmp_path / "Chart.yaml").write_text("name: gpu-operator\nversion: v1.0.0-devel\n")
    (tmp_path / "values.yaml").write_text("migManager:\n  version: v0.12.3-ubuntu20.04\n")
    chart, tag = chart_versions(tmp_path)
    assert (chart, tag) == ("v1.0.0-devel", "v0.12.3-ubuntu20.04")
    merged = merged_mig_configs(CUSTOM, chart, tag)
    assert (merged.mig_manager_version, merged.defaults_version) == ("v0.12.3", "v25.3.4")
