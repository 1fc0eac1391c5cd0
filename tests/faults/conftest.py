"""Fixtures of the fault suite: the rollout playbook on a simulated cluster of its own, with faults injected
from outside (a frozen or killed control host, a flaky API server, bad settings, bad credentials, pods that
come back), and every outcome read from the API server (taints, labels, records, pods, the Lease).

The cluster comes from simcluster.testing, with the integration suite's assertions and playbook runners
(tests/integration/conftest.py, loaded here under its own name); what only faults need (a flaky TCP proxy in front
of the API server, process control, a log of node changes, the rollout's RBAC for its least-privileged identity)
is below.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

_INTEGRATION = Path(__file__).resolve().parents[1] / "integration" / "conftest.py"
_spec = importlib.util.spec_from_file_location("integration_conftest", _INTEGRATION)
assert _spec is not None and _spec.loader is not None
integration = importlib.util.module_from_spec(_spec)
sys.modules["integration_conftest"] = integration
_spec.loader.exec_module(integration)

Cluster = integration.Cluster
REPO = integration.REPO
FLEETS = integration.FLEETS
ansible_env = integration.ansible_env
run_rollout = integration.run_rollout
start_rollout = integration.start_rollout
latest_report = integration.latest_report

LEASE = "/apis/coordination.k8s.io/v1/namespaces/gpu-operator/leases/mig-rollout"
RECORD = "mig-rollout.nvidia-mig-rollout.io/record"
CONFIG = "nvidia.com/mig.config"
STATE = "nvidia.com/mig.config.state"
MAINTENANCE = {"key": "mig", "value": "maintenance", "effect": "NoSchedule"}
OPERANDS = ("nvidia-device-plugin-daemonset", "gpu-feature-discovery", "nvidia-mig-manager")
DRIVER_UPGRADE_STATE = "nvidia.com/gpu-driver-upgrade-state"
TOOLKIT = "nvidia-mig-rollout"   # the field manager of every write the toolkit makes (migrollout.kube)


def install_operator(cluster: Cluster) -> None:
    """NVIDIA's GPU Operator installed as an admin installs it: playbooks/nvidia-gpu-operator.yml, whose role gives
    the operands the rollout's maintenance toleration at install time (the ClusterPolicy's daemonsets.tolerations)."""
    chart = subprocess.run([sys.executable, "-m", "simcluster.cli", "path", "chart"], capture_output=True,
                           text=True, check=True).stdout.strip()
    result = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "playbooks/nvidia-gpu-operator.yml",
                             "-e", f"gpu_operator_chart_path={chart}"], capture_output=True, text=True, cwd=REPO,
                            env=ansible_env(cluster))
    assert result.returncode == 0, result.stdout[-3000:]
    policy = cluster.policy()
    namespace = (policy.get("status") or {}).get("namespace") or "gpu-operator"
    for name in OPERANDS:
        ds = cluster.api.get(f"/apis/apps/v1/namespaces/{namespace}/daemonsets/{name}")
        assert {"key": "mig", "operator": "Exists"} in (ds["spec"]["template"]["spec"].get("tolerations") or []), name


def driver_upgrade_states(cluster: Cluster) -> dict[str, str]:
    """Each GPU node's state in NVIDIA's driver upgrade state machine."""
    listed, _ = cluster.api.list("/api/v1/nodes", label_selector="nvidia.com/gpu.present=true")
    return {n["metadata"]["name"]: (n["metadata"].get("labels") or {}).get(DRIVER_UPGRADE_STATE, "") for n in listed}


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # FAULTS_SIMCLUSTER_DIR: a cluster already up with tests/fleets/faults.yaml and the operator installed by the
    # playbook (simcluster --state-dir DIR up --fleet tests/fleets/faults.yaml --without-operator, then
    # playbooks/nvidia-gpu-operator.yml), kept between runs while working on a test.
    reuse = os.environ.get("FAULTS_SIMCLUSTER_DIR")
    sim = Cluster.attach(Path(reuse)) if reuse else Cluster.start(
        tmp_path_factory.mktemp("simcluster") / "faults", integration.FLEETS / "faults.yaml", operator="real",
        install_operator=False)
    try:
        if not reuse:
            install_operator(sim)
            # The toleration set at install time restarts no driver: every driver is current (its upgrade done, or
            # never needed) and no node is cordoned, a while after the operator settled.
            time.sleep(5)
            states = driver_upgrade_states(sim)
            assert set(states.values()) <= {"", "upgrade-done"}, states
            cordoned = [n["metadata"]["name"] for n in sim.api.list("/api/v1/nodes")[0] if n["spec"].get("unschedulable")]
            assert not cordoned, cordoned
        yield sim
    finally:
        if not reuse:
            sim.stop()


RBAC = (REPO / "rbac" / "mig-rollout.yaml", REPO / "rbac" / "bind-example.yaml")


@pytest.fixture
def rollout_rbac(cluster: Cluster) -> Iterator[None]:
    """The rollout's least-privilege roles bound to its identities, as an admin applies them (rbac/); removed
    after the test, so the least-privileged identity has no rights again (test_04 counts on it)."""
    files = [arg for path in RBAC for arg in ("-f", str(path))]
    cluster.kubectl("apply", *files)
    yield
    cluster.kubectl("delete", "--ignore-not-found", *files)


def unbind_service_account(cluster: Cluster) -> None:
    """Take the least-privileged ServiceAccount out of every binding of rbac/bind-example.yaml (the group stays)."""
    for document in yaml.safe_load_all(RBAC[1].read_text()):
        if not document:
            continue
        kind = "clusterrolebindings" if document["kind"] == "ClusterRoleBinding" else "rolebindings"
        namespace = document["metadata"].get("namespace")
        path = (f"/apis/rbac.authorization.k8s.io/v1/{kind}/{document['metadata']['name']}" if namespace is None
                else f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/{kind}/{document['metadata']['name']}")
        binding = cluster.api.get(path)
        subjects = [s for s in binding.get("subjects") or [] if s.get("kind") != "ServiceAccount"]
        assert len(subjects) < len(binding.get("subjects") or []), f"{path} binds no ServiceAccount"
        cluster.api.patch(path, {"subjects": subjects})


class Runs:
    """The rollouts a test started in the background; whatever is left of them is killed after the test."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.started: list[Any] = []

    def start(self, report_dir: Path, *extra: str, limit: str | None = None, env: dict[str, str] | None = None):
        process = start_rollout(self.cluster, report_dir, *extra, limit=limit, env=env)
        self.started.append(process)
        return process

    def cleanup(self) -> None:
        for process in self.started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGCONT)
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                process.wait(5)
        for pid in renewer_pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def runs(cluster: Cluster) -> Iterator[Runs]:
    tracker = Runs(cluster)
    yield tracker
    tracker.cleanup()


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A namespace of the test's own, deleted (with its workloads) after it."""
    name = cluster.namespace()
    yield name
    with contextlib.suppress(Exception):
        cluster.api.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture(autouse=True)
def no_lock_left(cluster: Cluster) -> Iterator[None]:
    """Each test starts without a rollout lock, and leaves none behind (a killed run's Lease would make the next
    test wait for it to expire)."""
    yield
    with contextlib.suppress(Exception):
        cluster.api.delete(LEASE)


# -- reading the API server -----------------------------------------------------------------------------------

def lease(cluster: Cluster) -> dict[str, Any] | None:
    """The rollout Lease while a run holds it; None when none does (a released Lease is kept, with no holder)."""
    found = cluster.api.get_or_none(LEASE)
    return found if found and (found.get("spec") or {}).get("holderIdentity") else None


def record(cluster: Cluster, node: str) -> dict[str, Any] | None:
    raw = (cluster.node(node)["metadata"].get("annotations") or {}).get(RECORD)
    return json.loads(raw) if raw else None


def taints(cluster: Cluster, node: str) -> list[dict[str, Any]]:
    return cluster.node(node)["spec"].get("taints") or []


def pods_by_uid(cluster: Cluster, namespace: str) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["uid"]: p for p in cluster.pods(namespace)}


def nodes_of(cluster: Cluster, pool: str) -> list[str]:
    listed, _ = cluster.api.list("/api/v1/nodes", label_selector=f"simcluster.dev/pool={pool}")
    return sorted(n["metadata"]["name"] for n in listed)


def settled(cluster: Cluster, node: str, config: str) -> bool:
    found = cluster.node(node)
    labels = found["metadata"].get("labels") or {}
    return (labels.get(CONFIG) == config and labels.get(STATE) == "success" and not found["spec"].get("taints")
            and not found["spec"].get("unschedulable") and RECORD not in (found["metadata"].get("annotations") or {}))


def wait_settled(cluster: Cluster, node: str, config: str, timeout: float = 30) -> bool:
    """``settled``, allowing the controller-manager time to drop its node.kubernetes.io/unschedulable taint after
    an uncordon (its node lifecycle controller lags the write)."""
    return bool(cluster.wait(lambda: settled(cluster, node, config), timeout=timeout,
                             what=f"node {node} at {config}, out of maintenance"))


def inject_fault(cluster: Cluster, node: str, fault: str, value: str | None = "true") -> None:
    """A simcluster fault, as a node annotation (docs/simcluster.md)."""
    cluster.annotate(node, {f"simcluster.dev/fault-{fault}": value})


def managers(node: dict[str, Any]) -> dict[tuple[str, str, str], tuple[str, str]]:
    """The node's managedFields entries: (manager, operation, subresource) -> (time, fields)."""
    return {(entry.get("manager", ""), entry.get("operation", ""), entry.get("subresource", "")):
            (entry.get("time", ""), json.dumps(entry.get("fieldsV1"), sort_keys=True))
            for entry in node["metadata"].get("managedFields") or []}


def writers(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    """Who wrote the node between these two versions: the managers whose managedFields entry is new or changed
    (the API server updates an entry's time and fields on each write of its manager that changes the object)."""
    old, new = managers(before), managers(after)
    return {key[0] for key, value in new.items() if old.get(key) != value}


@contextlib.contextmanager
def node_changes(cluster: Cluster, *names: str) -> Iterator[dict[str, list[dict[str, Any]]]]:
    """Every change of what a rollout writes on these nodes (taints, cordon, the MIG config label, the rollout
    record) while the block runs, in order, by node; each says who wrote it (``by``: the field managers)."""
    changes: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    with contextlib.ExitStack() as stack:
        watches = {name: stack.enter_context(cluster.watch_node(name)) for name in names}
        started = {name: len(watch.events) for name, watch in watches.items()}
        yield changes
        time.sleep(0.5)
    for name, watch in watches.items():
        previous, previous_node = None, None
        for _, node in watch.events[max(0, started[name] - 1):]:
            view = {"taints": node["spec"].get("taints") or [], "unschedulable": bool(node["spec"].get("unschedulable")),
                    "config": (node["metadata"].get("labels") or {}).get(CONFIG),
                    "record": (node["metadata"].get("annotations") or {}).get(RECORD)}
            if previous is not None and view != previous:
                changes[name].append({**view, "by": sorted(writers(previous_node, node))})
            previous, previous_node = view, node


def toolkit_changes(changes: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """The changes the toolkit wrote (its field manager among the writers); the kubelet's, the controller-manager's
    and NVIDIA's operator's writes to the same fields are theirs."""
    return {name: found for name, entries in changes.items() if (found := [c for c in entries if TOOLKIT in c["by"]])}


# -- processes --------------------------------------------------------------------------------------------------

def renewer_pids(holder: str = "") -> list[int]:
    """The lock renewer processes (of one run's holder identity, or all)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "migrollout.rollout.lock" in cmdline and f"--holder {holder}" in cmdline:
            found.append(int(entry.name))
    return found


def wait_exit(process: Any, timeout: float) -> int:
    try:
        return process.wait(timeout)
    except Exception as exc:  # subprocess.TimeoutExpired
        raise AssertionError(f"the run (pid {process.pid}) did not end within {timeout} s") from exc


# -- a flaky API server -------------------------------------------------------------------------------------------

class FlakyProxy:
    """A TCP proxy in front of the API server that can refuse connections for a while, as an API server
    restarting does: the listening socket closes (connections are refused) and open connections are cut."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.port = 0
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        self._open()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _open(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.2)
        self.port = listener.getsockname()[1]
        self._listener = listener

    def _accept_loop(self) -> None:
        while not self._closed:
            listener = self._listener
            if listener is None:
                time.sleep(0.05)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    def _pipe(self, client: socket.socket, upstream: socket.socket) -> None:
        sockets = [client, upstream]
        try:
            while True:
                readable, _, _ = select.select(sockets, [], [], 1.0)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (upstream if sock is client else client).sendall(data)
        except OSError:
            return
        finally:
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def down(self) -> None:
        """Refuse connections and cut the open ones."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            connections, self._connections = self._connections, []
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def up(self) -> None:
        self._open()

    def close(self) -> None:
        self._closed = True
        self.down()

    def kubeconfig(self, source: str, path: Path) -> str:
        """A copy of the kubeconfig ``source`` that goes through this proxy."""
        text = Path(source).read_text()
        server = next(line.split("server:", 1)[1].strip() for line in text.splitlines() if "server:" in line)
        path.write_text(text.replace(server, f"https://127.0.0.1:{self.port}"))
        return str(path)


@pytest.fixture
def flaky_proxy(cluster: Cluster) -> Iterator[FlakyProxy]:
    host = cluster.api.host.split("://", 1)[1]
    address, port = host.rsplit(":", 1)
    proxy = FlakyProxy(address, int(port))
    yield proxy
    proxy.close()
