"""A cluster-wide lock for rollouts: a coordination.k8s.io Lease, renewed while the run lives.

The run that holds the Lease starts a small renewer process that renews it every
third of its duration while the ``ansible-playbook`` process is alive. If the run
dies (Ctrl-C, a lost control host) renewals stop and the Lease expires after its
duration, so a stale lock never blocks the next run for long.

The renewer records each confirmed renewal, and the loss of the lock, in the run's
lock state file (``rollout/fence.py``), which every step that changes a node checks
first: a run that lost its lock stops before it writes.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import getpass
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migrollout import kube, timestamps
from migrollout.kube import Connection, KubeClient, KubeError
from migrollout.processes import pid_alive
from migrollout.rollout import fence, slots
from migrollout.timestamps import micro_time_text, time_text

LEASE_NAME = "mig-rollout"
HOLDER_ANNOTATION = "mig-rollout.nvidia-mig-rollout.io/holder"
# How much longer than its duration a Lease must be seen unchanged before another run takes it over: covers
# a guarded write of its holder still in the API server's hands when the holder's fence closed (its attempts
# end by the fence's deadline through their own ?timeout=, see kube.KubeClient.fenced) and a slower clock.
TAKEOVER_GRACE_S = 5.0


def lease_path(namespace: str, name: str = LEASE_NAME) -> str:
    return kube.namespaced_path("coordination.k8s.io/v1", "leases", namespace, name)


def new_holder() -> str:
    """A run identity that sorts by start time and says where the run came from."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{socket.gethostname()}-{uuid.uuid4().hex[:6]}"


@dataclass
class LeaseState:
    holder: str
    renewed: datetime.datetime | None
    duration_s: int
    details: dict[str, Any]

    def remaining_s(self, now: datetime.datetime) -> float:
        if not self.holder or self.renewed is None:
            return 0.0
        return (self.renewed + datetime.timedelta(seconds=self.duration_s) - now).total_seconds()


def state(lease: dict[str, Any]) -> LeaseState:
    spec = lease.get("spec") or {}
    details = {}
    raw = (lease["metadata"].get("annotations") or {}).get(HOLDER_ANNOTATION)
    if raw:
        try:
            details = json.loads(raw)
        except ValueError:
            details = {}
    return LeaseState(spec.get("holderIdentity") or "", timestamps.parse(spec.get("renewTime")),
                      int(spec.get("leaseDurationSeconds") or 0), details)


class LockHeld(Exception):
    pass


def acquire(api: KubeClient, namespace: str, holder: str, duration_s: int, wait_s: float,
            details: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """Take the Lease for ``holder``: create it, or take it over once it is free or expired.
    Waits up to ``wait_s`` for another holder's Lease to expire or be released. Returns the Lease and the
    boot-clock time (``fence.boottime``) the successful write started: the lock is held from then on.

    Expiry is judged as client-go's leader election does, on this process's own monotonic clock, never by
    comparing the holder's ``renewTime`` with this host's wall clock (clock skew between control hosts would
    decide then): the Lease must be seen unchanged (same resourceVersion) for its duration plus
    TAKEOVER_GRACE_S. A live holder renews every third of its duration, so it is never taken from."""
    deadline = time.monotonic() + wait_s
    path = lease_path(namespace)
    seen_version, seen_since = "", 0.0
    while True:
        started = fence.boottime()
        now = datetime.datetime.now(datetime.UTC)
        spec = {"holderIdentity": holder, "leaseDurationSeconds": duration_s, "acquireTime": micro_time_text(now),
                "renewTime": micro_time_text(now)}
        annotations = {HOLDER_ANNOTATION: json.dumps(details, sort_keys=True)}
        current = api.get_or_none(path, what=f"read Lease {namespace}/{LEASE_NAME}")
        try:
            if current is None:
                return api.create(lease_path(namespace).rsplit("/", 1)[0], {
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": LEASE_NAME, "namespace": namespace, "annotations": annotations},
                    "spec": spec}, what=f"create Lease {namespace}/{LEASE_NAME}"), started
            held = state(current)
            version = current["metadata"]["resourceVersion"]
            if version != seen_version:
                seen_version, seen_since = version, time.monotonic()
            unchanged = time.monotonic() - seen_since
            expires_in = held.duration_s + TAKEOVER_GRACE_S - unchanged
            if held.holder in ("", holder) or expires_in <= 0:
                return api.patch(path, {"metadata": {"resourceVersion": version, "annotations": annotations},
                                        "spec": spec}, what=f"take Lease {namespace}/{LEASE_NAME}"), started
        except KubeError as exc:
            if exc.status not in (409,):
                raise
            continue  # someone else wrote it in between: look again
        if time.monotonic() >= deadline:
            who = held.details
            raise LockHeld(
                f"another MIG rollout holds the lock (Lease {namespace}/{LEASE_NAME}): {held.holder}, run by "
                f"{who.get('user', '?')} on {who.get('host', '?')} since {who.get('started', '?')}; unchanged for "
                f"{unchanged:.0f} s as seen from here (it is taken over once unchanged for its {held.duration_s} s "
                f"plus {TAKEOVER_GRACE_S:.0f} s: in {expires_in:.0f} s if that run has died)")
        time.sleep(min(2.0, max(0.2, expires_in + 0.1), max(0.0, deadline - time.monotonic()) + 0.01))


def release(api: KubeClient, namespace: str, holder: str) -> bool:
    """Give the Lease up if ``holder`` still holds it: clear its holder (and the window's slots), as client-go's
    leader election releases, keeping the Lease itself (the exact fence's admission policy reads it, and a
    missing one would let any write through). True when released."""
    path = lease_path(namespace)
    current = api.get_or_none(path, what=f"read Lease {namespace}/{LEASE_NAME}")
    if current is None or state(current).holder != holder:
        return False
    try:
        api.patch(path, {"metadata": {"resourceVersion": current["metadata"]["resourceVersion"],
                                      "annotations": {slots.ANNOTATION: None, HOLDER_ANNOTATION: None}},
                         "spec": {"holderIdentity": None, "renewTime": None, "acquireTime": None}},
                  what=f"release Lease {namespace}/{LEASE_NAME}")
    except KubeError as exc:
        if not (exc.not_found or exc.conflict):
            raise
        return False
    return True


def _process(pid: int) -> tuple[int, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        return int(stat.rsplit(")", 1)[1].split()[1]), cmdline
    except (OSError, ValueError, IndexError):
        return None


def _is_ansible(cmdline: str) -> bool:
    return "ansible-playbook" in cmdline or "/ansible " in cmdline or cmdline.startswith("ansible ")


def controller_pid() -> int:
    """The ansible-playbook (or ansible) process this code runs under: the renewer lives as long as it does.

    The nearest one, so a playbook run from inside another (a test harness) is watched, not the outer one;
    and its main process, not the short-lived worker Ansible forks per task (same command line)."""
    pid = os.getpid()
    for _ in range(64):
        found = _process(pid)
        if found is None:
            break
        parent, cmdline = found
        if _is_ansible(cmdline):
            while True:
                above = _process(parent)
                if above is None or above[1] != cmdline:
                    return pid
                pid, parent = parent, above[0]
        if parent <= 1:
            break
        pid = parent
    return os.getppid()


def start_renewer(conn: Connection, namespace: str, holder: str, duration_s: int, watch_pid: int,
                  state_file: str, log_path: str | None = None) -> int:
    command = [sys.executable, "-m", "migrollout.rollout.lock", "--namespace", namespace, "--holder", holder,
               "--duration", str(duration_s), "--watch-pid", str(watch_pid), "--state-file", state_file]
    for option in ("kubeconfig", "context", "host", "ca_cert"):
        value = getattr(conn, option)
        if value:
            command += [f"--{option.replace('_', '-')}", str(value)]
    env = dict(os.environ)
    if conn.api_key:
        env["MIGROLLOUT_LOCK_API_KEY"] = conn.api_key  # not on the command line, where ps would show it
    if conn.validate_certs is False:
        command.append("--insecure")
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    output = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                               start_new_session=True, env=env)
    return process.pid


def stop_renewer(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)


class Renewer:
    """Renews the Lease and records each confirmation (or the loss) in the run's lock state file."""

    def __init__(self, api: KubeClient, namespace: str, holder: str, duration_s: int, watch_pid: int,
                 state_file: str):
        self.api = api
        self.namespace = namespace
        self.holder = holder
        self.duration_s = duration_s
        self.watch_pid = watch_pid
        self.state_file = state_file
        self.interval = max(1.0, duration_s / 3)
        self.published: str | None = None     # the slots last published in the Lease

    def _record(self, **changes: Any) -> None:
        current = fence.read(self.state_file)
        if current is None or current.holder != self.holder:
            return  # released (the file is gone) or not ours
        for key, value in changes.items():
            setattr(current, key, value)
        fence.write(self.state_file, current)

    def renew_once(self) -> str | None:
        """One renewal; returns why the lock is lost, or None while it is held."""
        started = fence.boottime()
        patch = [{"op": "test", "path": "/spec/holderIdentity", "value": self.holder},
                 {"op": "replace", "path": "/spec/renewTime", "value": micro_time_text()}]
        # The maintenance window's slots, when they changed: published with the renewal (no request of their own),
        # so they show on the cluster and expire with the Lease.
        window = slots.published(slots.path_for(self.state_file))
        if window is not None and window != self.published:
            patch.append({"op": "add", "path": "/metadata/annotations/" + slots.ANNOTATION.replace("/", "~1"),
                          "value": window})
        try:
            # One request: the test fails (422) if the Lease is no longer ours, so we never renew another's.
            self.api.patch(lease_path(self.namespace), patch, content_type=kube.JSON_PATCH,
                           what="renew the rollout Lease")
        except KubeError as exc:
            if exc.not_found:
                return f"the Lease {self.namespace}/{LEASE_NAME} was deleted (released, or another run finished with it)"
            if exc.status == 422:
                return f"another run took the Lease {self.namespace}/{LEASE_NAME} over"
            print(f"renewal failed: {exc.one_line()}", flush=True)
            return None
        if window is not None:
            self.published = window
        state = fence.read(self.state_file)
        self._record(confirmed=started, renewals=(state.renewals + 1) if state else 1)
        return None

    def run(self, wait: Any = None) -> str:
        """Renew until the watched process is gone or the Lease is lost; returns why it stopped. Between
        renewals it sleeps, or renews at once when a step pokes it (fence.POKE)."""
        wait = wait or _wait_for_poke
        self._record(renewer_pid=os.getpid())  # whom a step pokes when the lock's last confirmation is stale
        while True:
            wait(self.interval)
            if not pid_alive(self.watch_pid):
                reason = f"the run's ansible-playbook process {self.watch_pid} is gone: the Lease will expire"
                self._record(lost=reason)
                return reason
            lost = self.renew_once()
            if lost:
                self._record(lost=lost)
                return lost
            state = fence.read(self.state_file)
            if state is not None and fence.boottime() - state.confirmed >= self.duration_s:
                reason = (f"renewals failed for {fence.boottime() - state.confirmed:.0f} s, longer than the Lease "
                          f"lasts ({self.duration_s} s): another run may have taken it")
                self._record(lost=reason)
                return reason


def _wait_for_poke(seconds: float) -> None:
    signal.sigtimedwait({fence.POKE}, seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mig-rollout-lock-renewer")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--holder", required=True)
    parser.add_argument("--duration", type=int, required=True)
    parser.add_argument("--watch-pid", type=int, required=True)
    parser.add_argument("--state-file", required=True)
    for option in ("kubeconfig", "context", "host", "ca-cert"):
        parser.add_argument(f"--{option}")
    parser.add_argument("--insecure", action="store_true")
    args = parser.parse_args(argv)
    # A poke is taken by sigtimedwait, never by a handler: block it first.
    signal.pthread_sigmask(signal.SIG_BLOCK, {fence.POKE})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    conn = Connection(kubeconfig=args.kubeconfig, context=args.context, host=args.host,
                      api_key=os.environ.get("MIGROLLOUT_LOCK_API_KEY"),
                      validate_certs=False if args.insecure else None, ca_cert=args.ca_cert)
    interval = max(1.0, args.duration / 3)
    # Retries must not hold a renewal past the next one: the lock's freshness is judged from confirmations.
    api = KubeClient.connect(conn, request_timeout=interval, retry_budget_s=interval / 2)
    renewer = Renewer(api, args.namespace, args.holder, args.duration, args.watch_pid, args.state_file)
    reason = renewer.run()
    print(f"renewer for {args.holder} stopped: {reason}", flush=True)
    return 0


def run_details() -> dict[str, Any]:
    return {"host": socket.gethostname(), "user": getpass.getuser(),
            "started": time_text()}


if __name__ == "__main__":
    sys.exit(main())
