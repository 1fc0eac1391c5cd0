"""Where a rollout stands and when it should end: the live progress lines and the figures the timeline page draws.

Pure. Both views work on the same per-node facts, when each node took its slot of the window and when it gave it
back (:class:`NodeTime`): the window strategy notes them live (:class:`Watch`, one line at each change of state),
the report keeps them (``started``/``finished`` of each row) for the page (rollout.timeline).

The ETA runs the plan's schedule simulation (rollout.schedule.Schedule.simulate) from where the run stands: each
node still to come takes the median time observed in this run for nodes like it (same pool and same kind of
change, else same pool, else any), each node in maintenance the rest of that median, and the window, the pool
budgets and the failure budget decide when each starts, as they do in the run.
"""

from __future__ import annotations

import datetime
import statistics
import sys
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from migrollout.rollout.schedule import BATCHES, Progress, Schedule

MAX_POOLS_SHOWN = 8
BOLD, RED, RESET = "\x1b[1m", "\x1b[31m", "\x1b[0m"


@dataclass
class NodeTime:
    """One node's slot: seconds on one clock (None: not yet), and how it ended."""

    node: str
    pool: str = ""
    started: float | None = None
    finished: float | None = None
    result: str = ""            # done, failed, skipped, ... ("" while it runs or waits)


@dataclass(frozen=True)
class Tally:
    done: int = 0
    active: int = 0
    failed: int = 0
    waiting: int = 0
    never: int = 0              # will not start (the run stopped, or the play ended before)

    def text(self, tty: bool = False) -> str:
        failed = f"{self.failed} failed"
        if tty and self.failed:
            failed = f"{RED}{failed}{RESET}"
        return (f"{self.done} done, {self.active} in maintenance, {failed}, {self.waiting} waiting"
                + (f", {self.never} not started" if self.never else ""))


def tally(nodes: Iterable[str], progress: Progress, never: Collection[str] = ()) -> Tally:
    """The nodes by state: done, in maintenance, failed, waiting, never to start."""
    done = active = failed = waiting = stopped = 0
    for node in nodes:
        if node in progress.failed:
            failed += 1
        elif node in progress.active:
            active += 1
        elif node in progress.done:
            done += 1
        elif node in never:
            stopped += 1
        else:
            waiting += 1
    return Tally(done, active, failed, waiting, stopped)


def tally_by_pool(schedule: Schedule, progress: Progress, never: Collection[str] = ()) -> dict[str, Tally]:
    pools: dict[str, list[str]] = {}
    for node in schedule.nodes:
        pools.setdefault(schedule.pools.get(node, ""), []).append(node)
    return {pool: tally(members, progress, never) for pool, members in sorted(pools.items())}


def estimates(nodes: Iterable[str], observed: Mapping[str, float], kinds: Mapping[str, str],
              pools: Mapping[str, str]) -> dict[str, float]:
    """Each node's expected seconds: the median observed for nodes of its kind (pool and kind of change), else
    of its pool, else of every node; nodes are left out while nothing was observed."""
    if not observed:
        return {}
    by_kind: dict[str, list[float]] = {}
    by_pool: dict[str, list[float]] = {}
    for node, seconds in observed.items():
        by_kind.setdefault(kinds.get(node, ""), []).append(seconds)
        by_pool.setdefault(pools.get(node, ""), []).append(seconds)
    everything = statistics.median(observed.values())
    found = {}
    for node in nodes:
        same = by_kind.get(kinds.get(node, "")) if node in kinds else None
        same = same or by_pool.get(pools.get(node, ""))
        found[node] = statistics.median(same) if same else everything
    return found


def eta_seconds(schedule: Schedule, progress: Progress, observed: Mapping[str, float],
                running_for: Mapping[str, float], kinds: Mapping[str, str] | None = None) -> float | None:
    """Seconds until the last node should finish (None until a node finished: nothing observed yet).

    ``observed``: seconds each finished node took; ``running_for``: how long each active node has been in
    maintenance. An active node past its estimate is taken to be about to finish."""
    if not observed:
        return None
    expected = estimates(schedule.nodes, observed, kinds or {}, schedule.pools)
    remaining = {node: max(expected.get(node, 0.0) - running_for.get(node, 0.0), 0.0) for node in progress.active}
    return schedule.simulate(expected, since=progress, remaining=remaining).wall_s


def duration_text(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def clock_text(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).strftime("%H:%M:%SZ")


def occupancy(spans: Iterable[tuple[float, float]]) -> list[tuple[float, int]]:
    """How many spans are open over time: (time, count from then on), one point per change, in time order. A span
    that ends when another starts frees its place first (the window strategy admits a node when one finished)."""
    events: list[tuple[float, int]] = []
    for start, end in spans:
        events.append((start, 1))
        events.append((max(end, start), -1))
    points: list[tuple[float, int]] = []
    count = 0
    for moment, change in sorted(events):
        count += change
        if points and points[-1][0] == moment:
            points[-1] = (moment, count)
        else:
            points.append((moment, count))
    return points


def pool_use(times: Iterable[NodeTime], end: float,
             already_out: Mapping[str, Collection[str]] | None = None) -> dict[str, list[tuple[float, int]]]:
    """Each pool's nodes out of service over time, as the pool budgets count them: the nodes out before the run,
    the nodes in maintenance, and the failed nodes, which stay out (tainted) to the end."""
    spans: dict[str, list[tuple[float, float]]] = {}
    before = {pool: set(out) for pool, out in (already_out or {}).items()}
    for item in times:
        if item.started is None:
            continue
        if item.node in before.get(item.pool, set()):
            continue                # counted from the start already
        until = end if item.result == "failed" or item.finished is None else item.finished
        spans.setdefault(item.pool, []).append((item.started, until))
    start = min((s for group in spans.values() for s, _ in group), default=0.0)
    for pool, out in before.items():
        spans.setdefault(pool, []).extend((start, end) for _ in out)
    return {pool: occupancy(group) for pool, group in sorted(spans.items())}


@dataclass
class Watch:
    """The live view of a run: fed the strategy's :class:`Progress` at every turn, it notes when nodes start and
    finish, and says one line at each change of state (None when nothing changed).

    With ``enabled`` false it says only that a node starts, as the strategy always did (mig_rollout_progress)."""

    schedule: Schedule
    kinds: Mapping[str, str] = field(default_factory=dict)      # node -> pool and kind of change (the ETA's groups)
    enabled: bool = True
    tty: bool = False           # emphasis with terminal codes: only when the output is a terminal
    clock: Callable[[], float] = time.time
    prefix: str = "mig_window"
    started: dict[str, float] = field(default_factory=dict)
    finished: dict[str, float] = field(default_factory=dict)
    seen_failed: set[str] = field(default_factory=set)

    @classmethod
    def for_plans(cls, schedule: Schedule, node_plans: Mapping[str, Any], settings: Mapping[str, Any],
                  tty: bool | None = None) -> Watch:
        """A watch over the nodes the plan queued (their plans give the kind of change) with the strategy's settings
        (``progress``: false turns the progress lines off)."""
        kinds = {}
        for node, plan in node_plans.items():
            plan = plan if isinstance(plan, Mapping) else {}
            kinds[node] = f"{plan.get('pool', '')}|{'mode ' + str(plan['mode_change']) if plan.get('mode_change') else ''}"
        return cls(schedule, kinds, enabled=bool(settings.get("progress", True)),
                   tty=sys.stdout.isatty() if tty is None else tty)

    def observed(self) -> dict[str, float]:
        """Seconds each finished node took (failed ones included: they held their slot as long)."""
        return {node: end - self.started[node] for node, end in self.finished.items() if node in self.started}

    def update(self, progress: Progress, never: Collection[str] = ()) -> list[str]:
        now = self.clock()
        events: list[str] = []
        for node in self.schedule.nodes:
            if node in progress.active and node not in self.started:
                self.started[node] = now
                events.append(f"{node} starts")
            elif node in self.started and node not in progress.active and node not in self.finished:
                self.finished[node] = now
                result = "failed" if node in progress.failed else "done"
                events.append(f"{node} {result} after {duration_text(now - self.started[node])}")
            if node in progress.failed and node not in self.seen_failed:
                self.seen_failed.add(node)
                if node in progress.active:
                    events.append(f"{node} failing")
                elif node not in self.started:
                    events.append(f"{node} failed before it started")
        if not events:
            return []
        if not self.enabled:
            limit = self.schedule.window if self.schedule.mode != BATCHES else self.schedule.batch_size
            return [f"{self.prefix}: {event.split()[0]} starts ({len(progress.active)}/{limit} in maintenance, "
                    f"{len(progress.done)} done, {len(progress.failed)} failed)"
                    for event in events if event.endswith(" starts")]
        return [self.line(progress, events, now, never)]

    def line(self, progress: Progress, events: list[str], now: float, never: Collection[str] = ()) -> str:
        parts = [f"{self.prefix} {clock_text(now)}: {', '.join(events[:4])}"
                 + (f" (+{len(events) - 4} more)" if len(events) > 4 else ""),
                 tally(self.schedule.nodes, progress, never).text(self.tty)]
        pools = tally_by_pool(self.schedule, progress, never)
        if len(pools) > 1 or self.schedule.pool_budgets:
            shown = []
            for pool, counts in list(pools.items())[:MAX_POOLS_SHOWN]:
                budget = self.schedule.pool_budgets.get(pool)
                text = f"{pool or '(no pool)'} {counts.done}/{sum(vars(counts).values())} done"
                if counts.active or budget is not None:
                    text += f", {counts.active} in maintenance" + (f" (budget {budget})" if budget is not None else "")
                shown.append(text + (f", {counts.failed} failed" if counts.failed else ""))
            more = len(pools) - MAX_POOLS_SHOWN
            parts.append("; ".join(shown) + (f"; +{more} pools" if more > 0 else ""))
        if progress.active:
            slowest = min(progress.active, key=lambda node: (self.started.get(node, now), node))
            parts.append(f"slowest in maintenance: {slowest} for {duration_text(now - self.started.get(slowest, now))}")
        running_for = {node: now - self.started.get(node, now) for node in progress.active}
        left = eta_seconds(self.schedule, progress, self.observed(), running_for, self.kinds)
        if left is None:
            eta = "ETA after the first node finishes"
        else:
            eta = f"ETA {clock_text(now + left)} ({duration_text(left)} left)"
            if self.tty:
                eta = f"{BOLD}{eta}{RESET}"
        parts.append(eta)
        return " | ".join(parts)
