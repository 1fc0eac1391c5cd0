"""A simulated node's GPUs as a GPU-less NVML host state and back (simcluster.nvml_node)."""

from __future__ import annotations

import pytest

from simcluster import nvml_node
from simcluster.sim.hardware import Gpu, GpuInstance


def test_round_trip_keeps_what_the_simulator_knows():
    gpus = [Gpu(True, None, (GpuInstance("3g.40gb", 4, ("3g.40gb",)), GpuInstance("1g.10gb", 0, ("1g.10gb",)),
                             GpuInstance("2g.20gb", 2, ("2g.20gb",)))),
            Gpu(False, True),
            Gpu(True, False)]
    data = nvml_node.host_state("H100-SXM5-80GB", gpus, uuids=["GPU-a", "GPU-b", "GPU-c"])
    assert [gpu["uuid"] for gpu in data["gpus"]] == ["GPU-a", "GPU-b", "GPU-c"]
    assert [gpu["mig"] for gpu in data["gpus"]] == [{"current": 1, "pending": 1}, {"current": 0, "pending": 1},
                                                    {"current": 1, "pending": 0}]
    first = data["gpus"][0]["gpu_instances"]
    # NVML profile ids (3g 2, 1g 0, 2g 1) and the placements' sizes in memory slices.
    assert [(gi["profile_id"], gi["start"], gi["size"]) for gi in first] == [(2, 4, 4), (0, 0, 1), (1, 2, 2)]
    assert all(ci["uuid"].startswith("MIG-") for gi in first for ci in gi["compute_instances"])
    assert nvml_node.node_gpus(data) == gpus


def test_unknown_profiles_are_refused():
    with pytest.raises(nvml_node.ConversionError, match=r"5g\.50gb is not a GPU instance profile of H100-SXM5-80GB"):
        nvml_node.host_state("H100-SXM5-80GB", [Gpu(True, None, (GpuInstance("5g.50gb", 0, ("5g.50gb",)),))])
    with pytest.raises(nvml_node.ConversionError, match=r"1c\.3g\.40gb is not a compute instance profile of 3g\.40gb"):
        nvml_node.host_state("H100-SXM5-80GB", [Gpu(True, None, (GpuInstance("3g.40gb", 0, ("1c.3g.40gb",)),))])
