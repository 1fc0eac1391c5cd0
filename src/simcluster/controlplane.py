"""Start and stop a real Kubernetes control plane on loopback.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the real
programs (see :mod:`simcluster.binaries`). The controller-manager and scheduler
run with their usual controllers, so Deployments recreate evicted pods, the
scheduler honours taints, the disruption controller fills PodDisruptionBudget
status and the node-lifecycle controller taints NotReady nodes.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from migrollout.processes import pid_alive
from simcluster.binaries import Binaries
from simcluster.certs import CertificateAuthority, write_signing_key
from simcluster.credential import ISSUER_USER as CREDENTIAL_ISSUER_USER

ADMIN_USER = "simcluster-admin"
ADMIN_TOKEN_USER = "simcluster-token-admin"


class ClusterError(RuntimeError):
    pass


# Ports for the cluster's listeners come from below the kernel's ephemeral range (32768 and up on Linux): a port
# the kernel hands out for a bind to port 0 is one it also hands to outgoing connections, so between this check
# and the component's own bind a client of another cluster could take it ("address already in use").
LISTEN_PORTS = (20000, 32767)


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on, picked at random below the ephemeral range."""
    for _ in range(200):
        port = random.randint(*LISTEN_PORTS)
        if not port_in_use(port):
            return port
    with socket.socket() as sock:  # a crowded range: let the kernel choose
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def state_dir(explicit: str | None = None) -> Path:
    """Where a cluster keeps its state: ``explicit`` (--state-dir), else $SIMCLUSTER_DIR, else the user's state
    directory's ``simcluster/default``."""
    if explicit:
        return Path(explicit).expanduser().resolve()
    if os.environ.get("SIMCLUSTER_DIR"):
        return Path(os.environ["SIMCLUSTER_DIR"]).expanduser().resolve()
    base = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state"))
    return base / "simcluster" / "default"


@dataclass
class ClusterState:
    directory: str
    api_port: int
    etcd_port: int
    etcd_peer_port: int
    controller_manager_port: int
    scheduler_port: int
    binaries: str
    pids: dict[str, int] = field(default_factory=dict)
    fleet: str = ""
    with_operator: bool = True
    started_at: float = 0.0
    operator: str = "simulated"  # who runs the GPU Operator's controller: "real" (NVIDIA's) or "simulated"
    # What `up` needs to restart a stopped process exactly as it first ran (same ports, data and settings).
    commands: dict[str, list[str]] = field(default_factory=dict)
    fleet_file: str = ""  # the resolved fleet file ("" for the built-in fleet)
    nodes: int | None = None
    nfd: bool = True
    settled_at: float = 0.0  # when `up` first saw the cluster settled; 0 while it never has

    @property
    def path(self) -> Path:
        return Path(self.directory)

    @property
    def kubeconfig(self) -> str:
        return str(self.path / "kubeconfig")

    @property
    def operator_kubeconfig(self) -> str:
        """The least-privileged identity: a ServiceAccount's long-lived token (see simcluster.identities)."""
        return str(self.path / "kubeconfig-operator")

    @property
    def exec_kubeconfig(self) -> str:
        """The same ServiceAccount through an exec credential plugin (simcluster.credential)."""
        return str(self.path / "kubeconfig-exec")

    @property
    def ca_file(self) -> str:
        return str(self.path / "pki" / "ca.crt")

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    def save(self) -> None:
        (self.path / "state.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, directory: Path) -> ClusterState | None:
        file = directory / "state.json"
        if not file.exists():
            return None
        try:
            return cls(**json.loads(file.read_text()))
        except (ValueError, TypeError) as exc:
            raise ClusterError(f"{file} is not a simcluster state file ({exc}); 'simcluster down' removes it, "
                               f"'simcluster up --fresh' starts a new cluster in its place") from None

    def running(self, name: str) -> bool:
        """Whether the process ``name`` started still runs: its pid alive and running the same program (after a
        reboot the pid may belong to anything)."""
        pid = self.pids.get(name)
        if pid is None or not pid_alive(pid):
            return False
        command = self.commands.get(name)
        if not command:
            return True
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return True  # no /proc to ask: trust the pid
        return command[0].encode() in argv[:3]  # an interpreter may come first (python -m ...)

    def alive(self) -> dict[str, bool]:
        return {name: self.running(name) for name in self.pids}


def write_kubeconfig(path: Path, server: str, ca: Path | str, user: str, credentials: dict[str, Any]) -> None:
    """A kubeconfig of one cluster, one user (``credentials``: its kubeconfig ``user`` entry) and one context."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "simcluster", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "simcluster", "context": {"cluster": "simcluster", "user": user}}],
        "current-context": "simcluster",
    }
    # Written whole under a temporary name: a client reading it while `up` rewrites it never sees half a file.
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(yaml.safe_dump(config, sort_keys=False))
    staging.chmod(0o600)
    staging.replace(path)


def _tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class ControlPlane:
    def __init__(self, state: ClusterState, binaries: Binaries):
        self.state = state
        self.binaries = binaries
        self.dir = state.path
        self.pki = self.dir / "pki"
        self.logs = self.dir / "logs"
        self.spawned: dict[str, subprocess.Popen[bytes]] = {}   # the processes this object started, by name

    # -- credentials ---------------------------------------------------------------------------------------

    def write_credentials(self) -> None:
        self.pki.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        ca = CertificateAuthority(self.pki)
        ca.issue_server("kube-apiserver", ["127.0.0.1", "localhost", "10.0.0.1", "kubernetes.default.svc",
                                           "kubernetes.default.svc.cluster.local"])
        write_signing_key(self.pki / "sa.key")
        server = self.state.server
        identities = {
            "kubeconfig": (ADMIN_USER, ["system:masters"]),
            # The controllers act as cluster admins: without per-controller service accounts
            # (no ServiceAccount admission here) the narrow built-in roles do not suffice.
            "controller-manager.kubeconfig": ("system:kube-controller-manager", ["system:masters"]),
            "scheduler.kubeconfig": ("system:kube-scheduler", ["system:masters"]),
        }
        for filename, (user, groups) in identities.items():
            cert, key = ca.issue_client(user, groups)
            write_kubeconfig(self.dir / filename, server, ca.cert_path, user,
                             {"client-certificate": str(cert), "client-key": str(key)})
        # The exec credential plugin's own identity: simcluster.identities lets it request the least-privileged
        # ServiceAccount's tokens, nothing more.
        ca.issue_client(CREDENTIAL_ISSUER_USER, [])
        # A static bearer token, for testing modules' host + api_key connection options.
        tokens = self.pki / "tokens.csv"
        tokens.write_text(f'simcluster-admin-token,{ADMIN_TOKEN_USER},{ADMIN_TOKEN_USER},"system:masters"\n')
        tokens.chmod(0o600)

    # -- processes -----------------------------------------------------------------------------------------

    def spawn(self, name: str, args: list[str], restart_args: list[str] | None = None) -> None:
        """Start ``name`` in a session of its own, its output appended to logs/<name>.log. ``restart_args``: the
        command a later `up` runs again if it stops (default ``args``)."""
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child process
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, cwd=self.dir)
        log.close()
        self.spawned[name] = process
        self.state.pids[name] = process.pid
        self.state.commands[name] = list(restart_args if restart_args is not None else args)
        self.state.save()

    def _alive(self, name: str) -> bool:
        """Whether ``name`` still runs: asked of its process handle when this object started it (exact), else
        of the pid and command line the state recorded (a cluster started by another `up`)."""
        process = self.spawned.get(name)
        if process is not None:
            return process.poll() is None
        return self.state.running(name)

    def fail(self, name: str, what: str) -> ClusterError:
        return ClusterError(f"{name} {what}; last log lines ({self.logs / (name + '.log')}):\n"
                            f"{_tail(self.logs / (name + '.log'))}")

    def _wait_http(self, name: str, url: str, timeout: float, tls: str | None) -> None:
        """Poll ``url`` until 200; ``tls`` is "ca" (verify with the cluster CA), "self-signed" or None."""
        context = None
        if tls == "ca":
            context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        elif tls == "self-signed":
            # The controller-manager and scheduler serve /healthz with certificates they generate themselves.
            context = ssl._create_unverified_context()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._alive(name):
                raise self.fail(name, "exited during start-up")
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError, ssl.SSLError):
                pass
            time.sleep(0.2)
        raise self.fail(name, f"did not become healthy at {url} within {timeout:.0f} s")

    def components(self) -> list[Component]:
        """The control plane's processes in start order, each with its ports and health check."""
        state, pki = self.state, self.pki
        etcd = [
            self.binaries.path("etcd"), "--name=simcluster", f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{state.etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{state.etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{state.etcd_peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{state.etcd_peer_port}",
            f"--initial-cluster=simcluster=http://127.0.0.1:{state.etcd_peer_port}",
            "--listen-metrics-urls=", "--unsafe-no-fsync", "--log-level=warn",
            "--quota-backend-bytes=8589934592", "--auto-compaction-retention=5m",
        ]
        apiserver = [
            self.binaries.path("kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{state.etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={state.api_port}",
            f"--cert-dir={pki}", f"--tls-cert-file={pki / 'kube-apiserver.crt'}",
            f"--tls-private-key-file={pki / 'kube-apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}", f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.key'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            # ServiceAccount admission is off: pods need no token volumes here, and tests can
            # create pods right after their namespace without racing the service-account controller.
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true", "--endpoint-reconciler-type=none", "--profiling=false",
            "--max-requests-inflight=1000", "--max-mutating-requests-inflight=500",
        ]
        common = ["--bind-address=127.0.0.1", "--leader-elect=false", "--kube-api-qps=500",
                  "--kube-api-burst=1000"]
        cm_kubeconfig = self.dir / "controller-manager.kubeconfig"
        controller_manager = [
            self.binaries.path("kube-controller-manager"), f"--kubeconfig={cm_kubeconfig}",
            f"--authentication-kubeconfig={cm_kubeconfig}", f"--authorization-kubeconfig={cm_kubeconfig}",
            f"--secure-port={state.controller_manager_port}", *common,
            # The service-account key makes the token controller fill ServiceAccount token Secrets (the
            # least-privileged identity's kubeconfig carries one).
            f"--root-ca-file={pki / 'ca.crt'}", f"--service-account-private-key-file={pki / 'sa.key'}",
            "--use-service-account-credentials=false",
            # Simulated kubelets renew their leases every minute or two, not every 10 s.
            "--node-monitor-grace-period=300s", "--node-monitor-period=2s",
            "--concurrent-deployment-syncs=10", "--concurrent-replicaset-syncs=10",
            "--concurrent-daemonset-syncs=4", "--concurrent-gc-syncs=40",
            "--cluster-cidr=10.244.0.0/16", "--allocate-node-cidrs=false",
        ]
        sched_kubeconfig = self.dir / "scheduler.kubeconfig"
        scheduler = [
            self.binaries.path("kube-scheduler"), f"--kubeconfig={sched_kubeconfig}",
            f"--authentication-kubeconfig={sched_kubeconfig}", f"--authorization-kubeconfig={sched_kubeconfig}",
            f"--secure-port={state.scheduler_port}", *common,
        ]
        return [
            Component("etcd", etcd, (state.etcd_port, state.etcd_peer_port),
                      f"http://127.0.0.1:{state.etcd_port}/health", None, 60),
            Component("kube-apiserver", apiserver, (state.api_port,), f"{state.server}/readyz", "ca", 120),
            Component("kube-controller-manager", controller_manager, (state.controller_manager_port,),
                      f"https://127.0.0.1:{state.controller_manager_port}/healthz", "self-signed", 90),
            Component("kube-scheduler", scheduler, (state.scheduler_port,),
                      f"https://127.0.0.1:{state.scheduler_port}/healthz", "self-signed", 90),
        ]

    def start(self) -> None:
        etcd, apiserver, *controllers = self.components()
        for component in (etcd, apiserver):  # each needs the one before it
            self.spawn(component.name, component.command)
            component.wait(self)
        for component in controllers:
            self.spawn(component.name, component.command)
        for component in controllers:
            component.wait(self)

    def restart_stopped(self) -> list[str]:
        """Start again, with the commands and ports of their first start, the processes that are not running
        (the data in etcd, the certificates and every other process are kept), then wait until every component
        is healthy; return the names restarted."""
        restarted = []
        for component in self.components():
            if self.state.running(component.name):
                continue
            for port in component.ports:
                if port_in_use(port):
                    raise ClusterError(f"{component.name} is down and its port {port} is taken by another process; "
                                       f"free it, or start a new cluster with 'simcluster up --fresh'")
            self.spawn(component.name, self.state.commands.get(component.name) or component.command)
            restarted.append(component.name)
            # The API server needs etcd; the controllers need the API server: wait for each one restarted.
            component.wait(self)
        for component in self.components():
            component.wait(self)  # a process that kept running may have lost etcd or the API server for a while
        return restarted

    def stop(self) -> list[str]:
        """Stop every process this cluster started (newest first); return the names stopped."""
        stopped = []
        for name, pid in reversed(list(self.state.pids.items())):
            if not self.state.running(name):
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            stopped.append(name)
        return stopped


@dataclass(frozen=True)
class Component:
    """One control-plane process: its command, the ports it listens on and where it reports its health."""

    name: str
    command: list[str]
    ports: tuple[int, ...]
    health: str
    tls: str | None  # "ca", "self-signed" or None (plain HTTP)
    timeout: float

    def wait(self, control_plane: ControlPlane) -> None:
        control_plane._wait_http(self.name, self.health, self.timeout, self.tls)
