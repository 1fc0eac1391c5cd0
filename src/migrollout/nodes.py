"""Reading GPU nodes, and writing to them without losing anyone else's change."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from migrollout import catalogue, labels
from migrollout.catalogue import GpuModel
from migrollout.kube import KubeClient, KubeError, node_path, retry_on_conflict
from migrollout.migconfig import MigPartedConfig, devices_per_gpu

Node = dict[str, Any]


class NodeError(Exception):
    """A node is not fit for what was asked (unknown, no GPUs, no MIG ...)."""


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


def gpu_model(node: Node) -> GpuModel | None:
    product = node_labels(node).get(labels.GPU_PRODUCT)
    return catalogue.find_model(product) if product else None


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
            raise NodeError(f"node {name} does not exist") from None
        raise


def require_gpu_node(node: Node) -> GpuModel:
    """The node's GPU model; a clear error for a CPU node or a GPU the catalogue does not know."""
    name = node["metadata"]["name"]
    if not has_gpus(node):
        raise NodeError(f"node {name} has no NVIDIA GPU (no nvidia.com/gpu.present or NFD PCI 10de label)")
    model = gpu_model(node)
    if model is None:
        product = node_labels(node).get(labels.GPU_PRODUCT)
        if not product:
            raise NodeError(f"node {name} has no {labels.GPU_PRODUCT} label yet: is GPU feature discovery running?")
        raise NodeError(f"node {name}: GPU {product} is not in the MIG catalogue")
    return model


def require_mig_node(node: Node) -> GpuModel:
    model = require_gpu_node(node)
    if not model.mig_capable:
        raise NodeError(f"node {node['metadata']['name']}: {model.key} GPUs do not support MIG")
    return model


Mutation = Callable[[Node], dict[str, Any] | None]


def update(api: KubeClient, name: str, mutate: Mutation, dry_run: bool = False,
           what: str = "") -> tuple[Node, Node, bool]:
    """Read the node, let ``mutate`` compute a merge patch from it, and write it with the node's
    resourceVersion as a precondition, retrying on conflict so a concurrent writer's change is
    never overwritten. Returns (before, after, changed). ``dry_run`` asks the server to validate
    the write without persisting it (check mode)."""

    def attempt() -> tuple[Node, Node, bool]:
        before = read(api, name)
        patch = mutate(before)
        if not patch:
            return before, before, False
        patch.setdefault("metadata", {})["resourceVersion"] = before["metadata"]["resourceVersion"]
        after = api.patch(node_path(name), patch, what=what or f"update node {name}",
                          dryRun="All" if dry_run else None)
        return before, after, True

    return retry_on_conflict(attempt)
