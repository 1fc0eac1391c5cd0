"""A simulated GPU cluster for tests and benchmarks, in the spirit of controller-runtime's envtest.

    from simcluster.testing import SimCluster

    with SimCluster.start(tmp_path / "cluster", fleet="tests/fleets/small.yaml", operator="simulated") as cluster:
        cluster.api.list("/api/v1/nodes")                      # a migrollout KubeClient, as the admin
        cluster.kubectl("get", "nodes", kubeconfig=cluster.operator_kubeconfig, check=False)
        subprocess.run(["ansible-playbook", ...], env=cluster.env(KUBECONFIG=cluster.exec_kubeconfig))

``start`` runs ``simcluster up`` (so the cluster is exactly what the command line gives: real control plane,
simulated kubelets and NVIDIA stack, its identities) and returns once the cluster is ready: every node Ready
and, with an operator, the ClusterPolicy ready and every GPU node advertising its GPUs (``up`` waits for that),
every process running and the API server ready (checked here, also when attaching). ``stop`` (or leaving the
``with`` block) runs ``simcluster down``. Failures raise :class:`SimClusterError` with what failed and where the
logs are.

Identities (``simcluster.identities``): ``kubeconfig`` is the admin (client certificate);
``operator_kubeconfig`` the least-privileged ServiceAccount (:data:`OPERATOR_USER`, a bearer token), which RBAC
grants nothing until ``rbac/bind-example.yaml`` binds it; ``exec_kubeconfig`` the same ServiceAccount through
an exec credential plugin whose tokens expire (``exec_kubeconfig_for`` writes one with another lifetime).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from migrollout import kube
from migrollout.kube import Connection, KubeClient, KubeError
from simcluster import credential, identities
from simcluster.controlplane import ClusterState

SIMCLUSTER = [sys.executable, "-m", "simcluster.cli"]
OPERATOR_USER = identities.USERNAME  # who the API server sees behind operator_kubeconfig and exec_kubeconfig
OPERATOR_NAMESPACE = identities.NAMESPACE
OPERATOR_SERVICE_ACCOUNT = identities.SERVICE_ACCOUNT
SELF_SUBJECT_REVIEW = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
# The operator's default: what `simcluster up` chooses without a flag ($SIMCLUSTER_OPERATOR, else NVIDIA's).
DEFAULT = "default"

_PLURALS = {"Pod": "pods", "Deployment": "deployments", "DaemonSet": "daemonsets", "Job": "jobs",
            "PodDisruptionBudget": "poddisruptionbudgets", "ConfigMap": "configmaps", "Secret": "secrets",
            "StatefulSet": "statefulsets", "ReplicaSet": "replicasets", "Namespace": "namespaces",
            "ServiceAccount": "serviceaccounts", "ClusterRole": "clusterroles", "Role": "roles",
            "ClusterRoleBinding": "clusterrolebindings", "RoleBinding": "rolebindings", "Lease": "leases"}


class SimClusterError(RuntimeError):
    """The cluster could not be started, reached or stopped; the message says which part and where its logs are."""


def up_arguments(fleet: str | Path | None = None, *, operator: str | None = DEFAULT, install_operator: bool = True,
                 nodes: int | None = None, nfd: bool = True, port: int = 0, timeout: float | None = None,
                 fresh: bool = False) -> list[str]:
    """The ``simcluster up`` options for these settings. ``operator``: "real" (NVIDIA's chart and controller),
    "simulated", None (no operator installed: ``--without-operator``) or DEFAULT; ``install_operator=False``
    with "real" or "simulated" picks who runs a chart installed later without installing one now."""
    args = ["--port", str(port)]
    if fleet is not None:
        args += ["--fleet", str(fleet)]
    if operator == "real":
        args.append("--real-operator")
    elif operator == "simulated":
        args.append("--simulated-operator")
    elif operator not in (None, DEFAULT):
        raise ValueError(f"operator={operator!r}: say 'real', 'simulated' or None")
    if operator is None or not install_operator:
        args.append("--without-operator")
    if nodes:
        args += ["--nodes", str(nodes)]
    if not nfd:
        args.append("--without-nfd")
    if timeout is not None:
        args += ["--timeout", str(timeout)]
    if fresh:
        args.append("--fresh")
    return args


class SimCluster:
    """A running simulated cluster: its kubeconfigs, an admin API client, an environment for child processes."""

    def __init__(self, state_dir: str | Path):
        """Attach to the cluster already up in ``state_dir`` (checking that it is ready); see :meth:`start`."""
        self.state_dir = Path(state_dir).resolve()
        state = ClusterState.load(self.state_dir)
        if state is None:
            raise SimClusterError(f"no simulated cluster in {self.state_dir} (start one with SimCluster.start or "
                                  f"'simcluster --state-dir {self.state_dir} up')")
        self.state = state
        self.api = self.client(self.kubeconfig, pool_size=8)
        self._check_ready()

    # -- lifecycle ---------------------------------------------------------------------------------------------

    @classmethod
    def start(cls, state_dir: str | Path, fleet: str | Path | None = None, *, operator: str | None = DEFAULT,
              install_operator: bool = True, nodes: int | None = None, nfd: bool = True, port: int = 0,
              timeout: float | None = None, args: Sequence[str] = ()) -> Self:
        """Start a cluster in ``state_dir`` (``simcluster up``; a cluster already there is kept and restarted
        where it stopped) and return it once ready. ``args``: more ``simcluster up`` options."""
        command = [*SIMCLUSTER, "--state-dir", str(state_dir), "up",
                   *up_arguments(fleet, operator=operator, install_operator=install_operator, nodes=nodes, nfd=nfd,
                                 port=port, timeout=timeout), *args]
        _run_simcluster(command, state_dir, "start")
        return cls(state_dir)

    @classmethod
    def attach(cls, state_dir: str | Path) -> Self:
        """The cluster already running in ``state_dir`` (e.g. kept between test runs)."""
        return cls(state_dir)

    def restart(self, *args: str) -> str:
        """``simcluster up`` again: restarts what stopped, keeps the state; returns its output."""
        output = _run_simcluster([*SIMCLUSTER, "--state-dir", str(self.state_dir), "up", *args], self.state_dir,
                                 "restart")
        self.state = ClusterState.load(self.state_dir) or self.state
        self.api = self.client(self.kubeconfig, pool_size=8)  # --fresh makes another CA and port
        self._check_ready()
        return output

    def stop(self) -> None:
        """Stop every process of the cluster and remove its state (``simcluster down``)."""
        result = subprocess.run([*SIMCLUSTER, "--state-dir", str(self.state_dir), "down"], capture_output=True,
                                text=True)
        if result.returncode != 0:
            raise SimClusterError(f"simcluster down in {self.state_dir} failed: "
                                  f"{result.stderr.strip() or result.stdout.strip()}")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def _check_ready(self) -> None:
        stopped = [name for name, running in self.state.alive().items() if not running]
        if stopped:
            raise SimClusterError(f"the cluster in {self.state_dir} is degraded: {', '.join(stopped)} not running "
                                  f"('simcluster up' restarts them; logs in {self.state_dir / 'logs'})")
        try:
            ready = self.api.request("GET", "/readyz", timeout=10, what="check the API server's readiness")
        except KubeError as exc:
            raise SimClusterError(f"the API server of {self.state_dir} is not ready: {exc} "
                                  f"(log: {self.state_dir / 'logs' / 'kube-apiserver.log'})") from None
        if ready != "ok":
            raise SimClusterError(f"the API server of {self.state_dir} is not ready: {ready!r}")

    # -- where things are ----------------------------------------------------------------------------------------

    @property
    def kubeconfig(self) -> str:
        """The admin (client certificate, group system:masters)."""
        return self.state.kubeconfig

    @property
    def operator_kubeconfig(self) -> str:
        """The least-privileged identity: the ServiceAccount's long-lived bearer token."""
        return self.state.operator_kubeconfig

    @property
    def exec_kubeconfig(self) -> str:
        """The same ServiceAccount through the exec credential plugin (tokens of credential.LIFETIME_S)."""
        return self.state.exec_kubeconfig

    def exec_kubeconfig_for(self, path: str | Path, lifetime_s: int) -> str:
        """An exec-plugin kubeconfig at ``path`` whose credentials expire (and are revoked) after ``lifetime_s``."""
        return str(identities.write_exec_kubeconfig(self.state, Path(path), lifetime_s))

    def credentials_handed_out(self) -> list[dict[str, Any]]:
        """Every credential the exec plugin handed out so far, oldest first: ``event`` "issued" (a new token) or
        "reused", the client's pid, the token's Secret and JWT id, its expiry and lifetime."""
        return [entry for entry in credential.read_log(self.state_dir) if entry["event"] in ("issued", "reused")]

    def credentials_revoked(self) -> list[dict[str, Any]]:
        """Every revocation so far: when, the Secrets deleted, ``by`` the plugin or the simulator."""
        return credential.read_log(self.state_dir, "revoked")

    @property
    def server(self) -> str:
        return self.state.server

    @property
    def ca_file(self) -> str:
        return self.state.ca_file

    @property
    def bin_dir(self) -> str:
        """kubectl, helm and the control plane's binaries."""
        return self.state.binaries

    # -- using it ---------------------------------------------------------------------------------------------

    def client(self, kubeconfig: str | None = None, **options: Any) -> KubeClient:
        """A migrollout client with one of the cluster's kubeconfigs (default: the admin's)."""
        return KubeClient.connect(Connection(kubeconfig=kubeconfig or self.kubeconfig), **options)

    def whoami(self, kubeconfig: str) -> dict[str, Any]:
        """Who the API server sees behind a kubeconfig (a SelfSubjectReview's userInfo)."""
        review = self.client(kubeconfig).create(SELF_SUBJECT_REVIEW, {"apiVersion": "authentication.k8s.io/v1",
                                                                      "kind": "SelfSubjectReview"},
                                                what=f"ask who {kubeconfig} is")
        return (review.get("status") or {}).get("userInfo") or {}

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for child processes (kubectl, helm, ansible): the admin's KUBECONFIG, PATH with the
        cluster's binaries and this interpreter's scripts, SIMCLUSTER_DIR; ``extra`` on top."""
        env = dict(os.environ)
        env["KUBECONFIG"] = self.kubeconfig
        env["SIMCLUSTER_DIR"] = str(self.state_dir)
        env["PATH"] = f"{self.bin_dir}:{Path(sys.executable).parent}:{env.get('PATH', '')}"
        env.update(extra)
        return env

    def kubectl(self, *args: str, check: bool = True, kubeconfig: str | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the cluster's kubectl (as the admin unless ``kubeconfig`` says otherwise)."""
        env = self.env(KUBECONFIG=kubeconfig or self.kubeconfig)
        result = subprocess.run([f"{self.bin_dir}/kubectl", *args], capture_output=True, text=True, env=env,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise SimClusterError(f"kubectl {' '.join(args)} failed (exit {result.returncode}): "
                                  f"{result.stderr.strip()}")
        return result

    def namespace(self) -> str:
        """A new namespace with a unique name."""
        name = f"t-{uuid.uuid4().hex[:8]}"
        self.api.create("/api/v1/namespaces", {"metadata": {"name": name}})
        return name

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create one object (of a kind in _PLURALS) as the admin."""
        kind = manifest["kind"]
        if kind not in _PLURALS:
            raise ValueError(f"apply: kind {kind} unknown here; add its plural to simcluster.testing._PLURALS")
        path = kube.namespaced_path(manifest["apiVersion"], _PLURALS[kind], manifest["metadata"].get("namespace"))
        return self.api.create(path, manifest)

    def pods(self, namespace: str | None = None, **query: str) -> list[dict[str, Any]]:
        items, _ = self.api.list(kube.pods_path(namespace), **query)
        return items

    def wait(self, predicate: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
        """Poll ``predicate`` (API errors count as not yet) until it returns something true; return that."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            with contextlib.suppress(KubeError):
                last = predicate()
                if last:
                    return last
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def _run_simcluster(command: list[str], state_dir: str | Path, action: str) -> str:
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        message = result.stderr.strip() or result.stdout.strip()
        raise SimClusterError(f"simcluster could not {action} the cluster in {state_dir} "
                              f"(exit {result.returncode}, {time.monotonic() - started:.0f} s): {message}")
    print(f"simcluster {' '.join(command[len(SIMCLUSTER):])}: {time.monotonic() - started:.1f} s", file=sys.stderr)
    return result.stdout


# The command-line style of the test suites and benchmarks: `up` options as arguments.

def start_cluster(state_dir: str | Path, fleet: str | Path | None = None, *args: str) -> SimCluster:
    """Start a cluster with ``simcluster up --port 0 [--fleet FLEET] ARGS...``."""
    return SimCluster.start(state_dir, fleet, args=args)


def stop_cluster(cluster: SimCluster) -> None:
    cluster.stop()


Cluster = SimCluster  # the name the older helpers gave it: bench/ switches over by its import line alone


__all__ = ["DEFAULT", "OPERATOR_USER", "Cluster", "SimCluster", "SimClusterError", "start_cluster",
           "stop_cluster", "up_arguments"]
