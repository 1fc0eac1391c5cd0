"""One pod that runs for real, as the kubelet and a pod sandbox hold it: its network namespace (the API server
forwarded to the ``kubernetes`` Service address), its volumes, and its init containers and containers, each
with its restarts, probes and logs. ``containers.ContainerRuntime`` keeps one per pod and ticks them."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from migrollout.kube import KubeClient
from migrollout.timestamps import time_text
from simcluster.sim import images, node_os
from simcluster.sim.container_rules import (
    Backoff,
    ProbeState,
    exit_reason,
    restarts,
)
from simcluster.sim.images import Image, Runnable
from simcluster.sim.netns import NamespaceError, PodNetwork, ServiceForwarder
from simcluster.sim.pod_env import ConfigError, container_env, expand
from simcluster.sim.volumes import Mount, PodVolumes

log = logging.getLogger("simcluster.containers")


@dataclass(frozen=True)
class RuntimeConfig:
    directory: Path                      # <cluster state>/kubelet
    nodes_directory: Path                # <cluster state>/nodes: each node's host filesystem
    api_server: tuple[str, int]          # where the API server listens (in the daemon's network namespace)
    service: tuple[str, int]             # the kubernetes Service's address and port, as pods see it
    backoff_initial_s: float = 10.0
    backoff_max_s: float = 300.0




class SandboxHost(Protocol):
    """What a pod sandbox needs of the runtime that holds it (``containers.ContainerRuntime``)."""

    api: KubeClient
    config: RuntimeConfig
    lifeline: int

    def sources(self) -> images.Sources: ...

    def changed(self, node: str) -> None: ...


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

    def __init__(self, runtime: SandboxHost, pod: dict[str, Any], runnable: Runnable, pod_ip: str,
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


