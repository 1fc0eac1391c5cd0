"""Applying a MIG config to a node as orchestration: what it writes, when it refuses, how it retries a conflict,
and the verdict on a followed apply (recording_api: the stand-in client of tests/unit/migrollout/conftest.py)."""

import os
import time

import pytest

from migrollout.failures import StepFailed
from migrollout.mig_apply import CONFLICT_ATTEMPTS, ConfigApply, PendingWatch, apply_config, apply_verdict
from migrollout.migstate import FollowResult, Transition
from migrollout.rollout import record

NODE_PATH = "/api/v1/nodes/gpu-1"
CHECKED = {"gpu_count": 8, "mode_change": ""}


def node(config="all-disabled", state="success", taints=None):
    labels = {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
              "nvidia.com/gpu.count": "8", "nvidia.com/mig.config": config, "nvidia.com/mig.config.state": state,
              "nvidia.com/mig.capable": "true"}
    return {"metadata": {"name": "gpu-1", "labels": labels, "resourceVersion": "1"},
            "spec": {"taints": taints or []}}


def manager_pod(tolerations=()):
    return {"metadata": {"name": "mig-manager-x", "namespace": "gpu-operator", "uid": "mig-manager-x-uid"},
            "spec": {"nodeName": "gpu-1", "tolerations": list(tolerations)}, "status": {"phase": "Running"}}


def applying(api, config="all-1g.10gb", **options):
    options = {"checked": CHECKED, "operator_namespace": "gpu-operator", **options}
    return apply_config(ConfigApply(api, "gpu-1", config, **options))


def test_a_config_already_applied_is_left_alone(recording_api):
    api = recording_api([node("all-1g.10gb", "success")])
    result = applying(api)
    assert result["changed"] is False and result["state"] == "success"
    assert api.requests == [("GET", NODE_PATH)]


def test_a_node_busy_with_another_config_is_refused_with_what_was_seen(recording_api):
    api = recording_api([node("all-disabled", "pending")])
    with pytest.raises(StepFailed) as refused:
        applying(api)
    assert "busy applying all-disabled (state pending)" in refused.value.msg
    assert refused.value.result["previous_state"] == "pending"
    assert api.patches == []


def test_the_label_write_clears_the_old_state_in_the_same_patch(recording_api):
    api = recording_api([node()])
    result = applying(api, wait=False)
    assert api.patches == [{"metadata": {"resourceVersion": "1", "labels": {
        "nvidia.com/mig.config": "all-1g.10gb", "nvidia.com/mig.config.state": None}}}]
    assert api.nodes["gpu-1"]["metadata"]["labels"]["nvidia.com/mig.config"] == "all-1g.10gb"
    assert "nvidia.com/mig.config.state" not in api.nodes["gpu-1"]["metadata"]["labels"]
    assert result["changed"] is True and result["state"] == ""


def test_check_mode_says_it_would_write_and_writes_nothing(recording_api):
    api = recording_api([node()])
    result = applying(api, check_mode=True, diff=True)
    assert result["changed"] is True and api.patches == []
    assert result["diff"]["after"] == "nvidia.com/mig.config=all-1g.10gb\n"


def test_a_conflict_reads_the_node_again_and_decides_again(recording_api):
    api = recording_api([node()], conflicts=1)
    applying(api, wait=False)
    assert api.requests == [("GET", NODE_PATH), ("PATCH", NODE_PATH), ("GET", NODE_PATH), ("PATCH", NODE_PATH)]


def test_conflicts_on_every_attempt_fail_with_nothing_written(recording_api):
    api = recording_api([node()], conflicts=CONFLICT_ATTEMPTS)
    with pytest.raises(StepFailed) as failed:
        applying(api, wait=False)
    assert f"every one of {CONFLICT_ATTEMPTS} attempts" in failed.value.msg
    assert api.nodes["gpu-1"]["metadata"]["labels"]["nvidia.com/mig.config"] == "all-disabled"


def test_reapply_restarts_the_mig_manager_after_the_label_write(recording_api):
    api = recording_api([node("all-1g.10gb", "success")], pods=[manager_pod()])
    result = applying(api, reapply=True, wait=False)
    assert [method for method, _ in api.requests] == ["GET", "LIST", "PATCH", "DELETE"]
    assert api.requests[-1] == ("DELETE", "/api/v1/namespaces/gpu-operator/pods/mig-manager-x")
    assert result["restarted_mig_manager"] == "mig-manager-x"
    # That pod only: a replacement started meanwhile is not deleted.
    assert api.deletes == [{"preconditions": {"uid": "mig-manager-x-uid"}}]


def test_reapply_that_would_strand_the_node_is_refused(recording_api):
    taint = {"key": "mig", "value": "maintenance", "effect": "NoSchedule"}
    api = recording_api([node("all-1g.10gb", "success", taints=[taint])], pods=[manager_pod()])
    with pytest.raises(StepFailed) as refused:
        applying(api, reapply=True)
    assert "would strand the node" in refused.value.msg and "mig=maintenance:NoSchedule" in refused.value.msg
    assert api.patches == []


def test_no_running_mig_manager_is_refused_when_the_plan_did_not_check(recording_api):
    api = recording_api([node()], pods=[])
    with pytest.raises(StepFailed) as refused:
        applying(api, reapply=True, config="all-disabled")
    assert "no running MIG manager pod" in refused.value.msg


def outcome(final, states=("pending", "success")):
    """What following the apply saw: the node's state label is the last state seen."""
    last = {"nvidia.com/mig.config.state": states[-1]} if states else {}
    return FollowResult({"metadata": {"labels": last}}, final,
                        [Transition(state, "", float(index)) for index, state in enumerate(states)])


def test_the_verdict_of_a_successful_apply():
    result = apply_verdict({"name": "gpu-1", "config": "c"}, outcome("success"), time.monotonic(), 60)
    assert result["state"] == "success" and [t["state"] for t in result["transitions"]] == ["pending", "success"]


@pytest.mark.parametrize(("final", "states", "hints", "said"), [
    ("failed", ("pending", "failed"), {"failed": "reboot the node"}, "the MIG manager failed to apply c after"),
    ("failed", ("pending", "failed"), {"failed": "reboot the node"}, "its pod log says why; reboot the node"),
    ("", ("pending",), {"pending": "restart its pod"}, "MIG config c not applied within 60 s; last state pending"),
    ("", ("pending",), {"pending": "restart its pod"}, "; restart its pod"),
    ("", (), {"pending": "restart its pod"}, "last state (none)"),
])
def test_the_verdict_of_an_apply_that_did_not_succeed(final, states, hints, said):
    with pytest.raises(StepFailed) as failed:
        apply_verdict({"name": "gpu-1", "config": "c"}, outcome(final, states), time.monotonic(), 60, hints)
    assert said in failed.value.msg
    assert failed.value.result["paused_operands"] == []


# -- a MIG manager stuck in pending ---------------------------------------------------------------------------


def following(state, since_s):
    return FollowResult({}, "", [Transition(state, "", since_s)])


def watch_for_stuck(api, tmp_path, pending_timeout=600):
    from migrollout.migsetup import MigSetup
    from migrollout.rollout import fence

    state_file = str(tmp_path / "lock")
    fence.write(state_file, fence.LockState("run-1", "gpu-operator", 30, os.getpid(), renewer_pid=os.getpid(),
                                            confirmed=fence.boottime()))
    apply = ConfigApply(api, "gpu-1", "all-1g.10gb", checked=CHECKED, pending_timeout=pending_timeout,
                        rollout_lock={"holder": "run-1", "state_file": state_file})
    setup = MigSetup("gpu-operator", "mixed", "default-mig-parted-config", None, None)
    return PendingWatch(apply, setup, "all-1g.10gb", manager_pod())


def in_maintenance(recording_node):
    begun, _ = record.begin_patch(recording_node, "run-1", "all-1g.10gb", [], cordon=False)
    recording_node["metadata"]["annotations"] = begun["metadata"]["annotations"]
    return recording_node


def test_a_manager_pending_less_than_the_timeout_is_left_alone(recording_api, tmp_path):
    api = recording_api([in_maintenance(node("all-1g.10gb", "pending"))], pods=[manager_pod()])
    watch = watch_for_stuck(api, tmp_path)
    watch(following("pending", 10.0), 600.0)
    watch(following("success", 10.0), 900.0)
    assert not [r for r in api.requests if r[0] in ("PATCH", "DELETE")] and watch.note == ""


def test_a_manager_stuck_in_pending_is_restarted_once_and_the_record_says_so(recording_api, tmp_path):
    api = recording_api([in_maintenance(node("all-1g.10gb", "pending"))], pods=[manager_pod()])
    watch = watch_for_stuck(api, tmp_path)
    watch(following("pending", 5.0), 606.0)
    assert api.deletes == [{"preconditions": {"uid": "mig-manager-x-uid"}}]
    kept = record.read(api.nodes["gpu-1"])
    assert kept.recoveries == [watch.note] and "stayed in state pending for 601 s" in watch.note
    # Once only: still pending, nothing more is restarted; as long again after the restart, the node fails.
    watch(following("pending", 5.0), 900.0)
    assert len(api.deletes) == 1
    with pytest.raises(StepFailed) as failed:
        watch(following("pending", 5.0), 1206.0)
    assert "still in state pending for all-1g.10gb 600 s after this run restarted it" in failed.value.msg


def test_a_stuck_manager_whose_replacement_could_not_land_is_not_restarted(recording_api, tmp_path):
    taint = {"key": "mig", "value": "maintenance", "effect": "NoSchedule"}
    api = recording_api([in_maintenance(node("all-1g.10gb", "pending", taints=[taint]))], pods=[manager_pod()])
    watch = watch_for_stuck(api, tmp_path)
    with pytest.raises(StepFailed) as failed:
        watch(following("pending", 0.0), 700.0)
    assert "could not be scheduled past taint mig=maintenance:NoSchedule" in failed.value.msg
    assert api.deletes == []
