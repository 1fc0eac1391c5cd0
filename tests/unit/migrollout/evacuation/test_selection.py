"""Which pods an evacuation selects, and kubectl drain's filters in kubectl's order."""

import pytest

from migrollout.evacuation.engine import options_problem
from migrollout.evacuation.selection import DELETE, EVICT, REFUSE, SKIP, WAIT, Options, decide, plan, selected


def pod(name="p", gpu=None, runtime=None, owner=None, phase="Running", volumes=None, annotations=None,
        deleting=False, init_gpu=None):
    containers = [{"name": "c", "resources": {"limits": {gpu: "1"}} if gpu else {}}]
    meta = {"name": name, "namespace": "ns", "uid": f"uid-{name}", "annotations": annotations or {}}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1" if owner != "Job" else "batch/v1", "kind": owner,
                                    "name": "o", "controller": True}]
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    spec = {"containers": containers, "volumes": volumes or []}
    if init_gpu:
        spec["initContainers"] = [{"name": "i", "resources": {"requests": {init_gpu: "1"}}}]
    if runtime:
        spec["runtimeClassName"] = runtime
    return {"metadata": meta, "spec": spec, "status": {"phase": phase}}


DS_EXISTS = lambda namespace, name: True  # noqa: E731
DS_GONE = lambda namespace, name: False  # noqa: E731


@pytest.mark.parametrize("candidate, wanted", [
    (pod(gpu="nvidia.com/gpu"), True),
    (pod(gpu="nvidia.com/mig-1g.10gb"), True),
    (pod(init_gpu="nvidia.com/mig-3g.40gb"), True),
    (pod(runtime="nvidia"), True),
    (pod(runtime="kata"), False),
    (pod(gpu="cpu"), False),
    (pod(), False),
])
def test_gpu_selection(candidate, wanted):
    assert selected(candidate, Options()) is wanted
    assert selected(candidate, Options(gpu_only=False)) is True


def test_runtime_classes_are_configurable():
    assert selected(pod(runtime="nvidia-cdi"), Options(gpu_runtime_classes=("nvidia-cdi",)))


@pytest.mark.parametrize("candidate, options, action, reason", [
    (pod(owner="ReplicaSet"), Options(), EVICT, ""),
    (pod(owner="ReplicaSet", deleting=True), Options(), WAIT, "already terminating"),
    (pod(owner="DaemonSet"), Options(), SKIP, "DaemonSet-managed"),
    (pod(owner="DaemonSet"), Options(ignore_daemonsets=False), REFUSE, "DaemonSet-managed (set ignore_daemonsets"),
    (pod(owner="DaemonSet", phase="Succeeded"), Options(ignore_daemonsets=False), DELETE, "finished"),
    (pod(annotations={"kubernetes.io/config.mirror": "x"}), Options(), SKIP, "mirror pod of a static pod"),
    (pod(owner="ReplicaSet", volumes=[{"name": "v", "emptyDir": {}}]), Options(), REFUSE, "uses emptyDir"),
    (pod(owner="ReplicaSet", volumes=[{"name": "v", "emptyDir": {}}]), Options(delete_emptydir_data=True), EVICT, ""),
    (pod(), Options(), REFUSE, "not managed by a controller"),
    (pod(), Options(force=True), EVICT, ""),
    (pod(phase="Failed"), Options(), DELETE, "finished"),
    (pod(owner="Job", phase="Succeeded"), Options(), DELETE, "finished"),
    # kubectl needs both flags for an unmanaged pod with local storage (kubernetes.core needs only one).
    (pod(volumes=[{"name": "v", "emptyDir": {}}]), Options(delete_emptydir_data=True), REFUSE, "not managed"),
    (pod(volumes=[{"name": "v", "emptyDir": {}}]), Options(force=True), REFUSE, "uses emptyDir"),
    (pod(volumes=[{"name": "v", "emptyDir": {}}]), Options(force=True, delete_emptydir_data=True), EVICT, ""),
])
def test_filters(candidate, options, action, reason):
    decision = decide(candidate, options, DS_EXISTS)
    assert decision.action == action
    assert decision.reason.startswith(reason)


def test_orphaned_daemonset_pod_needs_force():
    orphan = pod(owner="DaemonSet")
    assert decide(orphan, Options(), DS_GONE).action == REFUSE
    assert "no longer exists" in decide(orphan, Options(), DS_GONE).reason
    forced = decide(orphan, Options(force=True), DS_GONE)
    assert forced.action == EVICT and "no longer exists" in forced.warning


def test_warnings_accumulate_along_the_filters():
    decision = decide(pod(volumes=[{"name": "v", "emptyDir": {}}]), Options(force=True, delete_emptydir_data=True),
                      DS_EXISTS)
    assert "emptyDir data will be lost" in decision.warning and "not managed by a controller" in decision.warning


def test_plan_only_judges_selected_pods():
    decisions = plan([pod("gpu", gpu="nvidia.com/gpu", owner="ReplicaSet"), pod("cpu")], Options(), DS_EXISTS)
    assert [d.pod["metadata"]["name"] for d in decisions] == ["gpu"]


@pytest.mark.parametrize(("changed", "problem"), [
    ({}, ""),
    ({"grace_period": 0}, ""),
    ({"grace_period": -2}, "grace_period is -2; it must be -1 (each pod's own) or 0 or more"),
    ({"timeout": 0}, "timeout is 0; it must be at least 1"),
    ({"max_parallel": -3}, "max_parallel is -3; it must be at least 1"),
    ({"pod_selector": "tier in (train,batch)"}, ""),
    ({"pod_selector": "tier in train"}, "pod_selector: "),
])
def test_evacuation_options_out_of_range_are_named(changed, problem):
    options = {"grace_period": -1, "timeout": 600, "max_parallel": 10, "pod_selector": None, **changed}
    found = options_problem(options)
    assert found.startswith(problem) if problem else found == ""
    assert bool(found) == bool(problem)
