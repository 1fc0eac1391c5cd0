"""Where a node's MIG settings come from: the ClusterPolicy, the operator namespace, the MIG config ConfigMap.

Every caller may pass what it already knows (a rollout discovers these once and
hands them to each per-node step), so each step only reads what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from migrollout import clusterpolicy, kube
from migrollout.kube import KubeClient
from migrollout.migconfig.document import MigConfigError, MigPartedConfig, parse_configmap


class SetupError(Exception):
    pass


class CrdMissing(SetupError):
    """The ClusterPolicy resource type does not exist: the GPU Operator's CRD is not installed."""


@dataclass(frozen=True)
class MigSetup:
    namespace: str
    strategy: str
    config_map: str
    config: MigPartedConfig
    policy: dict[str, Any] | None


def read_policy(api: KubeClient) -> dict[str, Any]:
    try:
        policies, _ = api.list(clusterpolicy.path(), what="list ClusterPolicies")
    except kube.KubeError as exc:
        if exc.not_found:
            raise CrdMissing("the ClusterPolicy CRD is not installed: is the NVIDIA GPU Operator installed?") from None
        raise
    if not policies:
        raise SetupError("no ClusterPolicy found: is the NVIDIA GPU Operator installed?")
    return sorted(policies, key=lambda p: p["metadata"].get("creationTimestamp", ""))[0]


def read_config_map(api: KubeClient, namespace: str, candidates: list[str]) -> tuple[str, MigPartedConfig]:
    for name in candidates:
        found = api.get_or_none(kube.configmap_path(namespace, name), what=f"read ConfigMap {namespace}/{name}")
        if found is None:
            continue
        try:
            return name, parse_configmap(found)
        except MigConfigError as exc:
            raise SetupError(f"MIG config ConfigMap {namespace}/{name} is unusable: {exc}") from None
    raise SetupError(f"no MIG config ConfigMap in namespace {namespace} (looked for {', '.join(candidates)})")


def discover(api: KubeClient, node_name: str, operator_namespace: str | None = None, config_map: str | None = None,
             strategy: str | None = None, need_config: bool = True, need_strategy: bool = True) -> MigSetup:
    """Read only what the caller did not pass: the ClusterPolicy (namespace, strategy, ConfigMap name)
    and the ConfigMap."""
    policy = None
    if operator_namespace is None or (strategy is None and need_strategy) or (config_map is None and need_config):
        policy = read_policy(api)
    namespace = operator_namespace or clusterpolicy.namespace(policy)
    chosen_strategy = strategy or (clusterpolicy.strategy(policy) if policy is not None else "")
    if not need_config:
        return MigSetup(namespace, chosen_strategy, config_map or "", MigPartedConfig({}), policy)
    candidates = [config_map] if config_map else clusterpolicy.config_map_candidates(policy, node_name)
    name, config = read_config_map(api, namespace, candidates)
    return MigSetup(namespace, chosen_strategy, name, config, policy)
