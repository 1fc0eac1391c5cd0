"""The operator's default MIG configs, per GPU Operator release, and the rule for which release's apply."""

import pytest

from migrollout import catalogue
from migrollout.default_config import (
    DEFAULT_OPERATOR_VERSION,
    UnknownOperatorVersion,
    build_default_config,
    default_config_yaml,
    default_mig_config,
    defaults_version,
    mig_manager_version,
    recorded_versions,
)
from migrollout.migconfig.document import check_document, parse_config_text
from migrollout.migconfig.layouts import GpuLayout, resolve


def test_recorded_releases():
    assert recorded_versions() == ["v25.3.4", "v26.7.0"]
    assert DEFAULT_OPERATOR_VERSION == "v26.7.0"


@pytest.mark.parametrize("requested, used", [
    ("v26.7.0", "v26.7.0"),
    ("26.7.0", "v26.7.0"),
    ("v26.7.1", "v26.7.0"),  # a newer patch release: the newest recorded one older than it
    ("v27.1.0", "v26.7.0"),
    ("v25.10.1", "v25.3.4"),
    ("v25.3.4", "v25.3.4"),
    ("v25.3.2", "v25.3.4"),  # older than every recorded release: the oldest recorded
    (None, "v26.7.0"),
])
def test_which_release_defaults_apply(requested, used):
    assert defaults_version(requested) == used


@pytest.mark.parametrize("version", ["devel", "v1.0.0-devel", "1.11", ""])
def test_versions_that_name_no_release_are_refused(version):
    with pytest.raises(UnknownOperatorVersion, match="is not a GPU Operator release version"):
        defaults_version(version or "x")


@pytest.mark.parametrize("version, manager", [("v26.7.0", "v0.15.0"), ("v25.3.4", "v0.12.3")])
def test_mig_manager_of_each_recorded_release(version, manager):
    assert mig_manager_version(version) == manager


# The v26.7.0 facts the hand-typed list lacked or got wrong.
@pytest.mark.parametrize("name", ["all-1g.24gb.me", "all-3g.95gb", "all-4g.95gb", "all-7g.189gb", "all-1g.24gb-me",
                                  "all-1g.24gb.me.all", "all-7g.269gb", "all-1g.35gb.me"])
def test_v26_7_0_has_the_operator_configs(name):
    assert name in default_mig_config("v26.7.0")


def test_all_1g_35gb_does_not_select_h200_nvl_in_v26_7_0():
    config = default_mig_config("v26.7.0")
    assert resolve(config, "all-1g.35gb", catalogue.find_model("H200-NVL"), 2) == [None, None]
    assert resolve(config, "all-1g.35gb", catalogue.find_model("H200-141GB"), 1) == [GpuLayout(True, {"1g.35gb": 4})]
    assert resolve(config, "all-1g.35gb", catalogue.find_model("GB300"), 1) == [GpuLayout(True, {"1g.35gb": 7})]
    # In v25.3.4 it had no filter (and GB300 did not exist yet).
    assert resolve(default_mig_config("v25.3.4"), "all-1g.35gb", catalogue.find_model("H200-NVL"), 1) == [
        GpuLayout(True, {"1g.35gb": 4})]


def test_releases_differ():
    old, new = default_mig_config("v25.3.4"), default_mig_config("v26.7.0")
    assert set(new.names()) - set(old.names()) >= {"all-1g.34gb", "all-7g.278gb"}
    assert set(old.names()) <= set(new.names())


@pytest.mark.parametrize("version", ["v25.3.4", "v26.7.0"])
def test_default_file_loads_in_its_own_mig_manager(version):
    from migrollout.migconfig.document import Dialect

    text = default_config_yaml(version)
    assert check_document(text, Dialect.for_mig_manager(mig_manager_version(version))) == []
    assert parse_config_text(text).names() == default_mig_config(version).names()


def test_build_returns_a_copy():
    built = build_default_config()
    built["mig-configs"]["all-disabled"].append({"devices": [0], "mig-enabled": True})
    assert len(build_default_config()["mig-configs"]["all-disabled"]) == 1
