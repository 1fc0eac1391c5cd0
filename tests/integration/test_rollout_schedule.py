"""The rollout's schedule on the simulated cluster: the maintenance window refills while a slow node runs, per-pool
budgets hold (as the API server saw the nodes, not as the toolkit logged them), a node someone else cordoned counts
against its pool, the capacity check refuses or waits, and every step of every node leaves an Event.

The shared cluster's operator (installed by simcluster up with the chart's defaults, not by the gpu_operator role)
does not tolerate the runbook's mig taint, so these rollouts cordon instead (as test_rollout_playbook does): a node
is in maintenance while it is cordoned or carries the rollout record."""

from __future__ import annotations

import contextlib
import datetime
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from conftest import latest_report, run_rollout

from migrollout import kube
from migrollout.kube import Connection, KubeClient, KubeError

RECORD = "mig-rollout.nvidia-mig-rollout.io/record"
CORDON = ("-e", "mig_rollout_cordon=true", "-e", json.dumps({"mig_rollout_maintenance_taints": []}))
SLOW_APPLY = "simcluster.dev/fault-apply-delay-s"


def in_maintenance(node: dict[str, Any]) -> bool:
    return RECORD in (node["metadata"].get("annotations") or {}) or bool(node["spec"].get("unschedulable"))


@dataclass
class FleetWatch:
    """Every version of the watched nodes, in the API server's order (one watch stream), and the most of them in
    maintenance at once, overall and per pool label."""

    names: set[str]
    pools: dict[str, str]
    state: dict[str, bool] = field(default_factory=dict)
    history: list[tuple[float, frozenset[str]]] = field(default_factory=list)

    def seen(self, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        if name not in self.names:
            return
        self.state[name] = in_maintenance(node)
        self.history.append((time.monotonic(), frozenset(n for n, out in self.state.items() if out)))

    def most_at_once(self, names: set[str] | None = None) -> int:
        return max((len(out & (names or self.names)) for _, out in self.history), default=0)

    def most_in_pool(self, pool: str) -> int:
        return self.most_at_once({n for n, p in self.pools.items() if p == pool})

    def out_together(self, first: str, second: str) -> bool:
        return any(first in out and second in out for _, out in self.history)


@contextlib.contextmanager
def watch_fleet(cluster, names: list[str]) -> Iterator[FleetWatch]:
    pools = {n: cluster.labels(n).get("gpu-pool", "") for n in names}
    record = FleetWatch(set(names), pools)
    stop = threading.Event()
    ready = threading.Event()

    def run() -> None:
        client = KubeClient.connect(Connection(kubeconfig=cluster.kubeconfig))
        version = None
        while not stop.is_set():
            try:
                if version is None:
                    listed, version = client.list("/api/v1/nodes")
                    for node in listed:
                        record.seen(node)
                    ready.set()
                for kind, node in client.watch("/api/v1/nodes", resource_version=version, timeout_seconds=2):
                    if kind == "BOOKMARK":
                        version = node["metadata"]["resourceVersion"]
                        continue
                    record.seen(node)
                    version = node["metadata"]["resourceVersion"]
            except KubeError:
                version = None

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield record
    finally:
        time.sleep(0.5)
        stop.set()
        thread.join(5)


def rollout(cluster, report_dir, nodes: list[str], *extra: str):
    result = run_rollout(cluster, report_dir, *CORDON, *extra, limit=",".join(nodes))
    return result, (latest_report(report_dir) if (report_dir / "latest.json").exists() else None)


def rows(report) -> dict[str, dict[str, Any]]:
    return {row["node"]: row for row in report["nodes"]}


# Headless Chromium, offline: nothing but the file is loaded (the page must need no network).
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000")


class RenderedPage(HTMLParser):
    """The rendered DOM's elements of interest, by class: their attributes (the page's script measured what the
    browser drew into data-rendered-* attributes)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, list[dict[str, str]]] = {}
        self.body: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {key: value or "" for key, value in attrs}
        if tag == "body":
            self.body = values
        for css in values.get("class", "").split():
            self.found.setdefault(f"{tag}.{css}", []).append(values)


def render_in_chromium(page: Path, workdir: Path) -> RenderedPage:
    """Render the page as a person's browser would: a screenshot (kept beside the report) and the DOM once loaded."""
    chromium = shutil.which("chromium")
    assert chromium, "headless Chromium is needed: make integration installs it (scripts/install-chromium.sh)"
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={workdir / 'chromium-profile'}"]
    shot = workdir / "timeline.png"
    subprocess.run([*command, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=180, check=True)
    assert shot.stat().st_size > 10_000          # a picture, not a blank page
    dom = subprocess.run([*command, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180,
                         check=True).stdout
    parsed = RenderedPage()
    parsed.feed(dom)
    assert parsed.body.get("data-measured") == "yes", dom[:2000]
    return parsed


def epoch(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def assert_the_page_shows_the_run(report_dir: Path, report: dict[str, Any], window: int) -> None:
    """The run's timeline page, as Chromium drew it: a lane per node whose segments add up to the node's recorded
    step times, and the occupancy never above the window (nor a pool's use above its budget)."""
    page = (report_dir / "latest.html").resolve()
    assert "http:" not in page.read_text() and "https:" not in page.read_text()
    rendered = render_in_chromium(page, report_dir)
    px_per_s = float(rendered.body["data-px-per-unit"])
    lanes = {lane["data-node"]: float(lane["data-rendered-units"]) for lane in rendered.found["g.lane"]}
    assert set(lanes) == {row["node"] for row in report["nodes"]}
    for row in report["nodes"]:
        recorded = sum((row.get("steps") or {}).values())
        assert recorded > 0, row
        assert abs(lanes[row["node"]] - recorded) <= 1.0 / px_per_s, (row["node"], lanes[row["node"]], recorded)
    [occupancy] = rendered.found["svg.occupancy"]
    assert int(occupancy["data-limit"]) == window and int(occupancy["data-peak"]) <= window
    # Drawn: the occupancy's line never above the window's line (screen y grows downwards).
    assert float(occupancy["data-rendered-top"]) >= float(occupancy["data-rendered-limit-top"]) - 1.0
    for chart in rendered.found.get("svg.pooluse", []):
        if chart["data-limit"]:
            assert float(chart["data-rendered-top"]) >= float(chart["data-rendered-limit-top"]) - 1.0, chart
    # And the report's own slots agree: never more than the window at once.
    edges = sorted([(epoch(r["started"]), 1) for r in report["nodes"]] + [(epoch(r["finished"]), -1)
                                                                         for r in report["nodes"]])
    running = peak = 0
    for _, change in edges:
        running += change
        peak = max(peak, running)
    assert peak <= window


def test_the_window_refills_while_a_slow_node_runs(cluster, node_pool, tmp_path):
    nodes = [node_pool.take("sched-h100") for _ in range(3)]
    slow = nodes[0]
    cluster.annotate(slow, {SLOW_APPLY: "12"})
    try:
        with watch_fleet(cluster, nodes) as fleet:
            result, report = rollout(cluster, tmp_path, nodes, "-e", "mig_config=all-1g.10gb",
                                     "-e", "mig_rollout_max_unavailable=2")
        assert result.returncode == 0, result.stdout[-3000:]
        assert fleet.most_at_once() == 2
        # the two fast nodes went through the second slot one after the other while the slow one held the first
        entered = {n: min(t for t, out in fleet.history if n in out) for n in nodes}
        left = {n: max(t for t, out in fleet.history if n in out) for n in nodes}
        assert left[nodes[1]] <= entered[nodes[2]] < left[slow]
        assert all(left[n] < left[slow] for n in nodes[1:])
        assert all(row["result"] == "done" for row in report["nodes"])
        assert_the_page_shows_the_run(tmp_path, report, window=2)
    finally:
        cluster.annotate(slow, {SLOW_APPLY: None})


def test_per_pool_budgets_hold_and_a_cordoned_node_counts_against_its_pool(cluster, node_pool, tmp_path):
    a100 = [node_pool.take("sched-a100") for _ in range(3)]
    h100 = [node_pool.take("sched-h100") for _ in range(2)]
    admin_cordoned, planned = a100[0], a100[1:] + h100
    cluster.api.patch(kube.node_path(admin_cordoned), {"spec": {"unschedulable": True}})
    settings = ("-e", "mig_config=all-3g.40gb", "-e", "mig_rollout_max_unavailable=4",
                "-e", json.dumps({"mig_rollout_max_unavailable_per_pool": {"sched-a100": 2, "sched-h100": 1}}))
    try:
        # Check mode draws the plan's expected timeline: the budgets of one hold each pool to one node at a time.
        checked, _ = rollout(cluster, tmp_path / "plan", planned, "--check", *settings)
        assert checked.returncode == 0, checked.stdout[-3000:]
        [plan_page] = (tmp_path / "plan").glob("mig-rollout-*-plan.html")
        assert f"timeline: file://{plan_page}" in checked.stdout
        expected = RenderedPage()
        expected.feed(plan_page.read_text())
        assert {lane["data-node"] for lane in expected.found["g.lane"]} == set(planned)
        [occupancy] = expected.found["svg.occupancy"]
        assert (occupancy["data-peak"], occupancy["data-limit"]) == ("2", "4")
        with watch_fleet(cluster, planned) as fleet:
            result, report = rollout(cluster, tmp_path, planned, *settings)
        assert result.returncode == 0, result.stdout[-3000:]
        # sched-a100: the admin's cordon is one of its two; sched-h100: one at a time; both pools at once
        assert fleet.most_in_pool("sched-a100") == 1
        assert fleet.most_in_pool("sched-h100") == 1
        assert fleet.most_at_once() == 2
        assert all(row["result"] == "done" for row in report["nodes"])
        assert cluster.node(admin_cordoned)["spec"]["unschedulable"] is True   # not ours to undo
        assert_the_page_shows_the_run(tmp_path, report, window=4)
        # The progress lines counted per pool against the budgets, and gave an ETA once a node had finished.
        progress = [line for line in result.stdout.splitlines() if line.startswith("mig_window ")]
        assert any("sched-h100 0/2 done, 1 in maintenance (budget 1)" in line for line in progress), progress
        assert "left)" in progress[-1] and "4 done, 0 in maintenance, 0 failed, 0 waiting" in progress[-1]
    finally:
        cluster.api.patch(kube.node_path(admin_cordoned), {"spec": {"unschedulable": None}})


def pinned_gpu_pod(cluster, namespace: str, name: str, selector: dict[str, str], gpus: int = 1) -> None:
    cluster.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
                   "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                            "template": {"metadata": {"labels": {"app": name}},
                                         "spec": {"nodeSelector": selector, "containers": [{
                                             "name": "cuda", "image": "cuda",
                                             "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]}}}})
    cluster.wait(lambda: any(p["status"].get("phase") == "Running" for p in cluster.pods(namespace)),
                 what=f"pod of {name} running")


def test_capacity_refuse_skips_the_node_untouched_and_the_rest_proceed(cluster, node_pool, tmp_path):
    stuck, other = node_pool.take("sched-h100"), node_pool.take("sched-h100")
    namespace = cluster.namespace()
    pinned_gpu_pod(cluster, namespace, "pinned", {"kubernetes.io/hostname": stuck})
    before = cluster.node(stuck)
    result, report = rollout(cluster, tmp_path, [stuck, other], "-e", "mig_config=all-1g.10gb")
    found = rows(report)
    assert found[other]["result"] == "done", result.stdout[-3000:]
    assert found[stuck]["result"] == "skipped"
    assert f"{namespace}/pinned-" in found[stuck]["reason"] and "nowhere to go" in found[stuck]["reason"]
    after = cluster.node(stuck)
    assert after["metadata"]["labels"] == before["metadata"]["labels"]          # untouched
    assert RECORD not in (after["metadata"].get("annotations") or {})
    assert not after["spec"].get("unschedulable")
    assert [p["spec"]["nodeName"] for p in cluster.pods(namespace)] == [stuck]  # the pod was not evicted


def test_capacity_wait_proceeds_once_room_frees(cluster, node_pool, tmp_path):
    node, room = node_pool.take("sched-h100"), node_pool.take("sched-h100")
    namespace = cluster.namespace()
    cluster.label(node, {"capacity-test": namespace})
    cluster.label(room, {"capacity-test": namespace})
    cluster.api.patch(kube.node_path(room), {"spec": {"unschedulable": True}})   # no room yet
    try:
        pinned_gpu_pod(cluster, namespace, "mover", {"capacity-test": namespace}, gpus=8)
        timer = threading.Timer(6, lambda: cluster.api.patch(kube.node_path(room), {"spec": {"unschedulable": None}}))
        timer.start()
        started = time.monotonic()
        result, report = rollout(cluster, tmp_path, [node], "-e", "mig_config=all-1g.10gb",
                                 "-e", "mig_rollout_capacity_policy=wait", "-e", "mig_rollout_capacity_timeout=60")
        timer.join()
        assert result.returncode == 0, result.stdout[-3000:]
        assert rows(report)[node]["result"] == "done"
        assert time.monotonic() - started > 6
        assert [p["spec"]["nodeName"] for p in cluster.pods(namespace) if p["status"].get("phase") == "Running"] \
            == [room]
    finally:
        cluster.label(node, {"capacity-test": None})
        cluster.label(room, {"capacity-test": None})
        cluster.api.patch(kube.node_path(room), {"spec": {"unschedulable": None}})


def test_every_step_of_every_node_leaves_an_event(cluster, node_pool, tmp_path):
    nodes = [node_pool.take("sched-a100") for _ in range(2)]
    result, report = rollout(cluster, tmp_path, nodes, "-e", "mig_config=all-2g.20gb",
                             "-e", "mig_rollout_max_unavailable=2")
    assert result.returncode == 0, result.stdout[-3000:]
    run = report["run"]
    listed, _ = cluster.api.list("/apis/events.k8s.io/v1/namespaces/default/events")
    for node in nodes:
        mine = sorted((e for e in listed if e["regarding"]["name"] == node and run in (e.get("note") or "")),
                      key=lambda e: e["eventTime"])
        assert [e["reason"] for e in mine] == ["MigReconfigurationStarted", "GpuWorkloadsEvacuated", "MigConfigApplied",
                                               "MigConfigVerified", "MigReconfigurationSucceeded"]
        assert {e["reportingController"] for e in mine} == {"nvidia.com/mig-rollout"}
        assert "all-2g.20gb" in mine[-1]["note"]
        described = cluster.kubectl("describe", "node", node).stdout
        assert "MigReconfigurationSucceeded" in described
