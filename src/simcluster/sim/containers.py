"""The simulated kubelet's container runtime: real processes for the pods whose images it can run.

A pod runs for real when ``images.classify`` says every container is runnable; the kubelet
then hands it here instead of simulating it. Per pod, like a pod sandbox: a network namespace
(``netns``) with the API server forwarded to the ``kubernetes`` Service address, the pod's
volumes (``volumes``), and one launcher process per running container (``sandbox``).

The kubelet's behaviour, container by container: init containers in order, then the
containers; restarts by the pod's ``restartPolicy`` with the kubelet's crash-loop back-off
(first restart at once, then 10 s doubling to 5 min by default; ``simulation.restart_backoff_s``
and ``restart_backoff_max_s`` in the fleet file); ``restartCount``, ``lastState`` and the
``CrashLoopBackOff`` waiting reason; startup, readiness and liveness probes (httpGet and
tcpSocket, into the pod's network namespace); on delete SIGTERM, the grace period, SIGKILL.
Every run's output goes to ``<state>/kubelet/logs/<namespace>_<pod>_<uid>/<container>/<restart>.log``
(as the kubelet's /var/log/pods), which ``simcluster logs`` prints.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrollout.kube import KubeClient
from migrollout.timestamps import time_text
from simcluster.sim import images, node_os
from simcluster.sim.images import Image, Runnable
from simcluster.sim.netns import NamespaceError, PodNetwork, ServiceForwarder
from simcluster.sim.pod_env import ConfigError, container_env, expand
from simcluster.sim.sandbox import EXIT_CANNOT_CREATE, EXIT_CANNOT_EXEC, EXIT_NOT_FOUND
from simcluster.sim.volumes import Mount, PodVolumes

log = logging.getLogger("simcluster.containers")

TICK_S = 0.25
VOLUME_SYNC_S = 60.0
SHUTDOWN_GRACE_S = 5.0


@dataclass(frozen=True)
class RuntimeConfig:
    directory: Path                      # <cluster state>/kubelet
    nodes_directory: Path                # <cluster state>/nodes: each node's host filesystem
    api_server: tuple[str, int]          # where the API server listens (in the daemon's network namespace)
    service: tuple[str, int]             # the kubernetes Service's address and port, as pods see it
    backoff_initial_s: float = 10.0
    backoff_max_s: float = 300.0


# -- pure rules ---------------------------------------------------------------------------------------------


@dataclass
class Backoff:
    """The kubelet's crash-loop back-off for one container: the first restart at once, then
    ``initial`` doubling up to ``maximum``; forgotten once the container ran for 2 x maximum."""

    initial: float
    maximum: float
    delay: float | None = None

    def wait_after_exit(self, ran_for: float) -> float:
        if self.delay is None or ran_for >= 2 * self.maximum:
            self.delay = self.initial
            return 0.0
        wait = self.delay
        self.delay = min(self.delay * 2, self.maximum)
        return wait


def restarts(policy: str, exit_code: int) -> bool:
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


def exit_reason(exit_code: int) -> str:
    if exit_code == 0:
        return "Completed"
    if exit_code in (EXIT_CANNOT_CREATE, EXIT_CANNOT_EXEC, EXIT_NOT_FOUND):
        return "StartError"
    return "Error"


@dataclass
class ProbeState:
    """Consecutive results of one probe, by the kubelet's thresholds."""

    kind: str                 # startup, readiness, liveness
    spec: dict[str, Any]
    next_at: float
    passing: bool
    successes: int = 0
    failures: int = 0
    last_error: str = ""

    @classmethod
    def start(cls, kind: str, spec: dict[str, Any], now: float) -> ProbeState:
        # Readiness and startup begin failing (not ready, not started); liveness begins passing.
        return cls(kind, spec, now + float(spec.get("initialDelaySeconds", 0)), passing=kind == "liveness")

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds", 10))

    def record(self, ok: bool, now: float, error: str = "") -> bool:
        """Count one result; True when the probe's verdict changed."""
        self.next_at = now + self.period
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            flips = not self.passing and self.successes >= int(self.spec.get("successThreshold", 1))
        else:
            self.successes, self.failures, self.last_error = 0, self.failures + 1, error
            flips = self.passing and self.failures >= int(self.spec.get("failureThreshold", 3))
            if self.kind == "startup" and self.failures >= int(self.spec.get("failureThreshold", 3)):
                flips = True  # a startup probe that never passed still ends in a kill
        if flips:
            self.passing = ok
        return flips


def _port(value: Any, container: dict[str, Any]) -> int:
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    for port in container.get("ports") or []:
        if port.get("name") == value:
            return int(port["containerPort"])
    raise ValueError(f"no port named {value!r}")


def run_probe(network: PodNetwork, pod_ip: str, spec: dict[str, Any], container: dict[str, Any]) -> tuple[bool, str]:
    """One probe, from inside the pod's network namespace; (passed, why not)."""
    timeout = float(spec.get("timeoutSeconds", 1))
    try:
        if "httpGet" in spec:
            get = spec["httpGet"]
            host, port, path = get.get("host") or pod_ip, _port(get.get("port"), container), get.get("path", "/")
            headers = {"User-Agent": "kube-probe/1.34", "Accept": "*/*"}
            headers.update({h["name"]: h["value"] for h in get.get("httpHeaders") or []})

            def http_get() -> tuple[bool, str]:
                if get.get("scheme", "HTTP").upper() == "HTTPS":
                    connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                        host, port, timeout=timeout, context=ssl._create_unverified_context())
                else:
                    connection = http.client.HTTPConnection(host, port, timeout=timeout)
                try:
                    connection.request("GET", path, headers=headers)
                    response = connection.getresponse()
                    response.read(10240)
                finally:
                    connection.close()
                ok = 200 <= response.status < 400
                return ok, "" if ok else f"HTTP probe failed with statuscode: {response.status}"

            return network.call(http_get)
        if "tcpSocket" in spec:
            tcp = spec["tcpSocket"]
            host, port = tcp.get("host") or pod_ip, _port(tcp.get("port"), container)

            def connect() -> tuple[bool, str]:
                with socket.create_connection((host, port), timeout=timeout):
                    return True, ""

            return network.call(connect)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return False, f"probe failed: {exc}"
    # exec and grpc probes would need to enter the container; they count as passing (see docs/simcluster.md).
    return True, ""


# -- one container ---------------------------------------------------------------------------------------------


@dataclass
class Termination:
    exit_code: int
    reason: str
    started_at: str
    finished_at: str
    container_id: str
    message: str = ""

    def as_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"exitCode": self.exit_code, "reason": self.reason, "startedAt": self.started_at,
                                 "finishedAt": self.finished_at, "containerID": self.container_id}
        if self.message:
            state["message"] = self.message
        return state


@dataclass
class ContainerRun:
    spec: dict[str, Any]
    image: Image
    init: bool
    backoff: Backoff
    restart_count: int = 0
    starts: int = 0
    process: subprocess.Popen[bytes] | None = None
    container_id: str = ""
    started_at: str = ""
    started_mono: float = 0.0
    exit: Termination | None = None          # how the latest run ended (while not running)
    previous: Termination | None = None      # how the run before the current one ended
    restart_at: float = 0.0
    restart_wait: float = 0.0
    error: tuple[str, str] | None = None     # waiting reason and message when it cannot start
    probes: list[ProbeState] = field(default_factory=list)
    kill_at: float | None = None
    stopping: bool = False

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def running(self) -> bool:
        return self.process is not None

    def probe(self, kind: str) -> ProbeState | None:
        return next((p for p in self.probes if p.kind == kind), None)

    @property
    def started(self) -> bool:
        startup = self.probe("startup")
        return self.running and (startup is None or startup.passing)

    @property
    def ready(self) -> bool:
        readiness = self.probe("readiness")
        return self.started and not self.init and (readiness is None or readiness.passing)

    def signal(self, signum: int) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)


def _terminated(exit: Termination) -> dict[str, Any]:
    return {"terminated": exit.as_state()}


class PodSandbox:
    """Everything the runtime holds for one pod: network, volumes, containers."""

    def __init__(self, runtime: ContainerRuntime, pod: dict[str, Any], runnable: Runnable, pod_ip: str,
                 host_ip: str):
        self.runtime = runtime
        self.pod = pod
        meta = pod["metadata"]
        self.uid, self.namespace, self.name = meta["uid"], meta["namespace"], meta["name"]
        self.node = pod["spec"]["nodeName"]
        self.pod_ip, self.host_ip = pod_ip, host_ip
        self.policy = pod["spec"].get("restartPolicy") or "Always"
        self.directory = runtime.config.directory / "pods" / self.uid
        self.log_directory = runtime.config.directory / "logs" / f"{self.namespace}_{self.name}_{self.uid}"
        config = runtime.config
        self.volumes = PodVolumes(runtime.api, pod, self.directory / "volumes",
                                  lambda: node_os.host_root(config.nodes_directory, self.node))
        backoff = (config.backoff_initial_s, config.backoff_max_s)
        self.init = [ContainerRun(c, runnable.images[c["name"]], True, Backoff(*backoff))
                     for c in pod["spec"].get("initContainers") or []]
        self.containers = [ContainerRun(c, runnable.images[c["name"]], False, Backoff(*backoff))
                           for c in pod["spec"].get("containers") or []]
        self.network: PodNetwork | None = None
        self.forwarder: ServiceForwarder | None = None
        self.volumes_ready = False
        self.sandbox_error: tuple[str, str] | None = None
        self.init_failed = False
        self.terminating = False
        self.start_time = ""
        self.conditions: dict[str, tuple[str, str, str]] = {}  # type -> (status, reason, since)
        self.lock = threading.RLock()
        self.last_volume_sync = time.monotonic()

    # -- sandbox -------------------------------------------------------------------------------------------

    def _ensure_sandbox(self) -> bool:
        if self.network is None:
            try:
                addresses = [self.pod_ip] + ([self.runtime.config.service[0]]
                                             if self.runtime.config.service[0] != self.pod_ip else [])
                self.network = PodNetwork.create(addresses)
                listener = self.network.listen(*self.runtime.config.service)
                self.forwarder = ServiceForwarder(listener, self.runtime.config.api_server, f"{self.namespace}/{self.name}")
            except (NamespaceError, OSError) as exc:
                if self.network is not None:
                    self.network.close()
                    self.network = None
                self.sandbox_error = ("CreatePodSandboxError", str(exc))
                return False
            self.start_time = time_text()
        if not self.volumes_ready:
            try:
                self.volumes.prepare()
            except ConfigError as exc:
                self.sandbox_error = ("ContainerCreating", f"MountVolume.SetUp failed: {exc}")
                return False
            self.volumes_ready = True
        self.sandbox_error = None
        return True

    # -- the kubelet's sync loop for this pod ----------------------------------------------------------------------

    def sync(self) -> float | None:
        """Start what should run now; return seconds until something is due (None: nothing is)."""
        with self.lock:
            if self.terminating:
                return None
            if self.start_time and self.phase() in ("Succeeded", "Failed"):
                self._release_network()  # as the kubelet tears down a finished pod's sandbox
                return None
            if not self._ensure_sandbox():
                return 2.0
            wake: float | None = None
            now = time.monotonic()
            for run in self.init:
                if run.running:
                    return None
                if run.exit is not None and run.exit.exit_code == 0:
                    continue
                if run.exit is not None and self.policy == "Never":
                    self.init_failed = True
                    return None
                if run.exit is not None and now < run.restart_at:
                    return run.restart_at - now
                return self._start(run)
            for run in self.containers:
                if run.running:
                    continue
                if run.exit is not None:
                    if not restarts(self.policy, run.exit.exit_code):
                        continue
                    if now < run.restart_at:
                        wake = _earliest(wake, run.restart_at - now)
                        continue
                wake = _earliest(wake, self._start(run))
            return wake

    def _start(self, run: ContainerRun) -> float | None:
        try:
            spec_file = self._write_spec(run)
        except ConfigError as exc:
            run.error = ("CreateContainerConfigError", str(exc))
            return 2.0
        except images.SourcesUnavailable as exc:
            run.error = ("CreateContainerError", str(exc))
            return 5.0
        if run.starts > 0:
            run.restart_count += 1
            run.previous = run.exit
        log_file = self.log_directory / run.name / f"{run.restart_count}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        assert self.network is not None
        with open(log_file, "ab") as output:
            run.process = subprocess.Popen(
                [sys.executable, "-m", "simcluster.sim.sandbox", str(spec_file)],
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                pass_fds=(self.network.fd, self.runtime.lifeline), cwd=self.directory)
        run.starts += 1
        run.error = None
        run.exit = None
        run.stopping = False
        run.kill_at = None
        run.container_id = f"simcluster://{self.uid[:8]}-{run.name}-{run.restart_count}"
        run.started_at = time_text()
        run.started_mono = time.monotonic()
        run.probes = [ProbeState.start(kind, run.spec[key], run.started_mono)
                      for kind, key in (("startup", "startupProbe"), ("readiness", "readinessProbe"),
                                        ("liveness", "livenessProbe")) if run.spec.get(key) and not run.init]
        log.info("pod %s/%s: started container %s (restart %d, pid %d)", self.namespace, self.name, run.name,
                 run.restart_count, run.process.pid)
        threading.Thread(target=self._wait, args=(run, run.process), name=f"wait-{self.name}-{run.name}",
                         daemon=True).start()
        return None

    def _write_spec(self, run: ContainerRun) -> Path:
        image, container = run.image, run.spec
        sources = self.runtime.sources()
        env = container_env(self.runtime.api, self.pod, container, self._base_env(image))
        process = [expand(part, env) for part in images.argv(container, image)]
        executable = image.executables[images.argv(container, image)[0]]
        security = {**(self.pod["spec"].get("securityContext") or {}), **(container.get("securityContext") or {})}
        _, image_uid, image_gid, image_home = image.user
        uid = int(security.get("runAsUser", image_uid))
        gid = int(security.get("runAsGroup", image_gid if uid == image_uid else 0))
        home = image_home if uid == image_uid else ("/root" if uid == 0 else "/")
        env.setdefault("HOME", home)
        users, groups = images.passwd(image)
        binds: list[dict[str, Any]] = [{"source": source, "target": target, "readonly": True}
                                       for source, target in images.image_files(image, sources)]
        mounts: list[Mount] = self.volumes.mounts(container)
        binds += [{"source": m.source, "target": m.target, "readonly": m.readonly} for m in mounts]
        directory = self.directory / "containers" / run.name
        for part in ("root", "scratch"):
            (directory / part).mkdir(parents=True, exist_ok=True)
        spec = {
            "netns_fd": self.network.fd if self.network else -1, "lifeline_fd": self.runtime.lifeline,
            "hostname": self.name, "root": str(directory / "root"), "scratch": str(directory / "scratch"),
            "uid": uid, "gid": gid, "home": home if home not in ("/", "/root") else "",
            "files": {
                "/etc/passwd": users, "/etc/group": groups, "/etc/hostname": self.name + "\n",
                "/etc/hosts": f"127.0.0.1\tlocalhost\n::1\tlocalhost\n{self.pod_ip}\t{self.name}\n",
                "/etc/resolv.conf": "# simcluster: no cluster DNS; the API server is at KUBERNETES_SERVICE_HOST\n",
                "/etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
            },
            "copies": [["/etc/ld.so.cache", "/etc/ld.so.cache"]],
            "binds": binds,
            "process": {"path": executable, "argv": process, "env": env,
                        "cwd": container.get("workingDir") or "/", "groups": [gid]},
        }
        file = directory / "spec.json"
        file.write_text(json.dumps(spec, indent=1))
        return file

    def _base_env(self, image: Image) -> dict[str, str]:
        host, port = self.runtime.config.service
        env = dict(image.env)
        env.update({
            "HOSTNAME": self.name,
            "KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": str(port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(port), "KUBERNETES_PORT": f"tcp://{host}:{port}",
            f"KUBERNETES_PORT_{port}_TCP": f"tcp://{host}:{port}", f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp",
            f"KUBERNETES_PORT_{port}_TCP_PORT": str(port), f"KUBERNETES_PORT_{port}_TCP_ADDR": host,
        })
        return env

    def _wait(self, run: ContainerRun, process: subprocess.Popen[bytes]) -> None:
        code = process.wait()
        exit_code = 128 - code if code < 0 else code  # killed by a signal: 128 + signal, as shells report
        with self.lock:
            now = time.monotonic()
            message = ""
            if exit_reason(exit_code) == "StartError":
                message = _last_line(self.log_directory / run.name / f"{run.restart_count}.log")
            run.exit = Termination(exit_code, exit_reason(exit_code), run.started_at, time_text(), run.container_id,
                                   message)
            run.process = None
            run.kill_at = None
            will_restart = not self.terminating and (
                (run.init and exit_code != 0 and self.policy != "Never")
                or (not run.init and restarts(self.policy, exit_code)))
            if will_restart:
                run.restart_wait = run.backoff.wait_after_exit(now - run.started_mono)
                run.restart_at = now + run.restart_wait
        log.info("pod %s/%s: container %s exited with %d", self.namespace, self.name, run.name, exit_code)
        self.runtime.changed(self.node)

    # -- stopping --------------------------------------------------------------------------------------------

    def stop(self, grace: float) -> bool:
        """Stop every container (SIGTERM, then SIGKILL after ``grace``); True once none runs."""
        with self.lock:
            self.terminating = True
            now = time.monotonic()
            for run in [*self.init, *self.containers]:
                if run.running and not run.stopping:
                    run.stopping = True
                    run.kill_at = now + grace
                    run.signal(signal.SIGTERM)
            return not any(run.running for run in [*self.init, *self.containers])

    def kill(self) -> None:
        with self.lock:
            for run in [*self.init, *self.containers]:
                run.signal(signal.SIGKILL)

    def _release_network(self) -> None:
        if self.forwarder is not None:
            self.forwarder.close()
            self.forwarder = None
        if self.network is not None:
            self.network.close()
            self.network = None

    def release(self) -> None:
        """Give back the network and the volumes (every container has stopped)."""
        self._release_network()
        self.volumes.remove()
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- what the kubelet reports ----------------------------------------------------------------------------

    def _condition(self, kind: str, ok: bool, reason: str = "") -> dict[str, Any]:
        status = "True" if ok else "False"
        since = self.conditions.get(kind)
        if since is None or since[0] != status or since[1] != reason:
            since = (status, reason, time_text())
            self.conditions[kind] = since
        # None removes a reason an earlier status patch set (strategic merge of the condition by type).
        return {"type": kind, "status": status, "lastTransitionTime": since[2], "lastProbeTime": None,
                "reason": reason or None}

    def _container_status(self, run: ContainerRun, initialized: bool) -> dict[str, Any]:
        status: dict[str, Any] = {
            "name": run.name, "image": run.spec.get("image", ""), "imageID": run.spec.get("image", ""),
            "ready": run.ready if not run.init else bool(run.exit and run.exit.exit_code == 0),
            "restartCount": run.restart_count, "started": run.started, "lastState": {},
        }
        if run.container_id:
            status["containerID"] = run.container_id
        will_restart = run.exit is not None and not self.terminating and (
            (run.init and run.exit.exit_code != 0 and self.policy != "Never")
            or (not run.init and restarts(self.policy, run.exit.exit_code)))
        if run.running:
            status["state"] = {"running": {"startedAt": run.started_at}}
            if run.previous:
                status["lastState"] = _terminated(run.previous)
        elif run.error is not None:
            status["state"] = {"waiting": {"reason": run.error[0], "message": run.error[1]}}
            if run.exit:
                status["lastState"] = _terminated(run.exit)
        elif run.exit is not None and will_restart:
            message = (f"back-off {run.restart_wait:g}s restarting failed container={run.name} "
                       f"pod={self.name}_{self.namespace}({self.uid})")
            status["state"] = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
            status["lastState"] = _terminated(run.exit)
        elif run.exit is not None:
            status["state"] = _terminated(run.exit)
            if run.previous:
                status["lastState"] = _terminated(run.previous)
        elif self.sandbox_error is not None:
            status["state"] = {"waiting": {"reason": self.sandbox_error[0], "message": self.sandbox_error[1]}}
        else:
            status["state"] = {"waiting": {"reason": "ContainerCreating" if initialized else "PodInitializing"}}
        return status

    def phase(self) -> str:
        if self.init_failed:
            return "Failed"
        if not all(run.exit is not None and run.exit.exit_code == 0 for run in self.init):
            return "Pending"
        if any(run.starts == 0 for run in self.containers):
            return "Pending"
        finished = [run for run in self.containers if not run.running and run.exit is not None
                    and (self.terminating or not restarts(self.policy, run.exit.exit_code))]
        if len(finished) == len(self.containers):
            return "Succeeded" if all(run.exit and run.exit.exit_code == 0 for run in finished) else "Failed"
        return "Running"

    def status(self) -> dict[str, Any]:
        with self.lock:
            initialized = all(run.exit is not None and run.exit.exit_code == 0 for run in self.init)
            phase = self.phase()
            ready = phase == "Running" and all(run.ready for run in self.containers)
            done_reason = "PodCompleted" if phase in ("Succeeded", "Failed") else ""
            conditions = [
                self._condition("PodReadyToStartContainers", self.network is not None),
                self._condition("Initialized", initialized, "" if initialized else "ContainersNotInitialized"),
                self._condition("ContainersReady", ready, "" if ready else done_reason or "ContainersNotReady"),
                self._condition("Ready", ready, "" if ready else done_reason or "ContainersNotReady"),
            ]
            status: dict[str, Any] = {
                "phase": phase, "conditions": conditions, "hostIP": self.host_ip, "hostIPs": [{"ip": self.host_ip}],
                "containerStatuses": [self._container_status(run, initialized) for run in self.containers],
            }
            if self.init:
                status["initContainerStatuses"] = [self._container_status(run, True) for run in self.init]
            if self.start_time:
                status["podIP"] = self.pod_ip
                status["podIPs"] = [{"ip": self.pod_ip}]
                status["startTime"] = self.start_time
            return status


def _earliest(current: float | None, candidate: float | None) -> float | None:
    if candidate is None:
        return current
    return candidate if current is None else min(current, candidate)


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][:1024] if lines else ""


# -- the runtime -------------------------------------------------------------------------------------------------


class ContainerRuntime:
    """The pods that run for real, across all simulated nodes."""

    def __init__(self, api: KubeClient, config: RuntimeConfig, sources: Callable[[], images.Sources],
                 changed: Callable[[str], None]):
        self.api = api
        self.config = config
        self.sources = sources
        self.changed = changed
        self.pods: dict[str, PodSandbox] = {}
        self.verdicts: dict[str, Runnable] = {}
        self.lock = threading.Lock()
        # The lifeline: launchers hold the read end; when this process dies, the kernel closes the
        # write end and every launcher kills its container.
        self.lifeline, self._lifeline_writer = os.pipe()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._tick, name="container-runtime", daemon=True)
        self.thread.start()

    # -- which pods ------------------------------------------------------------------------------------------

    def runnable(self, pod: dict[str, Any]) -> bool:
        uid = pod["metadata"]["uid"]
        verdict = self.verdicts.get(uid)
        if verdict is None:
            verdict = self.verdicts[uid] = images.classify(pod)
            if verdict.real:
                log.info("pod %s/%s runs for real", pod["metadata"]["namespace"], pod["metadata"]["name"])
        return verdict.real

    def sandbox(self, uid: str) -> PodSandbox | None:
        with self.lock:
            return self.pods.get(uid)

    # -- the kubelet's calls ---------------------------------------------------------------------------------

    def sync(self, pod: dict[str, Any], pod_ip: str, host_ip: str) -> tuple[dict[str, Any], float | None]:
        """Drive the pod toward running; return its status and when to look again."""
        uid = pod["metadata"]["uid"]
        with self.lock:
            sandbox = self.pods.get(uid)
            if sandbox is None:
                sandbox = self.pods[uid] = PodSandbox(self, pod, self.verdicts[uid], pod_ip, host_ip)
        sandbox.pod = pod  # the downward API follows labels and annotations
        wake = sandbox.sync()
        return sandbox.status(), wake

    def stop(self, pod: dict[str, Any], grace: float) -> bool:
        """Stop the pod's containers (grace period, then SIGKILL); True once nothing runs."""
        sandbox = self.sandbox(pod["metadata"]["uid"])
        return sandbox is None or sandbox.stop(grace)

    def status(self, uid: str) -> dict[str, Any] | None:
        sandbox = self.sandbox(uid)
        return sandbox.status() if sandbox is not None else None

    def stop_node(self, node: str) -> None:
        """The node went down (a simulated reboot): its processes die at once."""
        with self.lock:
            sandboxes = [s for s in self.pods.values() if s.node == node]
        for sandbox in sandboxes:
            sandbox.kill()

    def forget(self, uid: str) -> None:
        """The pod object is gone: kill what still runs and give its resources back (in the background)."""
        self.verdicts.pop(uid, None)
        with self.lock:
            sandbox = self.pods.pop(uid, None)
        if sandbox is not None:
            threading.Thread(target=self._dispose, args=(sandbox,), name=f"dispose-{sandbox.name}",
                             daemon=True).start()

    @staticmethod
    def _dispose(sandbox: PodSandbox) -> None:
        sandbox.stop(0)
        sandbox.kill()
        deadline = time.monotonic() + 5
        while any(run.running for run in [*sandbox.init, *sandbox.containers]) and time.monotonic() < deadline:
            time.sleep(0.05)
        sandbox.release()

    # -- probes, kill deadlines, volume refreshes ------------------------------------------------------------

    def _tick(self) -> None:
        while not self.stopped.wait(TICK_S):
            with self.lock:
                sandboxes = list(self.pods.values())
            for sandbox in sandboxes:
                try:
                    self._tick_pod(sandbox)
                except Exception:  # keep the runtime alive; the next tick tries again
                    log.exception("pod %s/%s: probe or housekeeping failed", sandbox.namespace, sandbox.name)

    def _tick_pod(self, sandbox: PodSandbox) -> None:
        now = time.monotonic()
        changed = False
        for run in [*sandbox.init, *sandbox.containers]:
            if run.kill_at is not None and now >= run.kill_at and run.running:
                run.signal(signal.SIGKILL)
                run.kill_at = None
            if not run.running or run.stopping or sandbox.network is None:
                continue
            startup = run.probe("startup")
            for probe in run.probes:
                if probe.kind == "startup" and probe.passing:
                    continue  # a startup probe stops once it passed
                if probe.kind != "startup" and startup is not None and not startup.passing:
                    continue
                if now < probe.next_at:
                    continue
                ok, why = run_probe(sandbox.network, sandbox.pod_ip, probe.spec, run.spec)
                if not probe.record(ok, time.monotonic(), why):
                    continue
                changed = True
                if probe.kind in ("liveness", "startup") and not probe.passing:
                    log.info("pod %s/%s: container %s failed its %s probe (%s); restarting it", sandbox.namespace,
                             sandbox.name, run.name, probe.kind, why)
                    grace = float(probe.spec.get("terminationGracePeriodSeconds")
                                  or sandbox.pod["spec"].get("terminationGracePeriodSeconds", 30))
                    with sandbox.lock:
                        run.kill_at = time.monotonic() + grace
                        run.signal(signal.SIGTERM)
                    break
        if now - sandbox.last_volume_sync >= VOLUME_SYNC_S and sandbox.volumes_ready:
            sandbox.last_volume_sync = now
            sandbox.volumes.refresh()
        if changed:
            self.changed(sandbox.node)

    def shutdown(self) -> None:
        """Stop every container: SIGTERM, a short grace, SIGKILL."""
        self.stopped.set()
        with self.lock:
            sandboxes = list(self.pods.values())
            self.pods.clear()
        for sandbox in sandboxes:
            sandbox.stop(SHUTDOWN_GRACE_S)
        deadline = time.monotonic() + SHUTDOWN_GRACE_S
        while time.monotonic() < deadline and any(run.running for s in sandboxes for run in [*s.init, *s.containers]):
            time.sleep(0.05)
        for sandbox in sandboxes:
            sandbox.kill()
            sandbox.release()


def log_files(directory: Path, namespace: str, name: str, uid: str | None) -> dict[str, list[Path]]:
    """Each container's log files, oldest run first (``uid`` None: the newest pod of that name)."""
    logs = directory / "logs"
    if uid is None:
        candidates = sorted(logs.glob(f"{namespace}_{name}_*"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            return {}
        pod_dir = candidates[-1]
    else:
        pod_dir = logs / f"{namespace}_{name}_{uid}"
    result: dict[str, list[Path]] = {}
    if not pod_dir.is_dir():
        return result
    for container in sorted(pod_dir.iterdir()):
        runs = sorted(container.glob("*.log"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1)
        result[container.name] = runs
    return result
