"""Planning a rollout: for each target node, change, resume, skip or refuse, and in what order.

Pure: it works on objects the caller listed once for the whole cluster (nodes, MIG
config ConfigMaps, MIG manager pods, operand DaemonSets), so planning a thousand
nodes costs a handful of API requests, and every refusal is found before the
first node is touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from migrollout import clusterpolicy, labels, nodes
from migrollout.evacuation.selection import EVICT, Options
from migrollout.evacuation.selection import plan as evacuation_plan
from migrollout.migconfig import MigPartedConfig, fit_problems
from migrollout.rollout import record
from migrollout.taints import Taint, tolerates
from migrollout.verification import compare, expect

CHANGE, RESUME, SKIP, REFUSE = "change", "resume", "skip", "refuse"
# Operands that must come back (or stay) on a node in maintenance.
RETURNING_OPERANDS = ("nvidia-device-plugin-daemonset", "gpu-feature-discovery", "nvidia-mig-manager")


@dataclass
class NodePlan:
    node: str
    action: str
    to_config: str = ""
    from_config: str = ""
    reason: str = ""
    gpu_model: str = ""
    gpu_count: int = 0
    config_map: str = ""
    evict: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ClusterView:
    """Everything planning reads, listed once."""

    nodes: Mapping[str, dict[str, Any]]
    policy: dict[str, Any] | None
    namespace: str
    strategy: str
    config_maps: Mapping[str, MigPartedConfig]       # name -> parsed config
    managers: Mapping[str, bool]                      # node -> a MIG manager pod runs there
    daemonsets: list[dict[str, Any]]
    pods_by_node: Mapping[str, list[dict[str, Any]]] | None = None


def untolerated(daemonsets: list[dict[str, Any]], maintenance: list[Taint]) -> list[str]:
    """Operand DaemonSets that could not put their pods back on a node under the maintenance taints."""
    problems = []
    blocking = [t for t in maintenance if t.effect in ("NoSchedule", "NoExecute")]
    for ds in daemonsets:
        name = ds["metadata"]["name"]
        if name not in RETURNING_OPERANDS:
            continue
        tolerations = ds["spec"]["template"]["spec"].get("tolerations") or []
        for taint in blocking:
            if not any(tolerates(t, taint) for t in tolerations):
                problems.append(f"DaemonSet {ds['metadata']['namespace']}/{name} does not tolerate {taint}")
    return problems


def config_map_for(view: ClusterView, node: str) -> str | None:
    for name in clusterpolicy.config_map_candidates(view.policy, node):
        if name in view.config_maps:
            return name
    return None


def plan_node(view: ClusterView, name: str, desired: str | None, evacuation: Options | None,
              pod_selector_matches: Any = None) -> NodePlan:
    node = view.nodes.get(name)
    if node is None:
        return NodePlan(name, REFUSE, desired or "", reason=f"node {name} does not exist")
    try:
        model = nodes.require_mig_node(node)
    except nodes.NodeError as exc:
        return NodePlan(name, REFUSE, desired or "", reason=str(exc))
    current, state = nodes.mig_config(node), nodes.mig_state(node)
    plan = NodePlan(name, CHANGE, desired or "", current, gpu_model=model.key)
    if not desired and record.read(node) is None:
        plan.action, plan.reason = SKIP, "no mig_config set for it (group_vars, host_vars or -e): left alone"
        return plan
    if not desired:
        plan.action, plan.reason = REFUSE, (f"node {name} is in maintenance from an earlier run but has no "
                                            f"mig_config now: set one to finish it")
        return plan
    source = config_map_for(view, name)
    if source is None:
        plan.action, plan.reason = REFUSE, (f"no MIG config ConfigMap for node {name} in {view.namespace} (looked "
                                            f"for {', '.join(clusterpolicy.config_map_candidates(view.policy, name))})")
        return plan
    plan.config_map = source
    config = view.config_maps[source]
    if desired not in config:
        plan.action, plan.reason = REFUSE, f"MIG config {desired} is not in ConfigMap {view.namespace}/{source}"
        return plan
    count = nodes.physical_gpu_count(node, config, model)
    if not count:
        plan.action, plan.reason = REFUSE, f"node {name}: cannot tell how many GPUs it has from its labels"
        return plan
    plan.gpu_count = count
    problems = fit_problems(config, desired, model, count)
    if problems:
        plan.action, plan.reason = REFUSE, f"{desired} does not fit {count} x {model.key}: " + "; ".join(problems)
        return plan
    ours = record.read(node)
    if state in ("pending", "rebooting") and not (ours and current == desired):
        plan.action, plan.reason = REFUSE, (f"the MIG manager on {name} is busy applying {current} (state {state}); "
                                            f"wait for it, or restart its pod if it is stuck")
        return plan
    if not view.managers.get(name):
        plan.action, plan.reason = REFUSE, (f"no MIG manager runs on node {name} "
                                            f"({labels.DEPLOY_MIG_MANAGER} must be true)")
        return plan
    if ours is not None:
        plan.action = RESUME
        plan.from_config = ours.from_config
        plan.reason = (f"left in maintenance by run {ours.run} ({ours.step}"
                       + (f": {ours.error}" if ours.error else "") + ")")
    elif current == desired and state == "success":
        try:
            mismatches = compare(node, desired, expect(config, desired, model, count, view.strategy)).mismatches
        except ValueError as exc:
            mismatches = [str(exc)]
        if not mismatches:
            plan.action, plan.reason = SKIP, f"already at {desired} and verified"
        else:
            plan.reason = f"at {desired} but not advertising it: {mismatches[0]}"
    else:
        plan.reason = f"{current or '(no config)'} -> {desired}"
    if view.pods_by_node is not None and evacuation is not None and plan.action in (CHANGE, RESUME):
        pods = [p for p in view.pods_by_node.get(name, []) if pod_selector_matches is None or pod_selector_matches(p)]
        decisions = evacuation_plan(pods, evacuation, lambda namespace, ds: True)
        plan.evict = [d.ref for d in decisions if d.action == EVICT or d.action == "delete"]
        plan.blocked = [f"{d.ref}: {d.reason}" for d in decisions if d.action == "refuse"]
    return plan


def order(plans: list[NodePlan]) -> list[NodePlan]:
    """Nodes left in maintenance by an earlier run first, then the rest in inventory order."""
    return [p for p in plans if p.action == RESUME] + [p for p in plans if p.action != RESUME]
