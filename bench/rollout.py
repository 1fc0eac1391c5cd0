"""Benchmark: the rolling MIG reconfiguration of a 200-node fleet, one node at a time and 10% at a time.

Measures the time per node (wall time / nodes, with the simulated MIG manager applying with no added delay:
NVIDIA's real mig-parted on the GPU-less NVML, once per distinct input; the window of 1 and of 10%) and the Kubernetes API requests the rollout makes per node, read from the API server's own
metrics: the rollout runs as the non-admin identity (the ServiceAccount mig-rollout/mig-rollout, bound to
rbac/mig-rollout.yaml), which a FlowSchema of its own sets apart, so apiserver_flowcontrol_dispatched_requests_total
counts exactly its requests (the simulator and the controllers run as cluster admins, in the exempt flow schema).

    .venv/bin/python bench/rollout.py [--fleet bench/fleet-rollout.yaml]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from simcluster import upstream
from simcluster.testing import Cluster, start_cluster, stop_cluster

REPO = Path(__file__).resolve().parents[1]

FLOW_SCHEMA = {
    "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema",
    "metadata": {"name": "mig-rollout"},
    "spec": {"matchingPrecedence": 500, "priorityLevelConfiguration": {"name": "workload-high"},
             "distinguisherMethod": {"type": "ByUser"},
             "rules": [{"subjects": [{"kind": "ServiceAccount",
                                        "serviceAccount": {"name": "mig-rollout", "namespace": "mig-rollout"}}],
                        "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                                           "clusterScope": True, "namespaces": ["*"]}],
                        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}]},
}


def read_counts(path: Path) -> dict[str, float]:
    return json.loads(path.read_text()) if path.exists() else {}


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
        failures = [line for line in result.stdout.splitlines() if "failed:" in line or "FAILED" in line]
        raise RuntimeError(f"{playbook} failed:\n" + "\n".join(failures[:20])
                           + f"\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}")
    return elapsed, result.stdout


def install_operator_and_rbac(cluster: Cluster) -> float:
    """NVIDIA's chart installed by the operator playbook (seconds it took), the rollout's roles bound to its
    ServiceAccount, and the FlowSchema that counts that ServiceAccount's requests apart."""
    elapsed, _ = ansible_playbook(cluster, "playbooks/nvidia-gpu-operator.yml", cluster.kubeconfig,
                                  "-e", f"gpu_operator_chart_path={upstream.build().chart}",
                                  "-e", "gpu_operator_wait_timeout=900")
    cluster.kubectl("apply", "-f", str(REPO / "rbac" / "mig-rollout.yaml"), "-f",
                    str(REPO / "rbac" / "bind-example.yaml"))
    cluster.api.create("/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas", FLOW_SCHEMA)
    return round(elapsed, 1)


def step_figures(report: dict) -> dict[str, object]:
    """Per node, on average over the nodes done: seconds in each step and API requests of each task, from the
    report; and the node phase (first node's start to last node's end, from the window's slot times)."""
    rows = [row for row in report["nodes"] if row["result"] in ("done", "resumed")]
    count = max(len(rows), 1)
    seconds: dict[str, float] = {}
    requests: dict[str, int] = {}
    for row in rows:
        for step, value in (row.get("steps") or {}).items():
            seconds[step] = seconds.get(step, 0.0) + value
        for task, value in (row.get("api_requests") or {}).items():
            requests[task] = requests.get(task, 0) + value
    starts = [_epoch(row["started"]) for row in rows if row.get("started")]
    ends = [_epoch(row["finished"]) for row in rows if row.get("finished")]
    return {"step_seconds_per_node": {k: round(v / count, 3) for k, v in seconds.items()},
            "task_requests_per_node": {k: round(v / count, 2) for k, v in requests.items()},
            "node_phase_s": round(max(ends) - min(starts), 1) if starts and ends else None}


def _epoch(text: str) -> float:
    import datetime

    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fleet", default=str(REPO / "bench" / "fleet-rollout.yaml"))
    args = parser.parse_args()
    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as workdir:
        started = time.monotonic()
        # The simulated operator (lighter than NVIDIA's at this size) reconciles NVIDIA's chart installed below.
        cluster = start_cluster(Path(workdir) / "c", Path(args.fleet), "--simulated-operator", "--without-operator",
                                "--timeout", "900")
        figures["simcluster_up_s"] = round(time.monotonic() - started, 1)
        try:
            nodes = len([n for n in cluster.api.list("/api/v1/nodes")[0]
                         if "nvidia.com/gpu.present" in n["metadata"].get("labels", {})
                         or "feature.node.kubernetes.io/pci-10de.present" in n["metadata"].get("labels", {})])
            operator = cluster.operator_kubeconfig
            figures["operator_install_s"] = install_operator_and_rbac(cluster)
            runs = (("window_1", "1", "all-1g.10gb"), ("window_10_percent", "10%", "all-disabled"))
            # NVIDIA's tools as the simulator ran them (simcluster.nvml_node.RunCounts): mig-parted in the MIG
            # managers, the device plugin's probe for the device plugins and GFD.
            tools = {"mig_parted": Path(workdir) / "c" / "nvml" / "mig-parted-runs.json",
                     "device_plugin_probe": Path(workdir) / "c" / "nvml" / "device-plugin-probe-runs.json"}
            for label, window, config in runs:
                before = requests_so_far(cluster)
                counts_before = {tool: read_counts(path) for tool, path in tools.items()}
                with tempfile.TemporaryDirectory() as reports:
                    elapsed, _ = ansible_playbook(
                        cluster, "playbooks/mig-reconfigure.yml", operator, "-e", f"mig_config={config}",
                        "-e", f"mig_rollout_max_unavailable={window}", "-e", f"mig_rollout_report_dir={reports}")
                    report = json.loads((Path(reports) / "latest.json").read_text())
                done = report["summary"].get("done", 0)
                requests = requests_so_far(cluster) - before
                steps = step_figures(report)
                in_tasks = sum(steps["task_requests_per_node"].values())  # type: ignore[union-attr]
                # Real runs (once per distinct input) and the seconds they took, and replays of a real run's
                # answer on the other nodes.
                time.sleep(1)  # the simulator writes its counts half a second after the last command
                ran = {tool: {key: round(read_counts(path).get(key, 0) - counts_before[tool].get(key, 0), 3)
                              for key in ("runs", "run_seconds", "replays")} for tool, path in tools.items()}
                figures[label] = {
                    "nodes": nodes, "changed": done, "wall_s": round(elapsed, 1),
                    "per_node_s": round(elapsed / nodes, 3),
                    "api_requests": requests, "api_requests_per_node": round(requests / nodes, 1),
                    "node_tasks_requests_per_node": round(in_tasks, 2),
                    "other_requests_per_node (inventory, plan, lock, renewals, report)":
                        round(requests / nodes - in_tasks, 2),
                    **steps,
                    **ran,
                }
                print(f"{label}: {figures[label]}", flush=True)
                assert done == nodes, report["summary"]
        finally:
            stop_cluster(cluster)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
