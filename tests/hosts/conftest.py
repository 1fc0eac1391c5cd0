"""Fixtures of the bare-metal suite: one set of test hosts per session (``simcluster hosts up``), reached
over real SSH as Ansible reaches them, and judged from the hosts themselves (their files and processes,
read over SSH or from their private directories), never from the playbook's own output."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from simcluster.hosts import hostset

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin"


class Hosts:
    def __init__(self, state: Path):
        self.state = state
        self.plan = {host.name: host for host in hostset.load_plan(state)}
        self.inventory = hostset.write_inventory(state)

    def names(self, role: str = "mig_host") -> list[str]:
        return [name for name, host in self.plan.items() if role in host.roles]

    def ssh(self, name: str, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(hostset.ssh_command(self.state, name, self.plan[name].address, command),
                              capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise AssertionError(f"{name}: {command}: exit {done.returncode}: {done.stderr.strip()}")
        return done

    def root(self, name: str) -> Path:
        """The host's private directories (etc, var, usr-local, root, tmp), as the machine sees them."""
        return self.state / "hosts" / name

    def playbook_command(self, *extra: str) -> list[str]:
        """``ansible-playbook playbooks/nvidia-mig.yml`` on these hosts, installing what simcluster built."""
        from simcluster import upstream
        from simcluster.hosts import deployment

        variables = {"mig_hosts_mig_parted_binary": str(upstream.build().mig_parted),
                     "mig_hosts_systemd_dir": str(deployment.systemd_dir()),
                     "mig_hosts_mig_parted_version": upstream.MIG_PARTED_VERSION,
                     "mig_hosts_report_dir": str(self.state / "reports")}
        return ["ansible-playbook", "-i", str(self.inventory), str(REPO / "playbooks" / "nvidia-mig.yml"),
                "-e", json.dumps(variables), *extra]

    def ansible_env(self) -> dict[str, str]:
        return {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
                "ANSIBLE_HOST_KEY_CHECKING": "True"}


@pytest.fixture(scope="session")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    if os.geteuid() != 0:
        pytest.skip("test hosts need root (namespaces)")
    state = tmp_path_factory.mktemp("hosts")
    hostset.up(state, None, slurm=True)
    try:
        yield Hosts(state)
    finally:
        hostset.down(state)


@pytest.fixture(scope="module")
def start_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str, bool], Hosts]]:
    """A host set of a module's own, from a fleet file's text: ``start_hosts(fleet_text, slurm)``."""
    if os.geteuid() != 0:
        pytest.skip("test hosts need root (namespaces)")
    started: list[Path] = []

    def start(fleet_text: str, slurm: bool = False) -> Hosts:
        state = tmp_path_factory.mktemp("module-hosts")
        (state / "fleet.yaml").write_text(fleet_text)
        started.append(state)
        hostset.up(state, str(state / "fleet.yaml"), slurm=slurm)
        return Hosts(state)

    try:
        yield start
    finally:
        for state in started:
            hostset.down(state)
