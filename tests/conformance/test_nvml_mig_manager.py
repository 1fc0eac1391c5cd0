"""Issue 17's switch (SIMCLUSTER_REAL_MIG_PARTED=1, off by default): the simulated cluster's MIG manager
applies with NVIDIA's real nvidia-mig-parted on a per-node host state (simcluster.nvml_node.RealMigParted)
instead of its mirror, and the node's GPUs (what the device plugin and GFD read) follow that host."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from simcluster import nvml, nvml_build, nvml_node, upstream
from simcluster.sim import hardware
from simcluster.testing import SimCluster

FLEET = Path(__file__).resolve().parents[1] / "fleets" / "small.yaml"


def test_the_mig_manager_applies_with_the_real_mig_parted_when_switched_on(tmp_path, monkeypatch):
    built, library = upstream.find(), nvml_build.find()
    assert built is not None and library is not None, "run 'simcluster build' first"
    monkeypatch.setenv(nvml_node.REAL_MIG_PARTED_ENV, "1")
    cluster = SimCluster.start(tmp_path / "c", FLEET, operator="simulated", nfd=False)
    try:
        node = "a100-80gb-1"
        cluster.api.patch(f"/api/v1/nodes/{node}", {"metadata": {"labels": {"nvidia.com/mig.config": "all-3g.40gb"}}})

        def applied() -> bool:
            found = cluster.api.get(f"/api/v1/nodes/{node}")
            return (found["metadata"]["labels"].get("nvidia.com/mig.config.state") == "success"
                    and [gpu.device_counts() for gpu in hardware.gpus(found)] == [{"3g.40gb": 2}] * 8)

        cluster.wait(applied, 240, f"{node} to reach all-3g.40gb and mig.config.state=success")
        state = tmp_path / "c" / "nvml" / f"{node}.json"
        assert state.exists(), "the MIG manager did not run the real mig-parted"
        host = nvml.load(state)
        assert nvml.mig_layout(host) == [{"3g.40gb": 2}] * 8
        gpus = hardware.gpus(cluster.api.get(f"/api/v1/nodes/{node}"))
        assert [gpu.device_counts() for gpu in gpus] == nvml.mig_layout(host)
        exported = subprocess.run([str(nvml.run_script(state)), str(built.mig_parted), "export", "-o", "json"],
                                  capture_output=True, text=True, timeout=120)
        assert exported.returncode == 0, exported.stderr
        current = json.loads(exported.stdout)["mig-configs"]["current"]
        assert [(entry["mig-enabled"], entry["mig-devices"]) for entry in current] == [(True, {"3g.40gb": 2})]
    finally:
        cluster.stop()
