"""Fixtures for tests against the simulated cluster: real control plane, simulated kubelets and NVIDIA stack."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from migrollout import kube
from migrollout.kube import Connection, KubeClient, KubeError
from simcluster import binaries

REPO = Path(__file__).resolve().parents[2]
FLEETS = REPO / "tests" / "fleets"
SIMCLUSTER = [sys.executable, "-m", "simcluster.cli"]


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


class Cluster:
    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.kubeconfig = str(state_dir / "kubeconfig")
        self.operator_kubeconfig = str(state_dir / "kubeconfig-operator")
        self.api = KubeClient.connect(Connection(kubeconfig=self.kubeconfig), pool_size=8)
        found = binaries.find()
        assert found is not None, "control-plane binaries are not built (make binaries)"
        self.bin_dir = str(found.directory)

    # -- environment for child processes (kubectl, ansible, helm) ---------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = self.kubeconfig
        env["PATH"] = f"{self.bin_dir}:{Path(sys.executable).parent}:{env.get('PATH', '')}"
        env.update(extra)
        return env

    def kubectl(self, *args: str, check: bool = True, kubeconfig: str | None = None) -> subprocess.CompletedProcess:
        env = self.env(KUBECONFIG=kubeconfig or self.kubeconfig)
        result = subprocess.run([f"{self.bin_dir}/kubectl", *args], capture_output=True, text=True, env=env)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    # -- reading -------------------------------------------------------------------------------------------------

    def node(self, name: str) -> dict[str, Any]:
        return self.api.get(kube.node_path(name))

    def labels(self, name: str) -> dict[str, str]:
        return self.node(name)["metadata"].get("labels") or {}

    def allocatable(self, name: str, prefix: str = "nvidia.com/") -> dict[str, str]:
        return {k: v for k, v in (self.node(name)["status"].get("allocatable") or {}).items()
                if k.startswith(prefix) and v != "0"}

    def pods(self, namespace: str | None = None, **query: str) -> list[dict[str, Any]]:
        items, _ = self.api.list(kube.pods_path(namespace), **query)
        return items

    def policy(self) -> dict[str, Any]:
        return self.api.get("/apis/nvidia.com/v1/clusterpolicies/cluster-policy")

    # -- writing -------------------------------------------------------------------------------------------------

    def label(self, name: str, values: dict[str, str | None]) -> None:
        self.api.patch(kube.node_path(name), {"metadata": {"labels": values}})

    def annotate(self, name: str, values: dict[str, str | None]) -> None:
        self.api.patch(kube.node_path(name), {"metadata": {"annotations": values}})

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return self.api.create(_collection_path(manifest), manifest)

    def namespace(self) -> str:
        name = f"t-{uuid.uuid4().hex[:8]}"
        self.api.create("/api/v1/namespaces", {"metadata": {"name": name}})
        return name

    # -- waiting -------------------------------------------------------------------------------------------------

    def wait(self, predicate: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            with contextlib.suppress(KubeError):
                last = predicate()
                if last:
                    return last
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")

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


def _collection_path(manifest: dict[str, Any]) -> str:
    api_version, kind = manifest["apiVersion"], manifest["kind"]
    plural = {"Pod": "pods", "Deployment": "deployments", "DaemonSet": "daemonsets", "Job": "jobs",
              "PodDisruptionBudget": "poddisruptionbudgets", "ConfigMap": "configmaps",
              "StatefulSet": "statefulsets", "ReplicaSet": "replicasets", "Namespace": "namespaces",
              "ClusterRoleBinding": "clusterrolebindings", "RoleBinding": "rolebindings"}[kind]
    namespace = manifest["metadata"].get("namespace")
    return kube.namespaced_path(api_version, plural, namespace)


def start_cluster(state_dir: Path, fleet: Path | None = None, *args: str) -> Cluster:
    command = [*SIMCLUSTER, "--state-dir", str(state_dir), "up", "--port", "0"]
    if fleet is not None:
        command += ["--fleet", str(fleet)]
    started = time.monotonic()
    result = subprocess.run([*command, *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"simcluster up failed:\n{result.stdout}\n{result.stderr}")
    print(f"\nsimcluster up {' '.join(args)}: {time.monotonic() - started:.1f} s", file=sys.stderr)
    return Cluster(state_dir)


def stop_cluster(cluster: Cluster) -> None:
    subprocess.run([*SIMCLUSTER, "--state-dir", str(cluster.state_dir), "down"], capture_output=True, text=True)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The shared simulated cluster: integration fleet, GPU Operator simulated (mixed strategy)."""
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
