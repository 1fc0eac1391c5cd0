"""Fencing: a node is only changed while this run still holds the rollout lock, and while the run lives.

The lock's renewer (``rollout/lock.py``) records every confirmed renewal in the run's lock state file: the
CLOCK_BOOTTIME at which the renewal request started (CLOCK_MONOTONIC stops while the machine is suspended,
the boot clock does not), or why the lock was lost. Right before each change to a node, a step calls
:meth:`Fence.check`, which costs no API request in the common case:

* a renewal confirmed within the Lease's duration minus a margin: go on;
* else wake the renewer and wait briefly for a fresh confirmation (a run that was frozen, by a suspended
  laptop, a paused VM or a long pause, finds out here whether another run took its lock meanwhile);
* the lock recorded as lost, the renewer gone, no confirmation in time, or the run's ``ansible-playbook``
  process gone: :class:`LockLost`, and the step stops before it writes.

The state file is JSON, one object, written whole (write and rename) by one writer at a time; readers ignore
keys they do not know, so later changes can record more (for example a scheduler's maintenance slots).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from migrollout.processes import pid_alive

FORMAT = 1
# Margin kept before the Lease would expire, on this run's own clock: a taker waits the Lease's duration plus
# lock.TAKEOVER_GRACE_S on its own clock, so the two never overlap, whatever the hosts' wall clocks say.
MARGIN_MAX_S = 5.0
# How long a step waits for the renewer to confirm the lock after it went stale.
CONFIRM_WAIT_S = 8.0
POKE = signal.SIGUSR1  # asks the renewer to renew now
# A write is let through only with at least this much freshness left (else the renewer is asked to confirm
# first): enough for one request to be sent and answered (kube.GUARDED_WRITE_MIN_S is its floor).
WRITE_NEED_S = 2.0


def boottime() -> float:
    """Seconds since boot, counting time suspended (CLOCK_MONOTONIC does not)."""
    clock = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(clock) if clock is not None else time.monotonic()


class LockLost(Exception):
    """This run no longer holds the rollout lock (or is no longer alive): it must stop changing nodes."""


@dataclass
class LockState:
    """What the run knows about its lock, kept in a small file beside it (see the module's docstring)."""

    holder: str
    namespace: str
    duration_s: int
    controller_pid: int                 # the ansible-playbook process whose life the lock follows
    renewer_pid: int = 0
    confirmed: float = 0.0              # boottime() at the start of the last successful acquire or renewal
    renewals: int = 0
    lost: str = ""                      # why the lock is no longer held; "" while it is
    format: int = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as they were

    def to_json(self) -> str:
        data = asdict(self)
        extra = data.pop("extra")
        return json.dumps({**extra, **data}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LockState:
        data = json.loads(text)
        known = {key: data.pop(key) for key in list(data) if key in cls.__dataclass_fields__ and key != "extra"}
        return cls(**known, extra=data)

    def margin_s(self) -> float:
        return min(MARGIN_MAX_S, self.duration_s / 3)

    def left_s(self, now: float) -> float:
        """Seconds until this run's hold on the lock can no longer be taken for granted (negative: past)."""
        return self.confirmed + self.duration_s - self.margin_s() - now

    def fresh(self, now: float, need_s: float = 0.0) -> bool:
        return not self.lost and self.left_s(now) > need_s


def default_path(holder: str) -> str:
    return str(Path(tempfile.gettempdir()) / "mig-rollout" / f"{holder}.lock.json")


def write(path: str, state: LockState) -> None:
    """Replace the state file whole, so a reader never sees half of it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}")
    temporary.write_text(state.to_json())
    os.replace(temporary, target)


def read(path: str) -> LockState | None:
    try:
        return LockState.from_json(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        return None


def remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        Path(path).unlink()


def _poke(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, POKE)


@dataclass
class Fence:
    """Checks, before a step changes a node, that this run still holds its lock and still lives."""

    state_file: str
    holder: str
    clock: Callable[[], float] = boottime
    alive: Callable[[int], bool] = pid_alive
    poke: Callable[[int], None] = _poke
    sleep: Callable[[float], None] = time.sleep
    confirm_wait_s: float = CONFIRM_WAIT_S

    def _read(self) -> LockState:
        state = read(self.state_file)
        if state is None:
            raise LockLost(f"the rollout lock of run {self.holder} cannot be confirmed: its state file "
                           f"{self.state_file} is missing or unreadable")
        if state.holder != self.holder:
            raise LockLost(f"the lock state file {self.state_file} belongs to run {state.holder}, not {self.holder}")
        if state.lost:
            raise LockLost(f"the rollout lock was lost: {state.lost}")
        return state

    def check(self, what: str = "") -> float:
        """Return the seconds this run may still change a node for (at least WRITE_NEED_S); raise LockLost
        otherwise (``what``, e.g. "node gpu-1", starts its message)."""
        try:
            return self._check()
        except LockLost as exc:
            if what:
                raise LockLost(f"{what}: stopped before changing it: {exc}") from None
            raise

    def write_guard(self, what: str) -> Callable[[], float]:
        """The guard of a fenced API client (``KubeClient.fenced``): checked before every attempt of a write."""
        return lambda: self.check(what)

    def _check(self) -> float:
        state = self._read()
        if not self.alive(state.controller_pid):
            raise LockLost(f"the ansible-playbook process (pid {state.controller_pid}) of run {self.holder} is gone")
        now = self.clock()
        if state.fresh(now, WRITE_NEED_S):
            return state.left_s(now)
        age = now - state.confirmed
        if not state.renewer_pid or not self.alive(state.renewer_pid):
            raise LockLost(f"the rollout lock was last confirmed {age:.0f} s ago (Lease duration "
                           f"{state.duration_s} s) and its renewer (pid {state.renewer_pid}) is gone")
        self.poke(state.renewer_pid)
        deadline = now + self.confirm_wait_s
        while self.clock() < deadline:
            self.sleep(0.05)
            state = self._read()
            if state.fresh(self.clock(), WRITE_NEED_S):
                return state.left_s(self.clock())
            if not self.alive(state.renewer_pid):
                break
        raise LockLost(f"the rollout lock could not be confirmed: last confirmed {self.clock() - state.confirmed:.0f} s "
                       f"ago, the Lease lasts {state.duration_s} s, so another run may hold it now")


class NoFence:
    """For a step run outside a rollout (no lock to hold)."""

    def check(self, what: str = "") -> None:
        return None

    def write_guard(self, what: str) -> None:
        return None


def from_params(options: dict[str, Any] | None) -> Fence | NoFence:
    """The fence of a module's ``rollout_lock`` option (None: no fence)."""
    if not options:
        return NoFence()
    return Fence(options["state_file"], options["holder"])
