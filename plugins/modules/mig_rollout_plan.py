#!/usr/bin/python
# mig_rollout_plan: check every target node before anything changes, and decide what to do with each.
# Docs, argument spec and the adapter to the core (migrollout) in one file; see plugins/module_utils/kube_task.py.

from __future__ import annotations

DOCUMENTATION = r"""
module: mig_rollout_plan
short_description: Check every node of a MIG rollout before anything changes, and plan the order
description:
  - Reads the cluster once (nodes, the ClusterPolicy, the MIG config ConfigMaps, MIG manager pods and operand
    DaemonSets in the operator's namespace) and decides, for each node in O(nodes), to change, resume,
    skip or refuse it.
  - A node is refused when it does not exist, has no MIG-capable GPU, its config is not in the MIG config
    ConfigMap it uses or does not fit its GPU model and count, its MIG manager is busy (C(pending),
    C(rebooting)) with another config, or no MIG manager runs on it. Any refusal fails the task, listing
    every problem, before a single node is touched.
  - A node is also refused when the MIG manager the operator deployed (the version in its DaemonSet's image
    tag) cannot load the MIG config ConfigMap the node uses, for the reasons mig-parted of that version gives
    (for example C(+me) profile names before MIG manager v0.12.3), since every apply on it would end C(failed).
  - The operand DaemonSets (device plugin, feature discovery, MIG manager) must tolerate the maintenance
    taints, or a node under maintenance could never be verified; otherwise the task fails.
  - A node already at its config, in state C(success) and advertising what the config should produce is
    skipped. A node with a rollout record (an interrupted or failed run) is resumed, first, unless its MIG
    manager is still C(pending) for a config an earlier run gave up waiting for; then the plan refuses it and
    says how to recover (restart that MIG manager pod).
  - A node labelled with its config in state C(failed) is planned with C(reapply), so its config is applied
    again once the cause is fixed.
  - GPU pods that tolerate the maintenance taints would come straight back once evicted, so such a node is
    cordoned as well (C(cordon) in its plan), or refused when a pod tolerates the cordon too.
  - With O(list_pods) (check mode), names the GPU pods that would be evacuated from each node and what will
    stop the real run there (C(blocked), C(pdb_blocked)), with a warning for each such node.
  - Pods are matched to O(pod_selector) exactly as the API server matches a label selector (set-based
    requirements included), so the listing is what the evacuation will select.
  - Orders the nodes to change and schedules them (see the C(nvidia_mig.rollout.mig_window) strategy) - nodes
    left in maintenance by an earlier run first; then nodes whose GPU pods can all move (or that have none),
    with the window MIG mode changes (which may take a reboot) first, with batches the inventory's order; nodes
    with GPU pods that have nowhere to go last. Each node gets its pool (C(pool)), why it is where it is
    (C(position)) and the step it is expected to start at (C(start_step)). Where the GPU pods could go is
    estimated once for the whole run, node after node (see C(migrollout.capacity) for the predicates checked
    and not checked); each node is checked again right before its maintenance.
  - Per-pool budgets are resolved against every GPU node of the cluster; the nodes out of service before the
    run (cordoned, not Ready, tainted NoSchedule or NoExecute by someone else) count against their pools.
  - Reads NVIDIA's driver upgrade state (C(nvidia.com/gpu-driver-upgrade-state)) of every node in the rollout's
    scope (the nodes it changes and the GPU nodes of their pools). While a driver upgrade is under way there, the
    plan refuses the run, naming the nodes and their states; with C(mig_rollout_capacity_policy=wait) in
    O(settings) it waits instead, up to C(mig_rollout_capacity_timeout), then plans. A node whose driver upgrade
    failed is refused.
  - Says whether the rollout's fence is exact (the API server enforces it, with the admission policy
    C(mig-rollout-fence) of C(rbac/mig-rollout-fence.yaml) and its binding in force) or time-based (C(fence)).
  - Changes nothing.
version_added: "0.1.0"
seealso:
  - module: nvidia_mig.rollout.mig_rollout_settings
  - module: nvidia_mig.rollout.mig_rollout_node
  - module: nvidia_mig.rollout.mig_rollout_report
options:
  nodes:
    description: Node name to the MIG config it should get (V(null) or empty to leave a node alone).
    type: dict
    required: true
  cordon:
    description: Whether the rollout also cordons nodes.
    type: bool
    default: false
  operator_namespace:
    description: The GPU Operator's namespace. Default, the ClusterPolicy's C(status.namespace).
    type: str
  list_pods:
    description: List the pods that would be evacuated from each node.
    type: bool
    default: false
  settings:
    description:
      - The rollout's checked settings (M(nvidia_mig.rollout.mig_rollout_settings)); the scheduling ones are
        used - C(mig_rollout_schedule), C(mig_rollout_max_unavailable), C(mig_rollout_serial),
        C(mig_rollout_max_unavailable_per_pool), C(mig_rollout_pool_by), C(mig_rollout_pool_label),
        C(mig_rollout_max_fail_percentage).
    type: dict
    default: {}
extends_documentation_fragment:
  - nvidia_mig.rollout.kube_connection
  - nvidia_mig.rollout.maintenance_taints
  - nvidia_mig.rollout.read_only
  - nvidia_mig.rollout.evacuation_selection
author: NVIDIA MIG rollout toolkit maintainers (@nvidia-mig-rollout)
"""

EXAMPLES = r"""
- name: Plan the rollout of the A100 pool
  mig_rollout_plan:
    nodes: {gpu-1: all-1g.10gb, gpu-2: all-1g.10gb}
    maintenance_taints: [{key: mig, value: maintenance, effect: NoSchedule}]
"""

RETURN = r"""
fence:
  description: How the rollout's writes are fenced - C(exact) (checked by the API server's admission policy
    C(mig-rollout-fence)) or C(time-based) (each write checked and bounded by the lock's freshness), and why.
  returned: always
  type: dict
  sample: {mode: time-based, reason: "the admission policy mig-rollout-fence is not installed"}
driver_upgrades:
  description: The nodes in the rollout's scope whose NVIDIA driver upgrade was under way when planning started,
    with their states (empty when none; the plan waited for them with C(mig_rollout_capacity_policy=wait)).
  returned: always
  type: list
  elements: dict
  sample: [{node: a100-1, state: cordon-required}]
plan:
  description: One entry per node, in the order the rollout will take them (resumed nodes first), with the
    action (change, resume, skip, refuse), configs, reason, GPU model and count, the ConfigMap used, whether
    it is cordoned as well (C(cordon)) and its config re-applied (C(reapply)), the GPU pods that tolerate the
    maintenance taints (C(returning)), and (with O(list_pods)) the pods to evict (C(evict)), the pods the
    evacuation would refuse (C(blocked)) and those a PodDisruptionBudget blocks now (C(pdb_blocked)), both in
    C(blockers) as sentences.
  returned: always
  type: list
  elements: dict
  sample: [{node: gpu-1, action: change, from_config: all-disabled, to_config: all-1g.10gb,
            reason: "all-disabled -> all-1g.10gb", gpu_model: A100-SXM4-80GB, gpu_count: 8,
            config_map: default-mig-parted-config, cordon: false, reapply: false, evict: [ml/train-0],
            blocked: [], returning: [], pdb_blocked: [], blockers: []}]
schedule:
  description: The schedule the C(nvidia_mig.rollout.mig_window) strategy follows (mode, window, batch size,
    per-pool budgets, nodes out of service before the run per pool, failure budget).
  returned: always
  type: dict
  sample: {mode: window, window: 10, batch_size: 1, pool_budgets: {a100: 2}, already_out: {a100: [gpu-9]},
           max_failures: 0}
expected_steps:
  description: The number of steps (distinct start times) the schedule takes with equal node times.
  returned: always
  type: int
lines:
  description: The plan as lines an operator reads (the schedule, then one per node in order, with its expected
    step, pool, why it is there, and what will block the run there).
  returned: always
  type: list
  elements: str
counts:
  description: Nodes per action.
  returned: always
  type: dict
namespace:
  description: The operator's namespace.
  returned: always
  type: str
strategy:
  description: The cluster's MIG strategy.
  returned: always
  type: str
problems:
  description: Every reason the rollout cannot start.
  returned: failure
  type: list
  elements: str
"""

import time
from dataclasses import asdict, replace
from typing import Any

from ansible_collections.nvidia_mig.rollout.plugins.module_utils.kube_task import (
    TaskContext,
    TaskFailed,
    TaskSpec,
    run_module,
)
from ansible_collections.nvidia_mig.rollout.plugins.module_utils.option_specs import (
    EVACUATION_SELECTION_SPEC,
    TAINT_OPTIONS,
)

try:
    from migrollout import clusterpolicy, driver_upgrade, kube, labels, selectors, taints
    from migrollout.evacuation.selection import Options
    from migrollout.migconfig.document import MigConfigError, parse_configmap
    from migrollout.migsetup import read_policy
    from migrollout.rollout import fence_policy
    from migrollout.rollout.plan import (
        CHANGE,
        REFUSE,
        RESUME,
        SKIP,
        ClusterView,
        Maintenance,
        NodePlan,
        driver_upgrades,
        mig_manager_dialect,
        order,
        plan_node,
        schedule_rollout,
        unloadable,
        untolerated,
    )
except ImportError:  # run_module reports the missing package
    pass

# How often the plan looks again while it waits for NVIDIA's driver upgrade (mig_rollout_capacity_policy: wait).
DRIVER_UPGRADE_POLL_S = 5.0

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "nodes": {"type": "dict", "required": True},
    "maintenance_taints": {"type": "list", "elements": "dict", "default": [], "options": TAINT_OPTIONS},
    "cordon": {"type": "bool", "default": False},
    "operator_namespace": {"type": "str"},
    "list_pods": {"type": "bool", "default": False},
    "settings": {"type": "dict", "default": {}},
    **EVACUATION_SELECTION_SPEC,
}


def gather(ctx: TaskContext, list_pods: bool) -> ClusterView:
    api = ctx.api
    policy = read_policy(api)
    namespace = ctx.params.get("operator_namespace") or clusterpolicy.namespace(policy)
    listed, _ = api.list("/api/v1/nodes", what="list nodes")
    configmaps, _ = api.list(kube.configmap_path(namespace), what=f"list ConfigMaps in {namespace}")
    parsed = {}
    for configmap in configmaps:
        if "config.yaml" not in (configmap.get("data") or {}):
            continue
        try:
            parsed[configmap["metadata"]["name"]] = parse_configmap(configmap)
        except MigConfigError as exc:
            ctx.warn(str(exc))
    managers, _ = api.list(kube.pods_path(namespace), what=f"list MIG manager pods in {namespace}",
                           label_selector=f"app={labels.APP_MIG_MANAGER}")
    running = {p["spec"].get("nodeName"): f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in managers
               if p.get("status", {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")}
    daemonsets, _ = api.list(kube.namespaced_path("apps/v1", "daemonsets", namespace),
                             what=f"list DaemonSets in {namespace}")
    # Every pod, once (one paginated LIST for the whole run): GPU pods that tolerate the maintenance taints
    # decide whether a node must be cordoned as well; where the GPU pods to evict could go orders the nodes;
    # GPU pods not bound yet claim room first.
    pods, _ = api.list(kube.pods_path(), what="list pods")
    pods_by_node: dict[str, list[dict[str, Any]]] = {}
    pending = []
    for pod in pods:
        if pod["spec"].get("nodeName"):
            pods_by_node.setdefault(pod["spec"]["nodeName"], []).append(pod)
        elif (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            pending.append(pod)
    pdbs = None
    if list_pods:
        pdbs, _ = api.list(kube.namespaced_path("policy/v1", "poddisruptionbudgets", None),
                           what="list PodDisruptionBudgets")
    # A ConfigMap the deployed MIG manager cannot load would fail every apply on the nodes reading it.
    refused = unloadable(configmaps, mig_manager_dialect(daemonsets))
    return ClusterView({n["metadata"]["name"]: n for n in listed}, policy, namespace, clusterpolicy.strategy(policy),
                       parsed, running, daemonsets, pods_by_node, pdbs, pending, refused)


def step_arguments(plan: NodePlan, view: ClusterView, budgets: dict[str, int] | None = None,
                   how: Maintenance | None = None) -> dict[str, Any]:
    """The node's plan, with what its steps take from it as ready arguments (one templated value per task
    option: each costs every task time)."""
    budget = (budgets or {}).get(plan.pool)
    pool_budget = ({"pool": plan.pool, "budget": budget, "pool_by": how.pool_by, "pool_label": how.pool_label}
                   if budget is not None and how is not None else None)
    return {**plan.as_dict(), "pool_budget": pool_budget,
            "checked": {"gpu_count": plan.gpu_count, "mode_change": plan.mode_change},
            "verify": {"config": plan.to_config, "expected": plan.expected, "config_map": plan.config_map,
                       "operator_namespace": view.namespace, "strategy": view.strategy,
                       "gpu_count": plan.gpu_count}}


def describe(plan: NodePlan) -> str:
    """One line of the plan, as an operator reads it."""
    line = f"{plan.node}: {plan.action}: {plan.reason}"
    if plan.start_step:
        line = f"step {plan.start_step}: {line}; pool {plan.pool}; {plan.position}"
    if plan.evict:
        line += f"; evicts {', '.join(plan.evict)}"
    if plan.stuck:
        line += f"; NOWHERE TO GO (capacity policy decides): {'; '.join(plan.stuck)}"
    blockers = plan.blockers()
    if blockers:
        line += f"; WILL BLOCK: {'; '.join(blockers)}"
    return line


def run(ctx: TaskContext) -> dict[str, Any]:
    params = ctx.params
    try:
        maintenance = taints.checked_list(params["maintenance_taints"])
        pod_selector = selectors.parse(params.get("pod_selector"))
    except ValueError as exc:
        raise TaskFailed(f"the rollout cannot start, nothing was changed: {exc}") from None
    if any(t.effect == "NoExecute" for t in maintenance):
        raise TaskFailed("the rollout cannot start, nothing was changed: a NoExecute maintenance taint would make the "
                         "taint manager delete every pod on the node that does not tolerate it, CPU pods too, "
                         "without honouring PodDisruptionBudgets; use NoSchedule")
    if not maintenance and not params["cordon"]:
        raise TaskFailed("give at least one maintenance taint or cordon: otherwise evicted GPU pods land right "
                         "back on the node being reconfigured")
    wrong = sorted(name for name, desired in params["nodes"].items() if desired is not None
                   and not isinstance(desired, str))
    if wrong:
        raise TaskFailed(f"the rollout cannot start, nothing was changed: the mig_config of node"
                         f"{'s' if len(wrong) > 1 else ''} {', '.join(wrong)} must be the name of one MIG config "
                         f"(such as all-1g.10gb), not {type(params['nodes'][wrong[0]]).__name__} "
                         f"{params['nodes'][wrong[0]]!r}")
    chosen = params["settings"]
    how = Maintenance(tuple(maintenance), params["cordon"], Options.from_params(params), pod_selector,
                      params["list_pods"], pool_by=chosen.get("mig_rollout_pool_by") or "pool",
                      pool_label=chosen.get("mig_rollout_pool_label") or "gpu-pool")
    waiting = chosen.get("mig_rollout_capacity_policy") == "wait" and not ctx.check_mode
    timeout = float(chosen.get("mig_rollout_capacity_timeout") or 0)
    waited_since, first_seen = time.monotonic(), []
    while True:
        view = gather(ctx, params["list_pods"])
        plans = order([plan_node(view, name, desired, how) for name, desired in params["nodes"].items()])
        upgrading = driver_upgrades(view, plans, how)
        if not upgrading:
            break
        first_seen = first_seen or upgrading
        while upgrading:
            if not waiting or time.monotonic() - waited_since >= timeout:
                waited = f" (waited {time.monotonic() - waited_since:.0f} s)" if waiting else ""
                raise TaskFailed(f"the rollout cannot start, nothing was changed{waited}: "
                                 + driver_upgrade.refusal(upgrading),
                                 driver_upgrades=[asdict(u) for u in upgrading])
            time.sleep(min(DRIVER_UPGRADE_POLL_S, max(0.1, timeout - (time.monotonic() - waited_since))))
            # While it waits, only the nodes are read again (one LIST, not the whole cluster every few seconds);
            # once the upgrade is over, the cluster is read and planned again (it moved pods, cordoned nodes).
            listed, _ = ctx.api.list("/api/v1/nodes", what="list nodes")
            upgrading = driver_upgrades(replace(view, nodes={n["metadata"]["name"]: n for n in listed}), plans,
                                        how)
    try:
        scheduled = schedule_rollout(view, plans, chosen, how)
    except ValueError as exc:
        raise TaskFailed(f"the rollout cannot start, nothing was changed: {exc}") from None
    plans = scheduled.plans
    tolerations = untolerated(view.daemonsets, maintenance)
    fenced = fence_policy.in_force(ctx.api, view.namespace)
    result: dict[str, Any] = {
        "changed": False,
        "fence": fenced.as_dict(),
        "driver_upgrades": [asdict(u) for u in first_seen],
        "plan": [step_arguments(p, view, dict(scheduled.schedule.pool_budgets), how) for p in plans],
        "lines": [scheduled.summary(), f"fence: {fenced.sentence()}"]
        + ([f"waited for NVIDIA's driver upgrade on {', '.join(u.sentence() for u in first_seen)}"]
           if first_seen else []) + [describe(p) for p in plans],
        "schedule": scheduled.schedule.as_dict(),
        "expected_steps": scheduled.simulation.steps,
        "namespace": view.namespace,
        "strategy": view.strategy,
        "counts": {action: sum(1 for p in plans if p.action == action) for action in (CHANGE, RESUME, SKIP, REFUSE)},
    }
    for p in plans:
        if p.blockers():
            ctx.warn(f"node {p.node}: the rollout would stop at this node: {'; '.join(p.blockers())}")
    refused = [p for p in plans if p.action == REFUSE]
    problems = [p.reason for p in refused] + tolerations
    if tolerations:
        problems.append("without that toleration the device plugin cannot return to a node under maintenance and "
                        "the node can never be verified: add it to the operator's daemonsets.tolerations (the "
                        "gpu_operator role does by default) or roll out with cordon and no taint")
    if problems:
        result["problems"] = problems
        raise TaskFailed(f"the rollout cannot start: {len(problems)} problem(s), nothing was changed: "
                         + "; ".join(problems[:6]) + (" ..." if len(problems) > 6 else ""), **result)
    return result


SPEC = TaskSpec("mig_rollout_plan", ARGUMENT_SPEC, run)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
