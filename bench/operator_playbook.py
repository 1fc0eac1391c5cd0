"""Benchmark: playbooks/nvidia-gpu-operator.yml installing NVIDIA's GPU Operator (the pinned module's chart, its
controller run by the simulated kubelet), on the tests' small fleet and on the 200-node benchmark fleet.

Times the whole command as an admin runs it: the install (helm, then the role's wait until the ClusterPolicy is
ready and every operand DaemonSet carries the new spec), the same run again (nothing to change), and a switch of
MIG strategy (the operands rolled out again); and `simcluster up` itself, without the operator and with it.

    .venv/bin/python bench/operator_playbook.py [--large-fleet bench/fleet-rollout.yaml]
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
from simcluster.testing import SimCluster, start_cluster, stop_cluster

REPO = Path(__file__).resolve().parents[1]
SMALL_FLEET = REPO / "tests" / "fleets" / "small.yaml"


def operator_playbook(cluster: SimCluster, *extra: str) -> float:
    env = cluster.env(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    started = time.monotonic()
    result = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-playbook"), "playbooks/nvidia-gpu-operator.yml",
                             "-e", f"gpu_operator_chart_path={upstream.build().chart}",
                             "-e", "gpu_operator_wait_timeout=900", *extra],
                            capture_output=True, text=True, env=env, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"the operator playbook failed:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}")
    return round(time.monotonic() - started, 1)


def timed_up(workdir: Path, name: str, fleet: Path, *args: str) -> tuple[SimCluster, float]:
    started = time.monotonic()
    cluster = start_cluster(workdir / name, fleet, "--timeout", "900", *args)
    return cluster, round(time.monotonic() - started, 1)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--large-fleet", default=str(REPO / "bench" / "fleet-rollout.yaml"))
    args = parser.parse_args()
    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as temporary:
        workdir = Path(temporary)
        for label, fleet in (("small_fleet", SMALL_FLEET), ("large_fleet", Path(args.large_fleet))):
            cluster, up_s = timed_up(workdir, label, fleet, "--without-operator")
            try:
                runs = {"simcluster_up_without_operator_s": up_s, "install_s": operator_playbook(cluster),
                        "again_no_change_s": operator_playbook(cluster),
                        "switch_to_single_s": operator_playbook(cluster, "-e", "k8s_gpu_mig_strategy=single")}
            finally:
                stop_cluster(cluster)
            figures[label] = runs
            print(f"{label}: {runs}", flush=True)
        cluster, up_s = timed_up(workdir, "up_with_operator", SMALL_FLEET)
        stop_cluster(cluster)
        figures["small_fleet_simcluster_up_with_operator_s"] = up_s
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
