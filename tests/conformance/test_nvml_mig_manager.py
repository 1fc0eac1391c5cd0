"""The simulated cluster's MIG manager applies with NVIDIA's real nvidia-mig-parted on a per-node host state
(simcluster.nvml_node.RealMigParted), and the node's GPUs (what the device plugin and GFD read) follow that
host. The binary runs once per distinct input; a node that meets the same input gets the remembered outcome,
which NVIDIA's own assert and export then judge on that node's host."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from simcluster import nvml, nvml_build, upstream
from simcluster.sim import hardware
from simcluster.testing import SIMCLUSTER, SimCluster

FLEET = Path(__file__).resolve().parents[1] / "fleets" / "small.yaml"


def _export(binary: Path, state: Path) -> list[tuple[bool, dict[str, int]]]:
    exported = subprocess.run([str(nvml.run_script(state)), str(binary), "export", "-o", "json"],
                              capture_output=True, text=True, timeout=120)
    assert exported.returncode == 0, exported.stderr
    return [(entry["mig-enabled"], entry.get("mig-devices") or {})
            for entry in json.loads(exported.stdout)["mig-configs"]["current"]]


def test_the_mig_manager_applies_with_the_real_mig_parted(tmp_path):
    built, library = upstream.find(), nvml_build.find()
    assert built is not None and library is not None, "run 'simcluster build' first"
    cluster = SimCluster.start(tmp_path / "c", FLEET, operator="simulated", nfd=False)
    try:
        nodes = sorted(node["metadata"]["name"] for node in cluster.api.get("/api/v1/nodes")["items"]
                       if hardware.model_key(node) == "A100-SXM4-80GB")
        assert len(nodes) >= 2, nodes
        for node in nodes[:2]:
            cluster.api.patch(f"/api/v1/nodes/{node}",
                              {"metadata": {"labels": {"nvidia.com/mig.config": "all-3g.40gb"}}})

        def applied() -> bool:
            for node in nodes[:2]:
                found = cluster.api.get(f"/api/v1/nodes/{node}")
                if found["metadata"]["labels"].get("nvidia.com/mig.config.state") != "success" or \
                        {str(gpu.device_counts()) for gpu in hardware.gpus(found)} != {str({"3g.40gb": 2})}:
                    return False
            return True

        cluster.wait(applied, 240, f"{nodes[:2]} to reach all-3g.40gb and mig.config.state=success")
        uuids = []
        for node in nodes[:2]:
            state = tmp_path / "c" / "nvml" / f"{node}.json"
            assert state.exists(), f"{node}: no host state: the MIG manager did not run the real mig-parted"
            host = nvml.load(state)
            count = hardware.gpu_count(cluster.api.get(f"/api/v1/nodes/{node}"))
            assert nvml.mig_layout(host) == [{"3g.40gb": 2}] * count
            # NVIDIA's export reads the host through NVML: the node applied for real, or replayed a real
            # run's outcome, and either way its host holds the config.
            assert _export(built.mig_parted, state) == [(True, {"3g.40gb": 2})]
            uuids.append({ci["uuid"] for gpu in host["gpus"] for gi in gpu["gpu_instances"]
                          for ci in gi["compute_instances"]} | {gpu["uuid"] for gpu in host["gpus"]})
        assert not uuids[0] & uuids[1], "two nodes share GPU or MIG device UUIDs"
        shown = subprocess.run([*SIMCLUSTER, "--state-dir", str(cluster.state_dir), "nvml", "state", nodes[1]],
                               capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert "3g.40gb" in shown.stdout, shown.stdout
    finally:
        cluster.stop()
