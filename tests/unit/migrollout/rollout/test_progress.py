"""Progress of a run: counts by state, the ETA from the schedule's simulation, occupancy, the live lines."""

from __future__ import annotations

import pytest

from migrollout.rollout.progress import (
    NodeTime,
    Tally,
    Watch,
    estimates,
    eta_seconds,
    occupancy,
    pool_use,
    tally,
    tally_by_pool,
)
from migrollout.rollout.schedule import Progress, Schedule

NODES = ("a1", "a2", "a3", "b1", "b2", "b3")
POOLS = {"a1": "a", "a2": "a", "a3": "a", "b1": "b", "b2": "b", "b3": "b"}


def schedule(**overrides) -> Schedule:
    return Schedule(NODES, POOLS, **{"window": 2, **overrides})


def progress(active=(), done=(), failed=(), halted="") -> Progress:
    return Progress(set(active), set(done), set(failed), halted)


@pytest.mark.parametrize(("state", "never", "expected"), [
    (progress(), (), Tally(waiting=6)),
    (progress(active={"a1"}, done={"b1", "b2"}), (), Tally(done=2, active=1, waiting=3)),
    # A failing node still in its rescue counts as failed (the failure budget counts it so).
    (progress(active={"a1"}, failed={"a1", "a2"}, done={"a3"}), {"b3"}, Tally(done=1, failed=2, waiting=2, never=1)),
])
def test_tally(state, never, expected):
    assert tally(NODES, state, never) == expected


def test_tally_by_pool():
    found = tally_by_pool(schedule(), progress(active={"a1"}, done={"b1"}))
    assert found == {"a": Tally(active=1, waiting=2), "b": Tally(done=1, waiting=2)}


@pytest.mark.parametrize(("observed", "kinds", "expected"), [
    ({}, {}, {}),
    # Nothing of pool b observed: every node of b takes the median of everything.
    ({"a1": 10.0, "a2": 20.0}, {}, {"a3": 15.0, "b1": 15.0}),
    ({"a1": 10.0, "b1": 100.0}, {}, {"a3": 10.0, "b2": 100.0}),
    # The same pool, but a kind of change (a MIG mode change) observed apart from the others.
    ({"a1": 10.0, "a2": 60.0}, {"a1": "a|", "a2": "a|mode on", "a3": "a|mode on", "b1": "b|"},
     {"a3": 60.0, "b1": 35.0}),
])
def test_estimates(observed, kinds, expected):
    found = estimates(NODES, observed, kinds, POOLS)
    assert {node: found[node] for node in expected} == expected


@pytest.mark.parametrize(("plan", "state", "observed", "running_for", "expected"), [
    # Nothing finished yet: no ETA.
    (schedule(), progress(active={"a1", "a2"}), {}, {"a1": 5.0, "a2": 5.0}, None),
    # Window of 2, every node 10 s: a3 and b1 run for 5 s more, then b2 and b3 take 10 s.
    (schedule(), progress(active={"a3", "b1"}, done={"a1", "a2"}), {"a1": 10.0, "a2": 10.0},
     {"a3": 5.0, "b1": 5.0}, 15.0),
    # A node past its estimate is about to finish.
    (schedule(), progress(active={"a3", "b1"}, done={"a1", "a2"}), {"a1": 10.0, "a2": 10.0},
     {"a3": 50.0, "b1": 5.0}, 15.0),
    # Pool b's budget of 1 puts its three nodes one after another despite the window of 2: 5 + 10 + 10.
    (schedule(pool_budgets={"b": 1}), progress(active={"a3", "b1"}, done={"a1", "a2"}), {"a1": 10.0, "a2": 10.0},
     {"a3": 5.0, "b1": 5.0}, 25.0),
    # Batches of 2: b2 and b3 wait for the batch of a3 and b1 to end (the slow a3, 40 s).
    (schedule(mode="batches", batch_size=2), progress(active={"a3", "b1"}, done={"a1", "a2"}),
     {"a1": 10.0, "a2": 50.0}, {"a3": 10.0, "b1": 10.0}, 20.0 + 30.0),
    # The failure budget is spent: nothing more starts, the run ends when the active nodes end.
    (schedule(), progress(active={"a3"}, done={"a1"}, failed={"a2"}), {"a1": 10.0, "a2": 10.0}, {"a3": 4.0}, 6.0),
    # Every node finished.
    (schedule(), progress(done=set(NODES)), dict.fromkeys(NODES, 10.0), {}, 0.0),
])
def test_eta_runs_the_schedule_from_where_the_run_stands(plan, state, observed, running_for, expected):
    assert eta_seconds(plan, state, observed, running_for) == expected


@pytest.mark.parametrize(("spans", "expected"), [
    ([], []),
    ([(0, 10), (5, 15)], [(0, 1), (5, 2), (10, 1), (15, 0)]),
    # A node starting the moment another ends takes its place: the count never reads 3.
    ([(0, 10), (0, 10), (10, 20)], [(0, 2), (10, 1), (20, 0)]),
])
def test_occupancy(spans, expected):
    assert occupancy(spans) == expected


def test_pool_use_counts_failed_nodes_to_the_end_and_nodes_out_before_the_run():
    times = [NodeTime("a1", "a", 0, 10, "done"), NodeTime("a2", "a", 10, 20, "failed"),
             NodeTime("b1", "b", 0, 30, "done"), NodeTime("b2", "b", None, None, "not started")]
    found = pool_use(times, end=40, already_out={"b": {"b3"}})
    assert found["a"] == [(0, 1), (10, 1), (40, 0)]
    assert found["b"] == [(0, 2), (30, 1), (40, 0)]


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_watch_says_one_line_per_change_of_state_with_an_eta():
    clock = Clock()
    watch = Watch(schedule(pool_budgets={"a": 1}), clock=clock)
    state = progress(active={"a1", "b1"})
    first = watch.update(state)
    assert len(first) == 1 and "a1 starts, b1 starts" in first[0]
    assert "0 done, 2 in maintenance, 0 failed, 4 waiting" in first[0]
    assert "a 0/3 done, 1 in maintenance (budget 1)" in first[0]
    assert "ETA after the first node finishes" in first[0]
    assert watch.update(state) == []                       # nothing changed, nothing said
    clock.now += 10
    state.active.discard("a1")
    state.done.add("a1")
    state.active.add("a2")
    line = watch.update(state)[0]
    assert "a1 done after 10s" in line and "a2 starts" in line
    assert "slowest in maintenance: b1 for 10s" in line
    # b1 (10 s so far, 10 s expected) ends now, a2 in 10 s; then a3 (pool a: one at a time) 10 s, b2 and b3 with it.
    assert "(20s left)" in line
    assert "\x1b" not in line


def test_watch_on_a_terminal_emphasises_and_off_says_only_starts():
    clock = Clock()
    state = progress(active={"a1"}, failed={"a1"})
    line = Watch(schedule(), tty=True, clock=clock).update(state)[0]
    assert "\x1b[31m1 failed\x1b[0m" in line and "a1 starts, a1 failing" in line
    quiet = Watch(schedule(), enabled=False, clock=clock)
    assert quiet.update(progress(active={"a1", "a2"})) == [
        "mig_window: a1 starts (2/2 in maintenance, 0 done, 0 failed)",
        "mig_window: a2 starts (2/2 in maintenance, 0 done, 0 failed)"]
    assert quiet.update(progress(done={"a1"}, active={"a2"})) == []


def test_watch_for_plans_reads_the_setting_and_the_kinds_of_change():
    watch = Watch.for_plans(schedule(), {"a1": {"pool": "a", "mode_change": "on"}, "a2": {"pool": "a"}},
                            {"progress": False}, tty=False)
    assert not watch.enabled
    assert watch.kinds == {"a1": "a|mode on", "a2": "a|"}
