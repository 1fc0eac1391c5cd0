"""mig-parted configs resolved onto a node's GPUs, and whether they fit (migconfig.layouts)."""

from dataclasses import replace

import pytest

from migrollout import catalogue
from migrollout.migconfig.document import (
    parse_config,
    parse_config_text,
)
from migrollout.migconfig.layouts import (
    DISABLED,
    GpuLayout,
    apply_layouts,
    check_custom_configs,
    describe_layouts,
    fit_problems,
    layout_problems,
    resolve,
    walk,
)

A100_80 = catalogue.find_model("A100-SXM4-80GB")
A100_40 = catalogue.find_model("A100-SXM4-40GB")
H100 = catalogue.find_model("H100-SXM5-80GB")
A30 = catalogue.find_model("A30")
MIG_MODELS = [m for m in catalogue.MODELS if m.mig_capable]


def entry(**fields):
    """A one-config, one-entry file with these entry fields (given as YAML flow text)."""
    body = ", ".join(f"{key.replace('_', '-')}: {value}" for key, value in fields.items())
    return f"version: v1\nmig-configs:\n  custom:\n    - {{{body}}}\n"


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

def test_walk_visits_entries_in_order_and_the_last_match_stays():
    config = parse_config_text(
        "version: v1\nmig-configs:\n  c:\n"
        "    - {devices: all, mig-enabled: true, mig-devices: {1g.10gb: 7}}\n"
        "    - {devices: [1], device-filter: '0x20B210DE', mig-enabled: false}\n")
    steps = walk(config, "c", [A100_80.device_id, A100_80.device_id, H100.device_id])
    assert [(s.entry, s.index) for s in steps] == [(0, 0), (0, 1), (0, 2), (1, 1)]
    assert resolve(config, "c", A100_80, 2) == [GpuLayout(True, {"1g.10gb": 7}), DISABLED]

def test_resolve_names_profiles_as_nvml_does():
    config = parse_config_text(entry(devices="all", mig_enabled="true",
                                     mig_devices="{1c.1g.10gb: 2, 1g.10gb: 1, 7c.7g.80gb: 0}"))
    assert resolve(config, "custom", A100_80, 1) == [GpuLayout(True, {"1g.10gb": 3})]

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
    assert "profile 3g.40gb does not exist on A30" in fit_problems(CONFIG, "half", A30, 4)[0]

@pytest.mark.parametrize("model, devices, fits", [
    (A100_80, {"4g.40gb": 1, "3g.40gb": 1}, True),
    (A100_80, {"3g.40gb": 2}, True),
    (A100_80, {"2g.20gb": 3, "1g.10gb": 1}, True),
    (A100_80, {"1g.20gb": 3, "1g.10gb": 1}, True),
    (A100_80, {"1g.10gb+me": 1, "1g.10gb": 6}, True),
    (A100_80, {"3g.40gb": 1, "2g.20gb": 2}, True),
    (A100_80, {"1c.3g.40gb": 2}, True),
    (A100_80, {"3c.7g.80gb": 1}, True),
    (A100_80, {"4g.40gb": 1, "2g.20gb": 1, "1g.20gb": 1}, True),
    (A100_80, {"3g.40gb": 2, "1g.10gb": 1}, False),  # all 8 memory slices are taken
    (A100_80, {"4g.40gb": 2}, False),
    (A100_80, {"1g.20gb": 4, "1g.10gb": 1}, False),
    (A100_80, {"5c.7g.80gb": 1}, False),  # no 5-slice compute instance
    (A100_40, {"1g.10gb": 4}, True),
    (A100_40, {"2g.10gb": 3, "1g.5gb": 1}, True),
    (A30, {"2g.12gb": 1, "2g.12gb+me": 1}, True),
    (A30, {"1g.6gb": 4}, True),
    (A30, {"4g.24gb": 1, "1g.6gb": 1}, False),
])
def test_layouts_fit_by_the_recorded_placements(model, devices, fits):
    assert (layout_problems(GpuLayout(True, devices), model) == []) is fits

def test_a_layout_without_placement_says_so():
    # Two instances that fit by slice counts but may only start at the same memory slice.
    first_half = catalogue.MigProfile("2g.40gb", 1, 2, 4, 40192, 28, placements=(0,))
    other = catalogue.MigProfile("3g.40gb", 1, 3, 4, 40192, 42, placements=(0,))
    model = replace(A100_80, key="TEST", profiles=(first_half, other))
    assert layout_problems(GpuLayout(True, {"2g.40gb": 1, "3g.40gb": 1}), model) == [
        "1x2g.40gb + 1x3g.40gb has no valid placement on a TEST GPU (the instances' possible positions overlap)"]
    assert layout_problems(GpuLayout(True, {"3g.40gb": 1}), model) == []

def test_describe_layouts_groups_gpus():
    text = describe_layouts([GpuLayout(True, {"1g.10gb": 7})] * 2 + [DISABLED])
    assert text == "2 GPUs: MIG 7x1g.10gb; 1 GPU: MIG disabled"

@pytest.mark.parametrize("configs, problem", [
    ({"bad": [{"devices": "all", "mig-enabled": True}]}, "mig-configs.bad[0]: mig-enabled is true but mig-devices"),
    ({"bad": [{"devices": "all", "mig-enabled": True, "mig-devices": {"1g.10gb": 0}}]}, "every count"),
    ({"bad": [{"devices": "all", "mig-enabled": True, "mig-devices": {"foo": 1}}]}, "'foo' is not a MIG profile"),
    ({"bad": [{"devices": "all", "mig-enabled": True, "mig-devices": {"1g.10gb": 8}}]}, "fits none of the GPU"),
    ({"bad": [{"device-filter": "0x20B010de", "devices": "all", "mig-enabled": True,
               "mig-devices": {"1g.10gb": 7}}]}, "7 x 1g.10gb exceeds the maximum of 4 per A100-SXM4-40GB"),
    ({"bad": [{"device-filter": "20B010DE", "devices": "all", "mig-enabled": False}]},
     "device-filter 20B010DE matches no GPU in the catalogue"),
])
def test_custom_configs_are_refused_with_the_entry_and_reason(configs, problem):
    _fits, problems = check_custom_configs(configs, [A100_80, A100_40], MIG_MODELS)
    assert any(problem in found for found in problems), problems

def test_custom_configs_report_the_models_they_fit():
    configs = {"seven": [{"devices": "all", "mig-enabled": True, "mig-devices": {"1g.10gb": 7}}],
               "ci": [{"device-filter": ["0x20B210DE"], "devices": "all", "mig-enabled": True,
                       "mig-devices": {"1c.3g.40gb": 2}}]}
    fits, problems = check_custom_configs(configs, [A100_80, A100_40], MIG_MODELS)
    assert problems == []
    assert fits == {"ci": ["A100-SXM4-80GB"], "seven": ["A100-SXM4-80GB"]}
