"""What the device plugin and GPU feature discovery advertise, per strategy, for every catalogue model."""

import pytest

from migrollout import catalogue
from migrollout.advertised import advertise, device_plugin_resources, gfd_labels, single_strategy_error
from migrollout.migconfig import DISABLED, GpuLayout

MIG_MODELS = [m for m in catalogue.MODELS if m.mig_capable]


@pytest.mark.parametrize("model", MIG_MODELS, ids=lambda m: m.key)
@pytest.mark.parametrize("strategy", ["none", "single", "mixed"])
def test_every_profile_at_max_under_each_strategy(model, strategy):
    for profile in model.profiles:
        layouts = [GpuLayout(True, {profile.name: profile.max_count})] * 4
        result = advertise(model, layouts, strategy)
        total = 4 * profile.max_count
        if strategy == "none":
            assert result.resources == {"nvidia.com/gpu": 4}
            assert "nvidia.com/mig.strategy" not in result.labels
        elif strategy == "single":
            assert result.resources == {"nvidia.com/gpu": total}
            assert result.labels["nvidia.com/gpu.product"] == f"{model.product}-MIG-{profile.resource_suffix}"
            assert result.labels["nvidia.com/gpu.count"] == str(total)
        else:
            assert result.resources == {profile.resource_name: total}
            assert result.labels[f"nvidia.com/mig-{profile.resource_suffix}.count"] == str(total)
            assert result.labels["nvidia.com/gpu.count"] == "4"  # physical GPUs, MIG or not
            assert result.labels["nvidia.com/gpu.product"] == model.product


def test_mixed_counts_whole_gpus_separately():
    layouts = [GpuLayout(True, {"1g.10gb": 7}), DISABLED, DISABLED]
    resources, error = device_plugin_resources(layouts, "mixed")
    assert error is None
    assert resources == {"nvidia.com/mig-1g.10gb": 7, "nvidia.com/gpu": 2}


@pytest.mark.parametrize("layouts, message", [
    ([GpuLayout(True, {"1g.10gb": 7}), DISABLED], "same migEnabled value"),
    ([GpuLayout(True, {})], "device 0 has no MIG devices configured"),
    ([GpuLayout(True, {"1g.10gb": 2, "3g.40gb": 1})], "More than one MIG device type"),
])
def test_single_strategy_invalid_layouts(layouts, message):
    model = catalogue.find_model("A100-80GB")
    assert message in single_strategy_error(layouts)
    assert device_plugin_resources(layouts, "single") == ({}, single_strategy_error(layouts))
    labels = gfd_labels(model, layouts, "single")
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB-MIG-INVALID"
    assert labels["nvidia.com/gpu.count"] == "0"


def test_single_strategy_without_mig_looks_like_none():
    model = catalogue.find_model("L4")
    labels = gfd_labels(model, [DISABLED] * 4, "single")
    assert labels["nvidia.com/gpu.count"] == "4"
    assert labels["nvidia.com/mig.strategy"] == "single"
    assert labels["nvidia.com/mig.capable"] == "false"
    assert device_plugin_resources([DISABLED] * 4, "single") == ({"nvidia.com/gpu": 4}, None)
