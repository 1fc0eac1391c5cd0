"""What the toolkit predicts a node advertises (``migrollout.advertised``: what verification compares a node
with), against NVIDIA's k8s-device-plugin v0.17.4 run for real through the GPU-less NVML.

For every MIG-capable model and every MIG device it can hold (GPU-instance profiles and compute-instance
profiles), a one-GPU node holding one such device: the resources the device plugin's own resource managers
register under ``mixed`` and ``single``, and the GFD labels written from what its NVML layer reads. The
labels verification compares (strategy, count, product, MIG device counts) must agree for every model; all
the predicted labels for the models whose MIG tables are NVIDIA's recordings.
"""

from __future__ import annotations

import itertools

import pytest
import yaml

from migrollout import advertised, catalogue
from migrollout.migconfig.layouts import GpuLayout
from simcluster import device_plugin_build, device_plugin_probe, nvml_node
from simcluster.sim import gpus, mig_parted
from simcluster.sim.feature_discovery import gfd_labels
from simcluster.sim.hardware import Gpu

_nodes = itertools.count()


@pytest.fixture(scope="module")
def probe(built, tmp_path_factory) -> device_plugin_probe.DevicePluginProbe:
    return device_plugin_probe.for_cluster(nvml_node.for_cluster(tmp_path_factory.mktemp("cluster")))


@pytest.fixture(scope="module")
def models(built) -> list[tuple[gpus.GpuModel, catalogue.GpuModel]]:
    found = []
    for model in gpus.catalogue().models:
        if not model.mig_capable:
            continue
        ours = catalogue.model_for_device_id(model.device_id)
        assert ours is not None, f"{model.key} ({model.device_id}) is not in the toolkit's catalogue"
        found.append((model, ours))
    return found


def _devices(model: gpus.GpuModel, ours: catalogue.GpuModel) -> list[str]:
    """The toolkit's MIG devices of the model that the simulated GPU has: all of them for a recorded model; the
    MIG user guide's tables of the later models (the simulator's) list no compute-instance profiles."""
    names = [profile.name for profile in (*ours.profiles, *ours.compute_instance_profiles())]
    held = [name for name in names if model.device_profile(name) is not None]
    if ours.recorded:
        assert held == names, model.key
    return held


@pytest.mark.parametrize("strategy", ["mixed", "single"])
def test_predicted_resources_are_what_the_device_plugin_registers(probe, models, strategy):
    checked = 0
    for model, ours in models:
        for name in _devices(model, ours):
            placed, error = mig_parted.set_mig_config(model, Gpu(True), {name: 1})
            assert not error, (model.key, name, error)
            resources, plugin_error = probe.resources(f"node-{next(_nodes)}", model, [placed], strategy)
            predicted, predicted_error = advertised.device_plugin_resources(ours, [GpuLayout(True, {name: 1})],
                                                                            strategy)
            assert (resources, bool(plugin_error)) == (predicted, bool(predicted_error)), (model.key, name,
                                                                                           plugin_error)
            checked += 1
    assert checked > 50  # every model's devices (94 today), not an empty loop


@pytest.mark.parametrize("strategy", ["mixed", "single"])
def test_predicted_labels_are_what_feature_discovery_writes(probe, models, strategy):
    for model, ours in models:
        for name in _devices(model, ours):
            placed, _ = mig_parted.set_mig_config(model, Gpu(True), {name: 1})
            written = gfd_labels(probe.devices(f"node-{next(_nodes)}", model, [placed]), strategy)
            predicted = advertised.gfd_labels(ours, [GpuLayout(True, {name: 1})], strategy)
            assert advertised.verified_label_keys(written) == advertised.verified_label_keys(predicted), (
                model.key, name)
            if ours.recorded:
                assert {key: written.get(key) for key in predicted} == predicted, (model.key, name)


def test_a_gpu_without_mig_beside_mig_devices(probe, models):
    model, ours = next((model, ours) for model, ours in models if model.key == "A100-SXM4-80GB")
    placed, _ = mig_parted.set_mig_config(model, Gpu(True), {"2g.20gb": 3})
    layouts = [GpuLayout(True, {"2g.20gb": 3}), GpuLayout(False, {})]
    for strategy in ("none", "single", "mixed"):
        resources, error = probe.resources(f"node-{next(_nodes)}", model, [placed, Gpu()], strategy)
        predicted, predicted_error = advertised.device_plugin_resources(ours, layouts, strategy)
        assert (resources, bool(error)) == (predicted, bool(predicted_error)), strategy


def test_the_probed_device_plugin_is_the_one_the_chart_deploys(built):
    values = yaml.safe_load((built.chart / "values.yaml").read_text())
    assert values["devicePlugin"]["version"] == values["gfd"]["version"] == device_plugin_build.DEVICE_PLUGIN_VERSION
