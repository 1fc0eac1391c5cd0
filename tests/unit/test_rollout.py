"""The rollout's pure parts: the maintenance record, the plan's decisions, tolerations, the report."""

from migrollout.default_config import build_default_config
from migrollout.migconfig import parse_config
from migrollout.rollout import record
from migrollout.rollout.plan import (
    CHANGE,
    REFUSE,
    RESUME,
    SKIP,
    ClusterView,
    order,
    plan_node,
    untolerated,
)
from migrollout.rollout.report import entries, table
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


def test_failure_is_recorded_and_keeps_the_taint():
    patch, _ = record.begin_patch(node(), "run-1", "all-1g.10gb", MAINTENANCE, cordon=False)
    left = node(annotations={record.ANNOTATION: patch["metadata"]["annotations"][record.ANNOTATION]})
    failed, rec = record.failed_patch(left, "run-1", "Set the MIG config", "apply failed")
    assert "spec" not in failed
    assert rec.step == "failed" and rec.error == "Set the MIG config: apply failed"


def view(**nodes_by_name):
    return ClusterView(nodes=nodes_by_name, policy=None, namespace="gpu-operator", strategy="mixed",
                       config_maps={"default-mig-parted-config": parse_config(build_default_config())},
                       managers={name: True for name in nodes_by_name}, daemonsets=[])


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
    results = {"begin": {"a": {"duration_s": 0.1}}, "evacuate": {"a": {"duration_s": 1.0, "evicted": [{"name": "p"}]}},
               "label": {"a": {"duration_s": 30.0}}, "verify": {"a": {"duration_s": 2.0}},
               "finish": {"a": {"duration_s": 0.1}},
               "outcome": {"b": {"result": "failed", "reason": "b: step 'x' failed: boom", "steps": {}, "evicted": []}}}
    rows = entries(plan, results)
    assert [r["result"] for r in rows] == ["done", "failed", "skipped", "not started"]
    assert rows[0]["evicted"] == ["p"] and rows[0]["steps"]["label"] == 30.0
    text = table(rows)
    assert text[0].split() == ["NODE", "FROM", "->", "TO", "RESULT", "MAINTENANCE", "EVACUATE", "LABEL", "VERIFY",
                               "FINISH", "TOTAL", "EVICTED"]
    assert "33.2s" in text[1]
    assert text[-2:] == ["b: step 'x' failed: boom", "d: the rollout stopped before this node"]
