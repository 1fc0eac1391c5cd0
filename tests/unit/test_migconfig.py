"""Parsing mig-parted files and resolving them onto a node's GPUs."""

import pytest

from migrollout import catalogue
from migrollout.migconfig import (
    DISABLED,
    GpuLayout,
    MigConfigError,
    apply_layouts,
    describe_layouts,
    fit_problems,
    parse_config,
    parse_config_text,
    resolve,
)

A100_80 = catalogue.find_model("A100-SXM4-80GB")
H100 = catalogue.find_model("H100-SXM5-80GB")

CONFIG = parse_config({
    "version": "v1",
    "mig-configs": {
        "half": [
            {"devices": [0, 1, 2, 3], "mig-enabled": True, "mig-devices": {"3g.40gb": 2}},
            {"devices": [4, 5, 6, 7], "mig-enabled": False},
        ],
        "h100-only": [{"device-filter": "0x233010DE", "devices": "all", "mig-enabled": True,
                       "mig-devices": {"1g.20gb": 4}}],
        "too-many": [{"devices": "all", "mig-enabled": True, "mig-devices": {"2g.20gb": 4}}],
    },
})


def test_entries_select_by_index():
    layouts = resolve(CONFIG, "half", A100_80, 8)
    assert layouts[:4] == [GpuLayout(True, {"3g.40gb": 2})] * 4
    assert layouts[4:] == [DISABLED] * 4


def test_gpus_no_entry_selects_stay_untouched():
    assert resolve(CONFIG, "h100-only", A100_80, 2) == [None, None]
    assert resolve(CONFIG, "h100-only", H100, 2) == [GpuLayout(True, {"1g.20gb": 4})] * 2
    current = [GpuLayout(True, {"7g.80gb": 1})] * 2
    assert apply_layouts(current, resolve(CONFIG, "h100-only", A100_80, 2)) == current


def test_fit_problems_name_the_gpus_and_the_rule():
    assert fit_problems(CONFIG, "half", A100_80, 8) == []
    assert fit_problems(CONFIG, "too-many", A100_80, 8) == [
        "all 8 GPUs: 4 x 2g.20gb exceeds the maximum of 3 per A100-SXM4-80GB GPU"]
    assert fit_problems(CONFIG, "nope", A100_80, 8) == ["MIG config nope is not defined"]
    assert "profile 3g.40gb does not exist on A30" in fit_problems(CONFIG, "half", catalogue.find_model("A30"),
                                                                    4)[0]


@pytest.mark.parametrize("text, message", [
    ("version: v2\nmig-configs: {a: [{devices: all, mig-enabled: false}]}", "unsupported mig-parted config version"),
    ("version: v1\nmig-configs: {}", "non-empty mapping"),
    ("version: v1\nmig-configs: {a: [{devices: some, mig-enabled: false}]}", "devices must be 'all'"),
    ("version: v1\nmig-configs: {a: [{devices: all}]}", "mig-enabled must be true or false"),
    ("version: v1\nmig-configs: {a: [{devices: all, mig-enabled: false, extra: 1}]}", "unknown field(s) extra"),
    ("version: v1\nmig-configs: {a: [{devices: all, mig-enabled: true, mig-devices: {1g.10gb: -1}}]}",
     "count >= 0"),
    ("version: v1\nmig-configs: {a: [{devices: all, mig-enabled: false, mig-devices: {1g.10gb: 1}}]}",
     "mig-devices given with mig-enabled: false"),
    ("{{{", "not valid YAML"),
])
def test_malformed_files_are_rejected_with_the_place(text, message):
    with pytest.raises(MigConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_config_text(text)


def test_describe_layouts_groups_gpus():
    text = describe_layouts([GpuLayout(True, {"1g.10gb": 7})] * 2 + [DISABLED])
    assert text == "2 GPUs: MIG 7x1g.10gb; 1 GPU: MIG disabled"
