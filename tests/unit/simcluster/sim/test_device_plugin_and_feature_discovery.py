"""The simulated device plugin's resources and GPU feature discovery's labels: NVIDIA's k8s-device-plugin
(its resource managers; its NVML resource layer for GFD's reads) run for real through the GPU-less NVML on
GPUs laid out by NVIDIA's recorded MIG tables."""

from __future__ import annotations

import itertools

import pytest

from simcluster import device_plugin_probe, nvml_node, upstream
from simcluster.sim import gpus, mig_parted
from simcluster.sim.device_plugin import Registration
from simcluster.sim.feature_discovery import family, gfd_labels, owned, sanitise
from simcluster.sim.gpus import GpuModel
from simcluster.sim.hardware import Gpu


@pytest.fixture(scope="module")
def catalogue() -> gpus.Catalogue:
    if upstream.find() is None:
        pytest.fail("NVIDIA's components are not built: run 'simcluster build' first", pytrace=False)
    return gpus.catalogue()


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> device_plugin_probe.DevicePluginProbe:
    return device_plugin_probe.for_cluster(nvml_node.for_cluster(tmp_path_factory.mktemp("cluster")))


_nodes = itertools.count()


def register(probe, model: GpuModel, gpus_: list[Gpu], strategy: str) -> Registration:
    """What the device plugin registers on a fresh node holding these GPUs."""
    return Registration(*probe.resources(f"node-{next(_nodes)}", model, gpus_, strategy))


def labels_of(probe, model: GpuModel, gpus_: list[Gpu], strategy: str) -> dict[str, str]:
    return gfd_labels(probe.devices(f"node-{next(_nodes)}", model, gpus_), strategy)


def configured(model: GpuModel, *layouts: dict[str, int] | None) -> list[Gpu]:
    """GPUs as mig-parted would leave them: None is MIG disabled, a dict the MIG devices of an enabled GPU
    ({} for one enabled but empty)."""
    result = []
    for devices in layouts:
        if devices is None or devices == {}:
            result.append(Gpu(devices is not None))
            continue
        placed, error = mig_parted.set_mig_config(model, Gpu(True), devices)
        assert not error, error
        result.append(placed)
    return result


# -- device plugin --------------------------------------------------------------------------------------------------

def test_none_counts_every_gpu_mig_or_not(catalogue, probe):
    model = catalogue.get("A100-SXM4-80GB")
    assert register(probe, model, configured(model, {"1g.10gb": 7}, None), "none").resources == {"nvidia.com/gpu": 2}


def test_mixed_names_a_resource_per_profile_and_leaves_mig_gpus_out_of_nvidia_com_gpu(catalogue, probe):
    model = catalogue.get("A100-SXM4-40GB")
    gpus_ = configured(model, {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}, {"1g.5gb+me": 1}, None, {})
    registered = register(probe, model, gpus_, "mixed")
    assert registered.error == ""  # an empty MIG-enabled GPU is only a warning under mixed
    # The plugin's resource patterns match anywhere in a profile name, the plain profile's first: its
    # 1g.5gb+me device counts as nvidia.com/mig-1g.5gb (k8s-device-plugin v0.17.4, api/config/v1).
    assert registered.resources == {"nvidia.com/gpu": 1, "nvidia.com/mig-1g.5gb": 3, "nvidia.com/mig-2g.10gb": 1,
                                    "nvidia.com/mig-3g.20gb": 1}


def test_mixed_counts_a_compute_instance_device_under_its_gpu_instance_profile(catalogue, probe):
    # No resource pattern names 1c.3g.20gb, but the 3g.20gb pattern occurs in it.
    model = catalogue.get("A100-SXM4-40GB")
    gpus_ = configured(model, {"1c.3g.20gb": 3})
    assert gpus_[0].device_counts() == {"1c.3g.20gb": 3}
    assert len(gpus_[0].instances) == 1  # three compute instances in one GPU instance, as mig-parted reuses it
    assert register(probe, model, gpus_, "mixed") == Registration({"nvidia.com/mig-3g.20gb": 3})
    assert register(probe, model, gpus_, "single").resources == {"nvidia.com/gpu": 3}


@pytest.mark.parametrize("layouts, message", [
    (({"1g.10gb": 7}, {}), "device 1 has no MIG devices configured"),
    (({"1g.10gb": 7}, {"2g.20gb": 3}), "more than one MIG device type present on node"),
    (({"1g.10gb": 7}, None), "all devices on the node must be configured with the same migEnabled value"),
])
def test_single_refuses_what_the_plugin_refuses(catalogue, probe, layouts, message):
    model = catalogue.get("A100-SXM4-80GB")
    registered = register(probe, model, configured(model, *layouts), "single")
    assert registered.resources == {} and message in registered.error


def test_single_counts_mig_devices_as_gpus(catalogue, probe):
    model = catalogue.get("A30")
    assert register(probe, model, configured(model, {"2g.12gb": 2}, {"2g.12gb": 2}), "single").resources == {
        "nvidia.com/gpu": 4}


# -- feature discovery ----------------------------------------------------------------------------------------------

def test_full_gpus_are_labelled_from_nvml(catalogue, probe):
    model = catalogue.get("A100-SXM4-80GB")
    labels = labels_of(probe, model, configured(model, None, None), "none")
    assert {k: labels[k] for k in ("nvidia.com/gpu.product", "nvidia.com/gpu.count", "nvidia.com/gpu.replicas",
                                   "nvidia.com/gpu.memory", "nvidia.com/gpu.family", "nvidia.com/mig.capable")} == {
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/gpu.count": "2",
        "nvidia.com/gpu.replicas": "1", "nvidia.com/gpu.memory": "81920", "nvidia.com/gpu.family": "ampere",
        "nvidia.com/mig.capable": "true"}
    assert "nvidia.com/mig.strategy" not in labels


def test_all_mig_enabled_gpus_have_no_replicas(catalogue, probe):
    # Their labeler has no sharing config (lm/mig-strategy_test.go: "replicas is zero").
    model = catalogue.get("A100-SXM4-80GB")
    labels = labels_of(probe, model, configured(model, {"1g.10gb": 7}, {"1g.10gb": 7}), "mixed")
    assert labels["nvidia.com/gpu.replicas"] == "0" and labels["nvidia.com/gpu.count"] == "2"


def test_mixed_labels_each_device_type_with_nvmls_attributes(catalogue, probe):
    model = catalogue.get("A100-SXM4-40GB")
    labels = labels_of(probe, model, configured(model, {"1g.5gb": 7}, {"1g.5gb": 7}), "mixed")
    assert {k: v for k, v in labels.items() if k.startswith("nvidia.com/mig-1g.5gb.")} == {
        "nvidia.com/mig-1g.5gb.count": "14", "nvidia.com/mig-1g.5gb.product": "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb",
        "nvidia.com/mig-1g.5gb.replicas": "1", "nvidia.com/mig-1g.5gb.sharing-strategy": "none",
        # go-nvml's recorded A100-SXM4-40GB table: 4864 MiB, 14 SMs, one copy engine, no decoder.
        "nvidia.com/mig-1g.5gb.memory": "4864", "nvidia.com/mig-1g.5gb.multiprocessors": "14",
        "nvidia.com/mig-1g.5gb.slices.gi": "1", "nvidia.com/mig-1g.5gb.slices.ci": "1",
        "nvidia.com/mig-1g.5gb.engines.copy": "1", "nvidia.com/mig-1g.5gb.engines.decoder": "0",
        "nvidia.com/mig-1g.5gb.engines.encoder": "0", "nvidia.com/mig-1g.5gb.engines.jpeg": "0",
        "nvidia.com/mig-1g.5gb.engines.ofa": "0"}
    assert labels["nvidia.com/mig.strategy"] == "mixed"


def test_single_overrides_the_gpu_labels_or_marks_the_node_invalid(catalogue, probe):
    model = catalogue.get("A100-SXM4-80GB")
    valid = labels_of(probe, model, configured(model, {"3g.40gb": 2}, {"3g.40gb": 2}), "single")
    assert valid["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB-MIG-3g.40gb"
    assert valid["nvidia.com/gpu.count"] == "4" and valid["nvidia.com/gpu.memory"] == "40192"
    assert valid["nvidia.com/gpu.multiprocessors"] == "42"
    mixed_types = labels_of(probe, model, configured(model, {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}), "single")
    assert {k: mixed_types[k] for k in ("nvidia.com/gpu.product", "nvidia.com/gpu.count", "nvidia.com/gpu.replicas",
                                        "nvidia.com/gpu.memory", "nvidia.com/gpu.sharing-strategy")} == {
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB-MIG-INVALID", "nvidia.com/gpu.count": "0",
        "nvidia.com/gpu.replicas": "0", "nvidia.com/gpu.memory": "0", "nvidia.com/gpu.sharing-strategy": ""}
    # No MIG-enabled GPU: as under none, plus the strategy.
    plain = labels_of(probe, model, configured(model, None), "single")
    assert plain["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB" and plain["nvidia.com/mig.strategy"] == "single"


def test_gpus_without_mig_say_so(probe):
    model = gpus.described().get("L4")
    labels = labels_of(probe, model, [Gpu()] * 4, "mixed")
    assert labels["nvidia.com/mig.capable"] == "false"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-L4" and labels["nvidia.com/gpu.family"] == "ada-lovelace"


def test_name_and_family_rules():
    assert sanitise("NVIDIA H100 80GB HBM3") == "NVIDIA-H100-80GB-HBM3"
    assert sanitise("Tesla T4 (rev a1)") == "Tesla-T4-rev-a1"
    assert [family(*cc) for cc in ((7, 0), (7, 5), (8, 0), (8, 9), (9, 0), (10, 0), (12, 0))] == [
        "volta", "turing", "ampere", "ada-lovelace", "hopper", "blackwell", "blackwell"]
    assert owned("nvidia.com/mig-1g.10gb.count") and owned("nvidia.com/gpu.product")
    assert not owned("nvidia.com/gpu.deploy.device-plugin") and not owned("nvidia.com/mig.config.state")
    assert not owned("nvidia.com/gpu.present") and not owned("nvidia.com/mig.config")
