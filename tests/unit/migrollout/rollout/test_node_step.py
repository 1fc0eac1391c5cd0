"""A node's rollout steps as orchestration: what each sends to the API, in which order, and what it returns
(recording_api: the stand-in client of tests/unit/migrollout/conftest.py)."""

import json
import os

import pytest

from migrollout.failures import StepFailed
from migrollout.rollout import fence, fence_policy, node_step, record, slots
from migrollout.rollout.fence import LockLost
from migrollout.rollout.node_step import (
    NodeStep,
    begin_maintenance,
    maintenance_taints,
    mark_failed,
    return_to_service,
)
from migrollout.taints import Taint

RUN = "20261129T020000Z-control-1-ab12cd"
MAINTENANCE = [Taint("mig", "NoSchedule", "maintenance")]
NODE_PATH = "/api/v1/nodes/gpu-1"


def node(annotations=None, taints=None):
    labels = {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
              "nvidia.com/gpu.count": "8", "nvidia.com/mig.config": "all-disabled",
              "nvidia.com/mig.config.state": "success", "nvidia.com/mig.capable": "true"}
    return {"metadata": {"name": "gpu-1", "labels": labels, "annotations": annotations or {}, "resourceVersion": "1"},
            "spec": {"taints": taints or []}}


@pytest.mark.parametrize(("raw", "message"), [
    ([{"key": "mig", "effect": "NoExecute"}], "node gpu-1: maintenance taint mig:NoExecute refused: a NoExecute taint"),
    ([{"key": "mig", "effect": "Sometimes"}], "node gpu-1: "),
])
def test_maintenance_taints_are_refused_before_anything_is_written(raw, message):
    with pytest.raises(StepFailed) as failed:
        maintenance_taints("gpu-1", raw)
    assert failed.value.msg.startswith(message)


def test_maintenance_taints_are_read_once_into_taints():
    assert maintenance_taints("gpu-1", [{"key": "mig", "value": "maintenance", "effect": "NoSchedule"}]) == MAINTENANCE


def test_begin_puts_the_node_into_maintenance_in_one_write(recording_api):
    api = recording_api([node()])
    step = NodeStep(api, "gpu-1", RUN)
    result = begin_maintenance(step, "all-1g.10gb", MAINTENANCE, cordon=True)
    assert api.requests == [("GET", NODE_PATH), ("PATCH", NODE_PATH)]
    written = api.nodes["gpu-1"]
    assert written["spec"]["taints"] == [{"key": "mig", "value": "maintenance", "effect": "NoSchedule"}]
    assert written["spec"]["unschedulable"] is True
    assert record.read(written).to_config == "all-1g.10gb"
    assert result["changed"] is True and result["cordoned"] is True and result["moved"] == 0
    assert result["record"]["run"] == RUN and result["taints"] == written["spec"]["taints"]
    assert list(result["steps"]) == ["maintenance"]


def test_begin_in_check_mode_asks_the_server_for_a_dry_run(recording_api):
    api = recording_api([node()])
    result = begin_maintenance(NodeStep(api, "gpu-1", RUN, check_mode=True, diff=True), "all-1g.10gb", MAINTENANCE,
                               cordon=False)
    assert api.nodes["gpu-1"]["spec"]["taints"] == []      # nothing persisted
    assert result["changed"] is True
    assert result["diff"]["after"]["taints"] == [{"key": "mig", "value": "maintenance", "effect": "NoSchedule"}]


def test_a_node_without_a_slot_of_the_window_is_not_touched(recording_api, tmp_path):
    slots_file = str(tmp_path / "lock.slots")
    slots.write(slots_file, {"active": {"gpu-2": "2026-11-29T02:00:00Z"}})
    api = recording_api([node()])
    lock = {"holder": RUN, "state_file": str(tmp_path / "lock"), "slots_file": slots_file}
    with pytest.raises(StepFailed) as failed:
        begin_maintenance(NodeStep(api, "gpu-1", RUN, lock), "all-1g.10gb", MAINTENANCE, cordon=False)
    assert failed.value.result["phase"] == "window"
    assert "does not hold a slot" in failed.value.msg
    assert api.requests == []


def test_the_fence_is_checked_right_before_the_write(recording_api, tmp_path):
    api = recording_api([node()])
    lock = {"holder": RUN, "state_file": str(tmp_path / "missing")}   # a lock that cannot be confirmed
    with pytest.raises(LockLost):
        begin_maintenance(NodeStep(api, "gpu-1", RUN, lock), "all-1g.10gb", MAINTENANCE, cordon=False)
    assert api.requests == [("GET", NODE_PATH)]          # read, never written


def held_lock(tmp_path, holder=RUN):
    """A lock this process holds, freshly confirmed (what the renewer records), as a step's rollout_lock."""
    path = str(tmp_path / "held")
    fence.write(path, fence.LockState(holder, "gpu-operator", 30, os.getpid(), renewer_pid=os.getpid(),
                                      confirmed=fence.boottime()))
    return {"holder": holder, "state_file": path}


def test_every_node_write_of_a_rollout_names_its_run_with_a_value_of_its_own(recording_api, tmp_path):
    api = recording_api([node()])
    step = NodeStep(api, "gpu-1", RUN, held_lock(tmp_path))
    begin_maintenance(step, "all-1g.10gb", MAINTENANCE, cordon=False)
    return_to_service(step)
    marks = [patch["metadata"]["annotations"][fence_policy.FENCE_ANNOTATION] for patch in api.patches]
    assert len(marks) == 2 and len(set(marks)) == 2
    assert all(fence_policy.run_of(mark) == RUN for mark in marks)


def test_outside_a_rollout_no_write_names_a_run(recording_api):
    api = recording_api([node()])
    begin_maintenance(NodeStep(api, "gpu-1", RUN), "all-1g.10gb", MAINTENANCE, cordon=False)
    assert fence_policy.FENCE_ANNOTATION not in api.nodes["gpu-1"]["metadata"]["annotations"]


def test_return_to_service_removes_what_begin_added(recording_api):
    admin = {"key": "team", "value": "x", "effect": "NoSchedule"}
    api = recording_api([node(taints=[admin])])
    begin_maintenance(NodeStep(api, "gpu-1", RUN), "all-1g.10gb", MAINTENANCE, cordon=True)
    result = return_to_service(NodeStep(api, "gpu-1", RUN), moved=2)
    back = api.nodes["gpu-1"]
    assert back["spec"]["taints"] == [admin]
    assert "unschedulable" not in back["spec"]
    assert record.ANNOTATION not in back["metadata"]["annotations"]
    assert result["changed"] is True and result["step"] == "finish" and list(result["steps"]) == ["finish"]


def test_mark_failed_keeps_the_node_in_maintenance_and_says_why(recording_api):
    api = recording_api([node()])
    begin_maintenance(NodeStep(api, "gpu-1", RUN), "all-1g.10gb", MAINTENANCE, cordon=False)
    result = mark_failed(NodeStep(api, "gpu-1", RUN), "label", "the MIG manager failed")
    kept = record.read(api.nodes["gpu-1"])
    assert (kept.step, kept.error) == ("failed", "label: the MIG manager failed")
    assert api.nodes["gpu-1"]["spec"]["taints"]            # no broken GPUs back in service
    assert result["changed"] is True and result["node_gone"] is False


def test_mark_failed_on_a_node_that_is_gone_writes_nothing(recording_api):
    api = recording_api([])
    result = mark_failed(NodeStep(api, "gpu-1", RUN), "label", "x")
    assert result == {"changed": False, "name": "gpu-1", "step": "failed", "record": None, "node_gone": True,
                      "taints": [], "cordoned": False}
    assert [method for method, _ in api.requests] == ["GET"]


def test_the_record_written_is_json_the_annotation_carries(recording_api):
    api = recording_api([node()])
    begin_maintenance(NodeStep(api, "gpu-1", RUN), "all-1g.10gb", MAINTENANCE, cordon=False)
    assert json.loads(api.nodes["gpu-1"]["metadata"]["annotations"][record.ANNOTATION])["run"] == RUN


def upgrading(state):
    found = node()
    found["metadata"]["labels"]["nvidia.com/gpu-driver-upgrade-state"] = state
    return found


def test_a_node_whose_driver_upgrade_is_under_way_is_not_touched(recording_api):
    api = recording_api([upgrading("cordon-required")])
    result = begin_maintenance(NodeStep(api, "gpu-1", RUN), "all-1g.10gb", MAINTENANCE, cordon=False,
                               capacity_options={"policy": "refuse", "timeout": 600})
    assert result["driver_upgrade_refused"] is True and result["changed"] is False
    assert "driver upgrade is under way on it (nvidia.com/gpu-driver-upgrade-state=cordon-required)" in result["reason"]
    assert [method for method, _ in api.requests] == ["GET"]


def test_with_the_wait_policy_the_step_waits_for_the_driver_upgrade_to_end(recording_api, monkeypatch):
    api = recording_api([upgrading("pod-restart-required")])
    polls = []

    def upgrade_goes_on(seconds):
        polls.append(seconds)
        states = ["validation-required", "uncordon-required", "upgrade-done"]
        api.nodes["gpu-1"]["metadata"]["labels"]["nvidia.com/gpu-driver-upgrade-state"] = states[len(polls) - 1]

    monkeypatch.setattr(node_step.time, "sleep", upgrade_goes_on)
    result = begin_maintenance(NodeStep(api, "gpu-1", RUN), "all-1g.10gb", MAINTENANCE, cordon=False,
                               capacity_options={"policy": "wait", "timeout": 600})
    assert len(polls) == 3 and result["changed"] is True and not result["driver_upgrade_refused"]
    assert record.read(api.nodes["gpu-1"]).to_config == "all-1g.10gb"


def test_a_node_resumed_from_its_own_record_is_not_held_back_by_a_driver_upgrade(recording_api):
    begun, _ = record.begin_patch(node(), "run-0", "all-1g.10gb", MAINTENANCE, cordon=False)
    left = upgrading("cordon-required")
    left["metadata"]["annotations"] = begun["metadata"]["annotations"]
    api = recording_api([left])
    result = begin_maintenance(NodeStep(api, "gpu-1", "run-0"), "all-1g.10gb", MAINTENANCE, cordon=False)
    assert result["driver_upgrade_refused"] is False
