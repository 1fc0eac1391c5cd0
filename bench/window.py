"""Benchmark: the maintenance window against serial batches, side by side on one simulated cluster.

100 MIG nodes (A100-80GB, 8 GPUs each), at most 10 out of service at once. 90 change their layout within
MIG mode (the simulated MIG manager takes 5 s); 10 turn MIG mode on or off, which on real GPUs can take a
reboot (the simulated apply takes 60 s). In name order every ten nodes hold one slow node, so each
``serial: 10`` batch waits for one. Runs, one after the other on the same cluster:

- window: ``mig_rollout_max_unavailable: 10`` (the default schedule);
- batches: ``mig_rollout_schedule: batches``, ``mig_rollout_serial: 10``.

The ideal bound is the total node-seconds (each node's time from the window run's report) divided by the
window, or the longest node if that is more. Ratios are of the node phase (the first node's start to the
last node's end, from the report) and of the whole ``ansible-playbook`` run (plan, lock and report
included).

The ETA's error: the progress line the run printed when 25%, 50% and 75% of the nodes had finished gives an ETA
(rollout.progress); each is compared with the actual end (the last node's end, from the report), in seconds and as
a fraction of the time that was left.

    .venv/bin/python bench/window.py [--nodes 100] [--slow-every 10] [--window 10] [--fast-s 5] [--slow-s 60]
                                     [--schedules window,batches]
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

from simcluster.testing import start_cluster, stop_cluster

REPO = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(REPO / "bench"))
from rollout import ansible_playbook, install_operator_and_rbac, requests_so_far  # noqa: E402

FAST_POOL, SLOW_POOL = "a100", "a100-reboot"


def fleet(nodes: int, slow_every: int, fast_s: float, slow_s: float) -> dict:
    """Groups of ``slow_every`` nodes named so that name order interleaves them: r00f-1..r00f-9, r00s-1, r01f-1..."""
    pools = []
    for group in range(nodes // slow_every):
        pools.append({"name": f"r{group:02d}f", "count": slow_every - 1, "gpu": "A100-SXM4-80GB",
                      "gpus_per_node": 8, "mig_config": "all-1g.10gb", "labels": {"gpu-pool": FAST_POOL},
                      "faults": {"apply_delay_s": fast_s}})
        pools.append({"name": f"r{group:02d}s", "count": 1, "gpu": "A100-SXM4-80GB", "gpus_per_node": 8,
                      "labels": {"gpu-pool": SLOW_POOL}, "faults": {"apply_delay_s": slow_s}})
    pools.append({"name": "cpu", "count": 1})
    return {"simulation": {"gfd_delay_s": 0, "device_plugin_delay_s": 0}, "pools": pools}


def inventory(workdir: Path, fast_config: str, slow_config: str) -> Path:
    """The checkout's inventory, with each pool's mig_config for this run."""
    directory = workdir / "inventory"
    shutil.rmtree(directory, ignore_errors=True)
    shutil.copytree(REPO / "config", directory)
    group_vars = directory / "group_vars"
    (group_vars / f"gpu_pool_{FAST_POOL.replace('-', '_')}.yml").write_text(
        yaml.safe_dump({"mig_config": fast_config}))
    (group_vars / f"gpu_pool_{SLOW_POOL.replace('-', '_')}.yml").write_text(
        yaml.safe_dump({"mig_config": slow_config}))
    return directory


def node_phase(report: dict) -> tuple[float, dict[str, float]]:
    """The node phase's wall time and each node's seconds, from the report."""
    starts, ends, seconds = [], [], {}
    for row in report["nodes"]:
        if row.get("started") and row.get("finished"):
            start = datetime.datetime.fromisoformat(row["started"].replace("Z", "+00:00")).timestamp()
            end = datetime.datetime.fromisoformat(row["finished"].replace("Z", "+00:00")).timestamp()
            starts.append(start)
            ends.append(end)
            seconds[row["node"]] = end - start
    return (max(ends) - min(starts) if starts else 0.0), seconds


PROGRESS = re.compile(r"^mig_window (\d\d:\d\d:\d\d)Z: .*? \| (\d+) done, \d+ in maintenance, (\d+) failed.*"
                      r"ETA (\d\d:\d\d:\d\d)Z \((\S+) left\)")


def eta_errors(stdout: str, report: dict, nodes: int) -> dict[str, dict[str, float]]:
    """The ETA of the first progress line at or past 25%, 50% and 75% of the nodes finished, against the actual end
    (the last node's end in the report): error in seconds (positive: the ETA was late) and over the time left."""
    end = max(datetime.datetime.fromisoformat(row["finished"].replace("Z", "+00:00"))
              for row in report["nodes"] if row.get("finished"))

    def moment(clock: str) -> datetime.datetime:
        found = datetime.datetime.combine(end.date(), datetime.time.fromisoformat(clock), end.tzinfo)
        return found - datetime.timedelta(days=1) if found - end > datetime.timedelta(hours=12) else found

    lines = [match.groups() for line in stdout.splitlines() if (match := PROGRESS.match(line))]
    figures = {}
    for share in (25, 50, 75):
        for said, done, failed, eta, _ in lines:
            if (int(done) + int(failed)) * 100 >= share * nodes:
                left = (end - moment(said)).total_seconds()
                error = (moment(eta) - end).total_seconds()
                figures[f"{share}%"] = {"said_at_s_before_end": round(left, 1), "error_s": round(error, 1),
                                        "error_of_time_left": round(error / left, 3) if left > 0 else 0.0}
                break
    return figures


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--slow-every", type=int, default=10)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--fast-s", type=float, default=5.0)
    parser.add_argument("--slow-s", type=float, default=60.0)
    parser.add_argument("--schedules", default="window,batches", help="which runs, in this order")
    args = parser.parse_args()
    chosen = args.schedules.split(",")
    figures: dict[str, object] = {"nodes": args.nodes, "slow_nodes": args.nodes // args.slow_every,
                                  "window": args.window, "fast_apply_s": args.fast_s, "slow_apply_s": args.slow_s}
    with tempfile.TemporaryDirectory() as temporary:
        workdir = Path(temporary)
        fleet_file = workdir / "fleet.yaml"
        fleet_file.write_text(yaml.safe_dump(fleet(args.nodes, args.slow_every, args.fast_s, args.slow_s)))
        started = time.monotonic()
        # The simulated operator (lighter than NVIDIA's at this size) reconciles NVIDIA's chart installed below.
        cluster = start_cluster(workdir / "c", fleet_file, "--simulated-operator", "--without-operator",
                                "--timeout", "900")
        figures["simcluster_up_s"] = round(time.monotonic() - started, 1)
        try:
            figures["operator_install_s"] = install_operator_and_rbac(cluster)
            # Each run changes every node: the fast ones within MIG mode, the slow ones into or out of it.
            runs = (("window", ["-e", f"mig_rollout_max_unavailable={args.window}"], "all-2g.20gb", "all-1g.10gb"),
                    ("batches", ["-e", "mig_rollout_schedule=batches", "-e", f"mig_rollout_serial={args.window}"],
                     "all-3g.40gb", "all-disabled"))
            for label, settings, fast_config, slow_config in runs:
                if label not in chosen:
                    continue
                before = requests_so_far(cluster)
                reports = workdir / f"reports-{label}"
                elapsed, stdout = ansible_playbook(
                    cluster, "playbooks/mig-reconfigure.yml", cluster.operator_kubeconfig,
                    "-i", str(inventory(workdir, fast_config, slow_config)), *settings,
                    "-e", f"mig_rollout_report_dir={reports}")
                report = json.loads((reports / "latest.json").read_text())
                phase, seconds = node_phase(report)
                figures[label] = {"wall_s": round(elapsed, 1), "node_phase_s": round(phase, 1),
                                  "done": report["summary"].get("done", 0),
                                  "api_requests": requests_so_far(cluster) - before,
                                  "node_seconds": round(sum(seconds.values()), 1),
                                  "longest_node_s": round(max(seconds.values(), default=0.0), 1),
                                  "eta": eta_errors(stdout, report, args.nodes)}
                print(f"{label}: {figures[label]}", flush=True)
                assert report["summary"].get("done", 0) == args.nodes, report["summary"]
        finally:
            stop_cluster(cluster)
    if "window" not in figures:
        print(json.dumps(figures, indent=2))
        return 0
    window = figures["window"]
    assert isinstance(window, dict)
    ideal = max(window["node_seconds"] / args.window, window["longest_node_s"])
    nominal = max(((args.nodes - args.nodes // args.slow_every) * args.fast_s
                   + args.nodes // args.slow_every * args.slow_s) / args.window, args.slow_s)
    figures["ideal_bound_s"] = round(ideal, 1)
    figures["nominal_bound_s"] = round(nominal, 1)
    figures["window_ratio"] = round(window["node_phase_s"] / ideal, 3)
    if isinstance(figures.get("batches"), dict):
        figures["batches_ratio"] = round(figures["batches"]["node_phase_s"] / ideal, 3)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
