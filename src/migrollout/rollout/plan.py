"""Planning a rollout: for each target node, change, resume, skip or refuse, and in what order.

Pure: it works on objects the caller listed once for the whole cluster (nodes, MIG
config ConfigMaps, MIG manager pods, operand DaemonSets), so planning a thousand
nodes costs a handful of API requests, and every refusal is found before the
first node is touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from migrollout import capacity, clusterpolicy, driver_upgrade, labels, nodes, selectors, taints
from migrollout.evacuation.selection import DELETE, EVICT, Options, comes_back, keeping_off
from migrollout.evacuation.selection import REFUSE as REFUSE_POD
from migrollout.evacuation.selection import plan as evacuation_plan
from migrollout.migconfig.document import CONFIG_KEY, Dialect, MigPartedConfig, check_document
from migrollout.migconfig.layouts import fit_problems
from migrollout.migstate import mode_change
from migrollout.rollout import record, schedule
from migrollout.taints import Taint, tolerates
from migrollout.verification import compare, expect

CHANGE, RESUME, SKIP, REFUSE = "change", "resume", "skip", "refuse"
# Operands that must come back (or stay) on a node in maintenance.
RETURNING_OPERANDS = (labels.APP_DEVICE_PLUGIN, labels.APP_GFD, labels.APP_MIG_MANAGER)  # DaemonSet names = app labels


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
    cordon: bool = False            # cordon it as well: GPU pods on it tolerate the maintenance taints
    reapply: bool = False           # already labelled with its config, whose last apply failed: apply it again
    evict: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)      # pods the evacuation would refuse (the run stops there)
    returning: list[str] = field(default_factory=list)    # GPU pods that tolerate the maintenance taints
    pdb_blocked: list[str] = field(default_factory=list)  # pods whose PodDisruptionBudget allows no disruption now
    pool: str = ""                  # the pool its budget counts in (rollout.schedule.pool_of)
    mode_change: str = ""           # "on"/"off" when the change switches MIG mode (may take a reboot)
    expected: dict[str, Any] | None = None  # what it must advertise once at to_config (verification.expect)
    stuck: list[str] = field(default_factory=list)        # GPU pods with nowhere to go now (capacity estimate)
    position: str = ""              # why it is where it is in the order
    start_step: int = 0             # when it is expected to start (1: at once), with equal node times

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "blockers": self.blockers()}

    def blockers(self) -> list[str]:
        """What will stop the real run at this node, as the check mode shows it."""
        return ([f"{entry} (the evacuation refuses it)" for entry in self.blocked]
                + [f"{entry} (evictions wait until the budget allows one)" for entry in self.pdb_blocked])


@dataclass
class ClusterView:
    """Everything planning reads, listed once."""

    nodes: Mapping[str, dict[str, Any]]
    policy: dict[str, Any] | None
    namespace: str
    strategy: str
    config_maps: Mapping[str, MigPartedConfig]       # name -> parsed config
    managers: Mapping[str, str]                       # node -> "namespace/name" of the MIG manager pod running there
    daemonsets: list[dict[str, Any]]
    pods_by_node: Mapping[str, list[dict[str, Any]]] | None = None
    pdbs: list[dict[str, Any]] | None = None          # PodDisruptionBudgets (check mode)
    pending_pods: list[dict[str, Any]] = field(default_factory=list)  # not bound to a node yet
    # name -> why the deployed MIG manager's mig-parted refuses the ConfigMap (it would fail every apply)
    unloadable_config_maps: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Maintenance:
    """How the rollout keeps pods off a node under reconfiguration, and which pods it evacuates."""

    taints: tuple[Taint, ...] = ()
    cordon: bool = False
    evacuation: Options | None = None
    pod_selector: selectors.Selector = selectors.EVERYTHING
    list_pods: bool = False          # name the pods (check mode), not only judge them
    pool_by: str = "pool"            # how nodes are grouped for per-pool budgets (rollout.schedule.pool_of)
    pool_label: str = schedule.DEFAULT_POOL_LABEL


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


def mig_manager_dialect(daemonsets: list[dict[str, Any]]) -> Dialect | None:
    """The dialect of the MIG manager the operator deployed (its DaemonSet's image tag); None when there is
    none or its tag names no version (a digest, ``latest``): then nothing more can be told than the default."""
    for ds in daemonsets:
        if ds["metadata"]["name"] != labels.APP_MIG_MANAGER:
            continue
        for container in ds["spec"]["template"]["spec"].get("containers") or []:
            dialect = Dialect.for_image(container.get("image") or "")
            if dialect is not None:
                return dialect
    return None


def unloadable(configmaps: list[dict[str, Any]], dialect: Dialect | None) -> dict[str, str]:
    """The MIG config ConfigMaps the MIG manager of ``dialect`` refuses, each with mig-parted's reasons."""
    if dialect is None:
        return {}
    refused = {}
    for configmap in configmaps:
        text = (configmap.get("data") or {}).get(CONFIG_KEY)
        if text is None:
            continue
        problems = check_document(text, dialect)
        if problems:
            refused[configmap["metadata"]["name"]] = (f"MIG manager {dialect.label} refuses it: "
                                                      + "; ".join(problems[:3])
                                                      + (f" (and {len(problems) - 3} more)" if len(problems) > 3
                                                         else ""))
    return refused


def config_map_for(view: ClusterView, node: str) -> str | None:
    for name in clusterpolicy.config_map_candidates(view.policy, node):
        if name in view.config_maps:
            return name
    return None


def plan_node(view: ClusterView, name: str, desired: str | None,
              maintenance: Maintenance | None = None) -> NodePlan:
    maintenance = maintenance or Maintenance()
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
    if source in view.unloadable_config_maps:
        plan.action, plan.reason = REFUSE, (f"the MIG manager deployed cannot load ConfigMap {view.namespace}/{source}"
                                            f" (every MIG change reading it would end failed): "
                                            f"{view.unloadable_config_maps[source]}")
        return plan
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
    manager = view.managers.get(name)
    restart = (f"kubectl -n {manager.split('/', 1)[0]} delete pod {manager.split('/', 1)[1]}"
               if manager and "/" in manager else f"delete the {labels.APP_MIG_MANAGER} pod on the node")
    if state in ("pending", "rebooting") and not (ours and current == desired):
        plan.action, plan.reason = REFUSE, (f"the MIG manager on {name} is busy applying {current} (state {state}); "
                                            f"wait for it, or if it is stuck restart its pod ({restart})")
        return plan
    if state == "pending" and ours is not None and ours.step == "failed":
        plan.action, plan.reason = REFUSE, (
            f"node {name}: its MIG manager is still in state pending for {current}, which run {ours.run} gave up "
            f"waiting for ({ours.error[:200]}): it is stuck (mig-parted up to v0.15.0 leaves pending after a failed "
            f"wait for operand pods); restart its pod ({restart}), then run the rollout again")
        return plan
    if not manager:
        plan.action, plan.reason = REFUSE, (f"no MIG manager runs on node {name} "
                                            f"({labels.DEPLOY_MIG_MANAGER} must be true)")
        return plan
    if driver_upgrade.state_of(node) == driver_upgrade.FAILED:
        plan.action, plan.reason = REFUSE, (f"node {name}: NVIDIA's driver upgrade failed on it "
                                            f"({driver_upgrade.STATE_LABEL}={driver_upgrade.FAILED}); its driver "
                                            f"must work before its MIG layout can change")
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
    plan.reapply = current == desired and state == "failed"
    plan.pool = schedule.pool_of(node, maintenance.pool_by, maintenance.pool_label)
    plan.mode_change = mode_change(config, plan.from_config or current, desired, model, count)
    with contextlib.suppress(ValueError):
        expectation = expect(config, desired, model, count, view.strategy)
        plan.expected = {"resources": expectation.resources, "labels": expectation.labels}
    if view.pods_by_node is not None and maintenance.evacuation is not None and plan.action in (CHANGE, RESUME):
        _judge_pods(view, node, plan, maintenance)
    return plan


def _judge_pods(view: ClusterView, node: dict[str, Any], plan: NodePlan, maintenance: Maintenance) -> None:
    """The GPU pods the evacuation will meet on this node: those whose replacements would come straight back
    (the node is then cordoned as well, or refused), and, for check mode, what leaves and what will block."""
    assert view.pods_by_node is not None and maintenance.evacuation is not None
    name = plan.node
    pods = [p for p in view.pods_by_node.get(name, []) if maintenance.pod_selector.matches_object(p)]
    decisions = evacuation_plan(pods, maintenance.evacuation, lambda namespace, ds: True)
    evicting = [d for d in decisions if d.action == EVICT]
    under = taints.add(nodes.node_taints(node), maintenance.taints)
    cordoned = maintenance.cordon or nodes.is_cordoned(node)
    back = [d for d in evicting if comes_back(d.pod, keeping_off(under, cordoned))]
    if back:
        plan.returning = [d.ref for d in back]
        still = [d for d in back if comes_back(d.pod, keeping_off(under, True))]
        shown = ", ".join(plan.returning[:3]) + (" ..." if len(back) > 3 else "")
        if still:
            plan.action, plan.reason = REFUSE, (
                f"node {name}: GPU pod {still[0].ref} tolerates every taint that would keep it off the node while it "
                f"is reconfigured ({', '.join(map(str, keeping_off(under, True)))}): its replacement would come "
                f"straight back; remove that toleration, or move the pod off the node first")
            return
        plan.cordon = True
        plan.reason += (f"; cordoned as well: GPU pods {shown} tolerate "
                        f"{', '.join(str(t) for t in maintenance.taints) or 'its taints'}")
    if not maintenance.list_pods:
        return
    plan.evict = [d.ref for d in decisions if d.action in (EVICT, DELETE)]
    plan.blocked = [f"{d.ref}: {d.reason}" for d in decisions if d.action == REFUSE_POD]
    plan.pdb_blocked = [f"{d.ref}: {why}" for d in evicting if (why := _budget_blocks(d.pod, view.pdbs or []))]


def _budget_blocks(pod: dict[str, Any], pdbs: list[dict[str, Any]]) -> str:
    """Why a PodDisruptionBudget would refuse this pod's eviction now ("" when none would)."""
    namespace = pod["metadata"].get("namespace")
    for pdb in pdbs:
        if pdb["metadata"].get("namespace") != namespace:
            continue
        try:
            matches = selectors.from_label_selector((pdb.get("spec") or {}).get("selector")).matches_object(pod)
        except selectors.SelectorError:
            continue
        status = pdb.get("status") or {}
        if matches and int(status.get("disruptionsAllowed") or 0) <= 0:
            return (f"PodDisruptionBudget {namespace}/{pdb['metadata']['name']} allows no disruption now "
                    f"({status.get('currentHealthy', '?')} healthy, {status.get('desiredHealthy', '?')} needed)")
    return ""


def driver_upgrades(view: ClusterView, plans: list[NodePlan], maintenance: Maintenance | None = None
                    ) -> list[driver_upgrade.UpgradeState]:
    """The nodes in the rollout's scope (the nodes it changes, and every GPU node of their pools, whose budgets
    they share) on which NVIDIA's driver upgrade is under way."""
    maintenance = maintenance or Maintenance()
    moving = [p for p in plans if p.action in (CHANGE, RESUME)]
    pools = {p.pool for p in moving}
    scope = {p.node for p in moving} | {
        name for name, node in view.nodes.items()
        if nodes.has_gpus(node) and schedule.pool_of(node, maintenance.pool_by, maintenance.pool_label) in pools}
    return driver_upgrade.under_way(view.nodes[name] for name in sorted(scope) if name in view.nodes)


def order(plans: list[NodePlan]) -> list[NodePlan]:
    """Nodes left in maintenance by an earlier run first, then the rest in inventory order."""
    return [p for p in plans if p.action == RESUME] + [p for p in plans if p.action != RESUME]


@dataclass
class Scheduled:
    """The plan's order, the schedule the window strategy follows, and its simulation for check mode."""

    plans: list[NodePlan]
    schedule: schedule.Schedule
    simulation: schedule.Simulation

    def summary(self) -> str:
        budgets = ", ".join(f"{pool} {count}" for pool, count in sorted(self.schedule.pool_budgets.items()))
        out = sum(len(nodes) for nodes in self.schedule.already_out.values())
        how = (f"window of {self.schedule.window} node(s)" if self.schedule.mode == schedule.WINDOW
               else f"batches of {self.schedule.batch_size} node(s)")
        return (f"schedule: {how}" + (f", per-pool budgets {budgets}" if budgets else "")
                + (f" ({out} node(s) out of service before the run count against their pools)" if out else "")
                + f", failure budget {self.schedule.max_failures}; {len(self.schedule.nodes)} node(s) in "
                + f"{self.simulation.steps} expected step(s) (equal node times)"
                + (f"; {len(self.simulation.never)} node(s) could never start: "
                   + "; ".join(f"{n}: {why}" for n, why in list(self.simulation.never.items())[:3])
                   if self.simulation.never else ""))


def _evicting(view: ClusterView, name: str, maintenance: Maintenance) -> list[dict[str, Any]]:
    """The GPU pods the evacuation of this node would evict."""
    if view.pods_by_node is None or maintenance.evacuation is None:
        return []
    pods = [p for p in view.pods_by_node.get(name, []) if maintenance.pod_selector.matches_object(p)]
    return [d.pod for d in evacuation_plan(pods, maintenance.evacuation, lambda namespace, ds: True)
            if d.action == EVICT and capacity.gpu_requests(d.pod)]


def schedule_rollout(view: ClusterView, plans: list[NodePlan], settings: Mapping[str, Any],
                     maintenance: Maintenance | None = None) -> Scheduled:
    """Order the nodes to change (rollout.schedule.rollout_order), estimate where their GPU pods can go, and
    build the schedule: the pools of every GPU node of the cluster (their sizes resolve percentages), the
    nodes out of service before the run (they count against their pools), and the settings."""
    maintenance = maintenance or Maintenance()
    gpu_nodes = {name: node for name, node in view.nodes.items() if nodes.has_gpus(node)}
    pool_of = {name: schedule.pool_of(node, maintenance.pool_by, maintenance.pool_label)
               for name, node in gpu_nodes.items()}
    sizes: dict[str, int] = {}
    for pool in pool_of.values():
        sizes[pool] = sizes.get(pool, 0) + 1
    out = {name: why for name, node in view.nodes.items() if (why := schedule.out_of_service(node))}
    already_out: dict[str, set[str]] = {}
    for name in out:
        if name in pool_of:
            already_out.setdefault(pool_of[name], set()).add(name)
    moving = [p for p in plans if p.action in (CHANGE, RESUME)]
    base = [p.node for p in moving]
    evicting = {name: _evicting(view, name, maintenance) for name in base}
    every_pod = [p for pods in (view.pods_by_node or {}).values() for p in pods] + list(view.pending_pods)
    estimate = capacity.check_rollout(base, evicting, view.nodes.values(), every_pod,
                                      {name: f"out of service ({why})" for name, why in out.items()})
    by_name = {p.node: p for p in moving}
    for name, placements in estimate.items():
        by_name[name].stuck = [f"{p.pod}: {p.reason}" for p in capacity.nowhere(placements)]
    # The window takes long changes first (it then ends on short ones, full); batches are Ansible's serial, in
    # the inventory's order, for those who choose which nodes go together (a change window, a rack).
    window = (settings.get("mig_rollout_schedule") or schedule.WINDOW) == schedule.WINDOW
    ordered = schedule.rollout_order(base, resume={p.node for p in moving if p.action == RESUME},
                                     long={p.node for p in moving if p.mode_change} if window else set(),
                                     stuck={p.node for p in moving if p.stuck})
    for name, why in ordered:
        by_name[name].position = why
    chosen = schedule.Schedule.from_settings([name for name, _ in ordered], {n: p.pool for n, p in by_name.items()},
                                             settings, sizes, already_out)
    simulation = chosen.simulate()
    steps = sorted(set(simulation.starts.values()))
    for name, start in simulation.starts.items():
        by_name[name].start_step = steps.index(start) + 1
    rest = [p for p in plans if p.action not in (CHANGE, RESUME)]
    return Scheduled([by_name[name] for name, _ in ordered] + rest, chosen, simulation)
