"""Fixtures for tests against the simulated cluster: real control plane, simulated kubelets and NVIDIA stack."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from migrollout import kube
from migrollout.kube import Connection, KubeClient, KubeError
from simcluster import testing
from simcluster.testing import SimCluster

REPO = Path(__file__).resolve().parents[2]
FLEETS = REPO / "tests" / "fleets"
SIMCLUSTER = testing.SIMCLUSTER


@dataclass
class NodeWatch:
    """Every version of one node seen by a watch, with the time it arrived."""

    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    def states(self) -> list[str]:
        """The distinct successive values of nvidia.com/mig.config.state ("" when absent)."""
        seen: list[str] = []
        for _, node in self.events:
            state = node["metadata"].get("labels", {}).get("nvidia.com/mig.config.state", "")
            if not seen or seen[-1] != state:
                seen.append(state)
        return seen

    def saw(self, predicate: Callable[[dict[str, Any]], bool]) -> bool:
        return any(predicate(node) for _, node in self.events)


class Cluster(SimCluster):
    """The simulated cluster (started, stopped, its kubeconfigs and environment: simcluster.testing), with the
    reads, writes and waits the tests assert with."""

    # -- reading -------------------------------------------------------------------------------------------------

    def node(self, name: str) -> dict[str, Any]:
        return self.api.get(kube.node_path(name))

    def labels(self, name: str) -> dict[str, str]:
        return self.node(name)["metadata"].get("labels") or {}

    def allocatable(self, name: str, prefix: str = "nvidia.com/") -> dict[str, str]:
        return {k: v for k, v in (self.node(name)["status"].get("allocatable") or {}).items()
                if k.startswith(prefix) and v != "0"}

    def policy(self) -> dict[str, Any]:
        return self.api.get("/apis/nvidia.com/v1/clusterpolicies/cluster-policy")

    # -- writing -------------------------------------------------------------------------------------------------

    def label(self, name: str, values: dict[str, str | None]) -> None:
        self.api.patch(kube.node_path(name), {"metadata": {"labels": values}})

    def annotate(self, name: str, values: dict[str, str | None]) -> None:
        self.api.patch(kube.node_path(name), {"metadata": {"annotations": values}})

    # -- waiting -------------------------------------------------------------------------------------------------

    def wait_mig_state(self, name: str, state: str, timeout: float = 60) -> dict[str, str]:
        return self.wait(lambda: (labels := self.labels(name)).get("nvidia.com/mig.config.state") == state
                         and labels, timeout, f"node {name} to reach mig.config.state={state}")

    def wait_settled(self, name: str, config: str, timeout: float = 60) -> None:
        """The node is at ``config``, state success, and its operands are back (labels restored)."""
        def settled() -> bool:
            labels = self.labels(name)
            return (labels.get("nvidia.com/mig.config") == config
                    and labels.get("nvidia.com/mig.config.state") == "success"
                    and not any(v == "paused-for-mig-change" for v in labels.values()))
        self.wait(settled, timeout, f"node {name} to settle at {config}")

    @contextlib.contextmanager
    def watch_node(self, name: str) -> Iterator[NodeWatch]:
        """Record every change of a node while the block runs (started before the block)."""
        record = NodeWatch()
        stop = threading.Event()
        started = threading.Event()

        def run() -> None:
            client = KubeClient.connect(Connection(kubeconfig=self.kubeconfig))
            version = None
            while not stop.is_set():
                try:
                    for kind, obj in client.watch("/api/v1/nodes", resource_version=version,
                                                  field_selector=f"metadata.name={name}", timeout_seconds=2):
                        if kind == "BOOKMARK":
                            continue
                        record.events.append((time.monotonic(), obj))
                        version = obj["metadata"]["resourceVersion"]
                        started.set()
                except KubeError:
                    version = None
                started.set()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        started.wait(10)
        try:
            yield record
        finally:
            time.sleep(0.3)
            stop.set()
            thread.join(5)


def start_cluster(state_dir: Path, fleet: Path | None = None, *args: str) -> Cluster:
    """``simcluster up --port 0 [--fleet FLEET] ARGS...``, ready (simcluster.testing)."""
    return Cluster.start(state_dir, fleet, args=args)


def stop_cluster(cluster: Cluster) -> None:
    cluster.stop()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The shared simulated cluster: integration fleet, NVIDIA's GPU Operator installed by `up` (mixed strategy)."""
    sim = start_cluster(tmp_path_factory.mktemp("simcluster") / "shared", FLEETS / "integration.yaml")
    yield sim
    stop_cluster(sim)


class NodePool:
    """Hands each test nodes of a GPU model no other test uses, and puts them back to MIG disabled."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.taken: set[str] = set()

    def take(self, pool: str) -> str:
        nodes, _ = self.cluster.api.list("/api/v1/nodes", label_selector=f"simcluster.dev/pool={pool}")
        for name in sorted(n["metadata"]["name"] for n in nodes):
            if name not in self.taken:
                self.taken.add(name)
                return name
        raise AssertionError(f"no free node left in pool {pool}; add nodes to tests/fleets/integration.yaml")


@pytest.fixture(scope="session")
def node_pool(cluster: Cluster) -> NodePool:
    return NodePool(cluster)


def ansible_env(cluster: Cluster, **extra: str) -> dict[str, str]:
    return cluster.env(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1", **extra)


def rollout_command(report_dir: Path, *extra: str, limit: str | None = None) -> list[str]:
    """ansible-playbook playbooks/mig-reconfigure.yml as an admin types it (the checkout's inventory and settings),
    its report in ``report_dir``."""
    command = [str(Path(sys.executable).parent / "ansible-playbook"), "playbooks/mig-reconfigure.yml",
               "-e", f"mig_rollout_report_dir={report_dir}", *extra]
    return command + (["--limit", limit] if limit else [])


def run_rollout(cluster: Cluster, report_dir: Path, *extra: str, limit: str | None = None,
                env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the rollout playbook to its end."""
    return subprocess.run(rollout_command(report_dir, *extra, limit=limit), capture_output=True, text=True, cwd=REPO,
                          env=env or ansible_env(cluster), timeout=timeout)


def start_rollout(cluster: Cluster, report_dir: Path, *extra: str, limit: str | None = None,
                  env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start the rollout playbook in the background, in a process group (session) of its own; its output goes to
    ``report_dir/run.log``."""
    report_dir.mkdir(parents=True, exist_ok=True)
    log = open(report_dir / "run.log", "w")  # noqa: SIM115 - the child writes it
    return subprocess.Popen(rollout_command(report_dir, *extra, limit=limit), stdout=log, stderr=subprocess.STDOUT,
                            text=True, cwd=REPO, env=env or ansible_env(cluster), start_new_session=True)


def latest_report(report_dir: Path) -> dict[str, Any]:
    return json.loads((report_dir / "latest.json").read_text())


def run_module(cluster: Cluster, module: str, args: dict[str, Any], check: bool = False, diff: bool = False,
               kubeconfig: str | None = None, verbose: bool = False) -> dict[str, Any]:
    """Run one of our modules through Ansible (ad hoc, on localhost); return its result
    (with ``verbose``, Ansible's -vvv log in ``_log``)."""
    command = [str(Path(sys.executable).parent / "ansible"), "localhost", "-m", module, "-a", json.dumps(args)]
    if verbose:
        command.append("-vvv")
    if check:
        command.append("--check")
    if diff:
        command.append("--diff")
    env = ansible_env(cluster, ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="result_json",
                      ANSIBLE_CALLBACK_PLUGINS=str(REPO / "tests" / "callback_plugins"))
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    for line in result.stdout.splitlines():
        if line.startswith("RESULT "):
            parsed = json.loads(line[len("RESULT "):])["result"]
            if verbose:
                parsed["_log"] = result.stdout
            return parsed
    raise AssertionError(f"ansible printed no result (rc={result.returncode}):\n{result.stdout}\n{result.stderr}")


def module_output(cluster: Cluster, module: str, args: dict[str, Any], check: bool = False, diff: bool = False) -> str:
    """What an admin sees: the default callback's text (with --diff output)."""
    command = [str(Path(sys.executable).parent / "ansible"), "localhost", "-m", module, "-a", json.dumps(args)]
    command += ["--check"] if check else []
    command += ["--diff"] if diff else []
    result = subprocess.run(command, capture_output=True, text=True, env=ansible_env(cluster), cwd=REPO)
    return result.stdout


def launched_from(state_dir) -> set[int]:
    """The container launchers of the cluster in ``state_dir`` and every process under them."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as file:
                    parents[int(entry)] = int(file.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry}/cmdline", "rb") as file:
                    commands[int(entry)] = file.read().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, IndexError, ValueError):
                continue
    found = {pid for pid, command in commands.items()
             if "simcluster.sim.sandbox" in command and str(state_dir) in command}
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in found} - found
        grew = bool(children)
        found |= children
    return found
