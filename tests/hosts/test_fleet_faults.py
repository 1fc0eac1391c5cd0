"""The fleet's fault knobs on test hosts (simcluster.hosts.gpus), through playbooks/nvidia-mig.yml, one run on a host
set of its own (three A100 hosts, no Slurm), all in the window at once: ``reboot_required`` makes a MIG mode change
take one reboot (GPUs that cannot be reset, as under passthrough), after which the boot-time service and the apply
finish it; with ``reboot_fails`` too, the reboot does not apply the mode and the host fails; ``apply_fails`` makes
NVML refuse GPU instances, so NVIDIA's mig-parted apply fails. Judged from each host: its GPU state file, its
rollout record, its boot id, its systemctl journal and NVIDIA's reboot guard."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from simcluster import nvml

REPO = Path(__file__).resolve().parents[2]
FLEET = """\
pools:
  - name: a100-80gb
    count: 3
    gpu: A100-SXM4-80GB
    gpus_per_node: 1
    nodes:
      1: {faults: {apply_fails: true}}
      2: {faults: {reboot_required: true, reboot_fails: true}}
      3: {faults: {reboot_required: true}}
"""


def test_fleet_faults_take_a_reboot_or_fail_the_apply_or_the_reboot(start_hosts):
    view = start_hosts(FLEET)
    failing_apply, failing_reboot, rebooting = "a100-80gb-1", "a100-80gb-2", "a100-80gb-3"

    def host_file(name: str, *parts: str) -> Path:
        return view.root(name).joinpath(*parts)

    def gpus(name: str) -> list[dict]:
        return nvml.load(host_file(name, "gpu", "state.json"))["gpus"]

    boot_ids = {name: view.ssh(name, "cat /proc/sys/kernel/random/boot_id").stdout
                for name in (failing_reboot, rebooting)}
    done = subprocess.run(
        view.playbook_command("-e", "mig_config=all-3g.40gb", "-e", "mig_rollout_max_unavailable=3",
                              "-e", "mig_rollout_max_fail_percentage=100"),
        capture_output=True, text=True, env=view.ansible_env(), timeout=900, cwd=REPO)
    assert done.returncode != 0, done.stdout[-4000:]
    # reboot_required: one reboot, the boot-time service ran, the mode and layout are there, the guard is gone.
    assert view.ssh(rebooting, "cat /proc/sys/kernel/random/boot_id").stdout != boot_ids[rebooting]
    assert [gpu["mig"]["current"] for gpu in gpus(rebooting)] == [nvml.MIG_ENABLED]
    assert nvml.mig_layout(nvml.load(host_file(rebooting, "gpu", "state.json"))) == [{"3g.40gb": 2}]
    assert not host_file(rebooting, "var", "lib", "nvidia-mig-manager", "reboot_attempted").exists()
    journal = host_file(rebooting, "var", "log", "simcluster-systemd", "journal").read_text()
    assert "nvidia-mig-manager.service started" in journal
    assert not host_file(rebooting, "var", "lib", "mig-rollout", "record.json").exists()
    records = {name: json.loads(host_file(name, "var", "lib", "mig-rollout", "record.json").read_text())
               for name in (failing_apply, failing_reboot)}
    assert all(record["step"] == "failed" for record in records.values()), records
    # reboot_required + reboot_fails: the host rebooted once (NVIDIA's guard file stays), its GPU kept MIG disabled.
    assert view.ssh(failing_reboot, "cat /proc/sys/kernel/random/boot_id").stdout != boot_ids[failing_reboot]
    assert [gpu["mig"]["current"] for gpu in gpus(failing_reboot)] == [nvml.MIG_DISABLED]
    assert host_file(failing_reboot, "var", "lib", "nvidia-mig-manager", "reboot_attempted").exists()
    # apply_fails: the MIG mode changed, then NVML refused the GPU instances: none exist.
    assert [gpu["mig"]["current"] for gpu in gpus(failing_apply)] == [nvml.MIG_ENABLED]
    assert gpus(failing_apply)[0]["gpu_instances"] == []
    assert "Apply the MIG config" in records[failing_apply]["error"], records[failing_apply]
