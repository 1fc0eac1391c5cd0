"""The MIG catalogue against the facts of NVIDIA's default configs and recorded NVML tables."""

import pytest

from migrollout import catalogue
from migrollout.default_config import default_mig_config
from migrollout.migconfig.layouts import GpuLayout, layout_problems, resolve

# model key -> (PCI device id, {profile: max count}) as NVIDIA's default configs give them
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


# The PCI ids NVIDIA's default configs name: every one must be a catalogue model, or a node with that GPU is
# "unknown" and configs filtered to it cannot be checked.
@pytest.mark.parametrize("pci, key, same_profiles_as", [
    ("20B1", "A100-PCIE-40GB-20B1", "A100-SXM4-40GB"),
    ("20F6", "A800-PCIE-40GB", "A100-SXM4-40GB"),
    ("20F3", "A800-SXM4-80GB", "A100-SXM4-80GB"),
    ("20F5", "A800-PCIE-80GB", "A100-SXM4-80GB"),
    ("2322", "H800-PCIE-80GB", "H100-SXM5-80GB"),
    ("2324", "H800-SXM5-80GB", "H100-SXM5-80GB"),
    ("233A", "H800-NVL", "H100-NVL"),
])
def test_a800_and_h800_pci_ids_are_known(pci, key, same_profiles_as):
    model = catalogue.model_for_device_id(pci)
    assert model is not None and model.key == key
    assert model.profiles == catalogue.find_model(same_profiles_as).profiles


def test_every_default_config_filter_names_a_catalogue_model():
    for version in ("v25.3.4", "v26.7.0"):
        config = default_mig_config(version)
        for name in config.names():
            for entry in config.entries(name):
                for item in entry.filters:
                    assert any(item.matches(m.device_id) for m in catalogue.MODELS), (version, name, item.text)


# Facts of the recorded NVML tables (go-nvml's A100/A30 mocks) the catalogue must carry; the conformance
# tests compare every field with the tables themselves.
@pytest.mark.parametrize("key, profile, memory_mib, multiprocessors, engines", [
    ("A100-SXM4-40GB", "1g.5gb", 4864, 14, {"copy": 1, "decoder": 0, "encoder": 0, "jpeg": 0, "ofa": 0}),
    ("A100-SXM4-40GB", "1g.5gb+me", 4864, 14, {"copy": 1, "decoder": 1, "encoder": 0, "jpeg": 1, "ofa": 1}),
    ("A100-SXM4-40GB", "7g.40gb", 40192, 98, {"copy": 7, "decoder": 5, "encoder": 0, "jpeg": 1, "ofa": 1}),
    ("A100-SXM4-80GB", "1g.10gb", 9856, 14, {"copy": 1, "decoder": 1, "encoder": 0, "jpeg": 0, "ofa": 0}),
    ("A100-SXM4-80GB", "2g.20gb", 19968, 28, {"copy": 2, "decoder": 1, "encoder": 0, "jpeg": 0, "ofa": 0}),
    ("A100-SXM4-80GB", "3g.40gb", 40192, 42, {"copy": 3, "decoder": 2, "encoder": 0, "jpeg": 0, "ofa": 0}),
    ("A100-SXM4-80GB", "4g.40gb", 40192, 56, {"copy": 4, "decoder": 2, "encoder": 0, "jpeg": 0, "ofa": 0}),
    ("A100-SXM4-80GB", "7g.80gb", 80384, 98, {"copy": 7, "decoder": 5, "encoder": 0, "jpeg": 1, "ofa": 1}),
    ("A30", "2g.12gb", 11672, 28, {"copy": 2, "decoder": 2, "encoder": 0, "jpeg": 0, "ofa": 0}),
    ("A30", "4g.24gb", 23344, 56, {"copy": 4, "decoder": 4, "encoder": 0, "jpeg": 1, "ofa": 1}),
])
def test_recorded_profile_facts(key, profile, memory_mib, multiprocessors, engines):
    found = catalogue.find_model(key).profile(profile)
    assert (found.memory_mib, found.multiprocessors, found.engines) == (memory_mib, multiprocessors, engines)
    assert found.recorded


@pytest.mark.parametrize("key, profile, placements", [
    ("A100-SXM4-80GB", "1g.10gb", (0, 1, 2, 3, 4, 5, 6)),
    ("A100-SXM4-80GB", "1g.20gb", (0, 2, 4, 6)),
    ("A100-SXM4-80GB", "2g.20gb", (0, 2, 4)),
    ("A100-SXM4-80GB", "3g.40gb", (0, 4)),
    ("A100-SXM4-80GB", "4g.40gb", (0,)),
    ("A30", "2g.12gb", (0, 2)),
    # Estimated models follow the same geometry.
    ("H100-SXM5-80GB", "1g.20gb", (0, 2, 4, 6)),
    ("H200-141GB", "3g.71gb", (0, 4)),
    ("RTX-PRO-6000", "2g.48gb", (0, 2)),
])
def test_placements(key, profile, placements):
    assert catalogue.find_model(key).profile(profile).placements == placements


@pytest.mark.parametrize("name, canonical, ci_slices, multiprocessors", [
    ("1c.3g.40gb", "1c.3g.40gb", 1, 14),
    ("2c.3g.40gb", "2c.3g.40gb", 2, 28),
    ("4c.7g.80gb", "4c.7g.80gb", 4, 56),
    ("1c.1g.10gb", "1g.10gb", 1, 14),
    ("7c.7g.80gb", "7g.80gb", 7, 98),
    ("1g.10gb.me", "1g.10gb+me", 1, 14),
])
def test_compute_instance_profiles_are_looked_up_as_mig_parted_matches_them(name, canonical, ci_slices,
                                                                               multiprocessors):
    found = catalogue.find_model("A100-80GB").profile(name)
    assert (found.name, found.ci_slices, found.multiprocessors) == (canonical, ci_slices, multiprocessors)


@pytest.mark.parametrize("name", ["3c.4g.40gb", "5c.7g.80gb", "2c.1g.10gb", "1g.10gb+gfx", "1g.10gb-me", "foo"])
def test_profiles_that_do_not_exist(name):
    assert catalogue.find_model("A100-80GB").profile(name) is None


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
    assert "exceeds the maximum of 2" in layout_problems(GpuLayout(True, {"1c.3g.40gb": 2, "3g.40gb": 1}),
                                                         a100)[0]
    l4 = catalogue.find_model("L4")
    assert layout_problems(GpuLayout(True, {}), l4) == ["L4 does not support MIG"]


@pytest.mark.parametrize("name, key", [
    ("H100-80GB", "H100-SXM5-80GB"),
    ("NVIDIA-H100-80GB-HBM3", "H100-SXM5-80GB"),
    ("NVIDIA-A100-SXM4-40GB-MIG-1g.5gb", "A100-SXM4-40GB"),
    ("NVIDIA-H200", "H200-141GB"),
    ("NVIDIA-A100-80GB-PCIe", "A100-PCIE-80GB"),
    ("NVIDIA-A100-PCIE-80GB", "A100-PCIE-80GB"),
    ("NVIDIA-A30-PCIE-24GB", "A30"),
    ("NVIDIA-A100-PCIE-40GB", "A100-PCIE-40GB"),
    ("nope", None),
])
def test_lookup_by_alias_and_feature_discovery_product(name, key):
    found = catalogue.find_model(name)
    assert (found.key if found else None) == key


@pytest.mark.parametrize("pci, key", [
    ("0x20B210DE", "A100-SXM4-80GB"), ("20b2", "A100-SXM4-80GB"), ("0x233B", "H200-NVL"),
    ("0x20B21234", None), ("FFFF", None),
])
def test_lookup_by_pci_device_id(pci, key):
    found = catalogue.model_for_device_id(pci)
    assert (found.key if found else None) == key


def test_resource_names_replace_plus_with_dot():
    profile = catalogue.find_model("A100-80GB").profile("1g.10gb+me")
    assert profile.resource_name == "nvidia.com/mig-1g.10gb.me"
    assert catalogue.find_model("A100-80GB").profile("1g.10gb.me") is profile


def test_default_config_resolves_per_gpu_model():
    config = default_mig_config("v26.7.0")
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
