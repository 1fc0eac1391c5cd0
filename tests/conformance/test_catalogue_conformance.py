"""The MIG catalogue, and the labels predicted from it, against NVML's recorded MIG tables.

go-nvml's mocks carry NVML's GPU-instance and compute-instance profile tables recorded from real A100-40GB,
A100-80GB and A30 GPUs; the H100, H200 and B200 mocks are made up ("recorded": false) and are not compared.
For every recorded model: the profile names (as go-nvlib names them), maximum counts, memory, multiprocessors,
engines and placements, the compute-instance profiles, and the GFD labels the toolkit predicts from them.
"""

from __future__ import annotations

from typing import Any

import pytest

from migrollout import catalogue
from migrollout.advertised import gfd_labels
from migrollout.migconfig.layouts import GpuLayout
from simcluster import upstream

RECORDED = ("A100-SXM4-40GB", "A100-PCIE-40GB", "A100-SXM4-80GB", "A100-PCIE-80GB", "A30-PCIE-24GB")


@pytest.fixture(scope="module")
def tables(oracle: upstream.MigOracle) -> dict[str, Any]:
    return oracle.tables()


def _model(table: dict[str, Any]) -> catalogue.GpuModel:
    model = catalogue.model_for_device_id(table["pci_device_id"])
    assert model is not None, f"PCI id {table['pci_device_id']} ({table['product']}) is not in the catalogue"
    return model


def test_which_tables_are_recorded(tables: dict[str, Any]) -> None:
    assert sorted(key for key, table in tables.items() if table["recorded"]) == sorted(RECORDED)


@pytest.mark.parametrize("key", RECORDED)
def test_gpu_facts(tables: dict[str, Any], key: str) -> None:
    table = tables[key]
    model = _model(table)
    assert model.memory_mib == table["memory_mib"]
    assert model.recorded
    product = table["product"].removeprefix("Mock ").replace(" ", "-")
    assert catalogue.find_model(product) is not None and catalogue.find_model(product).profiles == model.profiles


@pytest.mark.parametrize("key", RECORDED)
def test_gpu_instance_profiles(tables: dict[str, Any], key: str) -> None:
    table = tables[key]
    model = _model(table)
    assert sorted(model.profile_names()) == sorted(p["name"] for p in table["profiles"])
    for recorded in table["profiles"]:
        profile = model.profile(recorded["name"])
        ours = (profile.max_count, profile.compute_slices, profile.memory_mib, profile.multiprocessors,
                tuple(profile.engine_counts), [(start, profile.memory_slices) for start in profile.placements])
        theirs = (recorded["instance_count"], recorded["slice_count"], recorded["memory_mib"],
                  recorded["multiprocessor_count"],
                  (recorded["copy_engines"], recorded["decoders"], recorded["encoders"], recorded["jpegs"],
                   recorded["ofas"]),
                  [(p["start"], p["size"]) for p in recorded["placements"]])
        assert ours == theirs, recorded["name"]


@pytest.mark.parametrize("key", RECORDED)
def test_compute_instance_profiles(tables: dict[str, Any], key: str) -> None:
    table = tables[key]
    model = _model(table)
    recorded = {(cp["name"], cp["slice_count"], cp["multiprocessor_count"])
                for p in table["profiles"] for cp in p["compute_profiles"] if cp["name"]}
    ours = {(p.name, p.ci_slices, p.multiprocessors) for p in model.compute_instance_profiles()}
    ours |= {(p.name, p.ci_slices, p.multiprocessors) for p in model.profiles}
    assert ours == recorded
    for name, slices, multiprocessors in recorded:
        profile = model.profile(name)
        assert (profile.ci_slices, profile.multiprocessors) == (slices, multiprocessors), name


@pytest.mark.parametrize("key", RECORDED)
@pytest.mark.parametrize("strategy", ["single", "mixed"])
def test_predicted_feature_discovery_labels(tables: dict[str, Any], key: str, strategy: str) -> None:
    """What GFD publishes for a MIG device is NVML's attributes of it: the recorded profile."""
    table = tables[key]
    model = _model(table)
    for recorded in table["profiles"]:
        name = recorded["name"]
        labels = gfd_labels(model, [GpuLayout(True, {name: 1})], strategy)
        prefix = "nvidia.com/gpu" if strategy == "single" else f"nvidia.com/mig-{name.replace('+', '.')}"
        assert labels[f"{prefix}.memory"] == str(recorded["memory_mib"])
        assert labels[f"{prefix}.multiprocessors"] == str(recorded["multiprocessor_count"])
        assert labels[f"{prefix}.slices.gi"] == labels[f"{prefix}.slices.ci"] == str(recorded["slice_count"])
        engines = {"copy": "copy_engines", "decoder": "decoders", "encoder": "encoders", "jpeg": "jpegs",
                   "ofa": "ofas"}
        for engine, field in engines.items():
            assert labels[f"{prefix}.engines.{engine}"] == str(recorded[field]), (name, engine)
