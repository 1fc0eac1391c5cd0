"""A 1,000-node simulated fleet comes up, and one node's MIG change applies (timings are printed and recorded)."""

import json
import time

import pytest
from conftest import REPO, start_cluster, stop_cluster

pytestmark = pytest.mark.slow


def test_thousand_nodes(tmp_path):
    started = time.monotonic()
    cluster = start_cluster(tmp_path / "c", None, "--nodes", "1000", "--timeout", "900")
    up_s = time.monotonic() - started
    try:
        nodes, _ = cluster.api.list("/api/v1/nodes")
        assert len(nodes) == 1000
        node = "a100-80gb-100"
        started = time.monotonic()
        cluster.label(node, {"nvidia.com/mig.config.state": None, "nvidia.com/mig.config": "all-1g.10gb"})
        cluster.wait(lambda: cluster.allocatable(node) == {"nvidia.com/mig-1g.10gb": "56"}, timeout=120,
                     what="the change applied and advertised")
        change_s = time.monotonic() - started
        assert cluster.labels(node)["nvidia.com/mig.config.state"] == "success"
    finally:
        stop_cluster(cluster)
    figures = {"nodes": 1000, "simcluster_up_s": round(up_s, 1), "one_node_change_s": round(change_s, 2)}
    print(f"\n1000-node fleet: {figures}")
    out = REPO / "build" / "scale.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures))
