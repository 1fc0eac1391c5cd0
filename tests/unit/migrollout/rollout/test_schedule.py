"""The rollout's scheduler: the window, batches, per-pool budgets, the failure budget, the simulation."""

import pytest

from migrollout.rollout.schedule import (
    BATCHES,
    Progress,
    Schedule,
    ScheduleError,
    out_of_service,
    pool_budgets,
    pool_of,
    rollout_order,
)
from migrollout.rollout.settings import CountOrPercent

NODES = tuple(f"n{i}" for i in range(1, 11))


def schedule(**kwargs):
    pools = kwargs.pop("pools", dict.fromkeys(NODES, "a"))
    return Schedule(kwargs.pop("nodes", NODES), pools, **kwargs)


def test_window_fills_then_refills_one_slot_at_a_time():
    plan = schedule(window=3)
    progress = Progress()
    first = plan.decide(progress)
    assert first.start == ["n1", "n2", "n3"]
    assert first.waiting["n4"].startswith("the window is full")
    progress.active.update(first.start)
    assert plan.decide(progress).start == []
    progress.active.discard("n2")            # n1 and n3 still run: n4 starts anyway
    progress.done.add("n2")
    assert plan.decide(progress).start == ["n4"]


def test_a_failed_node_gives_its_slot_back_as_serial_does():
    plan = schedule(window=2, max_failures=5)
    progress = Progress(active={"n1"}, failed={"n2"})
    assert plan.decide(progress).start == ["n3"]       # n2 failed: the failure budget bounds failures, not the window


def test_a_failing_node_still_running_its_rescue_holds_its_slot():
    plan = schedule(window=2, max_failures=5)
    assert plan.decide(Progress(active={"n1", "n2"}, failed={"n1"})).start == []
    assert plan.decide(Progress(active={"n2"}, failed={"n1"})).start == ["n3"]


def test_the_failure_budget_stops_new_starts_but_not_running_nodes():
    plan = schedule(window=3, max_failures=1)
    assert plan.decide(Progress(active={"n1", "n2"}, failed={"n3"})).start == ["n4"]
    decision = plan.decide(Progress(active={"n1"}, failed={"n2", "n3"}))
    assert decision.start == []
    assert "failure budget is spent: 2 node(s) failed, at most 1" in decision.stopped
    assert set(decision.waiting) == {f"n{i}" for i in range(4, 11)}


def test_max_fail_percentage_keeps_its_meaning():
    # failures * 100 > percentage * planned stops the run, as the role computed it before
    plan = Schedule.from_settings(NODES, dict.fromkeys(NODES, "a"), {"mig_rollout_max_fail_percentage": 20})
    assert plan.max_failures == 2
    assert plan.decide(Progress(failed={"n1", "n2"})).start == ["n3"]    # within the budget: go on
    assert plan.decide(Progress(failed={"n1", "n2", "n3"})).stopped.startswith("the failure budget")


def test_halted_run_starts_nothing_more():
    decision = schedule(window=3).decide(Progress(active={"n1"}, halted="the run lost its lock"))
    assert decision.start == [] and decision.stopped == "the run lost its lock"


def test_batches_start_only_when_the_whole_previous_batch_is_done():
    plan = schedule(mode=BATCHES, batch_size=4)
    progress = Progress()
    assert plan.decide(progress).start == ["n1", "n2", "n3", "n4"]
    progress.active.update({"n1", "n2", "n3", "n4"})
    progress.active -= {"n1", "n2", "n3"}
    progress.done |= {"n1", "n2", "n3"}
    assert plan.decide(progress).start == []                             # n4 holds the batch
    progress.active.clear()
    progress.done.add("n4")
    assert plan.decide(progress).start == ["n5", "n6", "n7", "n8"]


def test_batches_do_not_hold_places_for_failed_nodes_as_serial_does():
    plan = schedule(mode=BATCHES, batch_size=2, max_failures=3)
    assert plan.decide(Progress(done={"n1"}, failed={"n2"})).start == ["n3", "n4"]


def test_a_full_pool_waits_while_other_pools_go_ahead():
    pools = {"n1": "a", "n2": "a", "n3": "a", "n4": "b", "n5": "b"}
    plan = schedule(nodes=tuple(pools), pools=pools, window=3, pool_budgets={"a": 1, "b": 1})
    decision = plan.decide(Progress())
    assert decision.start == ["n1", "n4"]                  # the window has room for 3, each pool for 1
    assert decision.waiting["n2"].startswith("pool a is at its budget: 1 of its nodes out of service")
    decision = plan.decide(Progress(active={"n1"}, done={"n4"}))
    assert decision.start == ["n5"]


def test_nodes_out_of_service_before_the_run_count_against_their_pool():
    pools = {"n1": "a", "n2": "a", "n3": "a", "n4": "a"}
    plan = schedule(nodes=("n1", "n2", "n3"), pools=pools, window=3, pool_budgets={"a": 2},
                    already_out={"a": {"n4"}})
    decision = plan.decide(Progress())
    assert decision.start == ["n1"]                        # n4 (cordoned by an admin) is one of the two
    assert "1 were out of service before the run" in decision.waiting["n2"]


def test_a_node_already_out_of_service_adds_nothing_to_its_pool():
    pools = {"n1": "a", "n2": "a", "n3": "a"}
    plan = schedule(nodes=("n1", "n2", "n3"), pools=pools, window=3, pool_budgets={"a": 2}, already_out={"a": {"n1"}})
    assert plan.decide(Progress()).start == ["n1", "n2"]   # n1 was out anyway; n2 is the second


def test_a_failed_node_keeps_counting_against_its_pool():
    pools = {"n1": "a", "n2": "a", "n3": "b"}
    plan = schedule(nodes=("n1", "n2", "n3"), pools=pools, window=3, pool_budgets={"a": 1}, max_failures=3)
    assert plan.decide(Progress(failed={"n1"})).start == ["n3"]


def test_a_pool_that_can_never_proceed_stops_the_run_with_the_reason():
    pools = {"n1": "a", "n2": "a"}
    plan = schedule(nodes=("n1",), pools=pools, window=1, pool_budgets={"a": 1}, already_out={"a": {"n2"}})
    decision = plan.decide(Progress())
    assert decision.start == []
    assert decision.stopped.startswith("nothing runs and no node may start: pool a is at its budget")


def test_serial_with_the_window_is_refused_naming_both_settings():
    with pytest.raises(ScheduleError, match=r"mig_rollout_serial is 10% but mig_rollout_schedule is window"):
        Schedule.from_settings(NODES, {}, {"mig_rollout_serial": "10%"})
    plan = Schedule.from_settings(NODES, {}, {"mig_rollout_schedule": BATCHES, "mig_rollout_serial": "20%"})
    assert plan.batch_size == 2 and plan.mode == BATCHES


def test_settings_resolve_percentages_against_the_right_totals():
    pools = {n: ("a" if n in ("n1", "n2") else "b") for n in NODES}
    plan = Schedule.from_settings(NODES, pools, {"mig_rollout_max_unavailable": "30%",
                                                 "mig_rollout_max_unavailable_per_pool": "50%"},
                                  pool_sizes={"a": 10, "b": 8}, already_out={"a": ["x1"]})
    assert plan.window == 3                                  # 30% of the 10 planned nodes
    assert plan.pool_budgets == {"a": 5, "b": 4}             # 50% of each pool's size in the cluster
    assert Schedule.from_dict(plan.as_dict(), NODES, pools) == plan
    small = Schedule.from_settings(NODES[:4], {}, {"mig_rollout_max_unavailable": "10%"})
    assert small.window == 1                                 # rounded down, at least one node


def test_per_pool_budgets_by_name_refuse_unknown_pools():
    one, quarter = CountOrPercent(1), CountOrPercent(25, percent=True)
    assert pool_budgets({"a": one, "b": quarter}, {"a": 3, "b": 8}) == {"a": 1, "b": 2}
    assert pool_budgets(None, {"a": 3}) == {}
    with pytest.raises(ScheduleError, match="pools the cluster does not have: c"):
        pool_budgets({"c": one}, {"a": 3})
    plan = Schedule.from_settings(NODES, {}, {"mig_rollout_max_unavailable_per_pool": {"": 2}})
    assert plan.pool_budgets == {"": 2}


def test_simulation_counts_steps_and_wall_time():
    plan = schedule(window=3)
    uniform = plan.simulate()
    assert uniform.steps == 4 and uniform.wall_s == 4.0      # 10 nodes, 3 at a time
    durations = dict.fromkeys(NODES, 5.0) | {"n1": 60.0}
    slow = plan.simulate(durations)
    assert slow.starts["n4"] == 5.0                           # n1's minute holds one slot only
    assert slow.wall_s == 60.0
    batches = schedule(mode=BATCHES, batch_size=3).simulate(durations)
    assert batches.wall_s == 60.0 + 5.0 * 3                   # every batch waits for its slowest node


def test_simulation_reports_nodes_that_would_never_start():
    pools = {"n1": "a", "n2": "a"}
    plan = schedule(nodes=("n1",), pools=pools, pool_budgets={"a": 1}, already_out={"a": {"n2"}})
    result = plan.simulate()
    assert result.starts == {} and "pool a is at its budget" in result.never["n1"]
    assert result.as_dict()["never"] == result.never


def test_pools_by_label_or_product():
    node = {"metadata": {"labels": {"gpu-pool": "train", "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3-MIG-1g.10gb"}}}
    assert pool_of(node) == "train"
    assert pool_of(node, "product") == "NVIDIA-H100-80GB-HBM3"
    assert pool_of({"metadata": {"labels": {"nvidia.com/gpu.product": "NVIDIA-A30"}}}) == "NVIDIA-A30"


READY = {"conditions": [{"type": "Ready", "status": "True"}]}


@pytest.mark.parametrize(("spec", "status", "reason"), [
    ({}, READY, ""),
    ({"unschedulable": True}, READY, "cordoned"),
    ({}, {"conditions": [{"type": "Ready", "status": "False"}]}, "not Ready"),
    ({"taints": [{"key": "maint", "value": "x", "effect": "NoSchedule"}]}, READY, "tainted maint=x:NoSchedule"),
    ({"taints": [{"key": "drain", "effect": "NoExecute"}]}, READY, "tainted drain:NoExecute"),
    ({"taints": [{"key": "soft", "effect": "PreferNoSchedule"}]}, READY, ""),
    ({"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]}, READY, ""),
    # Just uncordoned: the node lifecycle controller's mirror of the cordon lags the node's own state.
    ({"taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}, READY, ""),
    ({"unschedulable": True, "taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}, READY,
     "cordoned"),
])
def test_out_of_service(spec, status, reason):
    assert out_of_service({"metadata": {"name": "x"}, "spec": spec, "status": status}) == reason


def test_rollout_order_resumed_first_long_changes_early_stuck_pods_last():
    order = rollout_order(["a", "b", "c", "d", "e"], resume={"d"}, long={"c", "e"}, stuck={"a", "e"})
    assert [node for node, _ in order] == ["d", "c", "b", "e", "a"]
    why = dict(order)
    assert why["d"].startswith("first: left in maintenance") and why["c"].startswith("early: a MIG mode change")
    assert why["a"].startswith("last: some of its GPU pods have nowhere to go")
    assert [node for node, _ in rollout_order(["x", "y"])] == ["x", "y"]


def test_long_changes_first_bring_the_window_close_to_the_ideal_bound():
    # 100 nodes, 10 of them slow (one in every ten), window 10: in name order the slow ones come last in their
    # groups and the run ends with slow nodes alone; taken first, the window stays full.
    nodes = [f"n{i:03d}" for i in range(100)]
    durations = {n: (60.0 if i % 10 == 9 else 5.0) for i, n in enumerate(nodes)}
    ideal = max(sum(durations.values()) / 10, 60.0)
    as_listed = Schedule(tuple(nodes), {}, window=10).simulate(durations).wall_s
    ordered = [n for n, _ in rollout_order(nodes, long={n for n in nodes if durations[n] == 60.0})]
    long_first = Schedule(tuple(ordered), {}, window=10).simulate(durations).wall_s
    assert long_first == ideal == 105.0 and as_listed > 1.15 * ideal
