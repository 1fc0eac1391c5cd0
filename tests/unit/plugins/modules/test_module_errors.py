"""Module fixes from issue 11: a bounded retry of 409s (mig_node_label), a terminating namespace told by the
Status cause as kubectl does (evacuation), gpu_operator_wait failing at once on errors waiting cannot cure,
and mig_rollout_report saying it changed something when it wrote files."""

from __future__ import annotations

import importlib
import time
from typing import Any

import pytest
import yaml

from ansible_collections.nvidia_mig.rollout.plugins.module_utils.kube_task import (
    TaskContext,
    TaskFailed,
    execute,
)
from migrollout.default_config import build_default_config
from migrollout.evacuation.engine import Evacuator
from migrollout.evacuation.selection import EVICT, Decision, Options
from migrollout.kube import KubeError

COLLECTION = "ansible_collections.nvidia_mig.rollout.plugins.modules"


def module(name: str) -> Any:
    return importlib.import_module(f"{COLLECTION}.{name}")


def context(module_name: str, api: Any, **params: Any) -> TaskContext:
    spec = module(module_name).SPEC
    full = {key: option.get("default") for key, option in spec.full_argument_spec.items()}
    ctx = TaskContext(params={**full, **params})
    ctx.__dict__["api"] = api  # the cached property, replaced by the fake
    return ctx


GPU_NODE = {"metadata": {"name": "gpu-1", "resourceVersion": "1", "labels": {
    "nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/gpu.count": "8",
    "nvidia.com/mig.config": "all-disabled", "nvidia.com/mig.config.state": "success"}}, "spec": {}, "status": {}}
MIG_MANAGER = {"metadata": {"name": "nvidia-mig-manager-x", "namespace": "gpu-operator"},
               "spec": {"nodeName": "gpu-1", "containers": [{"name": "mig-manager"}]}, "status": {"phase": "Running"}}


class ConflictingApi:
    """Every write of the node meets a newer version (HTTP 409)."""

    def __init__(self) -> None:
        self.patches = 0

    def get(self, path: str, what: str = "", **query: Any) -> dict[str, Any]:
        return GPU_NODE

    def get_or_none(self, path: str, what: str = "") -> dict[str, Any]:
        return {"metadata": {"name": "default-mig-parted-config"},
                "data": {"config.yaml": yaml.safe_dump(build_default_config())}}

    def list(self, path: str, **kwargs: Any) -> tuple[list[dict[str, Any]], str]:
        return [MIG_MANAGER], "1"

    def fenced(self, guard: Any) -> ConflictingApi:
        return self   # no rollout lock here: the view writes as the client does

    def patch(self, path: str, body: Any, **kwargs: Any) -> dict[str, Any]:
        self.patches += 1
        raise KubeError(409, "Conflict", "the object has been modified", kwargs.get("what", ""))


def test_mig_node_label_retries_a_conflict_a_bounded_number_of_times():
    api = ConflictingApi()
    ctx = context("mig_node_label", api, name="gpu-1", config="all-1g.10gb", operator_namespace="gpu-operator",
                  config_map="default-mig-parted-config")
    with pytest.raises(TaskFailed, match="node gpu-1: the node changed under every one of 10 attempts"):
        module("mig_node_label").run(ctx)
    assert api.patches == 10


class EvictionRefused:
    def __init__(self, error: KubeError) -> None:
        self.error = error
        self.deleted: list[str] = []

    def create(self, path: str, body: Any, **kwargs: Any) -> dict[str, Any]:
        raise self.error

    def delete(self, path: str, **kwargs: Any) -> dict[str, Any]:
        self.deleted.append(path)
        return {}


POD = {"metadata": {"name": "train-0", "namespace": "ml", "uid": "u-1"}}


def test_a_terminating_namespace_is_told_by_its_status_cause_as_kubectl_does():
    terminating = KubeError(403, "Forbidden", "pods \"train-0\" is forbidden: unable to create new content in "
                            "namespace ml because it is being terminated",
                            details={"causes": [{"type": "NamespaceTerminating", "field": "metadata.namespace"}]})
    api = EvictionRefused(terminating)
    Evacuator(api, "gpu-1", Options())._remove_once(Decision(POD, EVICT), dry_run=False)
    assert api.deleted == ["/api/v1/namespaces/ml/pods/train-0"]

    # A 403 that merely mentions termination (an admission webhook's text) is not that: it is an error.
    webhook = KubeError(403, "Forbidden", "admission webhook denied: pod termination is not allowed now")
    api = EvictionRefused(webhook)
    with pytest.raises(KubeError):
        Evacuator(api, "gpu-1", Options())._remove_once(Decision(POD, EVICT), dry_run=False)
    assert api.deleted == []


class ForbiddenApi:
    def __init__(self, status: int, where: str) -> None:
        self.status, self.where = status, where

    def list(self, path: str, **kwargs: Any) -> tuple[list[dict[str, Any]], str]:
        if self.where == "list":
            raise KubeError(self.status, "Forbidden" if self.status == 403 else "NotFound", "refused", "list")
        if "clusterpolicies" in path:
            return [{"metadata": {"name": "cluster-policy", "resourceVersion": "5"}, "spec": {},
                     "status": {"state": "notReady"}}], "5"
        return [], "5"

    def watch(self, path: str, **kwargs: Any):
        raise KubeError(self.status, "Forbidden", "cannot watch", "watch ClusterPolicies")


@pytest.mark.parametrize(("status", "where"), [(403, "list"), (401, "list"), (403, "watch")])
def test_gpu_operator_wait_fails_at_once_when_waiting_cannot_help(status, where):
    started = time.monotonic()
    result_error = None
    try:
        module("gpu_operator_wait").run(context("gpu_operator_wait", ForbiddenApi(status, where), timeout=30))
    except KubeError as exc:
        result_error = exc
    assert result_error is not None and result_error.status == status
    assert time.monotonic() - started < 5


def test_gpu_operator_wait_fails_at_once_without_the_clusterpolicy_crd():
    started = time.monotonic()
    with pytest.raises(TaskFailed, match=r"^the ClusterPolicy CRD is not installed"):
        module("gpu_operator_wait").run(context("gpu_operator_wait", ForbiddenApi(404, "list"), timeout=30))
    assert time.monotonic() - started < 5


def test_mig_rollout_report_says_it_changed_something_when_it_writes(tmp_path):
    plan = [{"node": "a", "action": "skip", "from_config": "x", "to_config": "x", "reason": "already"}]
    written = execute(module("mig_rollout_report").SPEC,
                      {"run": "r1", "plan": plan, "results": {}, "report_dir": str(tmp_path), "wall_s": None,
                       "rollout_lock": None}, check_mode=False, diff=False)
    assert written["changed"] is True and (tmp_path / "latest.json").exists()
    checked = execute(module("mig_rollout_report").SPEC,
                      {"run": "r1", "plan": plan, "results": {}, "report_dir": str(tmp_path / "no"), "wall_s": None,
                       "rollout_lock": None}, check_mode=True, diff=False)
    # Check mode writes no report, only the page of the plan's expected timeline.
    assert checked["changed"] is False and [p.name for p in (tmp_path / "no").iterdir()] == ["mig-rollout-r1-plan.html"]
