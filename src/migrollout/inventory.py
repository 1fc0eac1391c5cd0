"""The GPU nodes of a cluster as inventory hosts: groups and facts per node (the ``gpu_nodes`` inventory plugin adds
how to connect)."""

from __future__ import annotations

import re
from typing import Any

from migrollout import labels, nodes
from migrollout.kube import KubeClient, KubeError

SELF_SUBJECT_REVIEW = "/apis/authentication.k8s.io/v1/selfsubjectreviews"


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
        model = nodes.gpu_model(node)
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


def identity(api: KubeClient) -> str:
    """Who the API server thinks the caller is (a SelfSubjectReview, which every authenticated identity may
    create), as "user X (groups a, b)"; "" when it cannot tell."""
    try:
        review = api.create(SELF_SUBJECT_REVIEW, {"apiVersion": "authentication.k8s.io/v1",
                                                  "kind": "SelfSubjectReview"}, what="ask who the API server sees")
    except KubeError:
        return ""
    user = (review.get("status") or {}).get("userInfo") or {}
    groups = [g for g in user.get("groups") or [] if g != "system:authenticated"]
    return f"user {user.get('username', '?')}" + (f" (groups {', '.join(groups)})" if groups else "")


def listing_error(api: KubeClient | None, error: KubeError) -> str:
    """Why the GPU nodes could not be listed, in one sentence: what was refused, and by whom it was seen."""
    where = f" at {api.host}" if api is not None else ""
    if error.status == 401:
        return (f"the API server{where} refused the credentials (HTTP 401 Unauthorized): it sees no identity; "
                f"check the kubeconfig's token or certificate")
    if error.status == 403:
        seen = identity(api) if api is not None else ""
        who = f"it sees you as {seen}" if seen else "the identity it saw is in its message"
        return (f"the API server{where} refused to list nodes (HTTP 403 Forbidden): {who}; {error.message}; bind "
                f"that identity to the rollout's ClusterRole (rbac/mig-rollout.yaml)")
    return f"cannot list the cluster's nodes: {error.one_line()}"
