"""The GPU host state behind the GPU-less NVML: its file, what a reset and a reboot do, the nvidia-smi stand-in,
and the NOT_SUPPORTED stubs generated from nvml.h. (The library itself, driven by NVIDIA's mig-parted, is
judged in tests/conformance/test_nvml_apply.py.)"""

from __future__ import annotations

import io
import json
import os

import pytest

from simcluster import nvml, nvml_build


@pytest.fixture
def h100_host(tmp_path):
    state = tmp_path / "host.json"
    nvml.init(state, "H100-SXM5-80GB", 2)
    return state


def test_init_writes_the_documented_h100_tables_with_nvml_profile_ids(h100_host):
    data = nvml.load(h100_host)
    model = data["model"]
    assert model["key"] == "H100-SXM5-80GB" and model["mig_capable"] and model["mig_mode_change"] == "immediate"
    ids = {profile["name"]: profile["id"] for profile in model["gpu_instance_profiles"]}
    # nvml.h: 1_SLICE 0, 2_SLICE 1, 3_SLICE 2, 4_SLICE 3, 7_SLICE 4, 1_SLICE_REV1 7 (+me), 1_SLICE_REV2 9.
    assert ids == {"1g.10gb": 0, "1g.10gb+me": 7, "1g.20gb": 9, "2g.20gb": 1, "3g.40gb": 2, "4g.40gb": 3,
                   "7g.80gb": 4}
    three = next(p for p in model["gpu_instance_profiles"] if p["name"] == "3g.40gb")
    assert three["placements"] == [{"start": 0, "size": 4}, {"start": 4, "size": 4}]
    assert [gpu["pci_bus_id"] for gpu in data["gpus"]] == ["00000000:10:00.0", "00000000:11:00.0"]
    assert all(gpu["mig"] == {"current": 0, "pending": 0} and gpu["uuid"].startswith("GPU-") for gpu in data["gpus"])
    assert len({gpu["uuid"] for gpu in data["gpus"]}) == 2


def test_init_refuses_unknown_models_and_counts(tmp_path):
    with pytest.raises(nvml.NvmlError, match="unknown GPU model 'V100'"):
        nvml.init(tmp_path / "x.json", "V100", 1)
    with pytest.raises(nvml.NvmlError, match="between 1 and 16"):
        nvml.init(tmp_path / "x.json", "H100", 0)
    assert not (tmp_path / "x.json").exists()


def test_load_names_the_problem(tmp_path):
    with pytest.raises(nvml.NvmlError, match="no such GPU host state"):
        nvml.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(nvml.NvmlError, match="not a GPU host state"):
        nvml.load(tmp_path / "bad.json")


def _with_instance(state, *, current, pending):
    with nvml.mutating(state) as data:
        for gpu in data["gpus"]:
            gpu["mig"] = {"current": current, "pending": pending}
            gpu["gpu_instances"] = [{"id": 1, "profile_id": 4, "start": 0, "size": 8, "compute_instances": []}]


def test_reset_applies_the_pending_mode_and_drops_instances(h100_host):
    _with_instance(h100_host, current=1, pending=0)
    assert nvml.reset_gpus(h100_host, ["0000:10:00.0"]) == ["00000000:10:00.0"]
    first, second = nvml.load(h100_host)["gpus"]
    assert first["mig"] == {"current": 0, "pending": 0} and first["gpu_instances"] == []
    assert second["mig"] == {"current": 1, "pending": 0} and second["gpu_instances"]


def test_reset_is_refused_whole_while_a_process_holds_a_gpu(h100_host):
    _with_instance(h100_host, current=1, pending=0)
    nvml.hold(h100_host, 1, "pid 7 (trainer)")
    with pytest.raises(nvml.NvmlError, match=r"Unable to reset GPU 00000000:11:00.0 .*pid 7 \(trainer\)"):
        nvml.reset_gpus(h100_host, ["0", "1"])
    assert all(gpu["mig"]["current"] == 1 and gpu["gpu_instances"] for gpu in nvml.load(h100_host)["gpus"])
    nvml.release(h100_host, None)
    assert nvml.reset_gpus(h100_host, ["0", "1"]) == ["00000000:10:00.0", "00000000:11:00.0"]


def test_reboot_keeps_ampere_modes_and_loses_hopper_ones(tmp_path, h100_host):
    _with_instance(h100_host, current=1, pending=1)
    nvml.hold(h100_host, 0, "pid 9")
    nvml.reboot(h100_host)
    for gpu in nvml.load(h100_host)["gpus"]:
        assert gpu["mig"] == {"current": 0, "pending": 0} and gpu["gpu_instances"] == [] and gpu["clients"] == []

    ampere = tmp_path / "ampere.json"
    with nvml.locked(ampere):
        data = nvml.new_state("H100-SXM5-80GB", 1)
        data["model"]["mig_mode_change"] = "reset"  # an A100's rule, without needing mig-oracle's tables
        nvml.save(ampere, data)
    _with_instance(ampere, current=0, pending=1)
    nvml.reboot(ampere)
    assert nvml.load(ampere)["gpus"][0]["mig"] == {"current": 1, "pending": 1}


def test_nvidia_smi_stand_in_resets_and_queries(h100_host, monkeypatch):
    monkeypatch.setenv(nvml.STATE_ENV, str(h100_host))
    _with_instance(h100_host, current=0, pending=1)
    out, err = io.StringIO(), io.StringIO()
    assert nvml.smi(["-r", "-i", "00000000:10:00.0,0000:11:00.0"], out, err) == 0
    assert "GPU 00000000:10:00.0 was successfully reset." in out.getvalue()
    out = io.StringIO()
    assert nvml.smi(["--query-gpu=index,pci.bus_id,mig.mode.current,mig.mode.pending", "--format=csv,noheader"],
                    out, err) == 0
    assert out.getvalue().splitlines() == ["0, 00000000:10:00.0, Enabled, Enabled",
                                           "1, 00000000:11:00.0, Enabled, Enabled"]
    nvml.hold(h100_host, 0, "pid 1")
    err = io.StringIO()
    assert nvml.smi(["-r", "-i", "0"], io.StringIO(), err) == 255
    assert "being used by some other process" in err.getvalue()
    err = io.StringIO()
    assert nvml.smi(["-q"], io.StringIO(), err) == 2
    assert "supports only" in err.getvalue()


def test_prepare_host_writes_what_nvpci_and_mig_parted_read(h100_host):
    root = nvml.prepare_host(h100_host)
    function = root / "pci-devices" / "0000:10:00.0"
    assert (function / "vendor").read_text() == "0x10de\n"
    assert (function / "device").read_text() == "0x2330\n"
    assert (function / "class").read_text() == "0x030200\n"
    assert (root / "modules").read_text().split()[0] == "nvidia"
    assert os.access(root / "bin" / "nvidia-smi", os.X_OK)


def test_stubs_cover_every_declared_function_not_implemented():
    header = """
    /* a comment nvmlReturn_t DECLDIR nvmlInComment(void); */
    nvmlReturn_t DECLDIR nvmlInit_v2(void);
    nvmlReturn_t DECLDIR nvmlDeviceGetFanSpeed(nvmlDevice_t device,
                                               unsigned int *speed); // trailing
    const DECLDIR char* nvmlErrorString(nvmlReturn_t result);
    """
    text, names = nvml_build.not_supported_stubs(header, {"nvmlInit_v2"})
    assert names == ["nvmlDeviceGetFanSpeed"]
    assert ("nvmlReturn_t nvmlDeviceGetFanSpeed(nvmlDevice_t device, unsigned int *speed) "
            "{ return NVML_ERROR_NOT_SUPPORTED; }") in text


def test_the_library_implements_what_mig_parted_calls():
    implemented = nvml_build.implemented_functions()
    for name in ("nvmlInit_v2", "nvmlShutdown", "nvmlDeviceGetCount_v2", "nvmlDeviceGetHandleByIndex_v2",
                 "nvmlDeviceGetHandleByPciBusId_v2", "nvmlDeviceGetHandleByUUID", "nvmlDeviceGetMigMode",
                 "nvmlDeviceSetMigMode", "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetGpuInstanceProfileInfo",
                 "nvmlDeviceCreateGpuInstance", "nvmlDeviceCreateGpuInstanceWithPlacement",
                 "nvmlDeviceGetGpuInstances", "nvmlGpuInstanceDestroy", "nvmlGpuInstanceGetComputeInstanceProfileInfo",
                 "nvmlGpuInstanceCreateComputeInstance", "nvmlGpuInstanceGetComputeInstances",
                 "nvmlComputeInstanceDestroy", "nvmlSystemGetNVMLVersion", "nvmlErrorString"):
        assert name in implemented


def test_show_is_readable(h100_host):
    with nvml.mutating(h100_host) as data:
        gpu = data["gpus"][0]
        gpu["mig"] = {"current": 1, "pending": 1}
        gpu["gpu_instances"] = [{"id": 1, "profile_id": 2, "start": 4, "size": 4, "compute_instances": [
            {"id": 0, "profile_id": 2, "start": 0, "size": 3, "uuid": "MIG-x"}]}]
    text = nvml.describe(nvml.load(h100_host))
    assert "2 x NVIDIA H100 80GB HBM3 (H100-SXM5-80GB); MIG mode change: at once; lost at reboot" in text
    assert "GPU instance 1  3g.40gb      memory slices 4-7" in text
    assert "compute instance 0 3g.40gb" in text and "MIG-x" in text
    assert nvml.mig_layout(nvml.load(h100_host)) == [{"3g.40gb": 1}, {}]
    assert json.loads(h100_host.read_text())["version"] == nvml.STATE_VERSION
