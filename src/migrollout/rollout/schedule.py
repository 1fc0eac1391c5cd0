"""Which planned nodes may start now: the maintenance window, per-pool budgets, the failure budget.

Pure. The window strategy (plugins/strategy/mig_window.py) asks :meth:`Schedule.decide` at every turn of
its loop with what it saw happen (nodes active, done, failed); the plan asks :meth:`Schedule.simulate` for
the order and the expected number of steps it shows in check mode. Both run the same rules:

- **window** (the default): at most ``window`` nodes are in maintenance (being worked on) at any moment,
  and a node starts as soon as a slot frees up, whatever the other nodes are doing. A failed node stays
  tainted (no broken GPUs serve) but gives its slot back, as a failed node of a ``serial`` batch does not
  hold the next batch: the failure budget, not the window, bounds how many failed nodes there can be.
- **batches**: Ansible's ``serial``: a batch of ``batch_size`` nodes starts once every node of the
  previous batch has finished; failed nodes do not hold places (as with ``serial``).
- **pool budgets**, in both modes: never more than a pool's budget of its nodes out of service, counting
  the nodes that were out of service before the run (cordoned, not Ready or tainted by someone else,
  or left in maintenance by an earlier run) and this run's failed nodes. A node that was already out of
  service adds nothing to its pool when it starts. A node whose pool is full waits; nodes behind it in
  other pools go ahead.
- **failure budget**: once more nodes have failed than ``max_failures``, no new node starts; the nodes
  in maintenance finish.

When nothing runs and nothing may start, the nodes left never start, and :class:`Decision` says why.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from migrollout import labels, nodes
from migrollout.rollout import settings

WINDOW, BATCHES = "window", "batches"
MODES = (WINDOW, BATCHES)
POOL_BY = ("pool", "product")
DEFAULT_POOL_LABEL = "gpu-pool"
# A taint that marks GPU nodes as dedicated to GPU work (the GPU Operator's and Kubespray's convention):
# every GPU workload tolerates it, so it does not take a node out of service.
DEDICATED_TAINT_KEYS = ("nvidia.com/gpu",)
# Taints the node lifecycle controller derives from the node's own state, which is judged from that state: the
# cordon (spec.unschedulable) and readiness. Its taints lag the state (an uncordoned node keeps
# node.kubernetes.io/unschedulable for a moment), so reading them would count a node back in service as out.
DERIVED_TAINT_KEYS = ("node.kubernetes.io/unschedulable", "node.kubernetes.io/not-ready",
                      "node.kubernetes.io/unreachable")


class ScheduleError(ValueError):
    """A scheduling setting that cannot be used; the message names the setting."""


def pool_of(node: dict[str, Any], pool_by: str = "pool", pool_label: str = DEFAULT_POOL_LABEL) -> str:
    """The pool a node's budget is counted in: its pool label's value (``pool_by: pool``; a node without the
    label falls back to its GPU product) or its GPU product (``pool_by: product``), as the inventory groups
    nodes (``gpu_pool_<value>``, ``gpu_product_<product>``)."""
    found = nodes.node_labels(node)
    product = found.get(labels.GPU_PRODUCT, "").split("-MIG-")[0]
    if pool_by == "pool" and found.get(pool_label):
        return found[pool_label]
    return product or "(no GPU product label)"


def out_of_service(node: dict[str, Any]) -> str:
    """Why a node cannot take GPU work now ("" when it can): cordoned, not Ready, or a NoSchedule or
    NoExecute taint (other than the GPU-dedication taint every GPU workload tolerates)."""
    if nodes.is_cordoned(node):
        return "cordoned"
    if not nodes.is_ready(node):
        return "not Ready"
    for taint in nodes.node_taints(node):
        if (taint.get("effect") in ("NoSchedule", "NoExecute")
                and taint.get("key") not in DEDICATED_TAINT_KEYS + DERIVED_TAINT_KEYS):
            value = f"={taint['value']}" if taint.get("value") else ""
            return f"tainted {taint.get('key')}{value}:{taint.get('effect')}"
    return ""


@dataclass
class Progress:
    """What the run has seen so far (the strategy's view; the simulation keeps its own)."""

    active: set[str] = field(default_factory=set)
    done: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    halted: str = ""        # a reason to start nothing more (e.g. the run lost its lock)

    def started(self) -> set[str]:
        return self.active | self.done | self.failed


@dataclass
class Decision:
    start: list[str]                      # nodes to start now, in plan order
    waiting: dict[str, str]               # node -> why it does not start yet
    stopped: str = ""                     # why no node will start any more ("" while the run goes on)


@dataclass
class Simulation:
    starts: dict[str, float]              # node -> start time
    ends: dict[str, float]
    steps: int                            # distinct start times: the admission rounds
    wall_s: float
    never: dict[str, str]                 # nodes that would never start, and why

    def as_dict(self) -> dict[str, Any]:
        order = sorted(self.starts, key=lambda node: (self.starts[node], node))
        return {"steps": self.steps, "expected_wall_s": round(self.wall_s, 1),
                "order": [{"node": node, "start_s": round(self.starts[node], 1)} for node in order],
                "never": self.never}


@dataclass(frozen=True)
class Schedule:
    nodes: tuple[str, ...]                               # in plan order
    pools: Mapping[str, str]                             # node -> pool
    window: int = 1
    mode: str = WINDOW
    batch_size: int = 1
    pool_budgets: Mapping[str, int] = field(default_factory=dict)     # pool -> at most out of service
    already_out: Mapping[str, Collection[str]] = field(default_factory=dict)  # pool -> nodes out before the run
    max_failures: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ScheduleError(f"mig_rollout_schedule: {self.mode!r} is not one of {', '.join(MODES)}")
        if self.window < 1 or self.batch_size < 1:
            raise ScheduleError("the window and the batch size must be at least 1")

    # -- the settings, as the plan passes them --------------------------------------------------------------

    @classmethod
    def from_settings(cls, planned: Iterable[str], pools: Mapping[str, str], checked: Mapping[str, Any],
                      pool_sizes: Mapping[str, int] | None = None,
                      already_out: Mapping[str, Collection[str]] | None = None) -> Schedule:
        """A schedule from the rollout's checked settings (``mig_rollout_*``, see rollout.settings),
        percentages resolved: the window against the planned nodes, a pool's budget against the pool's
        size in the cluster."""
        order = tuple(planned)
        total = max(len(order), 1)
        value = {name: settings.parse(name, checked.get(name, default)) for name, default in (
            ("mig_rollout_schedule", WINDOW), ("mig_rollout_max_unavailable", 1), ("mig_rollout_serial", None),
            ("mig_rollout_max_unavailable_per_pool", None), ("mig_rollout_max_fail_percentage", 0))}
        mode = value["mig_rollout_schedule"]
        serial = value["mig_rollout_serial"]
        if mode == WINDOW and serial is not None:
            raise ScheduleError(settings.combination_problems({"mig_rollout_serial": serial})[0])
        sizes = dict(pool_sizes or {})
        for node in order:
            sizes.setdefault(pools.get(node, ""), 0)
        return cls(order, dict(pools), window=value["mig_rollout_max_unavailable"].of(total), mode=mode,
                   batch_size=serial.of(total) if serial is not None else 1,
                   pool_budgets=pool_budgets(value["mig_rollout_max_unavailable_per_pool"], sizes),
                   already_out={pool: frozenset(out) for pool, out in (already_out or {}).items()},
                   max_failures=value["mig_rollout_max_fail_percentage"] * len(order) // 100)

    def as_dict(self) -> dict[str, Any]:
        """The schedule as plain data (the plan hands it to the strategy through host variables)."""
        return {"mode": self.mode, "window": self.window, "batch_size": self.batch_size,
                "pool_budgets": dict(self.pool_budgets), "max_failures": self.max_failures,
                "already_out": {pool: sorted(out) for pool, out in self.already_out.items() if out}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], planned: Iterable[str], pools: Mapping[str, str]) -> Schedule:
        return cls(tuple(planned), dict(pools), window=int(data.get("window", 1)), mode=data.get("mode", WINDOW),
                   batch_size=int(data.get("batch_size", 1)),
                   pool_budgets={str(k): int(v) for k, v in (data.get("pool_budgets") or {}).items()},
                   already_out={str(k): frozenset(v) for k, v in (data.get("already_out") or {}).items()},
                   max_failures=int(data.get("max_failures", 0)))

    # -- decisions ------------------------------------------------------------------------------------------

    def out_in_pool(self, pool: str, progress: Progress) -> int:
        """Nodes of ``pool`` out of service: out before the run, in maintenance now, or failed."""
        ours = {node for node in progress.active | progress.failed if self.pools.get(node, "") == pool}
        return len(set(self.already_out.get(pool, ())) | ours)

    def _pool_refusal(self, node: str, progress: Progress, extra: Mapping[str, int]) -> str:
        pool = self.pools.get(node, "")
        budget = self.pool_budgets.get(pool)
        if budget is None or node in self.already_out.get(pool, ()):
            return ""
        out = self.out_in_pool(pool, progress) + extra.get(pool, 0)
        if out + 1 <= budget:
            return ""
        before = len(self.already_out.get(pool, ()))
        return (f"pool {pool} is at its budget: {out} of its nodes out of service (at most {budget}"
                + (f"; {before} were out of service before the run" if before else "") + ")")

    def decide(self, progress: Progress) -> Decision:
        """The nodes that may start now, given what is running, done and failed."""
        started = progress.started()
        pending = [node for node in self.nodes if node not in started]
        if not pending:
            return Decision([], {})
        if progress.halted:
            return Decision([], dict.fromkeys(pending, progress.halted), progress.halted)
        if len(progress.failed) > self.max_failures:
            reason = (f"the failure budget is spent: {len(progress.failed)} node(s) failed, at most "
                      f"{self.max_failures} allowed (mig_rollout_max_fail_percentage)")
            return Decision([], dict.fromkeys(pending, reason), reason)
        if self.mode == BATCHES:
            if progress.active:
                return Decision([], dict.fromkeys(pending, "waiting for the current batch to finish"))
            slots = self.batch_size
            full = f"not in this batch of {self.batch_size}"
        else:
            slots = self.window - len(progress.active)   # a failing node holds its slot until its rescue ends
            full = f"the window is full: {self.window} node(s) in maintenance at most (mig_rollout_max_unavailable)"
        start: list[str] = []
        waiting: dict[str, str] = {}
        added: dict[str, int] = {}
        for node in pending:
            if len(start) >= slots:
                waiting[node] = full
                continue
            refusal = self._pool_refusal(node, progress, added)
            if refusal:
                waiting[node] = refusal
                continue
            start.append(node)
            pool = self.pools.get(node, "")
            if node not in self.already_out.get(pool, ()):
                added[pool] = added.get(pool, 0) + 1
        stopped = ""
        if not start and not progress.active:
            stopped = "nothing runs and no node may start: " + "; ".join(sorted(set(waiting.values())))
        return Decision(start, waiting, stopped)

    def simulate(self, durations: Mapping[str, float] | float = 1.0, since: Progress | None = None,
                 remaining: Mapping[str, float] | None = None) -> Simulation:
        """Run the schedule with these durations (seconds per node, or one for all) and no failures:
        each node's start, the wall time, and the number of steps (distinct start times).

        From ``since`` (a run under way; rollout.progress estimates its end this way): its done and failed nodes
        count as they do for :meth:`decide`, and its active nodes run for their ``remaining`` seconds from 0."""
        progress = Progress(done=set(since.done), failed=set(since.failed), halted=since.halted) if since else Progress()
        starts: dict[str, float] = {}
        ends: dict[str, float] = {}
        running: list[tuple[float, int, str]] = []
        now = 0.0
        sequence = 0
        for node in sorted(since.active) if since else ():
            ends[node] = max(0.0, float((remaining or {}).get(node, 0.0)))
            heapq.heappush(running, (ends[node], sequence, node))
            sequence += 1
            progress.active.add(node)
        while True:
            decision = self.decide(progress)
            for node in decision.start:
                length = durations if isinstance(durations, int | float) else durations.get(node, 1.0)
                starts[node] = now
                ends[node] = now + float(length)
                heapq.heappush(running, (ends[node], sequence, node))
                sequence += 1
                progress.active.add(node)
            if not running:
                never = decision.waiting if decision.stopped else {}
                return Simulation(starts, ends, len(set(starts.values())), max(ends.values(), default=0.0), never)
            now, _, node = heapq.heappop(running)
            progress.active.discard(node)
            progress.done.add(node)
            while running and running[0][0] <= now:     # every node that ends at the same moment
                _, _, other = heapq.heappop(running)
                progress.active.discard(other)
                progress.done.add(other)


def rollout_order(nodes: Iterable[str], resume: Collection[str] = (), long: Collection[str] = (),
                  stuck: Collection[str] = ()) -> list[tuple[str, str]]:
    """The order the rollout takes the nodes in, and why each is where it is (stable otherwise):

    1. nodes left in maintenance by an earlier run: they are out of service already, finish them first;
    2. nodes whose GPU pods can all move now (or that have none), and among them the ``long`` changes first
       (with the window: a MIG mode change, which may take a reboot): the run then ends on short changes,
       which keeps the window full to the end;
    3. nodes with GPU pods that have nowhere to go now: last, as room may free once other nodes are back."""
    resumed, slow, blocked = set(resume), set(long), set(stuck)

    def why(node: str) -> str:
        if node in resumed:
            return "first: left in maintenance by an earlier run"
        if node in blocked:
            return "last: some of its GPU pods have nowhere to go now"
        if node in slow:
            return "early: a MIG mode change, which may take a reboot"
        return "its GPU pods can move (or it has none)"

    ranked = sorted(enumerate(nodes), key=lambda item: (0 if item[1] in resumed else 2 if item[1] in blocked else 1,
                                                        0 if item[1] in slow else 1, item[0]))
    return [(node, why(node)) for _, node in ranked]


def pool_budgets(setting: Any, sizes: Mapping[str, int]) -> dict[str, int]:
    """``mig_rollout_max_unavailable_per_pool`` (checked) resolved per pool: one count or percentage for every
    pool, or a mapping pool -> count or percentage (pools it does not name have no budget)."""
    if setting is None:
        return {}
    name = "mig_rollout_max_unavailable_per_pool"
    if isinstance(setting, Mapping):
        unknown = sorted(set(setting) - set(sizes))
        if unknown:  # a misspelt pool would silently have no budget
            raise ScheduleError(f"{name} names pools the cluster does not have: {', '.join(unknown)} (its pools: "
                                f"{', '.join(sorted(p for p in sizes if p)) or 'none'})")
        return {pool: amount.of(max(sizes[pool], 1)) for pool, amount in setting.items()}
    return {pool: setting.of(max(size, 1)) for pool, size in sizes.items()}
