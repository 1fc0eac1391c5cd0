"""Benchmark: evacuate 100 GPU pods from one node with k8s_node_evacuate, and with kubectl drain, side by side.

Both run against the same simulated cluster (real API server, controllers and scheduler). Each tool gets
its own node holding 100 pods of a fresh Deployment; the timed part is the whole command as an admin
runs it (Ansible: taint then evacuate; kubectl: drain, which cordons first), until every pod is gone.

    .venv/bin/python bench/evacuation.py [--pods 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from simcluster.testing import Cluster, start_cluster, stop_cluster

REPO = Path(__file__).resolve().parents[1]

PLAYBOOK = """
- name: Evacuate GPU pods
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Taint
      nvidia_mig.rollout.k8s_node_taint:
        name: "{{ node }}"
        taints: [{key: mig, value: maintenance, effect: NoSchedule}]
    - name: Evacuate
      nvidia_mig.rollout.k8s_node_evacuate:
        name: "{{ node }}"
        pod_selector: app={{ app }}
        max_parallel: {{ parallel }}
"""


def deployment(namespace: str, app: str, node: str, replicas: int) -> dict:
    # Pinned to the node: the replacements stay Pending once it is tainted or cordoned, for both tools alike.
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": app, "namespace": namespace},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}},
                     "template": {"metadata": {"labels": {"app": app}}, "spec": {
                         "affinity": affinity, "terminationGracePeriodSeconds": 0,
                         "containers": [{"name": "cuda", "image": "cuda",
                                         "resources": {"limits": {"nvidia.com/mig-1g.10gb": "1"}}}]}}}}


def place(cluster: Cluster, app: str, node: str, pods: int) -> str:
    namespace = cluster.namespace()
    cluster.apply(deployment(namespace, app, node, pods))

    def ready():
        found = [p for p in cluster.pods(namespace) if p["status"].get("phase") == "Running"]
        return len(found) == pods
    cluster.wait(ready, timeout=180, what=f"{pods} pods on {node}")
    return namespace


def gone(cluster: Cluster, namespace: str, node: str) -> bool:
    return not [p for p in cluster.pods(namespace) if p["spec"].get("nodeName") == node
                and p["status"].get("phase") == "Running"]


def reset(cluster: Cluster, node: str) -> None:
    cluster.api.patch(f"/api/v1/nodes/{node}", {"spec": {"taints": None, "unschedulable": None}})


def run_ansible(cluster: Cluster, node: str, app: str, parallel: int) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as book:
        book.write(PLAYBOOK.replace("{{ parallel }}", str(parallel)))
    env = cluster.env(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    started = time.monotonic()
    result = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-playbook"), book.name, "-e",
                             json.dumps({"node": node, "app": app})], capture_output=True, text=True, env=env,
                            cwd=REPO)
    elapsed = time.monotonic() - started
    os.unlink(book.name)
    if result.returncode != 0:
        raise RuntimeError(result.stdout + result.stderr)
    return elapsed


def run_kubectl(cluster: Cluster, node: str, app: str) -> float:
    started = time.monotonic()
    result = subprocess.run([f"{cluster.bin_dir}/kubectl", "drain", node, f"--pod-selector=app={app}",
                             "--ignore-daemonsets", "--timeout=300s"], capture_output=True, text=True,
                            env=cluster.env())
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        cluster = start_cluster(Path(workdir) / "c", REPO / "bench" / "fleet-evacuation.yaml")
        try:
            ours, theirs = [], []
            for run in range(args.runs):
                for tool, node, record in (("ansible", "bench-1", ours), ("kubectl", "bench-2", theirs)):
                    app = f"{tool}-{run}"
                    namespace = place(cluster, app, node, args.pods)
                    elapsed = run_ansible(cluster, node, app, args.parallel) if tool == "ansible" \
                        else run_kubectl(cluster, node, app)
                    assert gone(cluster, namespace, node), f"{tool} left pods on {node}"
                    record.append(elapsed)
                    cluster.api.delete(f"/api/v1/namespaces/{namespace}")
                    reset(cluster, node)
                    print(f"run {run + 1}: {tool:<8} {elapsed:6.2f} s", flush=True)
        finally:
            stop_cluster(cluster)
    median_ours, median_theirs = statistics.median(ours), statistics.median(theirs)
    print(json.dumps({
        "pods": args.pods, "runs": args.runs, "max_parallel": args.parallel,
        "k8s_node_taint+k8s_node_evacuate_s": [round(x, 2) for x in ours],
        "kubectl_drain_s": [round(x, 2) for x in theirs],
        "median_ours_s": round(median_ours, 2), "median_kubectl_s": round(median_theirs, 2),
        "ratio_ours_to_kubectl": round(median_ours / median_theirs, 2),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
