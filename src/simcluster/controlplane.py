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
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from migrollout.processes import pid_alive
from simcluster.binaries import Binaries
from simcluster.certs import CertificateAuthority, write_signing_key

ADMIN_USER = "simcluster-admin"
OPERATOR_USER = "mig-operator"  # the non-admin identity; RBAC grants it nothing until bound
OPERATOR_GROUP = "mig-operators"
ADMIN_TOKEN_USER = "simcluster-token-admin"


class ClusterError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
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

    @property
    def path(self) -> Path:
        return Path(self.directory)

    @property
    def kubeconfig(self) -> str:
        return str(self.path / "kubeconfig")

    @property
    def operator_kubeconfig(self) -> str:
        return str(self.path / "kubeconfig-operator")

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
        return cls(**json.loads(file.read_text()))

    def alive(self) -> dict[str, bool]:
        return {name: pid_alive(pid) for name, pid in self.pids.items()}


def _kubeconfig(path: Path, server: str, ca: Path, cert: Path, key: Path, user: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "simcluster", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "simcluster", "context": {"cluster": "simcluster", "user": user}}],
        "current-context": "simcluster",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


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
            "kubeconfig-operator": (OPERATOR_USER, [OPERATOR_GROUP]),
            # The controllers act as cluster admins: without per-controller service accounts
            # (no ServiceAccount admission here) the narrow built-in roles do not suffice.
            "controller-manager.kubeconfig": ("system:kube-controller-manager", ["system:masters"]),
            "scheduler.kubeconfig": ("system:kube-scheduler", ["system:masters"]),
        }
        for filename, (user, groups) in identities.items():
            cert, key = ca.issue_client(user, groups)
            _kubeconfig(self.dir / filename, server, ca.cert_path, cert, key, user)
        # A static bearer token, for testing modules' host + api_key connection options.
        tokens = self.pki / "tokens.csv"
        tokens.write_text(f'simcluster-admin-token,{ADMIN_TOKEN_USER},{ADMIN_TOKEN_USER},"system:masters"\n')
        tokens.chmod(0o600)

    # -- processes -----------------------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child process
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, cwd=self.dir)
        log.close()
        self.state.pids[name] = process.pid
        self.state.save()

    def _fail(self, name: str, what: str) -> ClusterError:
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
            if not pid_alive(self.state.pids[name]):
                raise self._fail(name, "exited during start-up")
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError, ssl.SSLError):
                pass
            time.sleep(0.2)
        raise self._fail(name, f"did not become healthy at {url} within {timeout:.0f} s")

    def start(self) -> None:
        state = self.state
        data = self.dir / "etcd"
        self._spawn("etcd", [
            self.binaries.path("etcd"), "--name=simcluster", f"--data-dir={data}",
            f"--listen-client-urls=http://127.0.0.1:{state.etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{state.etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{state.etcd_peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{state.etcd_peer_port}",
            f"--initial-cluster=simcluster=http://127.0.0.1:{state.etcd_peer_port}",
            "--listen-metrics-urls=", "--unsafe-no-fsync", "--log-level=warn",
            "--quota-backend-bytes=8589934592", "--auto-compaction-retention=5m",
        ])
        self._wait_http("etcd", f"http://127.0.0.1:{state.etcd_port}/health", 60, tls=None)

        pki = self.pki
        self._spawn("kube-apiserver", [
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
        ])
        self._wait_http("kube-apiserver", f"{state.server}/readyz", 120, tls="ca")

        common = ["--bind-address=127.0.0.1", "--leader-elect=false", "--kube-api-qps=500",
                  "--kube-api-burst=1000"]
        cm_kubeconfig = self.dir / "controller-manager.kubeconfig"
        self._spawn("kube-controller-manager", [
            self.binaries.path("kube-controller-manager"), f"--kubeconfig={cm_kubeconfig}",
            f"--authentication-kubeconfig={cm_kubeconfig}", f"--authorization-kubeconfig={cm_kubeconfig}",
            f"--secure-port={state.controller_manager_port}", *common,
            f"--root-ca-file={pki / 'ca.crt'}", f"--service-account-private-key-file={pki / 'sa.key'}",
            "--use-service-account-credentials=false",
            # Simulated kubelets renew their leases every minute or two, not every 10 s.
            "--node-monitor-grace-period=300s", "--node-monitor-period=2s",
            "--concurrent-deployment-syncs=10", "--concurrent-replicaset-syncs=10",
            "--concurrent-daemonset-syncs=4", "--concurrent-gc-syncs=40",
            "--cluster-cidr=10.244.0.0/16", "--allocate-node-cidrs=false",
        ])
        sched_kubeconfig = self.dir / "scheduler.kubeconfig"
        self._spawn("kube-scheduler", [
            self.binaries.path("kube-scheduler"), f"--kubeconfig={sched_kubeconfig}",
            f"--authentication-kubeconfig={sched_kubeconfig}", f"--authorization-kubeconfig={sched_kubeconfig}",
            f"--secure-port={state.scheduler_port}", *common,
        ])
        self._wait_http("kube-controller-manager", f"https://127.0.0.1:{state.controller_manager_port}/healthz",
                        90, tls="self-signed")
        self._wait_http("kube-scheduler", f"https://127.0.0.1:{state.scheduler_port}/healthz", 90, tls="self-signed")

    def stop(self) -> list[str]:
        """Stop every process this cluster started (newest first); return the names stopped."""
        stopped = []
        for name, pid in reversed(list(self.state.pids.items())):
            if not pid_alive(pid):
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
