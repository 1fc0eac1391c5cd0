"""A node's steps in a rollout: into maintenance (its window slot, room for its GPU pods, the maintenance record
and taints, the evacuation), back into service (the verification, then the record closed and the taints
removed), and marked failed.

Each step checks the rollout lock right before every write to the node, sends its Events in the background,
and times its parts one after the other (``NodeStep.laps``). The module ``mig_rollout_node`` is the adapter:
it validates the parameters and returns what these functions return.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Sequence
from typing import Any

from migrollout import capacity, driver_upgrade, events, nodes, taints, timestamps
from migrollout.evacuation.engine import Evacuator, options_problem
from migrollout.evacuation.selection import EVICT, Options, keeping_off
from migrollout.failures import StepFailed
from migrollout.kube import KubeClient
from migrollout.migsetup import discover
from migrollout.migstate import wait_advertised
from migrollout.rollout import fence, fence_policy, maintenance, record
from migrollout.taints import Taint
from migrollout.verification import Expectation, expect

# How often a node whose driver upgrade is under way is looked at again (mig_rollout_capacity_policy: wait).
DRIVER_UPGRADE_POLL_S = 2.0


class DriverUpgradePending(Exception):
    """The node's driver upgrade is under way: it must not go into maintenance now."""

    def __init__(self, state: str):
        super().__init__(state)
        self.state = state
        self.waited_s = 0.0


def maintenance_taints(name: str, raw: Sequence[dict[str, Any]]) -> list[Taint]:
    """The maintenance taints, checked before anything is written: a NoExecute one is refused."""
    try:
        checked = taints.checked_list(list(raw))
    except ValueError as exc:
        raise StepFailed(f"node {name}: {exc}") from None
    refused = [str(t) for t in checked if t.effect == "NoExecute"]
    if refused:
        raise StepFailed(f"node {name}: maintenance taint {', '.join(refused)} refused: a NoExecute taint makes the "
                         f"taint manager delete every pod on the node that does not tolerate it, CPU pods too, "
                         f"without honouring PodDisruptionBudgets; use NoSchedule")
    return checked


class NodeStep:
    """One node step of a rollout: the node, the run, the client, the fence it must still hold (``rollout_lock``:
    the lock's ``fence``; none outside a rollout or in check mode), its Events and the seconds of each part."""

    def __init__(self, api: KubeClient, name: str, run: str, rollout_lock: dict[str, Any] | None = None, *,
                 check_mode: bool = False, diff: bool = False, warn: Callable[[str], None] | None = None):
        self.api = api
        self.name = name
        self.run = run
        self.check_mode = check_mode
        self.diff = diff
        self.warn: Callable[[str], None] = warn or (lambda _message: None)
        lock = rollout_lock or {}
        self.slots_file: str | None = lock.get("slots_file")
        self.guard = fence.NoFence() if check_mode else fence.from_params(lock or None)
        # Every write of the step goes through the fence: checked before each attempt, bounded by what is left of
        # the lock's freshness (KubeClient.fenced); and names its run, for the API server's fence (fence_policy).
        self.writer = api.fenced(self.guard.write_guard(f"node {name}"))
        self.holder: str = "" if check_mode else lock.get("holder", "")
        self.recorder = events.Recorder(None, run, enabled=False)
        if lock.get("events") and not check_mode:
            self.recorder = events.Recorder(self.writer, run)
        self.laps: dict[str, float] = {}
        self._lap_started = time.monotonic()

    def lap(self, part: str) -> None:
        now = time.monotonic()
        self.laps[part] = round(now - self._lap_started, 3)
        self._lap_started = now

    def emit(self, kind: Any, note: str) -> None:
        self.recorder.emit(self.name, kind, note)   # sent in the background: see end()

    def end(self) -> None:
        """Wait for the step's Events (an Event not written is a warning)."""
        for warning in self.recorder.wait():
            self.warn(warning)

    def check(self) -> None:
        self.guard.check(f"node {self.name}")

    def marks(self) -> dict[str, str]:
        """The annotation a write names this run with (none outside a rollout)."""
        return fence_policy.mark(self.holder) if self.holder else {}

    def failure(self, phase: str, message: str, result: dict[str, Any] | None = None) -> StepFailed:
        return StepFailed(message, **{**(result or {}), "phase": phase, "steps": self.laps})

    def write(self, mutate_patch: Any, what: str, current: dict[str, Any] | None = None) -> tuple[Any, ...]:
        """Patch the node with what ``mutate_patch(node)`` returns: (before, after, changed, maintenance record)."""
        written: dict[str, Any] = {}

        def mutate(node: dict[str, Any]) -> dict[str, Any] | None:
            patch, rec = mutate_patch(node)
            written["record"] = rec
            if patch and self.holder:
                patch.setdefault("metadata", {}).setdefault("annotations", {}).update(self.marks())
            return patch

        # The writer checks the lock right before the write (and any retry).
        before, after, changed = nodes.update(self.writer, self.name, mutate, dry_run=self.check_mode, what=what,
                                              current=current)
        return before, after, changed, written.get("record")

    def node_diff(self, before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        return {"before": {"taints": nodes.node_taints(before), "unschedulable": nodes.is_cordoned(before)},
                "after": {"taints": nodes.node_taints(after), "unschedulable": nodes.is_cordoned(after)},
                "before_header": f"node/{self.name}", "after_header": f"node/{self.name}"}


def _evacuator(step: NodeStep, options: dict[str, Any]) -> Evacuator:
    problem = options_problem(options)
    if problem:
        raise StepFailed(f"node {step.name}: evacuation {problem}")
    return Evacuator(step.writer, step.name, Options.from_params(options), pod_selector=options.get("pod_selector"),
                     timeout=options["timeout"], max_parallel=options["max_parallel"],
                     grace_period=options["grace_period"], disable_eviction=options["disable_eviction"],
                     returning="refuse", stop_check=step.check, marks=step.marks)


def _enter_maintenance(step: NodeStep, to_config: str, maintenance_taints: list[Taint], cordon: bool,
                       policy: str, timeout: float) -> tuple[Any, ...]:
    """The maintenance record and taints in one write: (before, after, changed, record, seconds waited). A node
    whose driver upgrade is under way is not written (NVIDIA's controller is about to cordon and drain it, or is
    at it): DriverUpgradePending, at once or, with the ``wait`` policy, once ``timeout`` has passed."""

    def put_in_maintenance(node: dict[str, Any]) -> Any:
        nodes.require_mig_node(node)
        if record.read(node) is None and driver_upgrade.under_way([node]):
            raise DriverUpgradePending(driver_upgrade.state_of(node))
        return record.begin_patch(node, step.run, to_config, maintenance_taints, cordon)

    started = time.monotonic()
    while True:
        try:
            written = step.write(put_in_maintenance, f"begin MIG maintenance of node {step.name}")
            return (*written, time.monotonic() - started)
        except DriverUpgradePending as pending:
            pending.waited_s = time.monotonic() - started
            if policy != maintenance.WAIT or pending.waited_s >= timeout:
                raise
            step.check()  # waiting must not outlive the lock
            time.sleep(DRIVER_UPGRADE_POLL_S)


def _left_untouched(step: NodeStep, result: dict[str, Any], refusal: str, reason: str, note: str,
                    part: str) -> dict[str, Any]:
    """The step's result for a node it did not touch (``refusal``: which check refused it), with an Event."""
    result.update({refusal: True, "record": None, "taints": [], "cordoned": False, "reason": reason})
    step.emit(events.SKIPPED, note)
    step.lap(part)
    return result


def _waited(policy: str, seconds: float) -> str:
    return f" after waiting {seconds:.0f} s" if policy == maintenance.WAIT else ""


def begin_maintenance(step: NodeStep, to_config: str, maintenance_taints: list[Taint], cordon: bool,
                      evacuation: dict[str, Any] | None = None,
                      capacity_options: dict[str, Any] | None = None,
                      pool_budget: dict[str, Any] | None = None) -> dict[str, Any]:
    """Put the node into maintenance for ``to_config`` and evacuate its GPU pods (``evacuation``: the options of
    the evacuation; none: no evacuation). A node whose GPU pods would have nowhere to go is left untouched
    (``capacity_refused``) unless the capacity policy is ``ignore``; so is a node whose NVIDIA driver upgrade is
    under way (``driver_upgrade_refused``), or whose pool (``pool_budget``) has as many nodes out of service now as
    its budget allows, whoever took them out (``pool_refused``), unless the policy is ``wait``: then it waits
    (up to the capacity timeout). A node resumed from a record of its own is not held back by a driver upgrade."""
    name = step.name
    result: dict[str, Any] = {"changed": False, "name": name, "step": "begin", "capacity_refused": False,
                              "driver_upgrade_refused": False, "pool_refused": False, "moved": 0,
                              "steps": step.laps}
    policy = (capacity_options or {}).get("policy", maintenance.REFUSE)
    timeout = float((capacity_options or {}).get("timeout", 600))
    if step.slots_file and not step.check_mode:
        try:
            result["slot"] = maintenance.require_slot(step.slots_file, name)
        except maintenance.NotInWindow as exc:
            raise step.failure("window", str(exc)) from None

    # Is its pool out of service beyond its budget now? The window counted the nodes out before the run; others
    # (NVIDIA's driver upgrade, an admin) may have taken more out since.
    budget = maintenance.PoolBudget.from_params(pool_budget)
    if budget is not None and not step.check_mode and policy != maintenance.IGNORE:
        out, waited_s = maintenance.wait_for_pool_room(step.api, name, budget, policy, timeout, step.check)
        if out:
            reason = (f"node {name} was not touched{_waited(policy, waited_s)}: its pool {budget.pool} has {len(out)} "
                      f"node(s) out of service already, its budget is {budget.budget}: {', '.join(out[:5])}"
                      + (" ..." if len(out) > 5 else ""))
            return _left_untouched(step, result, "pool_refused", reason, events.not_touched_note(step.run, reason),
                                   "capacity")

    # Where would its GPU pods go? Looked at before the node is touched, so a refusal leaves it as it was.
    evacuator = _evacuator(step, evacuation) if evacuation else None
    if evacuator is not None:
        pods, _ = evacuator.list_pods()
        moving = [d.pod for d in evacuator.plan(pods) if d.action == EVICT and capacity.gpu_requests(d.pod)]
        room = maintenance.find_room(step.api, name, moving, policy, timeout, step.slots_file)
        result["room"] = room.as_dict()
        if room.stuck and policy != maintenance.IGNORE:
            reason = (f"node {name} was not touched: {len(room.stuck)} GPU pod(s) would have nowhere to "
                      f"go{_waited(policy, room.waited_s)}: {'; '.join(room.stuck)}")
            return _left_untouched(step, result, "capacity_refused", reason,
                                   events.skipped_note(step.run, room.stuck), "capacity")
        step.lap("capacity")

    try:
        before, after, changed, rec, waited_s = _enter_maintenance(step, to_config, maintenance_taints, cordon,
                                                                   policy, timeout)
    except DriverUpgradePending as pending:
        reason = (f"node {name} was not touched{_waited(policy, pending.waited_s)}: NVIDIA's driver upgrade is under "
                  f"way on it ({driver_upgrade.STATE_LABEL}={pending.state})")
        return _left_untouched(step, result, "driver_upgrade_refused", reason,
                               events.driver_upgrade_note(step.run, pending.state), "maintenance")
    result["driver_upgrade_waited_s"] = round(waited_s, 3)
    step.lap("maintenance")
    result.update(changed=changed, record=vars(rec) if rec is not None else None, taints=nodes.node_taints(after),
                  cordoned=nodes.is_cordoned(after))
    if step.diff and changed:
        result["diff"] = step.node_diff(before, after)
    if changed or rec is not None:
        added = [str(taints.Taint.from_dict(t)) for t in (rec.added_taints if rec else [])]
        step.emit(events.STARTED, events.started_note(step.run, rec.from_config if rec else "", to_config, added))
    if evacuator is None:
        return result

    evacuator.keeping_off = keeping_off(nodes.node_taints(after), nodes.is_cordoned(after))
    if step.check_mode:
        planned = evacuator.check()
        for warning in planned.warnings:
            step.warn(warning)
        result["evacuation"] = {**planned.as_dict(), "would_evict": planned.as_dict()["evicted"], "evicted": []}
        return result
    pods, version = evacuator.list_pods()       # again, now that nothing new lands: what leaves is final
    outcome = evacuator.run(pods, version)
    for warning in outcome.warnings:
        step.warn(warning)
    step.lap("evacuate")
    result["evacuation"] = outcome.as_dict()
    result["changed"] = result["changed"] or bool(outcome.evicted)
    problem = outcome.problem(name, evacuation["timeout"]) if evacuation else ""
    if problem:
        raise step.failure("evacuate", problem, result)
    moved = [f"{e['namespace']}/{e['name']}" for e in outcome.evicted]
    result["moved"] = len(moved)
    step.emit(events.EVACUATED, events.evacuated_note(step.run, moved, outcome.duration_s))
    return result


def _expectation(step: NodeStep, verify: dict[str, Any], node: dict[str, Any]) -> Any:
    if verify.get("expected"):
        found = verify["expected"]
        return Expectation(dict(found.get("resources") or {}), dict(found.get("labels") or {}))
    model = nodes.require_mig_node(node)
    setup = discover(step.api, step.name, verify.get("operator_namespace"), verify.get("config_map"),
                     verify.get("strategy"))
    count = verify.get("gpu_count") or nodes.physical_gpu_count(node, setup.config, model)
    if not count:
        raise StepFailed(f"node {step.name}: cannot tell how many GPUs it has from its labels; pass gpu_count")
    return expect(setup.config, verify["config"], model, count, setup.strategy)


def return_to_service(step: NodeStep, verify: dict[str, Any] | None = None, verify_timeout: float = 300,
                      moved: int = 0) -> dict[str, Any]:
    """Verify what the node advertises (``verify``: the config and, optionally, what to expect), then close its
    maintenance record and remove the taints this run added. ``moved``: the GPU pods its evacuation evicted."""
    name = step.name
    result: dict[str, Any] = {"changed": False, "name": name, "step": "finish", "steps": step.laps}
    current = None
    if verify:
        config = verify["config"]
        node = nodes.read(step.api, name) if not verify.get("expected") else None
        expectation = _expectation(step, verify, node or {})
        comparison, current = wait_advertised(step.api, name, config, expectation, verify_timeout, node=node,
                                              stop_check=step.check)
        step.lap("verify")
        result["verification"] = {"expected": comparison.expected, "actual": comparison.actual,
                                  "mismatches": comparison.mismatches, "duration_s": step.laps["verify"]}
        if comparison.mismatches:
            raise step.failure("verify", f"node {name} does not advertise what {config} should give after "
                               f"{verify_timeout} s: " + "; ".join(comparison.mismatches[:4])
                               + (f" (and {len(comparison.mismatches) - 4} more)" if len(comparison.mismatches) > 4
                                  else ""), result)
        step.emit(events.VERIFIED, events.verified_note(step.run, config, step.laps["verify"]))

    def close_record(node: dict[str, Any]) -> Any:
        nodes.require_mig_node(node)
        return record.finish_patch(node, step.run)

    before, after, changed, rec = step.write(close_record, f"finish MIG maintenance of node {name}", current=current)
    step.lap("finish")
    result.update(changed=changed, record=vars(rec) if rec is not None else None, taints=nodes.node_taints(after),
                  cordoned=nodes.is_cordoned(after))
    if step.diff and changed:
        result["diff"] = step.node_diff(before, after)
    if rec is not None:
        step.emit(events.SUCCEEDED, events.succeeded_note(step.run, rec.from_config, rec.to_config, moved,
                                                          _since(rec.started)))
    return result


def mark_failed(step: NodeStep, failed_step: str, error: str) -> dict[str, Any]:
    """Record on the node that its rollout failed in ``failed_step`` with ``error``; a node that is gone needs
    nothing (``node_gone``)."""
    name = step.name

    def failed_patch(node: dict[str, Any]) -> Any:
        return record.failed_patch(node, step.run, failed_step, error)

    try:
        before, after, changed, rec = step.write(failed_patch, f"failed MIG maintenance of node {name}")
    except nodes.NodeGone:
        return {"changed": False, "name": name, "step": "failed", "record": None, "node_gone": True,
                "taints": [], "cordoned": False}
    step.emit(events.FAILED, events.failed_note(step.run, failed_step, error))
    result = {"changed": changed, "name": name, "step": "failed", "record": vars(rec) if rec is not None else None,
              "taints": nodes.node_taints(after), "cordoned": nodes.is_cordoned(after), "node_gone": False}
    if step.diff and changed:
        result["diff"] = step.node_diff(before, after)
    return result


def _since(text: str) -> float | None:
    started = timestamps.parse(text)
    if started is None:
        return None
    return (datetime.datetime.now(datetime.UTC) - started).total_seconds()
