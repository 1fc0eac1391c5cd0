"""What the device plugin and GPU feature discovery advertise, per strategy, for every catalogue model."""

import pytest

from migrollout import catalogue
from migrollout.advertised import advertise, device_plugin_resources, gfd_labels, single_strategy_error
from migrollout.migconfig.document import parse_config_text
from migrollout.migconfig.layouts import DISABLED, GpuLayout
from migrollout.verification import expect

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
            # A media-extension variant counts under its plain profile (advertised.mixed_resource); GFD names it.
            plain = min((p for p in model.profiles if p.name in profile.name), key=lambda p: len(p.name))
            assert result.resources == {plain.resource_name: total}
            assert result.labels[f"nvidia.com/mig-{profile.resource_suffix}.count"] == str(total)
            assert result.labels["nvidia.com/gpu.count"] == "4"  # physical GPUs, MIG or not
            assert result.labels["nvidia.com/gpu.product"] == model.product


def test_mixed_counts_a_variant_and_a_compute_instance_under_the_profile_inside_its_name():
    # The device plugin's patterns are not anchored and the plain profile's comes first (NVML's order).
    model = catalogue.find_model("A100-80GB")
    layouts = [GpuLayout(True, {"1g.10gb+me": 1, "1g.10gb": 2, "1c.3g.40gb": 3}), GpuLayout(True, {"1g.20gb": 2})]
    assert device_plugin_resources(model, layouts, "mixed") == (
        {"nvidia.com/mig-1g.10gb": 3, "nvidia.com/mig-1g.20gb": 2, "nvidia.com/mig-3g.40gb": 3}, None)
    labels = gfd_labels(model, layouts, "mixed")
    assert labels["nvidia.com/mig-1g.10gb.me.count"] == "1" and labels["nvidia.com/mig-1g.10gb.count"] == "2"


def test_mixed_counts_whole_gpus_separately():
    layouts = [GpuLayout(True, {"1g.10gb": 7}), DISABLED, DISABLED]
    resources, error = device_plugin_resources(catalogue.find_model("A100-80GB"), layouts, "mixed")
    assert error is None
    assert resources == {"nvidia.com/mig-1g.10gb": 7, "nvidia.com/gpu": 2}


@pytest.mark.parametrize("layouts, message", [
    ([GpuLayout(True, {"1g.10gb": 7}), DISABLED], "same migEnabled value"),
    ([GpuLayout(True, {})], "device 0 has no MIG devices configured"),
    ([GpuLayout(True, {"1g.10gb": 2, "3g.40gb": 1})], "more than one MIG device type"),
])
def test_single_strategy_invalid_layouts(layouts, message):
    model = catalogue.find_model("A100-80GB")
    assert message in single_strategy_error(layouts)
    assert device_plugin_resources(model, layouts, "single") == ({}, single_strategy_error(layouts))
    labels = gfd_labels(model, layouts, "single")
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB-MIG-INVALID"
    assert labels["nvidia.com/gpu.count"] == "0"


def test_single_strategy_without_mig_looks_like_none():
    model = catalogue.find_model("L4")
    labels = gfd_labels(model, [DISABLED] * 4, "single")
    assert labels["nvidia.com/gpu.count"] == "4"
    assert labels["nvidia.com/mig.strategy"] == "single"
    assert labels["nvidia.com/mig.capable"] == "false"
    assert device_plugin_resources(model, [DISABLED] * 4, "single") == ({"nvidia.com/gpu": 4}, None)


# GFD's labels for one MIG device type come from NVML's attributes of such a device: the recorded tables.
@pytest.mark.parametrize("key, profile, memory, multiprocessors, slices_gi, slices_ci, engines", [
    ("A100-SXM4-40GB", "1g.5gb", "4864", "14", "1", "1", ("1", "0", "0", "0", "0")),
    ("A100-SXM4-40GB", "1g.5gb+me", "4864", "14", "1", "1", ("1", "1", "0", "1", "1")),
    ("A100-SXM4-40GB", "3g.20gb", "19968", "42", "3", "3", ("3", "2", "0", "0", "0")),
    ("A100-SXM4-80GB", "1g.10gb", "9856", "14", "1", "1", ("1", "1", "0", "0", "0")),
    ("A100-SXM4-80GB", "1g.20gb", "19968", "14", "1", "1", ("1", "1", "0", "0", "0")),
    ("A100-SXM4-80GB", "4g.40gb", "40192", "56", "4", "4", ("4", "2", "0", "0", "0")),
    ("A100-SXM4-80GB", "7g.80gb", "80384", "98", "7", "7", ("7", "5", "0", "1", "1")),
    ("A100-SXM4-80GB", "1c.3g.40gb", "40192", "14", "3", "1", ("3", "2", "0", "0", "0")),
    ("A30", "2g.12gb+me", "11672", "28", "2", "2", ("2", "2", "0", "1", "1")),
])
@pytest.mark.parametrize("strategy", ["single", "mixed"])
def test_mig_device_labels_are_the_recorded_values(key, profile, memory, multiprocessors, slices_gi, slices_ci,
                                                    engines, strategy):
    model = catalogue.find_model(key)
    labels = gfd_labels(model, [GpuLayout(True, {profile: 1})] * 2, strategy)
    prefix = "nvidia.com/gpu" if strategy == "single" else f"nvidia.com/mig-{profile.replace('+', '.')}"
    assert labels[f"{prefix}.memory"] == memory
    assert labels[f"{prefix}.multiprocessors"] == multiprocessors
    assert (labels[f"{prefix}.slices.gi"], labels[f"{prefix}.slices.ci"]) == (slices_gi, slices_ci)
    assert tuple(labels[f"{prefix}.engines.{e}"] for e in ("copy", "decoder", "encoder", "jpeg", "ofa")) == engines


# gpu.replicas: GFD labels a model's MIG-enabled GPUs without sharing (0) and its MIG-disabled ones with 1, the
# latter winning; under single with valid MIG devices the MIG device's labels (1) replace them.
@pytest.mark.parametrize("layouts, strategy, replicas", [
    ([GpuLayout(True, {"1g.10gb": 7})] * 2, "none", "0"),
    ([GpuLayout(True, {"1g.10gb": 7})] * 2, "mixed", "0"),
    ([GpuLayout(True, {"1g.10gb": 7})] * 2, "single", "1"),
    ([GpuLayout(True, {})] * 2, "single", "0"),  # MIG-INVALID
    ([GpuLayout(True, {"1g.10gb": 7}), DISABLED], "mixed", "1"),
    ([GpuLayout(True, {"1g.10gb": 7}), DISABLED], "none", "1"),
    ([DISABLED] * 2, "none", "1"),
    ([DISABLED] * 2, "single", "1"),
])
def test_gpu_replicas(layouts, strategy, replicas):
    model = catalogue.find_model("A100-80GB")
    assert gfd_labels(model, layouts, strategy)["nvidia.com/gpu.replicas"] == replicas


def test_verification_expects_what_the_config_produces_with_nvml_names():
    config = parse_config_text("version: v1\nmig-configs:\n  ci:\n"
                               "    - {devices: all, mig-enabled: true, mig-devices: {1c.1g.10gb: 7}}\n")
    model = catalogue.find_model("A100-80GB")
    expected = expect(config, "ci", model, 2, "mixed")
    assert expected.resources == {"nvidia.com/mig-1g.10gb": 14}
    assert expected.labels["nvidia.com/mig-1g.10gb.count"] == "14"
    single = expect(config, "ci", model, 2, "single")
    assert single.labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb"
