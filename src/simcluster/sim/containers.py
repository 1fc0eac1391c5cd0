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

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from migrollout.kube import KubeClient
from simcluster.sim import images
from simcluster.sim.container_rules import run_probe
from simcluster.sim.images import Runnable
from simcluster.sim.pod_sandbox import PodSandbox, RuntimeConfig

log = logging.getLogger("simcluster.containers")

TICK_S = 0.25
VOLUME_SYNC_S = 60.0
SHUTDOWN_GRACE_S = 5.0

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
