"""playbooks/nvidia-mig.yml on the test hosts, judged from the hosts: their GPU state (the GPU-less NVML's state
files, read by simcluster, not by the playbook), the systemctl journal of each host (when slurmd stopped and
started: the host's maintenance), Slurm's own node records, files on the hosts."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from simcluster import nvml

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / "playbooks" / "nvidia-mig.yml"
CONFIGS = {"a100-80gb": "all-1g.10gb", "h100-80gb": "all-3g.40gb", "a30": "all-1g.6gb"}
LAYOUTS = {"all-1g.10gb": {"1g.10gb": 7}, "all-3g.40gb": {"3g.40gb": 2}, "all-1g.6gb": {"1g.6gb": 4}}


def run_playbook(hosts, *extra: str, check: bool = False, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    from simcluster import upstream
    from simcluster.hosts import deployment

    variables = {"mig_hosts_mig_parted_binary": str(upstream.build().mig_parted),
                 "mig_hosts_systemd_dir": str(deployment.systemd_dir()),
                 "mig_hosts_mig_parted_version": upstream.MIG_PARTED_VERSION,
                 "mig_hosts_report_dir": str(hosts.state / "reports"),
                 "mig_rollout_max_unavailable": 2}
    command = ["ansible-playbook", "-i", str(hosts.inventory), str(PLAYBOOK), "-e", json.dumps(variables),
               *(["--check"] if check else []), *extra]
    return subprocess.run(command, capture_output=True, text=True, env=hosts.ansible_env(), timeout=timeout,
                          cwd=REPO)


def recap(output: str) -> dict[str, dict[str, int]]:
    found = {}
    for line in output.splitlines():
        if " : ok=" in line:
            name, _, rest = line.partition(":")
            found[name.strip()] = {k: int(v) for k, v in (item.split("=") for item in rest.split())}
    return found


@pytest.fixture(scope="module")
def configured(hosts):
    for pool, config in CONFIGS.items():
        (hosts.state / "group_vars").mkdir(exist_ok=True)
        (hosts.state / "group_vars" / f"mig_pool_{pool.replace('-', '_')}.yml").write_text(f"mig_config: {config}\n")
    return hosts


def test_check_mode_plans_and_changes_nothing(configured):
    hosts = configured
    def snapshot(name: str) -> dict[str, bytes]:
        """The host's GPU state and every file under its /etc and /usr/local."""
        root = hosts.root(name)
        files = [root / "gpu" / "state.json", *sorted(p for d in ("etc", "usr-local") for p in (root / d).rglob("*")
                                                      if p.is_file() and not p.is_symlink())]
        return {str(p): p.read_bytes() for p in files}

    before = {name: snapshot(name) for name in hosts.names()}
    done = run_playbook(hosts, check=True)
    assert done.returncode == 0, done.stdout[-3000:]
    for name in hosts.names():
        pool = hosts.plan[name].pool
        text = " ".join(done.stdout.split())
        assert f"{name}: change (" in text and f"{name}: change ({text.split(f'{name}: change (')[1].split(' -> ')[0]}" \
            f" -> {CONFIGS[pool]})" in text
        assert snapshot(name) == before[name], name


def test_mixed_fleet_reaches_its_configs_within_the_window(configured):
    hosts = configured
    done = run_playbook(hosts)
    assert done.returncode == 0, done.stdout[-5000:]
    for name in hosts.names():
        config = CONFIGS[hosts.plan[name].pool]
        data = nvml.load(hosts.root(name) / "gpu" / "state.json")
        assert all(gpu["mig"]["current"] == nvml.MIG_ENABLED for gpu in data["gpus"]), name
        assert nvml.mig_layout(data) == [LAYOUTS[config]] * len(data["gpus"]), name
        override = hosts.root(name) / "etc" / "systemd" / "system" / "nvidia-mig-manager.service.d" / "override.conf"
        assert f"MIG_PARTED_SELECTED_CONFIG={config}" in override.read_text()
        assert hosts.ssh(name, f"nvidia-mig-parted assert -f /etc/nvidia-mig-manager/config.yaml -c {config}")
    # The window (2): at no moment were more than 2 hosts between slurmd's stop and start (their journals).
    spans = []
    for name in hosts.names():
        events = [line.split() for line in (hosts.root(name) / "var" / "log" / "simcluster-systemd" / "journal")
                  .read_text().splitlines() if "slurmd.service" in line]
        stops = [float(t) for t, _, event in events if event == "stopped"]
        starts = [float(t) for t, _, event in events if event == "started"]
        assert stops, f"{name}: slurmd was never stopped"
        spans.append((stops[-1], max(t for t in starts if t > stops[-1])))
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    busy = peak = 0
    for _, step in edges:
        busy += step
        peak = max(peak, busy)
    assert 1 <= peak <= 2
    # Slurm declares the MIG devices and the nodes are back.
    for name in hosts.names("slurm_node"):
        record = hosts.ssh("slurm-controller", f"scontrol show node {name} --oneliner").stdout
        assert "DRAIN" not in record, record
        assert "_" in record.split("Gres=")[1].split()[0], record


def test_a_rerun_changes_nothing(configured):
    hosts = configured
    before = {name: (hosts.root(name) / "gpu" / "state.json").read_text() for name in hosts.names()}
    done = run_playbook(hosts)
    assert done.returncode == 0, done.stdout[-3000:]
    for name, counts in recap(done.stdout).items():
        assert counts["changed"] == 0, (name, done.stdout[-3000:])
    for name in hosts.names():
        assert f"{name}: skip" in " ".join(done.stdout.split())
        assert (hosts.root(name) / "gpu" / "state.json").read_text() == before[name]


def test_an_h100_host_gets_its_config_back_at_boot(configured):
    """From H100 on MIG mode is lost at every reboot; NVIDIA's boot-time service, which the playbook installs and
    enables with the config persisted in its override.conf, applies the config again as the host boots."""
    hosts = configured
    name = next(host for host in hosts.names() if hosts.plan[host].pool == "h100-80gb")
    config = CONFIGS["h100-80gb"]
    done = run_playbook(hosts, "--limit", name)  # at its config already when the tests above ran: no change
    assert done.returncode == 0, done.stdout[-3000:]
    state = hosts.root(name) / "gpu" / "state.json"
    assert nvml.mig_layout(nvml.load(state)) == [LAYOUTS[config]] * 2
    devices_before = _mig_uuids(nvml.load(state))
    boot_id = hosts.ssh(name, "cat /proc/sys/kernel/random/boot_id").stdout.strip()
    rebooted = subprocess.run(["ansible", "-i", str(hosts.inventory), name, "-m", "ansible.builtin.reboot",
                               "-a", "reboot_timeout=120"],
                              capture_output=True, text=True, env=hosts.ansible_env(), timeout=180, cwd=REPO)
    assert rebooted.returncode == 0, rebooted.stdout + rebooted.stderr
    assert hosts.ssh(name, "cat /proc/sys/kernel/random/boot_id").stdout.strip() != boot_id
    # The GPUs came back from the reboot with MIG disabled (Hopper); the service put the config back.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        data = nvml.load(state)
        if nvml.mig_layout(data) == [LAYOUTS[config]] * 2:
            break
        time.sleep(1)
    else:
        raise AssertionError(f"{name}: {config} not applied again after the reboot: {nvml.describe(data)}")
    # New MIG devices (new UUIDs): made anew after the reboot, not kept through it.
    assert not _mig_uuids(data) & devices_before
    journal = (hosts.root(name) / "var" / "log" / "simcluster-systemd" / "journal").read_text().splitlines()
    assert any("nvidia-mig-manager.service" in line for line in journal[-40:]), journal[-40:]
    assert hosts.ssh(name, f"nvidia-mig-parted assert -f /etc/nvidia-mig-manager/config.yaml -c {config}")


def _mig_uuids(data: dict) -> set[str]:
    return {ci["uuid"] for gpu in data["gpus"] for gi in gpu["gpu_instances"] for ci in gi["compute_instances"]}
