"""The GPU nodes of a cluster as Ansible hosts (used by the ``gpu_nodes`` inventory plugin)."""

from __future__ import annotations

import re
from typing import Any

from migrollout import catalogue, labels, nodes
from migrollout.kube import KubeClient


def group_name(text: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", text.lower())


def gpu_hosts(api: KubeClient, pool_label: str, mig_capable_only: bool) -> list[dict[str, Any]]:
    listed, _ = api.list("/api/v1/nodes", what="list nodes")
    hosts = []
    for node in sorted(listed, key=lambda n: n["metadata"]["name"]):
        if not nodes.has_gpus(node):
            continue
        found = nodes.node_labels(node)
        product = found.get(labels.GPU_PRODUCT, "")
        model = catalogue.find_model(product) if product else None
        if mig_capable_only and model is not None and not model.mig_capable:
            continue
        count = found.get(labels.GPU_COUNT)
        groups = []
        if product:
            groups.append(f"gpu_product_{product.split('-MIG-')[0]}")
        if found.get(pool_label):
            groups.append(f"gpu_pool_{found[pool_label]}")
        hosts.append({
            "name": node["metadata"]["name"],
            "groups": groups,
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                "gpu_model": model.key if model else "",
                "gpu_product": product,
                "gpu_count": int(count) if count and count.isdigit() else None,
                "gpu_pool": found.get(pool_label, ""),
                "mig_capable": bool(model and model.mig_capable),
                "mig_config_current": found.get(labels.MIG_CONFIG, ""),
                "mig_config_state": found.get(labels.MIG_CONFIG_STATE, ""),
            },
        })
    return hosts
