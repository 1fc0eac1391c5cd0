"""Device-plugin resources and GPU feature discovery labels under the none, single and mixed strategies."""

import pytest
from conftest import FLEETS, start_cluster, stop_cluster

STATE = "nvidia.com/mig.config.state"


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    cluster = start_cluster(tmp_path_factory.mktemp("strategies") / "c", FLEETS / "small.yaml")
    # a100-80gb-1: 7 x 1g.10gb per GPU; a100-40gb-1 booted with 7 x 1g.5gb per GPU on its 4 GPUs
    cluster.label("a100-80gb-1", {"nvidia.com/mig.config": "all-1g.10gb"})
    cluster.wait_settled("a100-80gb-1", "all-1g.10gb")
    yield cluster
    stop_cluster(cluster)


def set_strategy(cluster, strategy):
    cluster.api.patch("/apis/nvidia.com/v1/clusterpolicies/cluster-policy", {"spec": {"mig": {"strategy": strategy}}})

    def rolled_out():
        policy = cluster.policy()
        if policy["status"].get("state") != "ready":
            return False
        labels = cluster.labels("l4-1")
        return labels.get("nvidia.com/mig.strategy") == (strategy if strategy != "none" else None)
    cluster.wait(rolled_out, timeout=120, what=f"strategy {strategy} rolled out")


def test_booted_layout_is_applied_and_reported(sim):
    assert sim.labels("a100-40gb-1")[STATE] == "success"
    assert sim.labels("a100-40gb-1")["nvidia.com/mig.config"] == "all-1g.5gb"


def test_mixed(sim):
    set_strategy(sim, "mixed")
    sim.wait(lambda: sim.allocatable("a100-80gb-1") == {"nvidia.com/mig-1g.10gb": "56"}, what="mixed resources")
    labels = sim.wait(lambda: (found := sim.labels("a100-80gb-1")).get("nvidia.com/mig-1g.10gb.count") and found,
                      what="GFD labels")
    assert labels["nvidia.com/gpu.count"] == "8"
    assert labels["nvidia.com/mig-1g.10gb.count"] == "56"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
    sim.wait(lambda: sim.allocatable("a100-40gb-1") == {"nvidia.com/mig-1g.5gb": "28"}, what="booted layout")
    assert sim.allocatable("a100-80gb-2") == {"nvidia.com/gpu": "8"}


def test_single(sim):
    set_strategy(sim, "single")
    sim.wait(lambda: sim.allocatable("a100-80gb-1") == {"nvidia.com/gpu": "56"}, what="single resources")
    sim.wait(lambda: sim.labels("a100-80gb-1")["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb",
             what="single product label")
    assert sim.labels("a100-80gb-1")["nvidia.com/gpu.count"] == "56"
    sim.wait(lambda: sim.allocatable("a100-40gb-1") == {"nvidia.com/gpu": "28"}, what="single on the 40GB node")
    # Nodes without MIG look as under none, plus the strategy label.
    assert sim.allocatable("a100-80gb-2") == {"nvidia.com/gpu": "8"}


def test_single_with_mixed_profiles_breaks_the_device_plugin(sim):
    # More than one MIG device type: the device plugin refuses to start, GFD labels the node invalid,
    # and the operator stops reporting ready (its DaemonSet has an unavailable pod).
    sim.label("a100-80gb-3", {STATE: None, "nvidia.com/mig.config": "all-balanced"})
    sim.wait_settled("a100-80gb-3", "all-balanced")
    sim.wait(lambda: sim.labels("a100-80gb-3")["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB-MIG-INVALID",
             what="invalid layout label")
    assert sim.labels("a100-80gb-3")["nvidia.com/gpu.count"] == "0"
    assert sim.allocatable("a100-80gb-3") == {}

    def crashing():
        pods = sim.pods("gpu-operator", field_selector="spec.nodeName=a100-80gb-3",
                        label_selector="app=nvidia-device-plugin-daemonset")
        statuses = pods[0]["status"].get("containerStatuses") or [{}] if pods else [{}]
        return statuses[0].get("state", {}).get("waiting")
    waiting = sim.wait(crashing, what="device plugin crash loop")
    assert waiting["reason"] == "CrashLoopBackOff"
    assert "more than one MIG device type" in waiting["message"]
    sim.wait(lambda: sim.policy()["status"]["state"] == "notReady", what="ClusterPolicy notReady")


def test_none(sim):
    set_strategy(sim, "none")
    sim.wait(lambda: sim.allocatable("a100-80gb-1") == {"nvidia.com/gpu": "8"}, what="whole GPUs")
    sim.wait(lambda: sim.labels("a100-80gb-1")["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB",
             what="GFD relabelled")
    labels = sim.labels("a100-80gb-1")
    assert labels["nvidia.com/gpu.count"] == "8"
    assert "nvidia.com/mig.strategy" not in labels
    assert not any(key.startswith("nvidia.com/mig-") for key in labels)
    sim.wait(lambda: sim.allocatable("a100-40gb-1") == {"nvidia.com/gpu": "4"}, what="whole GPUs")
    sim.wait(lambda: sim.allocatable("a100-80gb-3") == {"nvidia.com/gpu": "8"}, what="plugin recovered")
