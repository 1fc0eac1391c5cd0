"""playbooks/mig-reconfigure.yml paths the Molecule scenarios do not take: cordon instead of a taint, an
admin's own taint left alone, a blocked evacuation, the rollback of a failed node, per-pool settings."""

from __future__ import annotations

import json
import shutil

from conftest import REPO, run_rollout

from migrollout import kube

RECORD = "mig-rollout.nvidia-mig-rollout.io/record"


def rollout(cluster, node, report_dir, *extra):
    return run_rollout(cluster, report_dir, *extra, limit=node)


def test_blocked_evacuation_fails_the_node_rolls_it_back_and_keeps_it_out_of_service(cluster, node_pool, tmp_path):
    node = node_pool.take("h100")
    # GPU nodes reserved for GPU work, a common admin taint (the operator's pods tolerate it).
    admin_taint = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    cluster.api.patch(kube.node_path(node), {"spec": {"taints": [admin_taint]}})
    namespace = cluster.namespace()
    cluster.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "pinned", "namespace": namespace},
                   "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "pinned"}},
                            "template": {"metadata": {"labels": {"app": "pinned"}},
                                         "spec": {"nodeSelector": {"kubernetes.io/hostname": node},
                                                  "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                                                  "containers": [{
                                             "name": "cuda", "image": "cuda",
                                             "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}}})
    cluster.apply({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                   "metadata": {"name": "pinned", "namespace": namespace},
                   "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "pinned"}}}})
    cluster.wait(lambda: any(p["status"].get("phase") == "Running" for p in cluster.pods(namespace)), what="pinned pod")
    cluster.wait(lambda: cluster.api.get(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/pinned")
                 ["status"].get("currentHealthy") == 1, what="PDB observed")

    # The shared cluster's operator does not tolerate a mig taint: roll out with a cordon instead.
    # The pod has nowhere else to go: with the capacity check it would be left alone; this tests the evacuation.
    result = rollout(cluster, node, tmp_path, "-e", "mig_config=all-1g.10gb", "-e", "mig_rollout_cordon=true",
                     "-e", json.dumps({"mig_rollout_maintenance_taints": []}), "-e", "mig_rollout_capacity_policy=ignore",
                     "-e", "mig_rollout_evacuation_timeout=5", "-e", "mig_rollout_rollback_on_failure=true")
    assert result.returncode != 0
    assert (tmp_path / "latest.json").exists(), result.stdout[-3000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    row = report["nodes"][0]
    assert row["result"] == "failed"
    assert row["reason"].startswith(f"{node}: step 'Put the node into maintenance and move its GPU workloads off' "
                                    f"failed: node {node}: 1 pods still there after 5 s")
    assert f"blocked by PodDisruptionBudget {namespace}/pinned" in row["reason"]
    assert "rolled back to all-disabled" in row["reason"]

    after = cluster.node(node)
    record = json.loads(after["metadata"]["annotations"][RECORD])
    assert after["spec"]["unschedulable"] is True                     # still out of service
    assert admin_taint in after["spec"]["taints"]                      # the admin's taint untouched
    assert record["step"] == "failed" and record["cordoned"] is True and record["added_taints"] == []
    assert after["metadata"]["labels"]["nvidia.com/mig.config"] == "all-disabled"
    assert after["metadata"]["labels"]["nvidia.com/mig.config.state"] == "success"

    # Once the budget allows it, the next run resumes the node first, completes it, and undoes only the cordon.
    cluster.api.delete(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/pinned")
    again = rollout(cluster, node, tmp_path, "-e", "mig_config=all-1g.10gb", "-e", "mig_rollout_cordon=true",
                    "-e", json.dumps({"mig_rollout_maintenance_taints": []}), "-e", "mig_rollout_evacuation_timeout=30",
                    "-e", "mig_rollout_capacity_policy=ignore")
    assert again.returncode == 0, again.stdout[-3000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    assert report["nodes"][0]["result"] == "resumed"
    assert report["nodes"][0]["evicted"]
    done = cluster.node(node)
    assert not done["spec"].get("unschedulable")
    assert done["spec"]["taints"] == [admin_taint]
    assert RECORD not in (done["metadata"].get("annotations") or {})
    assert done["metadata"]["labels"]["nvidia.com/mig.config"] == "all-1g.10gb"
    cluster.api.patch(kube.node_path(node), {"spec": {"taints": None}})


def test_a_pools_group_vars_set_its_nodes_rollout_settings_only(cluster, node_pool, tmp_path):
    """Rollout settings are inventory variables: a pool's group_vars/gpu_pool_<pool>.yml overrides the ones in
    group_vars/gpu_nodes.yml for that pool's nodes only (here: how long a blocked evacuation waits)."""
    fast, slow = node_pool.take("h100"), node_pool.take("evac")  # two pools of H100 nodes
    inventory = tmp_path / "inventory"
    shutil.copytree(REPO / "config", inventory)
    (inventory / "group_vars" / "gpu_pool_h100.yml").write_text("mig_rollout_evacuation_timeout: 3\n")
    with (inventory / "group_vars" / "gpu_nodes.yml").open("a") as settings:
        settings.write("\nmig_rollout_evacuation_timeout: 8\n")
    namespace = cluster.namespace()
    for node in (fast, slow):
        cluster.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": node, "namespace": namespace},
                       "spec": {"replicas": 1, "selector": {"matchLabels": {"app": node}},
                                "template": {"metadata": {"labels": {"app": node}},
                                             "spec": {"nodeSelector": {"kubernetes.io/hostname": node},
                                                      "containers": [{"name": "cuda", "image": "cuda", "resources": {
                                                          "limits": {"nvidia.com/gpu": "1"}}}]}}}})
        cluster.apply({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                       "metadata": {"name": node, "namespace": namespace},
                       "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": node}}}})
    for node in (fast, slow):
        cluster.wait(lambda node=node: cluster.api.get(
            f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/{node}")["status"].get("currentHealthy") == 1,
            what=f"PodDisruptionBudget {node} observed")

    result = run_rollout(cluster, tmp_path / "reports", "-i", str(inventory), "-e", "mig_config=all-1g.10gb",
                         "-e", "mig_rollout_cordon=true", "-e", json.dumps({"mig_rollout_maintenance_taints": []}),
                         "-e", "mig_rollout_max_fail_percentage=100", "-e", "mig_rollout_capacity_policy=ignore",
                         limit=f"{fast},{slow}")
    assert result.returncode != 0
    # What each node's record says on the API server: each evacuation waited its pool's time.
    for node, seconds in ((fast, 3), (slow, 8)):
        annotations = cluster.node(node)["metadata"].get("annotations") or {}
        assert RECORD in annotations, result.stdout[-3000:]
        record = json.loads(annotations[RECORD])
        assert record["step"] == "failed"
        assert f"node {node}: 1 pods still there after {seconds} s" in record["error"], record["error"]
