"""playbooks/nvidia-mig.yml when things go wrong or get in the way: GPUs that cannot be reset (a reboot), an apply
that fails, a run killed mid-host, a Slurm job the drain waits for, a node an admin drained, a host that does not
answer. Judged from the hosts (GPU state files, records, journals, Slurm's node records)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from simcluster import nvml
from simcluster.hosts import hostset

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / "playbooks" / "nvidia-mig.yml"


def playbook_command(hosts, *extra: str) -> list[str]:
    from simcluster import upstream
    from simcluster.hosts import deployment

    variables = {"mig_hosts_mig_parted_binary": str(upstream.build().mig_parted),
                 "mig_hosts_systemd_dir": str(deployment.systemd_dir()),
                 "mig_hosts_mig_parted_version": upstream.MIG_PARTED_VERSION,
                 "mig_hosts_report_dir": str(hosts.state / "reports"),
                 "mig_hosts_slurm_job_timeout": 120}
    return ["ansible-playbook", "-i", str(hosts.inventory), str(PLAYBOOK), "-e", json.dumps(variables), *extra]


def run_playbook(hosts, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(playbook_command(hosts, *extra), capture_output=True, text=True, env=hosts.ansible_env(),
                          timeout=900, cwd=REPO)


def state_file(hosts, name: str) -> Path:
    return hosts.root(name) / "gpu" / "state.json"


def flipped(hosts, name: str) -> str:
    """A config of the other MIG mode than the host's now (a mode change, which needs a reset or a reboot)."""
    data = nvml.load(state_file(hosts, name))
    return "all-disabled" if data["gpus"][0]["mig"]["current"] == nvml.MIG_ENABLED else "all-3g.40gb"


def a100(hosts) -> list[str]:
    return [name for name in hosts.names() if hosts.plan[name].pool == "a100-80gb"]


def node_record(hosts, name: str) -> str:
    return hosts.ssh("slurm-controller", f"scontrol show node {name} --oneliner").stdout


def journal(hosts, name: str) -> list[tuple[float, str, str]]:
    path = hosts.root(name) / "var" / "log" / "simcluster-systemd" / "journal"
    return [(float(t), unit, event) for t, unit, event in (line.split() for line in path.read_text().splitlines())]


def sshd_pids(hosts, name: str) -> list[int]:
    """The host's sshd processes, seen from the machine (the host's PID namespace is a child of the machine's)."""
    init = json.loads((hosts.state / "run.json").read_text())["hosts"][name]
    namespace = os.readlink(f"/proc/{init}/ns/pid")
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == "sshd" and \
                    os.readlink(entry / "ns" / "pid") == namespace:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_gpus_that_cannot_be_reset_take_one_reboot(hosts):
    name = a100(hosts)[0]
    target = flipped(hosts, name)
    resets = list(nvml.host_dir(state_file(hosts, name)).glob("pci-devices/*/reset"))
    for reset in resets:  # as under GPU passthrough: no function-level reset
        reset.unlink()
    try:
        before = hosts.ssh(name, "cat /proc/sys/kernel/random/boot_id").stdout
        done = run_playbook(hosts, "--limit", name, "-e", f"mig_config={target}")
        assert done.returncode == 0, done.stdout[-4000:]
        assert hosts.ssh(name, "cat /proc/sys/kernel/random/boot_id").stdout != before
        data = nvml.load(state_file(hosts, name))
        want = nvml.MIG_ENABLED if target != "all-disabled" else nvml.MIG_DISABLED
        assert all(gpu["mig"]["current"] == want for gpu in data["gpus"])
        assert not (hosts.root(name) / "var" / "lib" / "nvidia-mig-manager" / "reboot_attempted").exists()
        # The boot-time service ran at boot, with the persisted config.
        assert any(unit == "nvidia-mig-manager.service" and event == "started" for _, unit, event in journal(hosts, name))
    finally:
        for reset in resets:
            reset.write_text("")


def test_a_failing_apply_fails_that_host_and_starts_no_other(hosts):
    first, second = a100(hosts)[:2]
    target = flipped(hosts, first)
    second_before = state_file(hosts, second).read_text()
    nvml.hold(state_file(hosts, first), 0, "pid 4242 cuda-app")  # a GPU client that keeps the reset from working
    try:
        done = run_playbook(hosts, "--limit", f"{first},{second}", "-e", f"mig_config={target}",
                            "-e", "mig_rollout_max_unavailable=1")
    finally:
        nvml.release(state_file(hosts, first), None)
    assert done.returncode != 0
    record = json.loads((hosts.root(first) / "var" / "lib" / "mig-rollout" / "record.json").read_text())
    assert record["step"] == "failed" and record["to_config"] == target
    assert "being used by some other process" in record["error"], record
    assert "DRAIN" in node_record(hosts, first)
    assert state_file(hosts, second).read_text() == second_before
    assert "not started" in " ".join(done.stdout.split())
    # Fixed (the client gone), the next run takes the failed host again and finishes it.
    done = run_playbook(hosts, "--limit", f"{first},{second}", "-e", f"mig_config={target}")
    assert done.returncode == 0, done.stdout[-4000:]
    assert not (hosts.root(first) / "var" / "lib" / "mig-rollout" / "record.json").exists()
    assert "DRAIN" not in node_record(hosts, first)


def test_a_killed_run_is_resumed_by_the_next(hosts):
    name = a100(hosts)[1]
    target = flipped(hosts, name)
    record = hosts.root(name) / "var" / "lib" / "mig-rollout" / "record.json"
    run = subprocess.Popen(playbook_command(hosts, "--limit", name, "-e", f"mig_config={target}"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=hosts.ansible_env(), cwd=REPO,
                           start_new_session=True)
    deadline = time.monotonic() + 300
    while not record.exists() and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.2)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert record.exists(), "the run ended before writing the host's record"
    done = run_playbook(hosts, "--limit", name, "-e", f"mig_config={target}")
    assert done.returncode == 0, done.stdout[-4000:]
    assert f"{name}: resume" in " ".join(done.stdout.split())
    assert not record.exists()
    assert "DRAIN" not in node_record(hosts, name)


def test_the_drain_waits_for_the_running_job_and_the_gres_follow(hosts):
    name = a100(hosts)[0]
    target = flipped(hosts, name)
    (hosts.root(name) / "tmp" / "job-ended").unlink(missing_ok=True)
    hosts.ssh("slurm-controller", f"cd /tmp && sbatch -w {name} --wrap 'sleep 12; date +%s.%N > /tmp/job-ended'")
    deadline = time.monotonic() + 30
    while "ALLOC" not in node_record(hosts, name) and "MIX" not in node_record(hosts, name):
        assert time.monotonic() < deadline, node_record(hosts, name)
        time.sleep(0.5)
    done = run_playbook(hosts, "--limit", name, "-e", f"mig_config={target}")
    assert done.returncode == 0, done.stdout[-4000:]
    ended = float((hosts.root(name) / "tmp" / "job-ended").read_text())
    stops = [t for t, unit, event in journal(hosts, name) if unit == "slurmd.service" and event == "stopped"]
    assert stops[-1] >= ended, "slurmd was stopped before the job ended"
    record = node_record(hosts, name)
    gres = record.split("Gres=")[1].split()[0]
    assert ("a100_3g.40gb" in gres) == (target == "all-3g.40gb"), record
    assert "DRAIN" not in record


def test_a_node_an_admin_drained_stays_drained(hosts):
    name = a100(hosts)[1]
    target = flipped(hosts, name)
    hosts.ssh("slurm-controller", f"scontrol update NodeName={name} State=DRAIN Reason='fan check by admin'")
    try:
        done = run_playbook(hosts, "--limit", name, "-e", f"mig_config={target}")
        assert done.returncode == 0, done.stdout[-4000:]
        record = node_record(hosts, name)
        assert "DRAIN" in record and "fan check by admin" in record, record
    finally:
        hosts.ssh("slurm-controller", f"scontrol update NodeName={name} State=RESUME")


def test_a_host_that_does_not_answer_fails_with_a_clear_message(hosts):
    name = next(n for n in hosts.names() if hosts.plan[n].pool == "a30")
    # sshd's listener gone, and Ansible's persisted connection to the host closed: nothing answers any more.
    # Every sshd of the host (its own PID namespace: no other host's) is stopped, Ansible's persisted connection too,
    # by a shell of its own session: the one this SSH session runs dies with the session's sshd, which the glob's
    # order may reach before the listener's.
    hosts.ssh(name, """setsid sh -c 'sleep 0.3; for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = sshd ] && """
                    """kill ${p#/proc/}; done' </dev/null >/dev/null 2>&1 &""", check=False)
    deadline = time.monotonic() + 30
    while sshd_pids(hosts, name):
        assert time.monotonic() < deadline, f"{name}: sshd still runs"
        time.sleep(0.2)
    try:
        done = run_playbook(hosts, "--limit", name, "-e", "mig_config=all-1g.6gb")
        assert done.returncode != 0
        # Found at the plan (the host never answered) or during its steps (a connection that outlived sshd):
        # either way the host fails with SSH's own message, in the output and in the report.
        text = " ".join(done.stdout.split())
        assert ("UNREACHABLE" in text and f'remote host "{hosts.plan[name].address}"' in text) or \
            f"{name}: unreachable" in text
        report = max((hosts.state / "reports").glob("nvidia-mig-*.json"), key=lambda p: p.stat().st_mtime)
        row = next(row for row in json.loads(report.read_text()) if row["node"] == name)
        assert row["result"] == "failed" and row["reason"], row
    finally:
        running = json.loads((hosts.state / "run.json").read_text())
        os.kill(int(running["hosts"][name]), signal.SIGUSR1)  # reboot the host: sshd comes back
        hostset._wait_for_ssh(hosts.state, [hosts.plan[name]], 60)
