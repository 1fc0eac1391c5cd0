"""The rollout's pure parts: the maintenance record, the plan's decisions, tolerations, the report."""

import json

import pytest

from migrollout import selectors
from migrollout.default_config import build_default_config, default_config_yaml
from migrollout.evacuation.selection import Options
from migrollout.migconfig.document import parse_config
from migrollout.rollout import record
from migrollout.rollout.fence import LockLost
from migrollout.rollout.plan import (
    CHANGE,
    REFUSE,
    RESUME,
    SKIP,
    ClusterView,
    Maintenance,
    mig_manager_dialect,
    order,
    plan_node,
    unloadable,
    untolerated,
)
from migrollout.rollout.report import entries, summary, table
from migrollout.taints import Taint, tolerates

MAINTENANCE = [Taint("mig", "NoSchedule", "maintenance")]


def node(name="gpu-1", config="all-disabled", state="success", taints=None, cordoned=False, annotations=None,
         product="NVIDIA-A100-SXM4-80GB", count="8", extra_labels=None):
    labels = {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": product, "nvidia.com/gpu.count": count,
              "nvidia.com/mig.config": config, "nvidia.com/mig.config.state": state,
              "nvidia.com/mig.strategy": "mixed", "nvidia.com/mig.capable": "true", **(extra_labels or {})}
    return {"metadata": {"name": name, "labels": labels, "annotations": annotations or {}, "resourceVersion": "1"},
            "spec": {"taints": taints or [], **({"unschedulable": True} if cordoned else {})},
            "status": {"allocatable": {"nvidia.com/gpu": "8"}}}


def test_begin_records_only_what_it_adds():
    admin = {"key": "mig", "value": "maintenance", "effect": "NoSchedule"}
    patch, rec = record.begin_patch(node(taints=[admin]), "run-1", "all-1g.10gb", MAINTENANCE, cordon=True)
    assert rec.added_taints == []          # the admin's identical taint is not ours to remove
    assert rec.cordoned is True
    assert patch["spec"] == {"unschedulable": True}
    assert rec.from_config == "all-disabled" and rec.to_config == "all-1g.10gb"

    patch, rec = record.begin_patch(node(cordoned=True), "run-1", "all-1g.10gb", MAINTENANCE, cordon=True)
    assert rec.cordoned is False           # an admin's cordon is never undone
    assert patch["spec"]["taints"] == [admin]


def test_finish_removes_exactly_what_the_record_lists():
    begun = node(taints=[{"key": "other", "effect": "NoExecute"}])
    patch, _rec = record.begin_patch(begun, "run-1", "all-1g.10gb", MAINTENANCE, cordon=True)
    in_maintenance = node(taints=patch["spec"]["taints"], cordoned=True,
                          annotations={record.ANNOTATION: patch["metadata"]["annotations"][record.ANNOTATION]})
    finish, _ = record.finish_patch(in_maintenance)
    assert finish["spec"]["taints"] == [{"key": "other", "effect": "NoExecute"}]
    assert finish["spec"]["unschedulable"] is None
    assert finish["metadata"]["annotations"] == {record.ANNOTATION: None}
    assert record.finish_patch(node()) == (None, None)


def test_a_resumed_record_keeps_what_the_dead_run_added():
    patch, first = record.begin_patch(node(), "run-1", "all-1g.10gb", MAINTENANCE, cordon=False)
    left = node(taints=patch["spec"]["taints"],
                annotations={record.ANNOTATION: patch["metadata"]["annotations"][record.ANNOTATION]})
    patch, second = record.begin_patch(left, "run-2", "all-3g.40gb", MAINTENANCE, cordon=False)
    assert second.added_taints == first.added_taints
    assert second.from_config == "all-disabled" and second.to_config == "all-3g.40gb"
    assert second.runs == ["run-1"] and second.run == "run-2"


def written_record(patch):
    """The record a patch writes, decoded from its annotation (what the API server will store)."""
    return json.loads(patch["metadata"]["annotations"][record.ANNOTATION])


def test_a_failed_node_resumed_by_the_next_run_gets_its_record_rewritten():
    # Run 1 puts the node into maintenance, then fails it: the node keeps its taint and a failed record.
    patch, _ = record.begin_patch(node(), "run-1", "all-1g.10gb", MAINTENANCE, cordon=False)
    begun = node(taints=patch["spec"]["taints"], annotations=patch["metadata"]["annotations"])
    failed, _ = record.failed_patch(begun, "run-1", "Set the MIG config", "apply failed")
    left = node(taints=patch["spec"]["taints"], annotations=failed["metadata"]["annotations"])
    # Run 2 resumes it: the taint is already there, but the record must be rewritten for run 2.
    resumed, rec = record.begin_patch(left, "run-2", "all-1g.10gb", MAINTENANCE, cordon=False)
    assert resumed is not None, "the resumed node's record must be written"
    stored = written_record(resumed)
    assert stored["run"] == "run-2" and stored["runs"] == ["run-1"]
    assert stored["step"] == "maintenance" and stored["error"] == ""
    assert stored["added_taints"] == [{"key": "mig", "value": "maintenance", "effect": "NoSchedule"}]
    assert stored["from_config"] == "all-disabled"
    assert rec.run == "run-2"
    # The same run beginning again changes nothing.
    again = node(taints=patch["spec"]["taints"], annotations=resumed["metadata"]["annotations"])
    assert record.begin_patch(again, "run-2", "all-1g.10gb", MAINTENANCE, cordon=False)[0] is None


def test_finish_and_failure_write_only_while_the_record_names_this_run():
    patch, _ = record.begin_patch(node(), "run-2", "all-1g.10gb", MAINTENANCE, cordon=False)
    taken = node(taints=patch["spec"]["taints"], annotations=patch["metadata"]["annotations"])
    with pytest.raises(LockLost, match="names run run-2, not run-1: another run has taken this node over"):
        record.finish_patch(taken, "run-1")
    with pytest.raises(LockLost, match="gpu-1: its rollout record now names run run-2"):
        record.failed_patch(taken, "run-1", "x", "y")
    assert record.finish_patch(taken, "run-2")[0] is not None


def test_failure_is_recorded_and_keeps_the_taint():
    patch, _ = record.begin_patch(node(), "run-1", "all-1g.10gb", MAINTENANCE, cordon=False)
    left = node(annotations={record.ANNOTATION: patch["metadata"]["annotations"][record.ANNOTATION]})
    failed, rec = record.failed_patch(left, "run-1", "Set the MIG config", "apply failed")
    assert "spec" not in failed
    assert rec.step == "failed" and rec.error == "Set the MIG config: apply failed"


def view(**nodes_by_name):
    return ClusterView(nodes=nodes_by_name, policy=None, namespace="gpu-operator", strategy="mixed",
                       config_maps={"default-mig-parted-config": parse_config(build_default_config())},
                       managers={name: f"gpu-operator/nvidia-mig-manager-{name}" for name in nodes_by_name},
                       daemonsets=[])


def test_plan_decisions():
    cluster = view(**{"gpu-1": node("gpu-1"), "gpu-2": node("gpu-2", state="pending", config="all-3g.40gb"),
                      "cpu": {"metadata": {"name": "cpu", "labels": {}}, "spec": {}, "status": {}}})
    assert plan_node(cluster, "gpu-1", "all-1g.10gb", None).action == CHANGE
    assert plan_node(cluster, "gpu-1", "", None).action == SKIP
    assert "busy applying all-3g.40gb" in plan_node(cluster, "gpu-2", "all-1g.10gb", None).reason
    assert "has no NVIDIA GPU" in plan_node(cluster, "cpu", "all-1g.10gb", None).reason
    assert plan_node(cluster, "ghost", "all-1g.10gb", None).action == REFUSE
    assert "does not fit" in plan_node(cluster, "gpu-1", "all-1g.5gb", None).reason
    assert "not in ConfigMap" in plan_node(cluster, "gpu-1", "nope", None).reason


def test_plan_skips_a_verified_node_and_resumes_recorded_ones_first():
    verified = node("gpu-1", config="all-1g.10gb", extra_labels={"nvidia.com/mig-1g.10gb.count": "56"})
    verified["status"]["allocatable"] = {"nvidia.com/mig-1g.10gb": "56"}
    patch, _ = record.begin_patch(node("gpu-2"), "run-0", "all-1g.10gb", MAINTENANCE, cordon=False)
    recorded = node("gpu-2", annotations={record.ANNOTATION: patch["metadata"]["annotations"][record.ANNOTATION]})
    cluster = view(**{"gpu-1": verified, "gpu-2": recorded})
    plans = order([plan_node(cluster, name, "all-1g.10gb", None) for name in ("gpu-1", "gpu-2")])
    assert [(p.node, p.action) for p in plans] == [("gpu-2", RESUME), ("gpu-1", SKIP)]
    assert plans[1].reason == "already at all-1g.10gb and verified"


def mig_manager_daemonset(image):
    return {"metadata": {"name": "nvidia-mig-manager", "namespace": "gpu-operator"},
            "spec": {"template": {"spec": {"containers": [{"name": "nvidia-mig-manager", "image": image}]}}}}


def test_a_config_map_the_deployed_mig_manager_cannot_load_refuses_its_nodes():
    # The v26.7.0 default ConfigMap names +me profiles: MIG managers before v0.12.3 refuse the whole file.
    configmap = {"metadata": {"name": "default-mig-parted-config"},
                 "data": {"config.yaml": default_config_yaml("v26.7.0")}}
    image = "nvcr.io/nvidia/cloud-native/k8s-mig-manager:{}-ubuntu20.04"
    assert unloadable([configmap], mig_manager_dialect([mig_manager_daemonset(image.format("v0.12.3"))])) == {}
    assert unloadable([configmap], mig_manager_dialect([mig_manager_daemonset("k8s-mig-manager@sha256:0f")])) == {}
    old = unloadable([configmap], mig_manager_dialect([mig_manager_daemonset(image.format("v0.12.1"))]))
    assert list(old) == ["default-mig-parted-config"]
    assert old["default-mig-parted-config"].startswith("MIG manager v0.12.1 refuses it: ")
    assert "+me" in old["default-mig-parted-config"]
    cluster = view(**{"gpu-1": node("gpu-1")})
    refused = ClusterView(**{**cluster.__dict__, "unloadable_config_maps": old})
    plan = plan_node(refused, "gpu-1", "all-1g.10gb", None)
    assert plan.action == REFUSE
    assert plan.reason.startswith("the MIG manager deployed cannot load ConfigMap gpu-operator/default-mig-parted-config")


def test_tolerations():
    assert tolerates({"key": "mig", "operator": "Exists"}, MAINTENANCE[0])
    assert tolerates({"operator": "Exists"}, MAINTENANCE[0])
    assert not tolerates({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}, MAINTENANCE[0])
    assert not tolerates({"key": "mig", "value": "other", "effect": "NoSchedule"}, MAINTENANCE[0])
    ds = {"metadata": {"name": "nvidia-device-plugin-daemonset", "namespace": "gpu-operator"},
          "spec": {"template": {"spec": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}}}}
    assert untolerated([ds], MAINTENANCE) == [
        "DaemonSet gpu-operator/nvidia-device-plugin-daemonset does not tolerate mig=maintenance:NoSchedule"]
    assert untolerated([ds], [Taint("mig", "PreferNoSchedule")]) == []


def test_report_rows_and_table():
    plan = [{"node": "a", "action": "change", "from_config": "x", "to_config": "y", "reason": ""},
            {"node": "b", "action": "change", "from_config": "x", "to_config": "y", "reason": ""},
            {"node": "c", "action": "skip", "from_config": "y", "to_config": "y", "reason": "already"},
            {"node": "d", "action": "change", "from_config": "x", "to_config": "y", "reason": ""}]
    results = {"begin": {"a": {"steps": {"maintenance": 0.1, "evacuate": 1.0},
                               "evacuation": {"evicted": [{"name": "p"}]}}},
               "label": {"a": {"duration_s": 30.0}}, "finish": {"a": {"steps": {"verify": 2.0, "finish": 0.1}}},
               "slot": {"a": {"started": "2026-11-29T03:00:00.000Z", "finished": "2026-11-29T03:00:33.300Z"}},
               "outcome": {"b": {"result": "failed", "reason": "b: step 'x' failed: boom", "steps": {}, "evicted": []}}}
    rows = entries(plan, results)
    assert [r["result"] for r in rows] == ["done", "failed", "skipped", "not started"]
    assert rows[0]["evicted"] == ["p"] and rows[0]["steps"]["label"] == 30.0
    assert rows[0]["started"] == "2026-11-29T03:00:00.000Z" and rows[0]["finished"].endswith("33.300Z")
    text = table(rows)
    assert text[0].split() == ["NODE", "FROM", "->", "TO", "RESULT", "MAINTENANCE", "EVACUATE", "LABEL", "VERIFY",
                               "FINISH", "TOTAL", "EVICTED"]
    assert "33.2s" in text[1]
    assert text[-2:] == ["b: step 'x' failed: boom", "d: the rollout stopped before this node"]


def gpu_pod(name, tolerations=None, labels=None, owner=True, volumes=None, namespace="ml"):
    meta = {"name": name, "namespace": namespace, "uid": f"uid-{name}", "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [{"kind": "ReplicaSet", "name": "rs", "controller": True, "apiVersion": "apps/v1"}]
    return {"metadata": meta, "spec": {"nodeName": "gpu-1", "tolerations": tolerations or [], "volumes": volumes or [],
                                       "containers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
            "status": {"phase": "Running"}}


def pod_view(pods, pdbs=None, **node_args):
    cluster = view(**{"gpu-1": node("gpu-1", **node_args)})
    cluster.pods_by_node = {"gpu-1": pods}
    cluster.pdbs = pdbs
    return cluster


HOW = Maintenance(tuple(MAINTENANCE), False, Options(), selectors.EVERYTHING, list_pods=True)


def test_item_6_gpu_pods_that_tolerate_the_maintenance_taint_get_the_node_cordoned_as_well():
    tolerating = gpu_pod("train-0", tolerations=[{"key": "mig", "operator": "Exists"}])
    plan = plan_node(pod_view([tolerating, gpu_pod("other")]), "gpu-1", "all-1g.10gb", HOW)
    assert plan.action == CHANGE and plan.cordon is True
    assert plan.returning == ["ml/train-0"]
    assert "cordoned as well: GPU pods ml/train-0 tolerate mig=maintenance:NoSchedule" in plan.reason
    # A pod that tolerates everything would come back even to a cordoned node: the node is refused.
    everything = gpu_pod("anywhere", tolerations=[{"operator": "Exists"}])
    refused = plan_node(pod_view([everything]), "gpu-1", "all-1g.10gb", HOW)
    assert refused.action == REFUSE
    assert refused.reason.startswith("node gpu-1: GPU pod ml/anywhere tolerates every taint that would keep it off")
    # Without such pods, no cordon.
    assert plan_node(pod_view([gpu_pod("plain")]), "gpu-1", "all-1g.10gb", HOW).cordon is False


def test_item_10_check_mode_names_what_will_block_the_real_run():
    bare = gpu_pod("bare", owner=False)
    scratch = gpu_pod("scratch", volumes=[{"name": "tmp", "emptyDir": {}}])
    guarded = gpu_pod("guarded", labels={"app": "serve"})
    pdb = {"metadata": {"name": "serve", "namespace": "ml"},
           "spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["serve"]}]}},
           "status": {"disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1}}
    plan = plan_node(pod_view([bare, scratch, guarded], pdbs=[pdb]), "gpu-1", "all-1g.10gb", HOW)
    assert plan.evict == ["ml/guarded"]
    assert [entry.split(":")[0] for entry in plan.blocked] == ["ml/bare", "ml/scratch"]
    assert plan.pdb_blocked == ["ml/guarded: PodDisruptionBudget ml/serve allows no disruption now (1 healthy, "
                                "1 needed)"]
    assert len(plan.blockers()) == 3


def test_check_mode_selects_pods_as_the_api_server_does():
    pods = [gpu_pod("a", labels={"tier": "train"}), gpu_pod("b", labels={"tier": "batch"}),
            gpu_pod("c", labels={"tier": "web"}), gpu_pod("d")]
    how = Maintenance(tuple(MAINTENANCE), False, Options(), selectors.parse("tier in (train,batch)"), list_pods=True)
    assert plan_node(pod_view(pods), "gpu-1", "all-1g.10gb", how).evict == ["ml/a", "ml/b"]
    how = Maintenance(tuple(MAINTENANCE), False, Options(), selectors.parse("tier notin (train)"), list_pods=True)
    assert plan_node(pod_view(pods), "gpu-1", "all-1g.10gb", how).evict == ["ml/b", "ml/c", "ml/d"]


def test_item_8_a_node_at_its_config_whose_apply_failed_is_reapplied():
    plan = plan_node(view(**{"gpu-1": node("gpu-1", config="all-1g.10gb", state="failed")}), "gpu-1", "all-1g.10gb")
    assert plan.action == CHANGE and plan.reapply is True
    assert plan_node(view(**{"gpu-1": node("gpu-1")}), "gpu-1", "all-1g.10gb").reapply is False


def test_item_11_a_rerun_of_a_stuck_pending_node_says_how_to_recover():
    patch, _ = record.begin_patch(node(), "run-1", "all-1g.10gb", MAINTENANCE, cordon=False)
    begun = node(annotations=patch["metadata"]["annotations"])
    failed, _ = record.failed_patch(begun, "run-1", "Set the MIG config", "not applied within 5 s; last state pending")
    stuck = node("gpu-1", config="all-1g.10gb", state="pending", annotations=failed["metadata"]["annotations"])
    plan = plan_node(view(**{"gpu-1": stuck}), "gpu-1", "all-1g.10gb")
    assert plan.action == REFUSE
    assert "its MIG manager is still in state pending for all-1g.10gb, which run run-1 gave up waiting for" in plan.reason
    assert "kubectl -n gpu-operator delete pod nvidia-mig-manager-gpu-1" in plan.reason
    # Killed mid-apply (record still "maintenance"): the MIG manager is at work, the node is resumed.
    working = node("gpu-1", config="all-1g.10gb", state="pending", annotations=patch["metadata"]["annotations"])
    assert plan_node(view(**{"gpu-1": working}), "gpu-1", "all-1g.10gb").action == RESUME


def test_report_says_the_lock_was_lost():
    rows = entries([{"node": "a", "action": "change", "from_config": "x", "to_config": "y", "reason": ""}], {})
    assert table(rows, "another run took the Lease gpu-operator/mig-rollout over")[-1].startswith(
        "LOCK LOST: another run took the Lease gpu-operator/mig-rollout over; this run stopped")


def test_report_names_nodes_skipped_for_capacity_and_why_others_never_started():
    plan = [{"node": n, "action": "change", "from_config": "x", "to_config": "y", "reason": ""} for n in "abc"]
    results = {"begin": {"a": {"capacity_refused": True, "reason": "node a was not touched: 1 GPU pod(s) would have "
                                                                   "nowhere to go: ml/p: 0/3 nodes are available",
                               "room": {"stuck": ["ml/p: 0/3 nodes are available"]}}},
               "not_started": {"b": "the failure budget is spent: 1 node(s) failed, at most 0 allowed"}}
    rows = entries(plan, results)
    assert [r["result"] for r in rows] == ["skipped", "not started", "not started"]
    assert rows[0]["stuck"] == ["ml/p: 0/3 nodes are available"]
    assert summary(rows) == {"skipped": 1, "no room": 1, "not started": 2}
    assert rows[1]["reason"].startswith("the failure budget is spent")
    assert rows[2]["reason"] == "the rollout stopped before this node"
    text = table(rows)
    assert "a: node a was not touched: 1 GPU pod(s) would have nowhere to go: ml/p: 0/3 nodes are available" in text
