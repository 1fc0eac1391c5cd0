"""Benchmark: the rolling MIG reconfiguration of a 200-node fleet, at serial 1 and at serial 10%.

Measures the toolkit's overhead per node (wall time / nodes, with the simulated MIG manager applying
instantly) and the Kubernetes API requests the rollout makes per node, read from the API server's own
metrics: the rollout runs as the non-admin identity (group mig-operators, bound to rbac/mig-rollout.yaml),
which a FlowSchema of its own sets apart, so apiserver_flowcontrol_dispatched_requests_total counts exactly
its requests (the simulator and the controllers run as cluster admins, in the exempt flow schema).

    .venv/bin/python bench/rollout.py [--fleet bench/fleet-rollout.yaml]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
from conftest import Cluster, start_cluster, stop_cluster  # noqa: E402

FLOW_SCHEMA = {
    "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema",
    "metadata": {"name": "mig-rollout"},
    "spec": {"matchingPrecedence": 500, "priorityLevelConfiguration": {"name": "workload-high"},
             "distinguisherMethod": {"type": "ByUser"},
             "rules": [{"subjects": [{"kind": "Group", "group": {"name": "mig-operators"}}],
                        "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                                           "clusterScope": True, "namespaces": ["*"]}],
                        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}]},
}


def requests_so_far(cluster: Cluster) -> int:
    text = cluster.api.request("GET", "/metrics")
    total = 0
    for line in text.splitlines():
        if line.startswith("apiserver_flowcontrol_dispatched_requests_total") and 'flow_schema="mig-rollout"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def ansible_playbook(cluster: Cluster, playbook: str, kubeconfig: str, *extra: str) -> tuple[float, str]:
    env = cluster.env(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), KUBECONFIG=kubeconfig, ANSIBLE_NOCOLOR="1")
    started = time.monotonic()
    result = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-playbook"), playbook, *extra],
                            capture_output=True, text=True, env=env, cwd=REPO)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"{playbook} failed:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}")
    return elapsed, result.stdout


def step_times(output: str) -> dict[str, float]:
    """Sum of each step's seconds over all nodes, from the report table the playbook prints."""
    totals = {"maintenance": 0.0, "evacuate": 0.0, "label": 0.0, "verify": 0.0, "finish": 0.0}
    for line in output.splitlines():
        cells = re.findall(r"(\d+\.\d)s", line)
        if len(cells) == 6 and " done " in line:
            for key, value in zip(totals, cells[:5], strict=True):
                totals[key] += float(value)
    return {key: round(value, 1) for key, value in totals.items()}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fleet", default=str(REPO / "bench" / "fleet-rollout.yaml"))
    args = parser.parse_args()
    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as workdir:
        started = time.monotonic()
        cluster = start_cluster(Path(workdir) / "c", Path(args.fleet), "--without-operator", "--timeout", "900")
        figures["simcluster_up_s"] = round(time.monotonic() - started, 1)
        try:
            nodes = len([n for n in cluster.api.list("/api/v1/nodes")[0]
                         if "nvidia.com/gpu.present" in n["metadata"].get("labels", {})
                         or "feature.node.kubernetes.io/pci-10de.present" in n["metadata"].get("labels", {})])
            admin, operator = cluster.kubeconfig, cluster.operator_kubeconfig
            elapsed, _ = ansible_playbook(cluster, "playbooks/nvidia-gpu-operator.yml", admin,
                                          "-e", f"gpu_operator_chart_path={REPO}/tests/charts/gpu-operator",
                                          "-e", "gpu_operator_wait_timeout=900")
            figures["operator_install_s"] = round(elapsed, 1)
            cluster.kubectl("apply", "-f", str(REPO / "rbac" / "mig-rollout.yaml"), "-f",
                            str(REPO / "rbac" / "bind-example.yaml"))
            cluster.api.create("/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas", FLOW_SCHEMA)
            runs = (("serial_1", "1", "all-1g.10gb"), ("serial_10_percent", "10%", "all-disabled"))
            for label, serial, config in runs:
                before = requests_so_far(cluster)
                with tempfile.TemporaryDirectory() as reports:
                    elapsed, output = ansible_playbook(
                        cluster, "playbooks/mig-reconfigure.yml", operator, "-e", f"mig_config={config}",
                        "-e", f"mig_rollout_serial={serial}", "-e", f"mig_rollout_report_dir={reports}")
                    report = json.loads((Path(reports) / "latest.json").read_text())
                done = report["summary"].get("done", 0)
                requests = requests_so_far(cluster) - before
                figures[label] = {
                    "nodes": nodes, "changed": done, "wall_s": round(elapsed, 1),
                    "overhead_per_node_s": round(elapsed / nodes, 3),
                    "api_requests": requests, "api_requests_per_node": round(requests / nodes, 1),
                    "step_seconds_summed_over_nodes": step_times(output),
                }
                print(f"{label}: {figures[label]}", flush=True)
                assert done == nodes, report["summary"]
        finally:
            stop_cluster(cluster)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
