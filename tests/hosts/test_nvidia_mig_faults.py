"""playbooks/nvidia-mig.yml when things go wrong or get in the way: an apply that fails (a GPU held by a process), a
run killed mid-host, a Slurm job the drain waits for, a node an admin drained, a host that does not answer. Judged
from the hosts (GPU state files, records, journals, Slurm's node records). GPUs that cannot be reset (a reboot) and
the fleet's other fault knobs: test_fleet_faults.py."""

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
    done = run_playbook(hosts, "--limit", first, "-e", f"mig_config={target}")
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


def test_the_drain_waits_for_the_running_job_and_the_gres_follow_and_an_admins_drain_stays(hosts):
    # One run, both hosts in the window at once: one with a running job, one an admin drained before the run; each
    # changes its MIG mode (its own mig_config, from the inventory's host_vars).
    name, drained = a100(hosts)[:2]
    targets = {host: flipped(hosts, host) for host in (name, drained)}
    host_vars = hosts.state / "host_vars"
    host_vars.mkdir(exist_ok=True)
    for host, target in targets.items():
        (host_vars / f"{host}.yml").write_text(f"mig_config: {target}\n")
    (hosts.root(name) / "tmp" / "job-ended").unlink(missing_ok=True)
    hosts.ssh("slurm-controller", f"cd /tmp && sbatch -w {name} --wrap 'sleep 12; date +%s.%N > /tmp/job-ended'")
    hosts.ssh("slurm-controller", f"scontrol update NodeName={drained} State=DRAIN Reason='fan check by admin'")
    try:
        deadline = time.monotonic() + 30
        while "ALLOC" not in node_record(hosts, name) and "MIX" not in node_record(hosts, name):
            assert time.monotonic() < deadline, node_record(hosts, name)
            time.sleep(0.5)
        done = run_playbook(hosts, "--limit", f"{name},{drained}", "-e", "mig_rollout_max_unavailable=2")
        assert done.returncode == 0, done.stdout[-4000:]
        ended = float((hosts.root(name) / "tmp" / "job-ended").read_text())
        stops = [t for t, unit, event in journal(hosts, name) if unit == "slurmd.service" and event == "stopped"]
        assert stops[-1] >= ended, "slurmd was stopped before the job ended"
        record = node_record(hosts, name)
        gres = record.split("Gres=")[1].split()[0]
        assert ("a100_3g.40gb" in gres) == (targets[name] == "all-3g.40gb"), record
        assert "DRAIN" not in record
        # The admin's drain outlives the run (its reason too), though the host was reconfigured.
        record = node_record(hosts, drained)
        assert "DRAIN" in record and "fan check by admin" in record, record
        want = nvml.MIG_ENABLED if targets[drained] != "all-disabled" else nvml.MIG_DISABLED
        assert all(gpu["mig"]["current"] == want for gpu in nvml.load(state_file(hosts, drained))["gpus"])
    finally:
        hosts.ssh("slurm-controller", f"scontrol update NodeName={drained} State=RESUME")
        for host in targets:
            (host_vars / f"{host}.yml").unlink(missing_ok=True)


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
