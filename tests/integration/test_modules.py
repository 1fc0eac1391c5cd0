"""The four node modules, run through Ansible against the simulated cluster."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import module_output, run_module

from migrollout import kube

MAINTENANCE = {"key": "mig", "value": "maintenance", "effect": "NoSchedule"}
STATE = "nvidia.com/mig.config.state"
CONFIG = "nvidia.com/mig.config"


def taints_of(cluster, node):
    return cluster.node(node)["spec"].get("taints") or []


def gpu_deployment(namespace, name, pool, replicas, gpus=1, resource="nvidia.com/gpu", extra_spec=None):
    spec = {"nodeSelector": {"gpu-pool": pool},
            "containers": [{"name": "cuda", "image": "nvcr.io/nvidia/cuda:12.4.0-base",
                            "resources": {"limits": {resource: str(gpus)}}}]}
    spec.update(extra_spec or {})
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}}


def running_pods(cluster, namespace, app=None):
    pods = cluster.pods(namespace, label_selector=f"app={app}" if app else None)
    return [p for p in pods if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]


def wait_running(cluster, namespace, app, count):
    return cluster.wait(lambda: (pods := running_pods(cluster, namespace, app)) and len(pods) == count and pods,
                        what=f"{count} running {app} pods")


def snapshot(cluster, node):
    meta = cluster.node(node)
    return meta["metadata"].get("labels"), meta["spec"].get("taints"), meta["spec"].get("unschedulable")


# -- k8s_node_taint ----------------------------------------------------------------------------------------------

def test_taint_add_is_idempotent_and_keeps_other_taints(cluster, node_pool):
    node = node_pool.take("h200")
    # Cordoned: the node lifecycle controller adds its own node.kubernetes.io/unschedulable taint.
    cluster.api.patch(kube.node_path(node), {"spec": {"unschedulable": True}})
    cluster.wait(lambda: taints_of(cluster, node), what="the controller's unschedulable taint")
    preview = module_output(cluster, "nvidia_mig.rollout.k8s_node_taint", {"name": node, "taints": [MAINTENANCE]}, check=True, diff=True)
    assert "\n+mig=maintenance:NoSchedule\n" in preview
    first = run_module(cluster, "nvidia_mig.rollout.k8s_node_taint", {"name": node, "taints": [MAINTENANCE]})
    assert first["changed"] is True
    second = run_module(cluster, "nvidia_mig.rollout.k8s_node_taint", {"name": node, "taints": [MAINTENANCE]})
    assert second["changed"] is False
    keys = {(t["key"], t["effect"]) for t in taints_of(cluster, node)}
    assert keys == {("node.kubernetes.io/unschedulable", "NoSchedule"), ("mig", "NoSchedule")}
    # A different value for the same key and effect is an update, not a second taint.
    run_module(cluster, "nvidia_mig.rollout.k8s_node_taint", {"name": node, "taints": [{**MAINTENANCE, "value": "other"}]})
    assert [t.get("value") for t in taints_of(cluster, node) if t["key"] == "mig"] == ["other"]
    removed = run_module(cluster, "nvidia_mig.rollout.k8s_node_taint", {"name": node, "state": "absent",
                                                     "taints": [{"key": "mig", "effect": "NoSchedule"}]})
    assert removed["changed"] is True
    assert [(t["key"], t["effect"]) for t in taints_of(cluster, node)] == [
        ("node.kubernetes.io/unschedulable", "NoSchedule")]
    cluster.api.patch(kube.node_path(node), {"spec": {"unschedulable": None}})


def test_taint_check_mode_changes_nothing(cluster, node_pool):
    node = node_pool.take("h200")
    before = cluster.node(node)["metadata"]["resourceVersion"]
    result = run_module(cluster, "nvidia_mig.rollout.k8s_node_taint", {"name": node, "taints": [MAINTENANCE]}, check=True)
    assert result["changed"] is True
    assert {"key": "mig", "value": "maintenance", "effect": "NoSchedule"} in result["taints_after"]
    assert cluster.node(node)["metadata"]["resourceVersion"] == before
    assert taints_of(cluster, node) == []


def test_concurrent_writers_lose_nothing(cluster, node_pool):
    node = node_pool.take("a30")
    stop = threading.Event()
    written: list[str] = []

    def other_writer():
        # Another controller adding its own taints read-modify-write, and labels, as fast as it can.
        index = 0
        while not stop.is_set():
            index += 1
            current = cluster.node(node)
            taints = (current["spec"].get("taints") or []) + [{"key": f"other-{index}", "effect": "NoSchedule"}]
            try:
                cluster.api.patch(kube.node_path(node), {"metadata": {
                    "resourceVersion": current["metadata"]["resourceVersion"], "labels": {f"other-{index}": "x"}},
                    "spec": {"taints": taints}})
                written.append(f"other-{index}")
            except kube.KubeError as exc:
                assert exc.conflict
            time.sleep(0.01)
    thread = threading.Thread(target=other_writer)
    thread.start()
    try:
        for attempt in range(4):
            result = run_module(cluster, "nvidia_mig.rollout.k8s_node_taint", {
                "name": node, "taints": [{"key": f"ours-{attempt}", "effect": "PreferNoSchedule"}]})
            assert result["changed"] is True, result
    finally:
        stop.set()
        thread.join()
    keys = {t["key"] for t in taints_of(cluster, node)}
    labels = cluster.labels(node)
    assert {f"ours-{attempt}" for attempt in range(4)} <= keys
    assert set(written) <= keys
    assert all(labels.get(key) == "x" for key in written)
    assert len(written) > 4
    cluster.api.patch(kube.node_path(node), {"spec": {"taints": None}})


@pytest.mark.parametrize("args, message", [
    ({"name": "no-such-node", "taints": [MAINTENANCE]}, "node no-such-node does not exist"),
    ({"name": "cpu-2", "taints": [MAINTENANCE]}, "node cpu-2 has no NVIDIA GPU"),
    ({"name": "cpu-2", "taints": [{"key": "mig", "effect": "Sometimes"}]}, "value of effect must be one of"),
    ({"name": "cpu-2", "taints": [{"key": "bad key!", "effect": "NoSchedule"}], "require_gpu": False},
     "taint key 'bad key!' is not a valid Kubernetes qualified name"),
])
def test_taint_bad_input_changes_nothing(cluster, node_pool, args, message):
    node = node_pool.take("cpu")
    args = {**args, "name": args["name"].replace("cpu-2", node)}
    before = snapshot(cluster, node)
    result = run_module(cluster, "nvidia_mig.rollout.k8s_node_taint", args)
    assert result.get("failed") is True
    assert message.replace("cpu-2", node) in result["msg"]
    assert snapshot(cluster, node) == before


def test_module_path_matches_in_process_path(cluster, node_pool, monkeypatch):
    node = node_pool.take("h200")
    in_process = run_module(cluster, "nvidia_mig.rollout.k8s_node_taint", {"name": node, "taints": [MAINTENANCE]}, check=True,
                            verbose=True)
    assert in_process["changed"] is True
    assert "AnsiballZ" not in in_process["_log"]  # on the control host the action plugin ran it in-process
    monkeypatch.setenv("MIGROLLOUT_IN_PROCESS", "0")
    result = run_module(cluster, "nvidia_mig.rollout.k8s_node_taint", {"name": node, "taints": [MAINTENANCE]}, verbose=True)
    assert result["changed"] is True
    assert "AnsiballZ_k8s_node_taint.py" in result["_log"]  # the module itself ran, not the in-process path
    again = run_module(cluster, "nvidia_mig.rollout.k8s_node_taint", {"name": node, "taints": [MAINTENANCE]})
    assert again["changed"] is False
    run_module(cluster, "nvidia_mig.rollout.k8s_node_taint", {"name": node, "state": "absent", "taints": [MAINTENANCE]})


def test_token_connection_options(cluster):
    server = cluster.api.host
    result = run_module(cluster, "nvidia_mig.rollout.k8s_node_taint", {
        "name": "l4-1", "taints": [MAINTENANCE], "host": server, "api_key": "simcluster-admin-token",
        "ca_cert": str(cluster.state_dir / "pki" / "ca.crt")}, check=True, kubeconfig="/nonexistent")
    assert result.get("failed") is not True, result
    denied = run_module(cluster, "nvidia_mig.rollout.k8s_node_taint", {
        "name": "l4-1", "taints": [MAINTENANCE], "host": server, "api_key": "wrong-token",
        "validate_certs": False}, kubeconfig="/nonexistent")
    assert denied["failed"] is True
    assert denied["msg"] == "read node l4-1: HTTP 401 Unauthorized: Unauthorized"
    assert "wrong-token" not in str(denied)
    missing = run_module(cluster, "nvidia_mig.rollout.k8s_node_taint", {"name": "l4-1", "taints": [MAINTENANCE],
                                                     "kubeconfig": "/nonexistent/kubeconfig"})
    assert missing["msg"] == "ConfigError: kubeconfig /nonexistent/kubeconfig does not exist"


# -- k8s_node_evacuate -------------------------------------------------------------------------------------------

@pytest.fixture()
def namespace(cluster):
    return cluster.namespace()


def busiest(pods):
    counts: dict[str, int] = {}
    for pod in pods:
        counts[pod["spec"]["nodeName"]] = counts.get(pod["spec"]["nodeName"], 0) + 1
    return max(counts, key=counts.get)


def test_evacuation_moves_gpu_pods_and_leaves_the_rest(cluster, namespace):
    cluster.apply(gpu_deployment(namespace, "train", "evac", 6, gpus=2))
    pods = wait_running(cluster, namespace, "train", 6)
    node = busiest(pods)
    cpu_pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sidecar", "namespace": namespace},
               "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}}
    cluster.apply(cpu_pod)
    cluster.wait(lambda: cluster.api.get(kube.pod_path(namespace, "sidecar"))["status"].get("phase") == "Running")
    operands_before = {p["metadata"]["uid"] for p in cluster.pods("gpu-operator", field_selector=f"spec.nodeName={node}")}
    old = {p["metadata"]["uid"] for p in pods if p["spec"]["nodeName"] == node}

    run_module(cluster, "nvidia_mig.rollout.k8s_node_taint", {"name": node, "taints": [MAINTENANCE]})
    result = run_module(cluster, "nvidia_mig.rollout.k8s_node_evacuate", {"name": node})
    assert result["changed"] is True
    assert {e["uid"] for e in result["evicted"]} == old
    assert all(e["method"] == "evict" for e in result["evicted"])
    assert result["pending"] == [] and result["blocking_pdbs"] == []
    # The real ReplicaSet controller recreated them, and the scheduler kept them off the tainted node.
    replaced = wait_running(cluster, namespace, "train", 6)
    assert node not in {p["spec"]["nodeName"] for p in replaced}
    assert not old & {p["metadata"]["uid"] for p in replaced}
    # CPU pods and the operator's DaemonSet pods are untouched.
    assert cluster.api.get(kube.pod_path(namespace, "sidecar"))["status"]["phase"] == "Running"
    operands_after = {p["metadata"]["uid"] for p in cluster.pods("gpu-operator", field_selector=f"spec.nodeName={node}")}
    assert operands_before == operands_after
    again = run_module(cluster, "nvidia_mig.rollout.k8s_node_evacuate", {"name": node})
    assert again["changed"] is False and again["evicted"] == []
    run_module(cluster, "nvidia_mig.rollout.k8s_node_taint", {"name": node, "state": "absent", "taints": [MAINTENANCE]})


def test_daemonset_gpu_pods_are_skipped_or_refused(cluster, node_pool, namespace):
    node = node_pool.take("h200")
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "gpu-agent", "namespace": namespace},
          "spec": {"selector": {"matchLabels": {"app": "gpu-agent"}}, "template": {
              "metadata": {"labels": {"app": "gpu-agent"}},
              "spec": {"nodeSelector": {"kubernetes.io/hostname": node}, "runtimeClassName": "nvidia",
                       "containers": [{"name": "agent", "image": "agent"}]}}}}
    cluster.apply(ds)
    pod = wait_running(cluster, namespace, "gpu-agent", 1)[0]
    skipped = run_module(cluster, "nvidia_mig.rollout.k8s_node_evacuate", {"name": node, "pod_selector": "app=gpu-agent"})
    assert skipped["changed"] is False
    assert skipped["skipped_pods"] == [{"namespace": namespace, "name": pod["metadata"]["name"],
                                   "uid": pod["metadata"]["uid"], "reason": "DaemonSet-managed"}]
    refused = run_module(cluster, "nvidia_mig.rollout.k8s_node_evacuate", {"name": node, "pod_selector": "app=gpu-agent",
                                                        "ignore_daemonsets": False})
    assert refused["failed"] is True
    assert "DaemonSet-managed (set ignore_daemonsets" in refused["msg"]
    assert running_pods(cluster, namespace, "gpu-agent")[0]["metadata"]["uid"] == pod["metadata"]["uid"]


def test_unmanaged_pod_is_refused_unless_forced(cluster, node_pool, namespace):
    node = node_pool.take("h200")
    bare = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "notebook", "namespace": namespace,
                                                            "labels": {"app": "notebook"}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "jupyter",
                                                        "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}
    cluster.apply(bare)
    cluster.apply(gpu_deployment(namespace, "web", "h200", 1, extra_spec={"nodeName": node}))
    wait_running(cluster, namespace, "notebook", 1)
    managed = wait_running(cluster, namespace, "web", 1)[0]
    refused = run_module(cluster, "nvidia_mig.rollout.k8s_node_evacuate", {"name": node, "pod_selector": "app in (notebook,web)"})
    assert refused["failed"] is True
    assert refused["msg"].startswith(f"node {node}: cannot evacuate {namespace}/notebook: not managed by a controller")
    assert refused["evicted"] == []
    # Refused before anything was touched: the managed pod is still the same pod.
    assert running_pods(cluster, namespace, "web")[0]["metadata"]["uid"] == managed["metadata"]["uid"]
    forced = run_module(cluster, "nvidia_mig.rollout.k8s_node_evacuate", {"name": node, "pod_selector": "app=notebook", "force": True,
                                                       "grace_period": 0})
    assert forced["changed"] is True
    assert any("not managed by a controller" in w for w in forced.get("warnings", []))
    assert cluster.pods(namespace, label_selector="app=notebook") == []


def test_emptydir_needs_permission(cluster, node_pool, namespace):
    node = node_pool.take("h200")
    spec = {"volumes": [{"name": "scratch", "emptyDir": {}}]}
    cluster.apply(gpu_deployment(namespace, "scratchy", "h200", 1, extra_spec={**spec, "nodeName": node}))
    wait_running(cluster, namespace, "scratchy", 1)
    refused = run_module(cluster, "nvidia_mig.rollout.k8s_node_evacuate", {"name": node, "pod_selector": "app=scratchy"})
    assert "uses emptyDir local storage" in refused["msg"]
    allowed = run_module(cluster, "nvidia_mig.rollout.k8s_node_evacuate", {"name": node, "pod_selector": "app=scratchy",
                                                        "delete_emptydir_data": True, "timeout": 20})
    assert allowed["changed"] is True, allowed


def test_pdb_with_no_disruptions_blocks_until_timeout_and_is_named(cluster, node_pool, namespace):
    node = node_pool.take("h200")
    cluster.apply(gpu_deployment(namespace, "serve", "h200", 2, extra_spec={"nodeName": node}))
    cluster.apply({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                   "metadata": {"name": "serve-pdb", "namespace": namespace},
                   "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "serve"}}}})
    pods = wait_running(cluster, namespace, "serve", 2)
    cluster.wait(lambda: cluster.api.get(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/serve-pdb")
                 ["status"].get("currentHealthy") == 2, what="PDB observed")
    planned = run_module(cluster, "nvidia_mig.rollout.k8s_node_evacuate", {"name": node, "pod_selector": "app=serve"}, check=True)
    assert planned["blocking_pdbs"] == [f"{namespace}/serve-pdb"]
    assert len(planned["pending"]) == 2
    started = time.monotonic()
    result = run_module(cluster, "nvidia_mig.rollout.k8s_node_evacuate", {"name": node, "pod_selector": "app=serve", "timeout": 6})
    assert time.monotonic() - started >= 6
    assert result["failed"] is True
    assert result["blocking_pdbs"] == [f"{namespace}/serve-pdb"]
    assert {p["uid"] for p in result["pending"]} == {p["metadata"]["uid"] for p in pods}
    assert "2 pods still there after 6 s" in result["msg"]
    assert f"blocked by PodDisruptionBudget {namespace}/serve-pdb" in result["msg"]
    assert {p["metadata"]["uid"] for p in running_pods(cluster, namespace, "serve")} == \
        {p["metadata"]["uid"] for p in pods}


def test_evacuate_check_mode_changes_nothing(cluster, node_pool, namespace):
    node = node_pool.take("h200")
    cluster.apply(gpu_deployment(namespace, "quiet", "h200", 2, extra_spec={"nodeName": node}))
    pods = wait_running(cluster, namespace, "quiet", 2)
    result = run_module(cluster, "nvidia_mig.rollout.k8s_node_evacuate", {"name": node, "pod_selector": "app=quiet"}, check=True)
    assert result["changed"] is True
    assert {p["uid"] for p in result["would_evict"]} == {p["metadata"]["uid"] for p in pods}
    time.sleep(1)
    assert {p["metadata"]["uid"] for p in running_pods(cluster, namespace, "quiet")} == \
        {p["metadata"]["uid"] for p in pods}


# -- mig_node_label and mig_node_verify ---------------------------------------------------------------------------

def test_label_applies_waits_and_reports_transitions(cluster, node_pool):
    node = node_pool.take("a100-80gb")
    result = run_module(cluster, "nvidia_mig.rollout.mig_node_label", {"name": node, "config": "all-3g.40gb"}, diff=True)
    assert result["changed"] is True
    assert result["state"] == "success"
    assert [t["state"] for t in result["transitions"]] == ["pending", "success"]
    assert result["previous_config"] == "all-disabled"
    assert result["config_map"] == "gpu-operator/default-mig-parted-config"
    again = run_module(cluster, "nvidia_mig.rollout.mig_node_label", {"name": node, "config": "all-3g.40gb"})
    assert again["changed"] is False
    verified = run_module(cluster, "nvidia_mig.rollout.mig_node_verify", {"name": node})
    assert verified.get("failed") is not True, verified
    assert verified["expected"]["resources"] == {"nvidia.com/mig-3g.40gb": 16}
    assert verified["actual"] == verified["expected"]


def test_label_check_mode_writes_nothing(cluster, node_pool):
    node = node_pool.take("a100-80gb")
    before = snapshot(cluster, node)
    result = run_module(cluster, "nvidia_mig.rollout.mig_node_label", {"name": node, "config": "all-7g.80gb"}, check=True)
    assert result["changed"] is True
    time.sleep(1)
    assert snapshot(cluster, node) == before


def test_label_failure_reports_state_and_durations_then_reapply(cluster, node_pool):
    node = node_pool.take("h100")
    cluster.annotate(node, {"simcluster.dev/fault-apply-fails": "true"})
    failed = run_module(cluster, "nvidia_mig.rollout.mig_node_label", {"name": node, "config": "all-1g.20gb"})
    assert failed["failed"] is True
    assert failed["msg"].startswith(f"node {node}: the MIG manager failed to apply all-1g.20gb after")
    assert "pending" in failed["state_durations"]
    assert failed["state"] == "failed"
    no_reapply = run_module(cluster, "nvidia_mig.rollout.mig_node_label", {"name": node, "config": "all-1g.20gb"})
    assert "set reapply (in a rollout, mig_rollout_reapply_failed) to restart it" in no_reapply["msg"]
    cluster.annotate(node, {"simcluster.dev/fault-apply-fails": None})
    retried = run_module(cluster, "nvidia_mig.rollout.mig_node_label", {"name": node, "config": "all-1g.20gb", "reapply": True})
    assert retried.get("failed") is not True, retried
    assert retried["restarted_mig_manager"].startswith("nvidia-mig-manager-")
    assert retried["state"] == "success"


def test_label_timeout_names_paused_operands(cluster, node_pool):
    node = node_pool.take("h100")
    cluster.annotate(node, {"simcluster.dev/fault-stuck-pending": "true"})
    result = run_module(cluster, "nvidia_mig.rollout.mig_node_label", {"name": node, "config": "all-7g.80gb", "timeout": 4})
    assert result["failed"] is True
    assert f"node {node}: MIG config all-7g.80gb not applied within 4 s; last state pending" in result["msg"]
    assert "nvidia.com/gpu.deploy.device-plugin" in result["paused_operands"]
    busy = run_module(cluster, "nvidia_mig.rollout.mig_node_label", {"name": node, "config": "all-1g.10gb"})
    assert "the MIG manager is busy applying all-7g.80gb (state pending)" in busy["msg"]


@pytest.mark.parametrize("config, message", [
    ("all-9g.99gb", "MIG config all-9g.99gb is not in ConfigMap gpu-operator/default-mig-parted-config"),
    ("all-1g.5gb", "MIG config all-1g.5gb does not fit: all 8 GPUs: profile 1g.5gb does not exist on A100-SXM4-80GB"),
])
def test_label_refuses_bad_configs_before_writing(cluster, node_pool, config, message):
    node = node_pool.take("a100-80gb")
    before = snapshot(cluster, node)
    result = run_module(cluster, "nvidia_mig.rollout.mig_node_label", {"name": node, "config": config})
    assert result["failed"] is True
    assert message in result["msg"]
    assert snapshot(cluster, node) == before


def test_label_refuses_nodes_without_mig(cluster):
    for node, message in (("l4-1", "L4 GPUs do not support MIG"), ("cpu-1", "has no NVIDIA GPU"),
                          ("ghost", "node ghost does not exist")):
        result = run_module(cluster, "nvidia_mig.rollout.mig_node_label", {"name": node, "config": "all-disabled"})
        assert message in result["msg"]


def test_verify_reports_mismatches(cluster, node_pool):
    node = node_pool.take("a100-80gb")
    result = run_module(cluster, "nvidia_mig.rollout.mig_node_verify", {"name": node, "config": "all-1g.10gb", "timeout": 2})
    assert result["failed"] is True
    assert "nvidia.com/mig.config is 'all-disabled', not 'all-1g.10gb'" in result["mismatches"]
    assert "allocatable nvidia.com/mig-1g.10gb: expected 56, found 0" in result["mismatches"]
    assert "allocatable nvidia.com/gpu: expected 0, found 8" in result["mismatches"]
    assert result["msg"].startswith(f"node {node} does not advertise what all-1g.10gb should give under the mixed")


def test_label_and_verify_through_the_module_path(cluster, node_pool, monkeypatch):
    node = node_pool.take("a100-80gb")
    monkeypatch.setenv("MIGROLLOUT_IN_PROCESS", "0")
    labelled = run_module(cluster, "nvidia_mig.rollout.mig_node_label", {"name": node, "config": "all-2g.20gb"}, verbose=True)
    assert labelled["state"] == "success" and "AnsiballZ_mig_node_label.py" in labelled["_log"]
    verified = run_module(cluster, "nvidia_mig.rollout.mig_node_verify", {"name": node, "timeout": 30}, verbose=True)
    assert verified["mismatches"] == [] and "AnsiballZ_mig_node_verify.py" in verified["_log"]
    evacuated = run_module(cluster, "nvidia_mig.rollout.k8s_node_evacuate", {"name": node}, verbose=True)
    assert evacuated["changed"] is False and "AnsiballZ_k8s_node_evacuate.py" in evacuated["_log"]


def test_reapply_refuses_to_strand_a_node_without_its_mig_manager(cluster, node_pool):
    node = node_pool.take("h100")
    cluster.annotate(node, {"simcluster.dev/fault-apply-fails": "true"})
    assert run_module(cluster, "nvidia_mig.rollout.mig_node_label", {"name": node, "config": "all-7g.80gb"})["failed"] is True
    cluster.annotate(node, {"simcluster.dev/fault-apply-fails": None})
    manager = cluster.pods("gpu-operator", field_selector=f"spec.nodeName={node}",
                           label_selector="app=nvidia-mig-manager")[0]["metadata"]["uid"]
    # A taint the MIG manager's DaemonSet does not tolerate: a restarted manager could never come back.
    cluster.api.patch(kube.node_path(node), {"spec": {"taints": [{"key": "team", "value": "ml",
                                                                  "effect": "NoSchedule"}]}})
    refused = run_module(cluster, "nvidia_mig.rollout.mig_node_label", {"name": node, "config": "all-7g.80gb", "reapply": True})
    assert refused["failed"] is True
    assert "would strand the node: the new pod could not be scheduled past taint team=ml:NoSchedule" in refused["msg"]
    assert cluster.pods("gpu-operator", field_selector=f"spec.nodeName={node}",
                        label_selector="app=nvidia-mig-manager")[0]["metadata"]["uid"] == manager
    cluster.api.patch(kube.node_path(node), {"spec": {"taints": None}})


def test_evacuation_ends_promptly_when_a_late_pod_is_refused(cluster, node_pool, namespace):
    """A pod bound to the node just after the listing and refused by the filters ends the evacuation at once,
    even while another eviction is still retrying against its disruption budget."""
    from migrollout.evacuation.engine import Evacuator
    from migrollout.evacuation.selection import Options

    node = node_pool.take("h200")
    cluster.apply(gpu_deployment(namespace, "held", "h200", 1, extra_spec={"nodeName": node}))
    cluster.apply({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                   "metadata": {"name": "held", "namespace": namespace},
                   "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "held"}}}})
    wait_running(cluster, namespace, "held", 1)
    cluster.wait(lambda: cluster.api.get(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/held")
                 ["status"].get("currentHealthy") == 1, what="PDB observed")
    evacuator = Evacuator(cluster.api, node, Options(), pod_selector=None, timeout=60)
    pods, version = evacuator.list_pods()
    cluster.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "late", "namespace": namespace},
                   "spec": {"nodeName": node, "containers": [{"name": "c", "image": "cuda",
                                                               "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}})
    time.sleep(1.1)  # created before the evacuation starts (timestamps have one-second resolution)
    started = time.monotonic()
    outcome = evacuator.run(pods, version)
    assert time.monotonic() - started < 15
    assert [r["name"] for r in outcome.refused] == ["late"]
