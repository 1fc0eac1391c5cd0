"""The MIG catalogue against the facts of NVIDIA's default mig-parted config (mig-stack.md section 2)."""

import pytest

from migrollout import catalogue
from migrollout.default_config import build_default_config
from migrollout.migconfig import GpuLayout, layout_problems, parse_config, resolve

# model key -> (PCI device id, {profile: max count}) as the upstream table gives them
UPSTREAM = {
    "A100-SXM4-40GB": ("20B0", {"1g.5gb": 7, "1g.5gb+me": 1, "1g.10gb": 4, "2g.10gb": 3, "3g.20gb": 2,
                                "4g.20gb": 1, "7g.40gb": 1}),
    "A100-SXM4-80GB": ("20B2", {"1g.10gb": 7, "1g.10gb+me": 1, "1g.20gb": 4, "2g.20gb": 3, "3g.40gb": 2,
                                "4g.40gb": 1, "7g.80gb": 1}),
    "H100-SXM5-80GB": ("2330", {"1g.10gb": 7, "1g.10gb+me": 1, "1g.20gb": 4, "2g.20gb": 3, "3g.40gb": 2,
                                "4g.40gb": 1, "7g.80gb": 1}),
    "A30": ("20B7", {"1g.6gb": 4, "1g.6gb+me": 1, "2g.12gb": 2, "2g.12gb+me": 1, "4g.24gb": 1}),
    "H100-NVL": ("2321", {"1g.12gb": 7, "1g.12gb+me": 1, "1g.24gb": 4, "2g.24gb": 3, "3g.47gb": 2,
                          "4g.47gb": 1, "7g.94gb": 1}),
    "H100-96GB": ("233D", {"1g.12gb": 7, "1g.12gb+me": 1, "1g.24gb": 4, "2g.24gb": 3, "3g.48gb": 2,
                           "4g.48gb": 1, "7g.96gb": 1}),
    "PG506-96GB": ("20B6", {"1g.12gb": 7, "2g.24gb": 3, "3g.48gb": 2, "7g.96gb": 1}),
    "H200-141GB": ("2335", {"1g.18gb": 7, "1g.18gb+me": 1, "1g.35gb": 4, "2g.35gb": 3, "3g.71gb": 2,
                            "4g.71gb": 1, "7g.141gb": 1}),
    "GH200-144GB": ("2348", {"1g.18gb": 7, "1g.18gb+me": 1, "1g.36gb": 4, "2g.36gb": 3, "3g.72gb": 2,
                             "4g.72gb": 1, "7g.144gb": 1}),
    "B200": ("2901", {"1g.23gb": 7, "1g.23gb+me": 1, "1g.45gb": 4, "2g.45gb": 3, "3g.90gb": 2, "4g.90gb": 1,
                      "7g.180gb": 1}),
    "GB200": ("2941", {"1g.23gb": 7, "1g.23gb+me": 1, "1g.47gb": 4, "2g.47gb": 3, "3g.93gb": 2, "4g.93gb": 1,
                       "7g.186gb": 1}),
    "B300": ("3182", {"1g.34gb": 7, "1g.34gb+me": 1, "1g.67gb": 4, "2g.67gb": 3, "3g.135gb": 2,
                      "4g.135gb": 1, "7g.269gb": 1}),
    "GB300": ("31C2", {"1g.35gb": 7, "1g.35gb+me": 1, "1g.70gb": 4, "2g.70gb": 3, "3g.139gb": 2,
                       "4g.139gb": 1, "7g.278gb": 1}),
    "RTX-PRO-6000": ("2BB5", {"1g.24gb": 4, "1g.24gb+gfx": 4, "1g.24gb-me": 4, "1g.24gb+me.all": 1,
                              "2g.48gb": 2, "2g.48gb+gfx": 2, "2g.48gb-me": 2, "2g.48gb+me.all": 1,
                              "4g.96gb": 1, "4g.96gb+gfx": 1}),
}


@pytest.mark.parametrize("key", sorted(UPSTREAM))
def test_model_profiles_match_upstream(key):
    model = catalogue.find_model(key)
    pci, profiles = UPSTREAM[key]
    assert model.pci_device_id == pci
    assert {p.name: p.max_count for p in model.profiles} == profiles


@pytest.mark.parametrize("model", [m for m in catalogue.MODELS if m.mig_capable], ids=lambda m: m.key)
def test_every_profile_fits_at_its_maximum(model):
    for profile in model.profiles:
        assert layout_problems(GpuLayout(True, {profile.name: profile.max_count}), model) == []


def test_placement_rules_reject_what_cannot_fit():
    a100 = catalogue.find_model("A100-80GB")
    # 3g.40gb x2 uses all 8 memory slices: nothing else fits.
    assert layout_problems(GpuLayout(True, {"3g.40gb": 2, "1g.10gb": 1}), a100)
    assert "exceeds the maximum of 7" in layout_problems(GpuLayout(True, {"1g.10gb": 8}), a100)[0]
    assert "does not exist on A100-SXM4-80GB" in layout_problems(GpuLayout(True, {"1g.5gb": 1}), a100)[0]
    assert layout_problems(GpuLayout(True, {"1g.10gb+me": 1, "1g.10gb": 6}), a100) == []
    assert layout_problems(GpuLayout(True, {"4g.40gb": 1, "3g.40gb": 1}), a100) == []
    l4 = catalogue.find_model("L4")
    assert layout_problems(GpuLayout(True, {}), l4) == ["L4 does not support MIG"]


def test_lookup_by_alias_and_feature_discovery_product():
    assert catalogue.find_model("H100-80GB").key == "H100-SXM5-80GB"
    assert catalogue.find_model("NVIDIA-H100-80GB-HBM3").key == "H100-SXM5-80GB"
    assert catalogue.find_model("NVIDIA-A100-SXM4-40GB-MIG-1g.5gb").key == "A100-SXM4-40GB"
    assert catalogue.find_model("NVIDIA-H200").key == "H200-141GB"
    assert catalogue.find_model("nope") is None
    assert catalogue.model_for_device_id("0x20B210DE").key == "A100-SXM4-80GB"


def test_resource_names_replace_plus_with_dot():
    profile = catalogue.find_model("A100-80GB").profile("1g.10gb+me")
    assert profile.resource_name == "nvidia.com/mig-1g.10gb.me"
    assert catalogue.find_model("A100-80GB").profile("1g.10gb.me") is profile


def test_default_config_has_upstream_shape():
    config = parse_config(build_default_config())
    for name in ("all-disabled", "all-enabled", "all-balanced", "all-1g.10gb", "all-7g.141gb", "all-4g.24gb"):
        assert name in config
    a100_80 = catalogue.find_model("A100-80GB")
    a100_40 = catalogue.find_model("A100-40GB")
    # all-1g.10gb: 7 per GPU on 80GB parts, 4 per GPU (the double-memory profile) on 40GB parts
    assert resolve(config, "all-1g.10gb", a100_80, 1) == [GpuLayout(True, {"1g.10gb": 7})]
    assert resolve(config, "all-1g.10gb", a100_40, 1) == [GpuLayout(True, {"1g.10gb": 4})]
    assert resolve(config, "all-balanced", a100_40, 1) == [
        GpuLayout(True, {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1})]
    assert resolve(config, "all-balanced", catalogue.find_model("A30"), 1) == [
        GpuLayout(True, {"1g.6gb": 2, "2g.12gb": 1})]
    # A profile without a device filter lands on any GPU (and fails there at apply time, as upstream).
    assert resolve(config, "all-1g.5gb", a100_80, 1) == [GpuLayout(True, {"1g.5gb": 7})]
