"""Kubernetes Events on the Node for each step of its MIG reconfiguration, so ``kubectl describe node`` and
``kubectl get events`` tell the node's history.

Best effort: an Event that cannot be written (no permission, an API server under load) is a warning, never
a node's failure. One request per Event (a ``create`` of ``events.k8s.io/v1``; RBAC: ``create`` on
``events.k8s.io`` ``events`` in the ``default`` namespace, where Events about cluster-scoped objects live).

The Event names the Node as the kubelet does (``uid`` = the node's name: ``kubectl describe node`` looks its
Events up by that), and says who wrote it: reporting controller ``nvidia.com/mig-rollout``, reporting
instance the control host of the run.
"""

from __future__ import annotations

import datetime
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from migrollout.timestamps import micro_time_text

REPORTING_CONTROLLER = "nvidia.com/mig-rollout"
NAMESPACE = "default"
EVENTS_PATH = f"/apis/events.k8s.io/v1/namespaces/{NAMESPACE}/events"
NOTE_LIMIT = 1024  # bytes, the API's limit
NORMAL, WARNING = "Normal", "Warning"
WAIT_S = 5.0  # a step waits at most this long for its Events before it ends


@dataclass(frozen=True)
class Kind:
    reason: str
    action: str
    type: str = NORMAL


STARTED = Kind("MigReconfigurationStarted", "Taint")
EVACUATED = Kind("GpuWorkloadsEvacuated", "Evict")
APPLIED = Kind("MigConfigApplied", "SetMigConfig")
VERIFIED = Kind("MigConfigVerified", "Verify")
SUCCEEDED = Kind("MigReconfigurationSucceeded", "Untaint")
FAILED = Kind("MigReconfigurationFailed", "Reconfigure", WARNING)
SKIPPED = Kind("MigReconfigurationSkipped", "CheckCapacity", WARNING)
WAITING = Kind("MigReconfigurationWaitingForCapacity", "CheckCapacity")
RECOVERED = Kind("MigManagerRestarted", "RestartMigManager", WARNING)
KINDS = (STARTED, EVACUATED, APPLIED, VERIFIED, SUCCEEDED, FAILED, SKIPPED, WAITING, RECOVERED)


class Creates(Protocol):
    def create(self, path: str, body: dict[str, Any], what: str = "", **query: Any) -> dict[str, Any]: ...


def instance_of(run: str) -> str:
    """The control host named in a run identity (``<stamp>-<host>-<suffix>``, see rollout.lock.new_holder),
    else this host."""
    parts = run.split("-")
    if len(parts) >= 3 and parts[0].endswith("Z") and parts[0][:8].isdigit():
        return "-".join(parts[1:-1])[:128]
    return socket.gethostname()[:128]


def _clip(text: str) -> str:
    encoded = text.encode()
    if len(encoded) <= NOTE_LIMIT:
        return text
    return encoded[: NOTE_LIMIT - 3].decode(errors="ignore") + "..."


def event(node: str, kind: Kind, note: str, run: str, now: datetime.datetime | None = None) -> dict[str, Any]:
    """The Event object (``events.k8s.io/v1``) for one step of one node."""
    stamp = time.time_ns() if now is None else int(now.timestamp() * 1e9)
    moment = now or datetime.datetime.fromtimestamp(stamp / 1e9, datetime.UTC)
    return {
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": f"{node}.{stamp:x}", "namespace": NAMESPACE},
        "eventTime": micro_time_text(moment),
        "regarding": {"apiVersion": "v1", "kind": "Node", "name": node, "uid": node},
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": instance_of(run),
        "action": kind.action, "reason": kind.reason, "type": kind.type,
        "note": _clip(note),
    }


# -- the notes: what an operator reads in `kubectl describe node` ----------------------------------------------

def _seconds(value: float | None) -> str:
    return f" in {value:.1f} s" if value is not None else ""


def started_note(run: str, from_config: str, to_config: str, added: list[str] | None = None) -> str:
    what = f", added {', '.join(added)}" if added else ""
    return f"run {run}: MIG config {from_config or '(none)'} -> {to_config}; node in maintenance{what}"


def evacuated_note(run: str, pods: list[str], seconds: float | None = None) -> str:
    if not pods:
        return f"run {run}: no GPU pod to move"
    return f"run {run}: {len(pods)} GPU pod(s) evicted{_seconds(seconds)}: {', '.join(pods)}"


def applied_note(run: str, to_config: str, seconds: float | None = None, state: str = "success") -> str:
    return f"run {run}: the MIG manager applied {to_config}{_seconds(seconds)} (state {state})"


def verified_note(run: str, to_config: str, seconds: float | None = None) -> str:
    return f"run {run}: the node advertises the resources and labels of {to_config}{_seconds(seconds)}"


def succeeded_note(run: str, from_config: str, to_config: str, pods_moved: int, seconds: float | None) -> str:
    return (f"run {run}: MIG config {from_config or '(none)'} -> {to_config} done{_seconds(seconds)}, "
            f"{pods_moved} GPU pod(s) moved; back in service")


def failed_note(run: str, step: str, error: str) -> str:
    return f"run {run}: step '{step}' failed: {error}; the node stays in maintenance"


def skipped_note(run: str, stuck: list[str]) -> str:
    return (f"run {run}: not reconfigured, the node was not touched: {len(stuck)} GPU pod(s) would have "
            f"nowhere to go: {'; '.join(stuck)}")


def not_touched_note(run: str, reason: str) -> str:
    return f"run {run}: not reconfigured: {reason}"


def recovered_note(run: str, text: str) -> str:
    return f"run {run}: {text}"


def driver_upgrade_note(run: str, state: str) -> str:
    return (f"run {run}: not reconfigured, the node was not touched: NVIDIA's driver upgrade is under way on it "
            f"({state})")


def waiting_note(run: str, stuck: list[str], timeout_s: float) -> str:
    return (f"run {run}: waiting up to {timeout_s:.0f} s for room for {len(stuck)} GPU pod(s): "
            f"{'; '.join(stuck)}")


@dataclass
class Recorder:
    """Writes a run's Events, each in a thread of its own so a step does not wait for them (its time is the
    node's), and remembers every failure as a warning instead of raising. :meth:`wait` before the step ends."""

    api: Creates | None
    run: str
    enabled: bool = True
    warnings: list[str] = field(default_factory=list)
    written: list[dict[str, Any]] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def emit(self, node: str, kind: Kind, note: str) -> None:
        """Send the Event now (its time is now), without waiting for the answer."""
        if not self.enabled or self.api is None:
            return
        body = event(node, kind, note, self.run)
        thread = threading.Thread(target=self._send, args=(node, kind, body), name=f"event-{kind.reason}",
                                  daemon=True)
        thread.start()
        self._threads.append(thread)

    def _send(self, node: str, kind: Kind, body: dict[str, Any]) -> None:
        assert self.api is not None
        try:
            created = self.api.create(EVENTS_PATH, body, what=f"record Event {kind.reason} on node {node}")
        except Exception as exc:  # best effort by contract: no failure of any kind fails a node
            text = exc.one_line() if hasattr(exc, "one_line") else f"{type(exc).__name__}: {exc}"
            with self._lock:
                self.warnings.append(f"Event {kind.reason} on node {node} not recorded: {text}")
            return
        with self._lock:
            self.written.append(created)

    def wait(self, timeout: float = WAIT_S) -> list[str]:
        """Wait for the Events sent (at most ``timeout`` seconds in all); the warnings so far, then forgotten."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                with self._lock:
                    self.warnings.append(f"an Event ({thread.name[len('event-'):]}) was not confirmed within "
                                         f"{timeout:.0f} s")
        self._threads = [t for t in self._threads if t.is_alive()]
        with self._lock:
            found, self.warnings = self.warnings, []
        return found
