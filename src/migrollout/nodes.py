"""Reading GPU nodes, and writing to them without losing anyone else's change."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from migrollout import catalogue, labels
from migrollout.catalogue import GpuModel
from migrollout.kube import KubeClient, KubeError, node_path, retry_on_conflict
from migrollout.migconfig.document import MigPartedConfig
from migrollout.migconfig.layouts import devices_per_gpu

Node = dict[str, Any]


class NodeError(Exception):
    """A node is not fit for what was asked (unknown, no GPUs, no MIG ...)."""


class NodeGone(NodeError):
    """The node does not exist (any more)."""


def node_labels(node: Node) -> dict[str, str]:
    return node.get("metadata", {}).get("labels") or {}


def node_annotations(node: Node) -> dict[str, str]:
    return node.get("metadata", {}).get("annotations") or {}


def node_taints(node: Node) -> list[dict[str, Any]]:
    return list(node.get("spec", {}).get("taints") or [])


def is_ready(node: Node) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in node.get("status", {}).get("conditions") or [])


def is_cordoned(node: Node) -> bool:
    return bool(node.get("spec", {}).get("unschedulable"))


def has_gpus(node: Node) -> bool:
    found = node_labels(node)
    return found.get(labels.GPU_PRESENT) == "true" or any(found.get(key) == "true" for key in labels.NFD_NVIDIA_PCI)


# node-feature-discovery's PCI labels: feature.node.kubernetes.io/pci-<fields>.present, the fields being the
# configured deviceLabelFields joined by "_" (lowercase hex without 0x), in NFD's order class, vendor,
# device, subsystem_vendor, subsystem_device. The GPU Operator's bundled NFD publishes only the vendor
# (pci-10de.present); an NFD configured with "device" (e.g. pci-10de_20b0.present or
# pci-0302_10de_20b0.present) tells the GPU's PCI device id. GPU feature discovery publishes no PCI id.
NFD_PCI_LABEL = re.compile(r"^feature\.node\.kubernetes\.io/pci-([0-9a-f_]+)\.present$")
NVIDIA_VENDOR = "10de"
PCI_CLASS_DISPLAY = "03"  # 0300 VGA, 0302 3D controller: GPUs (NVSwitches are 0680)


def pci_device_ids(node: Node) -> list[str]:
    """The NVIDIA PCI device ids (``20B0``) NFD's labels name on this node; empty when NFD publishes none."""
    found: list[str] = []
    for key, value in node_labels(node).items():
        match = NFD_PCI_LABEL.match(key)
        if not match or value != "true":
            continue
        fields = match[1].split("_")
        if NVIDIA_VENDOR not in fields:
            continue
        vendor_at = fields.index(NVIDIA_VENDOR)
        if vendor_at > 0 and not fields[vendor_at - 1].startswith(PCI_CLASS_DISPLAY):
            continue  # a class field that is no GPU's
        if vendor_at + 1 < len(fields) and len(fields[vendor_at + 1]) == 4:
            device = fields[vendor_at + 1].upper()
            if device not in found:
                found.append(device)
    return sorted(found)


def gpu_model(node: Node) -> GpuModel | None:
    """The node's GPU model: by PCI device id where NFD publishes it, else by GFD's product label.

    The PCI id is exact; product strings vary with drivers and board variants (a spelling the catalogue
    lacks would make the node unknown), so they are only the fallback. When NFD names several known GPU
    models, the product label decides among them.
    """
    product = node_labels(node).get(labels.GPU_PRODUCT, "")
    by_product = catalogue.find_model(product) if product else None
    by_pci = [model for model in map(catalogue.model_for_device_id, pci_device_ids(node)) if model is not None]
    if len(by_pci) == 1:
        return by_pci[0]
    if by_pci and by_product is not None:
        same = [model for model in by_pci if model.product == by_product.product]
        if same:
            return same[0]
    return by_product


def mig_state(node: Node) -> str:
    return node_labels(node).get(labels.MIG_CONFIG_STATE, "")


def mig_config(node: Node) -> str:
    return node_labels(node).get(labels.MIG_CONFIG, "")


def paused_operands(node: Node) -> dict[str, str]:
    return {k: v for k, v in node_labels(node).items() if k.startswith(labels.DEPLOY_PREFIX) and v == labels.PAUSED}


def physical_gpu_count(node: Node, config: MigPartedConfig, model: GpuModel) -> int | None:
    """The number of physical GPUs, from GPU feature discovery's labels.

    ``gpu.count`` counts physical GPUs, except under the single strategy with MIG on,
    where it counts MIG devices; then the node's current config (resolved with ``config``)
    says how many devices each GPU holds. None when it cannot be known (e.g. an invalid
    single-strategy layout).
    """
    found = node_labels(node)
    try:
        count = int(found.get(labels.GPU_COUNT, ""))
    except ValueError:
        return None
    product = found.get(labels.GPU_PRODUCT, "")
    if "-MIG-" not in product:
        return count
    if product.endswith("-MIG-INVALID") or found.get(labels.MIG_CONFIG_STATE) != "success":
        return None
    per_gpu = devices_per_gpu(config, found.get(labels.MIG_CONFIG, ""), model)
    if not per_gpu or count % per_gpu:
        return None
    return count // per_gpu


def read(api: KubeClient, name: str) -> Node:
    try:
        return api.get(node_path(name), what=f"read node {name}")
    except KubeError as exc:
        if exc.not_found:
            raise NodeGone(f"node {name} does not exist") from None
        raise


def require_gpu_node(node: Node) -> GpuModel:
    """The node's GPU model; a clear error for a CPU node or a GPU the catalogue does not know."""
    name = node["metadata"]["name"]
    if not has_gpus(node):
        raise NodeError(f"node {name} has no NVIDIA GPU (no nvidia.com/gpu.present or NFD PCI 10de label)")
    model = gpu_model(node)
    if model is None:
        product = node_labels(node).get(labels.GPU_PRODUCT)
        ids = ", ".join(f"0x{pci}" for pci in pci_device_ids(node))
        if not product and not ids:
            raise NodeError(f"node {name} has no {labels.GPU_PRODUCT} label yet: is GPU feature discovery running?")
        seen = " and ".join(part for part in (f"PCI device {ids}" if ids else "", product or "") if part)
        raise NodeError(f"node {name}: GPU {seen} is not in the MIG catalogue")
    return model


def require_mig_node(node: Node) -> GpuModel:
    model = require_gpu_node(node)
    if not model.mig_capable:
        raise NodeError(f"node {node['metadata']['name']}: {model.key} GPUs do not support MIG")
    return model


Mutation = Callable[[Node], dict[str, Any] | None]


def update(api: KubeClient, name: str, mutate: Mutation, dry_run: bool = False,
           what: str = "", current: Node | None = None) -> tuple[Node, Node, bool]:
    """Read the node, let ``mutate`` compute a merge patch from it, and write it with the node's
    resourceVersion as a precondition, retrying on conflict so a concurrent writer's change is
    never overwritten. Returns (before, after, changed). ``dry_run`` asks the server to validate
    the write without persisting it (check mode). ``current``: the node as the caller just saw it (a watch),
    tried first instead of a read; a conflict reads it again."""
    known = [current] if current is not None else []

    def attempt() -> tuple[Node, Node, bool]:
        before = known.pop() if known else read(api, name)
        patch = mutate(before)
        if not patch:
            return before, before, False
        patch.setdefault("metadata", {})["resourceVersion"] = before["metadata"]["resourceVersion"]
        after = api.patch(node_path(name), patch, what=what or f"update node {name}",
                          dryRun="All" if dry_run else None)
        return before, after, True

    return retry_on_conflict(attempt)
