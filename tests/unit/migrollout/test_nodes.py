"""Which GPU model a node has: by PCI device id where NFD publishes it, by GFD's product label otherwise."""

import pytest

from migrollout.nodes import NodeError, gpu_model, pci_device_ids, require_mig_node


def node(**labels):
    return {"metadata": {"name": "n1", "labels": {"nvidia.com/gpu.present": "true", **labels}}}


NFD = "feature.node.kubernetes.io/pci-{}.present"


@pytest.mark.parametrize("labels, ids", [
    ({NFD.format("10de"): "true"}, []),  # the GPU Operator's bundled NFD: vendor only
    ({NFD.format("0302_10de"): "true"}, []),  # NFD's own default: class and vendor
    ({NFD.format("10de_20b0"): "true"}, ["20B0"]),
    ({NFD.format("0302_10de_20b0"): "true"}, ["20B0"]),
    ({NFD.format("0302_10de_2330_10de_16c1"): "true"}, ["2330"]),
    ({NFD.format("0680_10de_1af1"): "true"}, []),  # an NVSwitch
    ({NFD.format("10de_20b0"): "false"}, []),
    ({NFD.format("0302_10de_20b2"): "true", NFD.format("0302_10de_20b0"): "true"}, ["20B0", "20B2"]),
])
def test_pci_ids_from_nfd_labels(labels, ids):
    assert pci_device_ids(node(**labels)) == ids


@pytest.mark.parametrize("labels, key", [
    # By PCI id, whatever the product string says.
    ({NFD.format("0302_10de_20f3"): "true", "nvidia.com/gpu.product": "NVIDIA-A800-SXM4-80GB-Rev2"},
     "A800-SXM4-80GB"),
    ({NFD.format("10de_233b"): "true", "nvidia.com/gpu.product": "NVIDIA-H200-NVL-MIG-1g.18gb"}, "H200-NVL"),
    ({NFD.format("10de_20b1"): "true"}, "A100-PCIE-40GB-20B1"),
    # Product strings only as the fallback.
    ({"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, "H100-SXM5-80GB"),
    ({NFD.format("10de"): "true", "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb"},
     "A100-SXM4-40GB"),
    # A PCI id the catalogue lacks: the product decides.
    ({NFD.format("10de_ffff"): "true", "nvidia.com/gpu.product": "NVIDIA-A30"}, "A30"),
    # Two PCI ids with one product: the product picks one of them.
    ({NFD.format("10de_20b1"): "true", NFD.format("10de_20b2"): "true",
      "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}, "A100-SXM4-80GB"),
    ({}, None),
])
def test_model_identification(labels, key):
    found = gpu_model(node(**labels))
    assert (found.key if found else None) == key


@pytest.mark.parametrize("labels, message", [
    ({NFD.format("10de_ffff"): "true", "nvidia.com/gpu.product": "NVIDIA-B999"},
     "node n1: GPU PCI device 0xFFFF and NVIDIA-B999 is not in the MIG catalogue"),
    ({"nvidia.com/gpu.product": "NVIDIA-B999"}, "node n1: GPU NVIDIA-B999 is not in the MIG catalogue"),
    ({}, "has no nvidia.com/gpu.product label yet"),
    ({NFD.format("10de_27b8"): "true"}, "L4 GPUs do not support MIG"),
])
def test_unknown_gpus_are_named(labels, message):
    with pytest.raises(NodeError, match=message):
        require_mig_node(node(**labels))
