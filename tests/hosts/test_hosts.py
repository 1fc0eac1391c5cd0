"""The test hosts themselves: reached over real SSH with the set's key, each its own namespaces and
private /etc, /var, /usr/local; a reboot restarts the host (new boot id, its processes gone)."""

from __future__ import annotations

import json
import os
import subprocess
import time

from simcluster.hosts import hostset


def test_each_host_is_its_own_machine_over_ssh(hosts):
    seen_ns = set()
    for name in hosts.names():
        done = hosts.ssh(name, "hostname; readlink /proc/self/ns/net /proc/self/ns/mnt /proc/self/ns/uts; "
                               "ip -4 -o address show eth0")
        hostname, net, mnt, uts, address = done.stdout.splitlines()
        assert hostname == name
        assert hosts.plan[name].address in address
        for kind, link in (("net", net), ("mnt", mnt), ("uts", uts)):
            assert link != os.readlink(f"/proc/self/ns/{kind}"), f"{name} shares the machine's {kind} namespace"
        seen_ns.add(net)
    assert len(seen_ns) == len(hosts.names())


def test_the_machine_gets_no_address_of_the_hosts():
    done = subprocess.run(["ip", "-4", "-o", "address"], capture_output=True, text=True, check=True)
    assert "169.254.77." not in done.stdout


def test_private_etc_var_and_usr_local(hosts):
    first, second = hosts.names()[:2]
    hosts.ssh(first, "echo mark > /etc/simcluster-test-mark && touch /usr/local/bin/mark /var/lib/mark")
    assert (hosts.root(first) / "etc" / "simcluster-test-mark").read_text() == "mark\n"
    assert not os.path.exists("/etc/simcluster-test-mark")
    assert not os.path.exists("/usr/local/bin/mark")
    done = hosts.ssh(second, "ls /etc/simcluster-test-mark /usr/local/bin/mark /var/lib/mark", check=False)
    assert done.returncode != 0
    hosts.ssh(first, "rm /etc/simcluster-test-mark /usr/local/bin/mark /var/lib/mark")


def test_an_unknown_host_key_is_refused(hosts):
    name = hosts.names()[0]
    line = hostset.ssh_command(hosts.state, name, hosts.plan[name].address, "true")
    line[line.index(f"UserKnownHostsFile={hosts.state / 'ssh' / 'known_hosts'}")] = "UserKnownHostsFile=/dev/null"
    done = subprocess.run(line, capture_output=True, text=True, timeout=60)
    assert done.returncode == 255
    assert "Host key verification failed" in done.stderr


def test_reboot_with_ansibles_reboot_module(hosts):
    name = hosts.names()[-1]
    before = hosts.ssh(name, "cat /proc/sys/kernel/random/boot_id").stdout
    hosts.ssh(name, "sleep 1000 >/dev/null 2>&1 & echo $! > /tmp/sleeper")
    done = subprocess.run(["ansible", "-i", str(hosts.inventory),
                           name, "-m", "ansible.builtin.reboot", "-a", "reboot_timeout=60"],
                          capture_output=True, text=True, env=hosts.ansible_env(), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    after = hosts.ssh(name, "cat /proc/sys/kernel/random/boot_id; pgrep -x sleep || echo none").stdout.splitlines()
    assert after[0] != before.strip()
    assert after[1] == "none"


def _sinfo(hosts) -> dict[str, list[str]]:
    done = hosts.ssh("slurm-controller", "sinfo -N -h -o '%N %T %G'")
    return {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()}


def test_slurm_nodes_with_their_gpus_run_jobs(hosts):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        nodes = _sinfo(hosts)
        if all(nodes.get(name, ["?"])[0] == "idle" for name in hosts.names("slurm_node")):
            break
        time.sleep(1)
    for name in hosts.names("slurm_node"):
        # Whole GPUs as simcluster declares them, or MIG devices once the playbook ran (the session shares hosts).
        assert nodes[name][0] == "idle" and nodes[name][1].startswith("gpu:"), nodes
    name = hosts.names("slurm_node")[0]
    hosts.ssh("slurm-controller", f"cd /tmp && srun -w {name} --gres=gpu:1 hostname > /tmp/srun.out")
    assert hosts.ssh("slurm-controller", "cat /tmp/srun.out").stdout.strip() == name


def test_each_gpu_host_has_its_gpus_through_the_gpu_less_nvml(hosts):
    for name in hosts.names():
        done = hosts.ssh(name, "nvidia-smi --query-gpu=index,name,mig.mode.current --format=csv,noheader; "
                               "grep -c '^nvidia ' /proc/modules; ls /sys/bus/pci/devices | wc -l; ps -e | grep -c sshd")
        lines = done.stdout.splitlines()
        count = hosts.plan[name].gpu_count
        assert len(lines) == count + 3
        assert all(line.split(", ")[1].startswith("NVIDIA ") and line.split(", ")[2] in ("Enabled", "Disabled")
                   for line in lines[:count])
        assert lines[count:count + 2] == ["1", str(count)]
        assert int(lines[-1]) >= 1


def test_simcluster_nvml_state_shows_a_running_test_host(hosts):
    name = hosts.names()[0]
    command = [str(hosts.ansible_env()["PATH"].split(":")[0] + "/simcluster"), "nvml", "state", name,
               "--hosts-dir", str(hosts.state), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads((hosts.root(name) / "gpu" / "state.json").read_text())
    # Neither a running test host nor a cluster of that name (an empty cluster state dir): one clear line.
    done = subprocess.run([command[0], "--state-dir", str(hosts.state / "none"), *command[1:3], "no-such-host",
                           *command[4:-1]], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"simcluster nvml: no cluster in {hosts.state / 'none'} and no running test host no-such-host in "
        f"{hosts.state}; start one with 'simcluster up' or 'simcluster hosts up'"]
