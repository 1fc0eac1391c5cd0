"""NVIDIA's real nvidia-mig-parted partitions GPUs that do not exist, through the GPU-less NVML.

For every MIG model simcluster knows, a host of two GPUs is created (``simcluster nvml init``) and mig-parted
v0.10.0 runs inside its view (the host's ``run`` script: the built libnvidia-ml.so.1, a PCI tree,
the nvidia module listed, the nvidia-smi stand-in). Every config of the operator's default MIG ConfigMap
whose entries select this model is applied (``apply -f <that file> -c NAME``), then ``export`` and ``assert``
run. The expected layout is what mig-parted's own selection code says the config means for the GPU
(mig-oracle's ``select``), never the toolkit's parser. Models run in parallel: each has its own state file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from simcluster import nvml, nvml_build, nvml_node, upstream
from simcluster.sim import gpus
from simcluster.sim import mig_parted as simulated_mig_parted
from simcluster.sim.faults import NodeFaults
from simcluster.sim.hardware import Gpu

GPUS_PER_HOST = 2
OTHER_ASSERTS = 3  # configs per model after which the assert of another config is checked
MIG_MODELS = [model.key for model in gpus.described().models if model.mig_capable]


@pytest.fixture(scope="session")
def nvml_library() -> Path:
    found = nvml_build.find()
    if found is None:
        pytest.fail(f"{nvml_build.LIBRARY_NAME} is not built (expected in {nvml_build.library_dir()}): run 'make binaries' "
                    f"(or 'simcluster build') first", pytrace=False)
    return found


def on_host(state: Path, mig_parted: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``nvidia-mig-parted ARGS`` inside the host's view of ``state``."""
    return subprocess.run([str(nvml.run_script(state)), str(mig_parted), *args], capture_output=True, text=True,
                          timeout=300)


def exported_layout(result: subprocess.CompletedProcess[str]) -> list[tuple[bool, dict[str, int]]]:
    """Per GPU index, (MIG enabled, MIG devices) from ``export -o json``'s 'current' config."""
    assert result.returncode == 0, result.stderr
    spec = json.loads(result.stdout)
    layout: dict[int, tuple[bool, dict[str, int]]] = {}
    for entry in spec["mig-configs"]["current"]:
        devices = entry["devices"]
        indexes = range(GPUS_PER_HOST) if devices == "all" else devices
        for index in indexes:
            layout[index] = (bool(entry["mig-enabled"]), dict(entry.get("mig-devices") or {}))
    return [layout[index] for index in range(GPUS_PER_HOST)]


@dataclass
class ConfigRun:
    name: str
    expected: list[tuple[bool, dict[str, int]]]
    apply: subprocess.CompletedProcess[str]
    seconds: float
    exported: list[tuple[bool, dict[str, int]]] | None
    state_layout: list[dict[str, int]]
    asserted: subprocess.CompletedProcess[str]
    other: str | None = None
    asserted_other: subprocess.CompletedProcess[str] | None = None


@dataclass
class Campaign:
    model: str
    runs: list[ConfigRun] = field(default_factory=list)


def expected_layouts(oracle: upstream.MigOracle, document: str, model: str) -> dict[str, list]:
    """For each config whose entries select this model and name only MIG devices it has, what mig-parted
    leaves on each GPU, by mig-parted's own selection (mig-oracle)."""
    known = gpus.catalogue().get(model)
    _, _, names = oracle.validate(document)
    result = {}
    for name in names:
        selected = oracle.select(document, name, [(index, known.device_id) for index in range(GPUS_PER_HOST)])
        if any(item["entry"] is None for item in selected):
            continue
        layout = [(bool(item["mig_enabled"]),
                   {k: v for k, v in (item["mig_devices"] or {}).items() if v} if item["mig_enabled"] else {})
                  for item in selected]
        if all(known.device_profile(device) is not None for _, devices in layout for device in devices):
            result[name] = layout
    return result


def run_campaign(model: str, tmp: Path, built: upstream.Upstream, document_path: Path, document: str,
                 oracle: upstream.MigOracle) -> Campaign:
    state = tmp / f"{model}.json"
    nvml.init(state, model, GPUS_PER_HOST)
    expected = expected_layouts(oracle, document, model)
    campaign = Campaign(model)
    ordered = list(expected)
    for position, name in enumerate(ordered):
        began = time.monotonic()
        applied = on_host(state, built.mig_parted, "apply", "-f", str(document_path), "-c", name)
        seconds = time.monotonic() - began
        exported = on_host(state, built.mig_parted, "export", "-o", "json")
        run = ConfigRun(name=name, expected=expected[name], apply=applied, seconds=seconds,
                        exported=exported_layout(exported) if exported.returncode == 0 else None,
                        state_layout=nvml.mig_layout(nvml.load(state)),
                        asserted=on_host(state, built.mig_parted, "assert", "-f", str(document_path), "-c", name))
        # For the first few: another config that means something else on this model, whose assert must fail.
        for other in (ordered[position + 1:] + ordered[:position]) if position < OTHER_ASSERTS else ():
            if expected[other] != expected[name]:
                run.other = other
                run.asserted_other = on_host(state, built.mig_parted, "assert", "-f", str(document_path),
                                             "-c", other)
                break
        campaign.runs.append(run)
    return campaign


@pytest.fixture(scope="session")
def campaigns(tmp_path_factory, built, nvml_library, default_mig_document, oracle) -> dict[str, Campaign]:
    tmp = tmp_path_factory.mktemp("nvml-hosts")
    document_path = tmp / "default-mig-config.yaml"
    document_path.write_text(default_mig_document)
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {model: pool.submit(run_campaign, model, tmp, built, document_path, default_mig_document, oracle)
                   for model in MIG_MODELS}
        return {model: future.result() for model, future in futures.items()}


@pytest.mark.parametrize("model", MIG_MODELS)
def test_apply_export_assert_every_config_of_the_default_configmap(campaigns, model):
    campaign = campaigns[model]
    assert len(campaign.runs) >= 3, f"{model}: only {[run.name for run in campaign.runs]} select this model"
    for run in campaign.runs:
        assert run.apply.returncode == 0, f"{model} {run.name}: apply failed:\n{run.apply.stderr}"
        assert run.exported == run.expected, f"{model} {run.name}: exported {run.exported}"
        assert run.state_layout == [devices for _, devices in run.expected], f"{model} {run.name}: state file"
        assert run.asserted.returncode == 0, f"{model} {run.name}: assert failed:\n{run.asserted.stderr}"


@pytest.mark.parametrize("model", MIG_MODELS)
def test_assert_of_another_config_fails(campaigns, model):
    checked = [run for run in campaigns[model].runs if run.asserted_other is not None]
    assert checked, f"{model}: no two configs differ"
    for run in checked:
        assert run.asserted_other.returncode != 0, f"{model}: after {run.name}, assert of {run.other} passed"


def _too_many(model: str) -> tuple[str, int]:
    """The smallest GPU instance profile of the model, and one more instance than a GPU holds."""
    described = gpus.described().get(model)
    catalogue = gpus.catalogue() if described.mig == "recorded" else gpus.described()
    smallest = min(catalogue.get(model).profiles, key=lambda p: (p.compute_slices, p.memory_mib))
    return smallest.name, smallest.instances + 1


@pytest.mark.parametrize("model", ["A100-SXM4-40GB", "A30", "H100-SXM5-80GB"])
def test_a_config_that_does_not_fit_fails_at_apply(tmp_path, built, nvml_library, oracle, model):
    profile, count = _too_many(model)
    config = tmp_path / "too-many.yaml"
    config.write_text(yaml.safe_dump({"version": "v1", "mig-configs": {"too-many": [
        {"devices": "all", "mig-enabled": True, "mig-devices": {profile: count}}]}}))
    state = tmp_path / "host.json"
    nvml.init(state, model, 1)
    applied = on_host(state, built.mig_parted, "apply", "-f", str(config), "-c", "too-many")
    assert applied.returncode != 0
    # mig-parted's own words, after it tried every order of the devices on NVML.
    assert "error attempting multiple config orderings" in applied.stderr or \
        "error applying MIG configuration" in applied.stderr, applied.stderr
    assert nvml.mig_layout(nvml.load(state)) == [{}]


def _one_config(tmp_path: Path, profile: str, count: int) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"version": "v1", "mig-configs": {
        "split": [{"devices": "all", "mig-enabled": True, "mig-devices": {profile: count}}],
        "disabled": [{"devices": "all", "mig-enabled": False}]}}))
    return config


def test_a100_mode_change_waits_for_a_reset(tmp_path, built, nvml_library, oracle):
    state = tmp_path / "a100.json"
    nvml.init(state, "A100-SXM4-40GB", GPUS_PER_HOST)
    config = _one_config(tmp_path, "3g.20gb", 2)

    # Mode only, no reset: the new mode is pending, and assert says the config is not applied.
    mode_only = on_host(state, built.mig_parted, "apply", "--mode-only", "--skip-reset", "-f", str(config),
                        "-c", "split")
    assert mode_only.returncode == 0, mode_only.stderr
    assert [gpu["mig"] for gpu in nvml.load(state)["gpus"]] == [{"current": 0, "pending": 1}] * GPUS_PER_HOST
    assert on_host(state, built.mig_parted, "assert", "--mode-only", "-f", str(config), "-c", "split").returncode != 0

    # A process holds GPU 1: the reset mig-parted asks nvidia-smi for is refused, and so is the apply.
    nvml.hold(state, 1, "pid 4242 (cuda-app)")
    refused = on_host(state, built.mig_parted, "apply", "-f", str(config), "-c", "split")
    assert refused.returncode != 0
    assert "error resetting all GPUs" in refused.stderr, refused.stderr
    assert [gpu["mig"]["current"] for gpu in nvml.load(state)["gpus"]] == [0, 0]

    # The holder is gone: apply resets the GPUs, the mode takes effect and the instances are made.
    nvml.release(state, None)
    applied = on_host(state, built.mig_parted, "apply", "-f", str(config), "-c", "split")
    assert applied.returncode == 0, applied.stderr
    assert [gpu["mig"] for gpu in nvml.load(state)["gpus"]] == [{"current": 1, "pending": 1}] * GPUS_PER_HOST
    assert nvml.mig_layout(nvml.load(state)) == [{"3g.20gb": 2}] * GPUS_PER_HOST
    assert on_host(state, built.mig_parted, "assert", "-f", str(config), "-c", "split").returncode == 0

    # A reboot keeps an A100's MIG mode but no instance: the config must be applied again.
    nvml.reboot(state)
    assert [gpu["mig"]["current"] for gpu in nvml.load(state)["gpus"]] == [1, 1]
    assert on_host(state, built.mig_parted, "assert", "-f", str(config), "-c", "split").returncode != 0
    assert on_host(state, built.mig_parted, "apply", "-f", str(config), "-c", "split").returncode == 0

    # Back to MIG disabled: pending until the reset that apply performs.
    disabled = on_host(state, built.mig_parted, "apply", "-f", str(config), "-c", "disabled")
    assert disabled.returncode == 0, disabled.stderr
    assert [gpu["mig"] for gpu in nvml.load(state)["gpus"]] == [{"current": 0, "pending": 0}] * GPUS_PER_HOST


def test_h100_mode_change_is_immediate_and_lost_at_reboot(tmp_path, built, nvml_library, oracle):
    state = tmp_path / "h100.json"
    nvml.init(state, "H100-SXM5-80GB", GPUS_PER_HOST)
    config = _one_config(tmp_path, "1g.10gb", 7)

    mode_only = on_host(state, built.mig_parted, "apply", "--mode-only", "--skip-reset", "-f", str(config),
                        "-c", "split")
    assert mode_only.returncode == 0, mode_only.stderr
    assert [gpu["mig"] for gpu in nvml.load(state)["gpus"]] == [{"current": 1, "pending": 1}] * GPUS_PER_HOST

    # No reset is needed, so a process holding a GPU does not stop the apply.
    nvml.hold(state, 0, "pid 4242 (cuda-app)")
    applied = on_host(state, built.mig_parted, "apply", "-f", str(config), "-c", "split")
    assert applied.returncode == 0, applied.stderr
    assert nvml.mig_layout(nvml.load(state)) == [{"1g.10gb": 7}] * GPUS_PER_HOST
    assert on_host(state, built.mig_parted, "assert", "-f", str(config), "-c", "split").returncode == 0

    nvml.reboot(state)
    data = nvml.load(state)
    assert [gpu["mig"] for gpu in data["gpus"]] == [{"current": 0, "pending": 0}] * GPUS_PER_HOST
    assert nvml.mig_layout(data) == [{}] * GPUS_PER_HOST
    assert exported_layout(on_host(state, built.mig_parted, "export", "-o", "json")) == [(False, {})] * GPUS_PER_HOST


def test_library_under_load_many_and_concurrent_calls(tmp_path, built, nvml_library, oracle):
    """Two Go runtimes in one process (mig-parted and the c-shared library): many processes one after another
    and at once, all on one host's state, must neither crash nor lose a mutation."""
    state = tmp_path / "load.json"
    nvml.init(state, "A100-SXM4-80GB", GPUS_PER_HOST)
    config = _one_config(tmp_path, "1g.10gb", 7)
    assert on_host(state, built.mig_parted, "apply", "-f", str(config), "-c", "split").returncode == 0
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda _: on_host(state, built.mig_parted, "export", "-o", "json"), range(24)))
    crashed = [r for r in results if r.returncode != 0]
    assert not crashed, crashed[0].stderr
    assert {json.dumps(exported_layout(r)) for r in results} == {json.dumps([(True, {"1g.10gb": 7})] * GPUS_PER_HOST)}


def test_a_config_of_another_models_profiles_creates_nothing_and_fails_assert(tmp_path, built, nvml_library,
                                                                             default_mig_document):
    """mig-parted v0.10.0 drops a MIG device name the GPU has no profile for (MigConfig.Flatten): apply enables
    MIG and creates nothing, and assert then fails. (The H100's 7g.80gb on an A100-SXM4-40GB.)"""
    config = tmp_path / "default.yaml"
    config.write_text(default_mig_document)
    state = tmp_path / "host.json"
    nvml.init(state, "A100-SXM4-40GB", 1)
    applied = on_host(state, built.mig_parted, "apply", "-f", str(config), "-c", "all-7g.80gb")
    assert applied.returncode == 0, applied.stderr
    assert nvml.load(state)["gpus"][0]["mig"]["current"] == 1
    assert nvml.mig_layout(nvml.load(state)) == [{}]
    assert on_host(state, built.mig_parted, "assert", "-f", str(config), "-c", "all-7g.80gb").returncode != 0


_CREATE_ONE_GPU_INSTANCE = """
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
device = ctypes.c_void_p()
instance = ctypes.c_void_p()
assert lib.nvmlInit_v2() == 0
assert lib.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(device)) == 0
print(lib.nvmlDeviceCreateGpuInstance(device, int(sys.argv[2]), ctypes.byref(instance)))
assert lib.nvmlShutdown() == 0
"""


def test_concurrent_mutations_from_many_processes_are_all_kept(tmp_path, nvml_library):
    """Eight processes at once each create one 1-slice GPU instance (NVML profile 0) on the same A100 through
    the library (loaded by Python's ctypes, a non-Go host): the file lock serialises them, so seven get the
    seven placements and the eighth NVML_ERROR_INSUFFICIENT_RESOURCES, and the file keeps all seven."""
    state = tmp_path / "host.json"
    nvml.init(state, "A100-SXM4-40GB", 1)
    with nvml.mutating(state) as data:
        data["gpus"][0]["mig"] = {"current": 1, "pending": 1}
    env = {**os.environ, nvml.STATE_ENV: str(state)}
    library = str(nvml_library / nvml_build.LIBRARY_NAME)
    processes = [subprocess.Popen([sys.executable, "-c", _CREATE_ONE_GPU_INSTANCE, library, "0"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(8)]
    answers = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        answers.append(int(out.strip()))
    assert sorted(answers) == [0] * 7 + [23]  # NVML_SUCCESS, NVML_ERROR_INSUFFICIENT_RESOURCES
    instances = nvml.load(state)["gpus"][0]["gpu_instances"]
    assert sorted(gi["start"] for gi in instances) == list(range(7))
    assert len({gi["id"] for gi in instances}) == 7


@pytest.mark.parametrize("model", ["A100-SXM4-40GB", "A30", "H100-SXM5-80GB"])
def test_the_simulators_apply_satisfies_nvidias_assert(tmp_path, built, nvml_library, default_mig_document, oracle,
                                                       model):
    """The simulated cluster's mirrored apply (sim.mig_parted.set_mig_config) judged by NVIDIA's mig-parted:
    the GPU it leaves for each config, served as a host state (simcluster.nvml_node), passes the real
    ``assert`` of that config."""
    document_path = tmp_path / "default.yaml"
    document_path.write_text(default_mig_document)
    catalogue_model = gpus.catalogue().get(model)

    def judged(name: str, layout: tuple[bool, dict[str, int]]) -> tuple[str, subprocess.CompletedProcess[str]]:
        enabled, devices = layout
        gpu = Gpu()
        if enabled:
            gpu, error = simulated_mig_parted.set_mig_config(catalogue_model, Gpu(mig_enabled=True), devices)
            assert not error, f"{model} {name}: the simulator cannot apply it: {error}"
        state = tmp_path / f"{name}.json"
        with nvml.locked(state):
            nvml.save(state, nvml_node.host_state(model, [gpu]))
        nvml.prepare_host(state, library=nvml_library)
        return name, on_host(state, built.mig_parted, "assert", "-f", str(document_path), "-c", name)

    layouts = expected_layouts(oracle, default_mig_document, model)
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda item: judged(item[0], item[1][0]), layouts.items()))
    failed = [(name, result.stderr.strip().splitlines()[-1:]) for name, result in results if result.returncode != 0]
    assert not failed, f"{model}: NVIDIA's assert fails on the simulator's result: {failed}"


def _both(model: str, gpus_before: list, config: str, document: str, oracle, real, *, in_use=False,
          reset_needs_reboot=False, create_fails=False):
    """``apply --mode-only`` then ``apply`` of ``config``: the simulator's mirror and the real binary, called
    as the MIG manager calls them."""
    catalogue_model = gpus.catalogue().get(model)
    mirror = simulated_mig_parted.Mirrored(oracle)
    faults = NodeFaults(reboot_required=reset_needs_reboot, apply_fails=create_fails)
    node = f"{model}-node"
    mirrored_mode = mirror.apply_mode(node, catalogue_model, gpus_before, in_use, document, config, faults)
    real_mode = real.apply_mode(node, catalogue_model, gpus_before, in_use, document, config, faults)
    outcomes = {"mode": (mirrored_mode, real_mode)}
    if mirrored_mode.ok and real_mode.ok:
        outcomes["apply"] = (
            mirror.apply(node, catalogue_model, mirrored_mode.gpus, in_use, document, config, faults),
            real.apply(node, catalogue_model, real_mode.gpus, in_use, document, config, faults))
    return outcomes


def _modes(outcome) -> list[tuple[bool, bool | None]]:
    return [(gpu.mig_enabled, gpu.pending_mig) for gpu in outcome.gpus]


@pytest.mark.parametrize("model", ["A100-SXM4-80GB", "H100-SXM5-80GB"])
def test_real_apply_on_a_nodes_gpus_agrees_with_the_simulators_mirror(tmp_path, built, nvml_library,
                                                                       default_mig_document, oracle, model):
    """simcluster.nvml_node.RealMigParted (the real binary on a node's GPUs) and sim.mig_parted (the mirror the
    MIG manager's unit tests run) from MIG disabled to a config, then to another, as the MIG manager calls them."""
    real = nvml_node.RealMigParted(built.mig_parted, nvml_library, tmp_path / "hosts")
    current = [Gpu()] * 2
    for config in ("all-balanced", "all-1g.10gb", "all-disabled"):
        outcomes = _both(model, current, config, default_mig_document, oracle, real)
        for step, (mirrored, actual) in outcomes.items():
            assert (mirrored.ok, actual.ok) == (True, True), f"{config} {step}: {mirrored.message} / {actual.message}"
            assert _modes(actual) == _modes(mirrored), f"{config} {step}"
        mirrored, actual = outcomes["apply"]
        assert [g.device_counts() for g in actual.gpus] == [g.device_counts() for g in mirrored.gpus], config
        current = actual.gpus


def test_real_mode_only_apply_keeps_devices_when_the_mode_is_right(tmp_path, built, nvml_library,
                                                                    default_mig_document, oracle):
    """mig-parted v0.10.0's ``apply --mode-only`` asserts the mode first and does nothing when it is already
    right (ApplyMigConfigWithHooks): the MIG devices stay. The mirror of the unit tests clears them (the full
    apply that follows ends the same either way; the running simulator uses the real one)."""
    real = nvml_node.RealMigParted(built.mig_parted, nvml_library, tmp_path / "hosts")
    model = "A100-SXM4-80GB"
    balanced = _both(model, [Gpu()] * 2, "all-balanced", default_mig_document, oracle, real)["apply"][1].gpus
    mirrored, actual = _both(model, balanced, "all-1g.10gb", default_mig_document, oracle, real)["mode"]
    assert [g.device_counts() for g in actual.gpus] == [g.device_counts() for g in balanced] != [{}, {}]
    assert [g.device_counts() for g in mirrored.gpus] == [{}, {}]


def test_real_apply_faults_agree_with_the_simulators_mirror(tmp_path, built, nvml_library, default_mig_document,
                                                            oracle):
    real = nvml_node.RealMigParted(built.mig_parted, nvml_library, tmp_path / "hosts")
    model, disabled = "A100-SXM4-80GB", [Gpu()] * 2

    # A running pod holds the GPUs: the reset a mode change needs is refused, by both.
    held = _both(model, disabled, "all-1g.10gb", default_mig_document, oracle, real, in_use=True)
    mirrored, actual = held["mode"]
    assert not mirrored.ok and not actual.ok
    assert "error resetting all GPUs" in actual.message, actual.message
    assert _modes(actual) == _modes(mirrored) == [(False, True)] * 2

    # reboot_required: the reset leaves the change pending.
    pending = _both(model, disabled, "all-1g.10gb", default_mig_document, oracle, real, reset_needs_reboot=True)
    mirrored, actual = pending["mode"]
    assert mirrored.ok and actual.ok and _modes(actual) == _modes(mirrored) == [(False, True)] * 2

    # apply_fails: instance creation fails; both fail the apply and leave the GPUs MIG-enabled and empty.
    failing = _both(model, disabled, "all-1g.10gb", default_mig_document, oracle, real, create_fails=True)
    mirrored, actual = failing["apply"]
    assert not mirrored.ok and not actual.ok
    assert "error attempting multiple config orderings" in actual.message, actual.message
    assert [g.device_counts() for g in actual.gpus] == [{}, {}] and _modes(actual)[0] == (True, None)
