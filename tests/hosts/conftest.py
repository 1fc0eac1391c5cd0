"""Fixtures of the bare-metal suite: one set of test hosts per session (``simcluster hosts up``), reached
over real SSH as Ansible reaches them, and judged from the hosts themselves (their files and processes,
read over SSH or from their private directories), never from the playbook's own output."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
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
