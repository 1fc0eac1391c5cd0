"""The simulated GPUs: where their facts come from, and what NVML and mig-parted let one do with them."""

from __future__ import annotations

import pytest

from simcluster import upstream
from simcluster.sim import gpus, hardware, mig_parted
from simcluster.sim.faults import NodeFaults
from simcluster.sim.hardware import Gpu
from simcluster.sim.mig_parted import Entry, Selection


@pytest.fixture(scope="module")
def catalogue() -> gpus.Catalogue:
    if upstream.find() is None:
        pytest.fail("NVIDIA's components are not built: run 'simcluster build' first", pytrace=False)
    return gpus.catalogue()


def test_recorded_models_take_every_profile_fact_from_nvidias_tables(catalogue):
    tables = gpus.shared_oracle().tables()
    for model in catalogue.models:
        if model.mig != "recorded":
            continue
        table = tables[model.recorded_table]
        assert table["recorded"] and table["pci_device_id"] == model.device_id
        assert {p.name: (p.instances, p.memory_mib, p.multiprocessors, p.starts) for p in model.profiles} == {
            p["name"]: (p["instance_count"], p["memory_mib"], p["multiprocessor_count"],
                        tuple(x["start"] for x in p["placements"])) for p in table["profiles"]}


def test_documented_models_and_fleet_names():
    described = gpus.described()
    h100 = described.get("H100-80GB")
    assert h100.key == "H100-SXM5-80GB" and h100.mig == "documented" and h100.device_id == "0x233010DE"
    assert {p.name: p.instances for p in h100.profiles} == {
        "1g.10gb": 7, "1g.10gb+me": 1, "1g.20gb": 4, "2g.20gb": 3, "3g.40gb": 2, "4g.40gb": 1, "7g.80gb": 1}
    assert not described.get("L4").mig_capable
    # Every model a fleet in the repository names is known.
    for name in ("A100-SXM4-40GB", "A100-SXM4-80GB", "H100-SXM5-80GB", "H200-141GB", "A30", "L4", "A100-80GB",
                 "A100-40GB", "H100-80GB"):
        assert described.find(name) is not None, name
    assert described.find("A200") is None


def test_placements_decide_what_fits(catalogue):
    model = catalogue.get("A100-SXM4-40GB")
    # 4g.20gb only starts at slice 0; created in the sorted order (larger first) both fit.
    placed, error = mig_parted.set_mig_config(model, Gpu(True), {"3g.20gb": 1, "4g.20gb": 1})
    assert error == "" and sorted((i.profile, i.start) for i in placed.instances) == [("3g.20gb", 4), ("4g.20gb", 0)]
    # Compute slices would allow 1 x 3g + 2 x 2g (7), the memory placements do not.
    placed, error = mig_parted.set_mig_config(model, Gpu(True), {"3g.20gb": 1, "2g.10gb": 2})
    assert error == "" and len(placed.instances) == 3
    placed, error = mig_parted.set_mig_config(model, Gpu(True), {"3g.20gb": 2, "2g.10gb": 1})
    assert "all orderings failed" in error and placed.instances == ()
    # At most one media-extension instance per GPU: by its profile's count, and because the A30 has one JPEG and
    # one OFA engine, which each +me instance holds.
    assert "Insufficient Resources" in mig_parted.set_mig_config(model, Gpu(True), {"1g.5gb+me": 2})[1]
    a30 = catalogue.get("A30")
    assert "Insufficient Resources" in mig_parted.set_mig_config(a30, Gpu(True), {"1g.6gb+me": 1, "2g.12gb+me": 1})[1]
    assert mig_parted.set_mig_config(a30, Gpu(True), {"1g.6gb+me": 1, "2g.12gb": 1, "1g.6gb": 1})[1] == ""


def test_mode_changes_wait_for_a_reset_that_a_busy_gpu_refuses(catalogue):
    model = catalogue.get("A100-SXM4-80GB")
    enable = Selection((Entry(True, {"1g.10gb": 7}), Entry(True, {"1g.10gb": 7})))
    busy = mig_parted.apply_mode(model, [Gpu(), Gpu()], enable, gpu_in_use=True, reset_needs_reboot=False)
    assert not busy.ok and "In use by another client" in busy.message
    assert [g.pending_mig for g in busy.gpus] == [True, True] and not mig_parted.assert_mode(model, busy.gpus, enable)
    needs_reboot = mig_parted.apply_mode(model, [Gpu(), Gpu()], enable, gpu_in_use=False, reset_needs_reboot=True)
    assert needs_reboot.ok and not mig_parted.assert_mode(model, needs_reboot.gpus, enable)
    assert [hardware.after_reboot(g) for g in needs_reboot.gpus] == [Gpu(True), Gpu(True)]
    assert [hardware.after_reboot(g, mode_change_takes=False) for g in needs_reboot.gpus] == [Gpu(), Gpu()]
    done = mig_parted.apply_mode(model, [Gpu(), Gpu()], enable, gpu_in_use=False, reset_needs_reboot=False)
    assert done.ok and done.gpus == [Gpu(True), Gpu(True)]


def test_assert_is_mig_parteds(catalogue):
    model = catalogue.get("A100-SXM4-80GB")
    gpu, _ = mig_parted.set_mig_config(model, Gpu(True), {"1g.10gb": 7})
    applied = Selection((Entry(True, {"1g.10gb": 7}), Entry(True, {"1g.10gb": 7})))
    assert mig_parted.assert_applied(model, [gpu, gpu], applied)
    # A GPU no entry selects fails the assertion (v0.10's AssertMigConfig counts every GPU).
    assert not mig_parted.assert_applied(model, [gpu, gpu], Selection((Entry(True, {"1g.10gb": 7}), None)))
    # mig-enabled: false is satisfied by a MIG-enabled GPU without devices (MigConfig.Equals of two empty configs).
    disabled = Selection((Entry(False, {}),))
    assert not mig_parted.assert_applied(model, [Gpu(True)], disabled)  # the mode check comes first
    assert mig_parted.assert_applied(model, [Gpu()], disabled)


def test_gpu_state_round_trips_through_the_annotation(catalogue):
    model = catalogue.get("A30")
    gpu, _ = mig_parted.set_mig_config(model, Gpu(True), {"2g.12gb": 1, "1g.6gb": 2})
    states = [gpu, Gpu(False, True)]
    node = {"metadata": {"annotations": {hardware.GPU_COUNT: "2", hardware.GPU_STATE: hardware.encode(states)}}}
    assert hardware.gpus(node) == states
    # A count that disagrees (or no state yet) means MIG disabled everywhere.
    node["metadata"]["annotations"][hardware.GPU_COUNT] = "3"
    assert hardware.gpus(node) == [Gpu()] * 3


def test_one_fault_definition_for_fleet_annotations_and_components():
    faults = NodeFaults(apply_delay_s=2.5, apply_fails=True)
    annotations = faults.annotations()
    assert annotations == {"simcluster.dev/fault-apply-delay-s": "2.5", "simcluster.dev/fault-apply-fails": "true"}
    assert NodeFaults.from_annotations(annotations) == faults
    assert NodeFaults.from_annotations({"simcluster.dev/fault-apply-delay-s": "soon"}) == NodeFaults()
    assert NodeFaults().merged({"reboot_required": True}).reboot_required
    assert set(NodeFaults.knobs()) == {"apply_delay_s", "apply_fails", "reboot_required", "reboot_fails",
                                       "stuck_pending", "stuck_pending_once"}
