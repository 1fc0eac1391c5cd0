"""The plan's schedule: pools of the whole cluster, nodes out of service before the run, where GPU pods could go,
the order (resumed first, MIG mode changes early, stuck pods last) and the expected number of steps."""

from migrollout.default_config import build_default_config
from migrollout.evacuation.selection import Options
from migrollout.migconfig.document import parse_config
from migrollout.rollout import record
from migrollout.rollout.plan import CHANGE, ClusterView, Maintenance, plan_node, schedule_rollout
from migrollout.taints import Taint

MAINTENANCE = Maintenance((Taint("mig", "NoSchedule", "maintenance"),), evacuation=Options())
READY = [{"type": "Ready", "status": "True"}]


def node(name, pool="a100", config="all-1g.10gb", cordoned=False, gpus=0, annotations=None, taints=None):
    labels = {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
              "nvidia.com/gpu.count": "8", "nvidia.com/mig.config": config, "nvidia.com/mig.config.state": "success",
              "nvidia.com/mig.strategy": "mixed", "nvidia.com/mig.capable": "true", "gpu-pool": pool,
              "kubernetes.io/hostname": name}
    return {"metadata": {"name": name, "labels": labels, "annotations": annotations or {}, "resourceVersion": "1"},
            "spec": {"taints": taints or [], **({"unschedulable": True} if cordoned else {})},
            "status": {"allocatable": {"nvidia.com/gpu": str(gpus)}, "conditions": READY}}


def gpu_pod(name, on, gpus=1, selector=None):
    spec = {"nodeName": on, "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]}
    if selector:
        spec["nodeSelector"] = selector
    return {"metadata": {"namespace": "ml", "name": name, "uid": name,
                         "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "controller": True}]},
            "spec": spec, "status": {"phase": "Running"}}


def view(nodes, pods=()):
    by_node = {}
    for pod in pods:
        by_node.setdefault(pod["spec"]["nodeName"], []).append(pod)
    return ClusterView(nodes={n["metadata"]["name"]: n for n in nodes}, policy=None, namespace="gpu-operator",
                       strategy="mixed",
                       config_maps={"default-mig-parted-config": parse_config(build_default_config())},
                       managers={n["metadata"]["name"]: "gpu-operator/mm" for n in nodes}, daemonsets=[],
                       pods_by_node=by_node)


def plan(cluster, wanted, settings=None):
    plans = [plan_node(cluster, name, config, MAINTENANCE) for name, config in wanted.items()]
    return schedule_rollout(cluster, plans, settings or {}, MAINTENANCE)


def test_order_resumed_first_mode_changes_early_stuck_pods_last():
    begun, _ = record.begin_patch(node("d"), "run-0", "all-2g.20gb", [Taint("mig", "NoSchedule", "maintenance")],
                                  cordon=False)
    left = node("d", annotations=begun["metadata"]["annotations"], taints=begun["spec"]["taints"])
    cluster = view([node("a", gpus=8), node("b"), node("c", config="all-disabled"), left,
                    node("e", config="all-disabled", gpus=8)],
                   [gpu_pod("pinned", "a", selector={"kubernetes.io/hostname": "a"}), gpu_pod("mover", "e")])
    scheduled = plan(cluster, dict.fromkeys("abcde", "all-2g.20gb"))
    assert [p.node for p in scheduled.plans] == ["d", "c", "e", "b", "a"]
    by_name = {p.node: p for p in scheduled.plans}
    assert by_name["c"].mode_change == "on" and by_name["c"].position.startswith("early: a MIG mode change")
    assert by_name["a"].stuck == ["ml/pinned: 0/5 nodes are available: 3 node(s) didn't match Pod's node "
                                  "affinity/selector, 1 node(s) being emptied, 1 node(s) out of service (tainted "
                                  "mig=maintenance:NoSchedule)"]
    assert by_name["e"].stuck == []           # a has room (a last resort: it is still to be reconfigured)
    assert by_name["a"].position.startswith("last: some of its GPU pods have nowhere to go")
    assert by_name["b"].expected["resources"] == {"nvidia.com/mig-2g.20gb": 24}


def test_pools_count_the_whole_cluster_and_nodes_out_of_service_before_the_run():
    cluster = view([node("a1"), node("a2"), node("a3", cordoned=True), node("a4"),
                    node("h1", pool="h100"), node("h2", pool="h100")])
    scheduled = plan(cluster, {"a1": "all-2g.20gb", "a2": "all-2g.20gb", "h1": "all-2g.20gb"},
                     {"mig_rollout_max_unavailable": 3, "mig_rollout_max_unavailable_per_pool": "50%"})
    assert scheduled.schedule.pool_budgets == {"a100": 2, "h100": 1}          # of 4 and of 2 nodes
    assert scheduled.schedule.already_out == {"a100": frozenset({"a3"})}
    assert scheduled.simulation.steps == 2                                     # a1 and h1, then a2
    assert [p.start_step for p in scheduled.plans] == [1, 2, 1]
    summary = scheduled.summary()
    assert summary.startswith("schedule: window of 3 node(s), per-pool budgets a100 2, h100 1 (1 node(s) out of "
                              "service before the run count against their pools)")
    assert "3 node(s) in 2 expected step(s)" in summary


def test_the_plan_refuses_a_budget_for_a_pool_the_cluster_does_not_have():
    cluster = view([node("a1")])
    try:
        plan(cluster, {"a1": "all-2g.20gb"}, {"mig_rollout_max_unavailable_per_pool": {"a10o": 1}})
    except ValueError as exc:
        assert "pools the cluster does not have: a10o" in str(exc)
    else:
        raise AssertionError("a misspelt pool must be refused")


def test_nothing_to_change_is_an_empty_schedule():
    cluster = view([node("a1")])
    scheduled = plan(cluster, {"a1": ""})
    assert scheduled.plans[0].action != CHANGE and scheduled.schedule.nodes == ()
    assert scheduled.simulation.steps == 0


def test_batches_keep_the_inventory_order_as_serial_does():
    cluster = view([node("a"), node("b", config="all-disabled"), node("c")])
    scheduled = plan(cluster, dict.fromkeys("abc", "all-2g.20gb"),
                     {"mig_rollout_schedule": "batches", "mig_rollout_serial": 2})
    assert [p.node for p in scheduled.plans] == ["a", "b", "c"]
    assert [p.start_step for p in scheduled.plans] == [1, 1, 2]


def upgrading(name, state, pool="a100"):
    found = node(name, pool=pool)
    found["metadata"]["labels"]["nvidia.com/gpu-driver-upgrade-state"] = state
    return found


def test_driver_upgrades_in_the_rollouts_scope_are_the_changed_nodes_and_their_pools():
    from migrollout.rollout.plan import driver_upgrades

    cluster = view([node("a"), upgrading("b", "cordon-required"), upgrading("c", "upgrade-required", pool="h100"),
                    upgrading("d", "upgrade-done")])
    plans = [plan_node(cluster, "a", "all-2g.20gb", MAINTENANCE), plan_node(cluster, "d", "all-2g.20gb", MAINTENANCE)]
    # b is not changed but shares a's pool (its budget); c is in another pool; d's upgrade is done.
    assert [(u.node, u.state) for u in driver_upgrades(cluster, plans, MAINTENANCE)] == [("b", "cordon-required")]


def test_a_node_whose_driver_upgrade_failed_is_refused():
    cluster = view([upgrading("a", "upgrade-failed")])
    found = plan_node(cluster, "a", "all-2g.20gb", MAINTENANCE)
    assert found.action == "refuse" and "driver upgrade failed" in found.reason
