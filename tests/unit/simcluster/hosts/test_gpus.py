"""A test host's GPUs take the fleet's fault knobs that mean something on bare metal (simcluster.hosts.gpus)."""

from simcluster import nvml
from simcluster.hosts import gpus


def test_no_fault_gpus_can_be_reset_and_nvml_has_no_faults(tmp_path):
    view = gpus.init(tmp_path / "state.json", "a100-80gb", 2, {})
    assert nvml.load(tmp_path / "state.json")["faults"] == {}
    assert len(list(view.glob("pci-devices/*/reset"))) == 2


def test_apply_fails_is_nvmls_create_fails(tmp_path):
    gpus.init(tmp_path / "state.json", "a100-80gb", 1, {"apply_fails": True})
    assert nvml.load(tmp_path / "state.json")["faults"] == {"create_fails": True}


def test_reboot_required_leaves_no_reset_and_keeps_a_reset_pending(tmp_path):
    view = gpus.init(tmp_path / "state.json", "a100-80gb", 2, {"reboot_required": True})
    assert nvml.load(tmp_path / "state.json")["faults"] == {"reset_keeps_pending": True}
    assert not list(view.glob("pci-devices/*/reset"))


def pend_enabled(state):
    with nvml.mutating(state) as data:
        for gpu in data["gpus"]:
            gpu["mig"]["pending"] = nvml.MIG_ENABLED


def test_a_reboot_applies_a_pending_mode_change_unless_reboot_fails(tmp_path):
    works, fails = tmp_path / "works.json", tmp_path / "fails.json"
    gpus.init(works, "a100-80gb", 1, {})
    gpus.init(fails, "a100-80gb", 1, {"reboot_fails": True})
    for state in (works, fails):
        pend_enabled(state)
    assert gpus.main(["reboot", str(works)]) == 0
    assert gpus.main(["reboot", str(fails), "--mode-change-fails"]) == 0
    assert nvml.load(works)["gpus"][0]["mig"] == {"current": nvml.MIG_ENABLED, "pending": nvml.MIG_ENABLED}
    assert nvml.load(fails)["gpus"][0]["mig"] == {"current": nvml.MIG_DISABLED, "pending": nvml.MIG_DISABLED}


def test_knobs_a_host_does_not_act_on_are_named():
    assert gpus.unsupported({"apply_fails": True, "stuck_pending": True, "apply_delay_s": 3.0,
                             "stuck_pending_once": False}) == ["apply_delay_s", "stuck_pending"]


def test_a_fleet_knob_a_host_cannot_act_on_is_refused_before_anything_starts(tmp_path):
    import pytest

    from simcluster import fleet
    from simcluster.hosts import hostset

    path = tmp_path / "fleet.yaml"
    path.write_text("pools:\n  - name: a100\n    count: 2\n    gpu: A100-SXM4-80GB\n    gpus_per_node: 1\n"
                    "    nodes:\n      2: {faults: {apply_fails: true}}\n")
    hosts = hostset.plan(fleet.load(path), slurm=False)
    assert [host.faults for host in hosts] == [{}, {"apply_fails": True}]
    path.write_text(path.read_text().replace("apply_fails", "stuck_pending"))
    with pytest.raises(hostset.HostsError, match=r"a100-2: fault knobs stuck_pending have no meaning on a test host"):
        hostset.plan(fleet.load(path), slurm=False)
