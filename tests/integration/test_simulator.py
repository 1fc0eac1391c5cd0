"""The simulated GPU cluster: real control plane behaviour, and every MIG manager trace of mig-stack.md section 6.

The shared cluster runs NVIDIA's operator, whose chart deploys MIG manager v0.12.3 (reconfigure-mig.sh)."""

from __future__ import annotations

import time

import pytest
from conftest import run_module

from migrollout import kube
from simcluster.sim import hardware

MIG_CONFIG = "nvidia.com/mig.config"
STATE = "nvidia.com/mig.config.state"
PAUSED = "paused-for-mig-change"
FAULT = "simcluster.dev/fault-"


def gpu_pod(namespace: str, node: str, resource: str = "nvidia.com/gpu", count: int = 1) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "cuda-job", "namespace": namespace},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": node},
                 "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                 "containers": [{"name": "cuda", "image": "nvcr.io/nvidia/cuda:12.4.0-base",
                                 "resources": {"limits": {resource: str(count)}}}]},
    }


def test_control_plane_is_the_real_release(cluster):
    assert cluster.api.get("/version")["gitVersion"] == "v1.34.4"
    version = cluster.kubectl("version", "-o", "json").stdout
    assert '"gitVersion": "v1.34.4"' in version


def test_deployment_pods_run_on_simulated_kubelets_and_respect_taints(cluster, node_pool):
    namespace = cluster.namespace()
    tainted = node_pool.take("cpu")
    cluster.api.patch(kube.node_path(tainted), {"spec": {"taints": [
        {"key": "test", "value": "x", "effect": "NoSchedule"}]}})
    cluster.apply({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"nodeSelector": {"simcluster.dev/pool": "cpu"},
                                       "containers": [{"name": "web", "image": "nginx"}]}}},
    })
    cluster.apply({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                   "metadata": {"name": "web", "namespace": namespace},
                   "spec": {"minAvailable": 3, "selector": {"matchLabels": {"app": "web"}}}})

    def running() -> list:
        pods = cluster.pods(namespace)
        ok = [p for p in pods if p["status"].get("phase") == "Running"]
        return ok if len(ok) == 4 else []

    pods = cluster.wait(running, what="4 Running web pods")
    assert tainted not in {p["spec"]["nodeName"] for p in pods}
    # The real disruption controller maintains the budget's status.
    pdb = cluster.wait(lambda: (b := cluster.api.get(
        f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/web"))["status"].get("currentHealthy") == 4
        and b, what="PDB status")
    assert pdb["status"]["disruptionsAllowed"] == 1
    # A deleted pod is recreated by the real ReplicaSet controller, and the deletion completes.
    victim = pods[0]["metadata"]
    cluster.api.delete(kube.pod_path(namespace, victim["name"]))
    cluster.wait(lambda: victim["uid"] not in {p["metadata"]["uid"] for p in cluster.pods(namespace)}
                 and len(running()) == 4, what="replacement pod")
    cluster.api.patch(kube.node_path(tainted), {"spec": {"taints": None}})


def test_operator_labels_gpu_nodes_and_runs_operands(cluster, node_pool):
    node = node_pool.take("a100-80gb")
    labels = cluster.labels(node)
    assert labels["nvidia.com/gpu.present"] == "true"
    assert labels["nvidia.com/gpu.deploy.device-plugin"] == "true"
    assert labels["nvidia.com/gpu.deploy.mig-manager"] == "true"
    assert labels[MIG_CONFIG] == "all-disabled"
    assert labels[STATE] == "success"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
    assert labels["nvidia.com/mig.strategy"] == "mixed"
    assert cluster.allocatable(node) == {"nvidia.com/gpu": "8"}
    l4 = cluster.labels("l4-1")
    assert MIG_CONFIG not in l4 and "nvidia.com/gpu.deploy.mig-manager" not in l4
    assert l4["nvidia.com/mig.capable"] == "false"
    cpu = cluster.labels("cpu-1")
    assert not any(key.startswith("nvidia.com/") for key in cpu)
    apps = {p["metadata"].get("labels", {}).get("app") for p in cluster.pods("gpu-operator", field_selector=f"spec.nodeName={node}")}
    assert {"nvidia-device-plugin-daemonset", "gpu-feature-discovery", "nvidia-mig-manager",
            "nvidia-dcgm-exporter"} <= apps
    assert cluster.policy()["status"]["state"] == "ready"


def test_normal_change_pauses_operands_applies_and_restores(cluster, node_pool):
    node = node_pool.take("a100-80gb")
    plugin_before = {p["metadata"]["uid"] for p in cluster.pods(
        "gpu-operator", field_selector=f"spec.nodeName={node}", label_selector="app=nvidia-device-plugin-daemonset")}
    with cluster.watch_node(node) as watch:
        cluster.label(node, {STATE: None, MIG_CONFIG: "all-1g.10gb"})
        cluster.wait_settled(node, "all-1g.10gb")
        cluster.wait(lambda: cluster.allocatable(node).get("nvidia.com/mig-1g.10gb") == "56", what="56 MIG devices")
    assert watch.states()[-3:] == ["", "pending", "success"]
    assert watch.saw(lambda n: n["metadata"]["labels"].get("nvidia.com/gpu.deploy.device-plugin") == PAUSED
                     and n["metadata"]["labels"].get(STATE) == "pending")
    labels = cluster.labels(node)
    assert all(labels[f"nvidia.com/gpu.deploy.{op}"] == "true" for op in
               ("device-plugin", "gpu-feature-discovery", "dcgm-exporter", "dcgm", "nvsm"))
    # The device plugin was restarted (a new pod), and advertises the new layout under mixed.
    plugin_after = {p["metadata"]["uid"] for p in cluster.pods(
        "gpu-operator", field_selector=f"spec.nodeName={node}", label_selector="app=nvidia-device-plugin-daemonset")}
    assert plugin_after and not plugin_after & plugin_before
    assert cluster.allocatable(node) == {"nvidia.com/mig-1g.10gb": "56"}
    cluster.wait(lambda: cluster.labels(node).get("nvidia.com/mig-1g.10gb.count") == "56", what="GFD labels")
    assert cluster.labels(node)["nvidia.com/gpu.count"] == "8"


def test_unknown_config_fails_without_pending(cluster, node_pool):
    node = node_pool.take("a100-80gb")
    with cluster.watch_node(node) as watch:
        cluster.label(node, {STATE: None, MIG_CONFIG: "all-9g.99gb"})
        cluster.wait_mig_state(node, "failed")
    assert "pending" not in watch.states()
    assert not watch.saw(lambda n: PAUSED in n["metadata"]["labels"].values())
    # The verdict is nvidia-mig-parted's own (assert --valid-config, run on the ConfigMap's file).
    log = (cluster.state_dir / "logs" / "simulator.log").read_text()
    assert f"node {node}: mig config all-9g.99gb -> failed" in log
    assert "selected mig-config not present: all-9g.99gb" in log


def test_every_exit_rewrites_the_deploy_labels_read_at_the_start(cluster, node_pool):
    # The manager restores the operand labels from the values it read when the run began, whatever happened to
    # them since: an admin's false written during the run is overwritten.
    node = node_pool.take("a100-80gb")
    cluster.annotate(node, {FAULT + "apply-delay-s": "3"})
    try:
        cluster.label(node, {STATE: None, MIG_CONFIG: "all-2g.20gb"})
        cluster.wait_mig_state(node, "pending")
        cluster.wait(lambda: cluster.labels(node).get("nvidia.com/gpu.deploy.dcgm-exporter") == PAUSED,
                     what="operands paused")
        cluster.label(node, {"nvidia.com/gpu.deploy.dcgm-exporter": "false"})
        labels = cluster.wait_mig_state(node, "success", timeout=60)
        assert labels["nvidia.com/gpu.deploy.dcgm-exporter"] == "true"
    finally:
        cluster.annotate(node, {FAULT + "apply-delay-s": None})


# Configs whose results the toolkit predicts (mig_node_verify) and the simulated NVIDIA stack produces: models with
# NVIDIA's recorded tables (A100, A30) and models described from the MIG user guide (H100, H200).
@pytest.mark.parametrize("pool, config, resources", [
    ("a100-80gb", "all-balanced", {"nvidia.com/mig-1g.10gb": 16, "nvidia.com/mig-2g.20gb": 8,
                                   "nvidia.com/mig-3g.40gb": 8}),
    ("a30", "all-balanced", {"nvidia.com/mig-1g.6gb": 8, "nvidia.com/mig-2g.12gb": 4}),
    ("h100", "all-1g.20gb", {"nvidia.com/mig-1g.20gb": 32}),
    ("h200", "all-3g.71gb", {"nvidia.com/mig-3g.71gb": 16}),
])
def test_the_toolkits_prediction_matches_what_the_simulated_stack_advertises(cluster, node_pool, pool, config,
                                                                             resources):
    node = node_pool.take(pool)
    cluster.label(node, {STATE: None, MIG_CONFIG: config})
    cluster.wait_settled(node, config)
    verified = run_module(cluster, "nvidia_mig.rollout.mig_node_verify", {"name": node, "timeout": 30})
    assert verified.get("failed") is not True, verified
    assert verified["mismatches"] == []
    assert verified["actual"]["resources"] == resources
    if pool == "a100-80gb":
        # GFD's attributes of a MIG device are NVIDIA's recorded A100-SXM4-80GB table's.
        labels = cluster.labels(node)
        assert (labels["nvidia.com/mig-1g.10gb.memory"], labels["nvidia.com/mig-1g.10gb.multiprocessors"],
                labels["nvidia.com/mig-3g.40gb.memory"]) == ("9856", "14", "40192")


def test_already_applied_reports_success_without_touching_gpus(cluster, node_pool):
    node = node_pool.take("a100-80gb")
    cluster.label(node, {STATE: None})
    with cluster.watch_node(node) as watch:
        # A restarted MIG manager re-applies the current label: all-disabled is already in place.
        manager = cluster.pods("gpu-operator", field_selector=f"spec.nodeName={node}",
                               label_selector="app=nvidia-mig-manager")[0]["metadata"]
        cluster.api.delete(kube.pod_path("gpu-operator", manager["name"]))
        cluster.wait_mig_state(node, "success")
    assert watch.states() == ["", "success"]
    assert not watch.saw(lambda n: PAUSED in n["metadata"]["labels"].values())


def test_rewriting_the_same_value_does_nothing(cluster, node_pool):
    node = node_pool.take("a100-80gb")
    cluster.label(node, {STATE: None})
    with cluster.watch_node(node):
        cluster.label(node, {MIG_CONFIG: "all-disabled"})
        time.sleep(2)
    assert STATE not in cluster.labels(node)


def manager_version(cluster, node: str) -> tuple[int, ...]:
    pod = cluster.pods("gpu-operator", field_selector=f"spec.nodeName={node}", label_selector="app=nvidia-mig-manager")[0]
    tag = pod["spec"]["containers"][0]["image"].rsplit(":", 1)[1]
    return tuple(int(part) for part in tag.lstrip("v").split("-")[0].split("."))


def test_apply_error_fails_and_restores_operands(cluster, node_pool):
    node = node_pool.take("h100")
    cluster.annotate(node, {FAULT + "apply-fails": "true"})
    try:
        with cluster.watch_node(node) as watch:
            cluster.label(node, {STATE: None, MIG_CONFIG: "all-3g.40gb"})
            labels = cluster.wait_mig_state(node, "failed")
        assert watch.states()[-2:] == ["pending", "failed"]
        assert {labels[f"nvidia.com/gpu.deploy.{op}"] for op in
                ("device-plugin", "gpu-feature-discovery", "dcgm-exporter", "dcgm")} == {"true"}
        # reconfigure-mig.sh (up to v0.12) restores every operand but nvsm when it fails (gpu-operator#2249);
        # the Go port (v0.13+) restores nvsm too.
        assert labels["nvidia.com/gpu.deploy.nvsm"] == (PAUSED if manager_version(cluster, node) < (0, 13) else "true")
        # The MIG mode changed before the apply failed: the GPUs are MIG-enabled but empty, so the
        # restarted device plugin has nothing to advertise: stranded GPUs, as on real hardware.
        cluster.wait(lambda: any(p["status"].get("phase") == "Running" for p in cluster.pods(
            "gpu-operator", field_selector=f"spec.nodeName={node}",
            label_selector="app=nvidia-device-plugin-daemonset")), what="device plugin back")
        time.sleep(1)
        assert cluster.allocatable(node) == {}
    finally:
        cluster.annotate(node, {FAULT + "apply-fails": None})


def test_profile_not_on_this_gpu_enables_mig_and_creates_nothing(cluster, node_pool):
    # NVIDIA's mig-parted v0.10.0 (run for real by the MIG manager) drops a device name the GPU has no profile
    # for: it enables MIG, creates nothing and succeeds. The node then advertises no GPU at all, which is
    # what a rollout's verification must catch.
    node = node_pool.take("h100")
    with cluster.watch_node(node) as watch:
        cluster.label(node, {STATE: None, MIG_CONFIG: "all-1g.5gb"})  # an A100-40GB profile
        cluster.wait_mig_state(node, "success")
    assert watch.states()[-2:] == ["pending", "success"]
    gpus = hardware.gpus(cluster.node(node))
    assert gpus and all(gpu.mig_enabled and not gpu.instances for gpu in gpus)
    cluster.wait(lambda: not cluster.allocatable(node), what="no GPU advertised")


def test_stuck_pending_bug_leaves_operands_paused(cluster, node_pool):
    node = node_pool.take("h100")
    cluster.annotate(node, {FAULT + "stuck-pending": "true"})
    cluster.label(node, {STATE: None, MIG_CONFIG: "all-2g.20gb"})
    cluster.wait_mig_state(node, "pending")
    time.sleep(3)
    labels = cluster.labels(node)
    assert labels[STATE] == "pending"
    assert labels["nvidia.com/gpu.deploy.device-plugin"] == PAUSED
    cluster.wait(lambda: not cluster.allocatable(node), what="no GPUs advertised while paused")


def test_gpu_in_use_makes_the_apply_fail(cluster, node_pool):
    node = node_pool.take("a100-40gb")
    namespace = cluster.namespace()
    cluster.apply(gpu_pod(namespace, node))
    cluster.wait(lambda: cluster.api.get(kube.pod_path(namespace, "cuda-job"))["status"].get("phase") == "Running",
                 what="GPU pod running")
    cluster.label(node, {STATE: None, MIG_CONFIG: "all-1g.5gb"})
    cluster.wait_mig_state(node, "failed")
    assert cluster.labels(node)["nvidia.com/gpu.deploy.device-plugin"] == "true"
    # Once the GPU is free the same change goes through (label re-triggered by a new value).
    cluster.api.delete(kube.pod_path(namespace, "cuda-job"))
    cluster.wait(lambda: not cluster.pods(namespace), what="GPU pod gone")
    cluster.label(node, {STATE: None, MIG_CONFIG: "all-7g.40gb"})
    cluster.wait_settled(node, "all-7g.40gb")


def test_mode_change_needing_a_reboot_fails_without_with_reboot(cluster, node_pool):
    node = node_pool.take("a100-40gb")
    cluster.annotate(node, {FAULT + "reboot-required": "true"})
    try:
        cluster.label(node, {STATE: None, MIG_CONFIG: "all-3g.20gb"})
        cluster.wait_mig_state(node, "failed")
    finally:
        cluster.annotate(node, {FAULT + "reboot-required": None})


@pytest.fixture()
def with_reboot(cluster):
    path = "/apis/nvidia.com/v1/clusterpolicies/cluster-policy"
    cluster.api.patch(path, {"spec": {"migManager": {"env": [{"name": "WITH_REBOOT", "value": "true"}]}}})
    yield
    cluster.api.patch(path, {"spec": {"migManager": {"env": []}}})
    cluster.wait(lambda: cluster.policy()["status"]["state"] == "ready", timeout=120, what="ClusterPolicy ready")


def _wait_manager_env(cluster, node, value):
    def restarted():
        pods = cluster.pods("gpu-operator", field_selector=f"spec.nodeName={node}",
                            label_selector="app=nvidia-mig-manager")
        return any(p["status"].get("phase") == "Running" and any(
            e.get("name") == "WITH_REBOOT" and e.get("value") == value
            for e in p["spec"]["containers"][0].get("env", [])) for p in pods)
    cluster.wait(restarted, timeout=120, what=f"MIG manager on {node} with WITH_REBOOT={value}")
    # The restarted manager re-applies the current label first; let that run finish.
    time.sleep(1.5)


def test_reboot_trace_with_with_reboot(cluster, node_pool, with_reboot):
    node = node_pool.take("a100-40gb")
    _wait_manager_env(cluster, node, "true")
    cluster.annotate(node, {FAULT + "reboot-required": "true"})
    try:
        with cluster.watch_node(node) as watch:
            cluster.label(node, {STATE: None, MIG_CONFIG: "all-2g.10gb"})
            cluster.wait(lambda: "rebooting" in watch.states(), what="rebooting")
            cluster.wait_settled(node, "all-2g.10gb", timeout=90)
        states = watch.states()
        # After the reboot the restarted manager goes through pending again, then succeeds.
        assert states[-5:] == ["", "pending", "rebooting", "pending", "success"]
        assert watch.saw(lambda n: any(c["type"] == "Ready" and c["status"] == "False"
                                       for c in n["status"]["conditions"]))
        cluster.wait(lambda: cluster.allocatable(node) == {"nvidia.com/mig-2g.10gb": "24"}, what="2g.10gb x24")
    finally:
        cluster.annotate(node, {FAULT + "reboot-required": None})


def test_reboot_that_does_not_take_fails(cluster, node_pool, with_reboot):
    node = node_pool.take("a100-40gb")
    _wait_manager_env(cluster, node, "true")
    cluster.annotate(node, {FAULT + "reboot-required": "true", FAULT + "reboot-fails": "true"})
    try:
        with cluster.watch_node(node) as watch:
            cluster.label(node, {STATE: None, MIG_CONFIG: "all-3g.20gb"})
            cluster.wait_mig_state(node, "failed", timeout=90)
        assert "rebooting" in watch.states()
    finally:
        cluster.annotate(node, {FAULT + "reboot-required": None, FAULT + "reboot-fails": None})
