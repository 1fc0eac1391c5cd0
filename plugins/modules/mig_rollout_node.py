#!/usr/bin/python
# mig_rollout_node: put a node into MIG maintenance, record a failure, or return it to service.
# Docs, argument spec and the adapter to the core (migrollout) in one file; see plugins/module_utils/kube_task.py.

from __future__ import annotations

DOCUMENTATION = r"""
module: mig_rollout_node
short_description: Put a GPU node into MIG maintenance and evacuate it, record a failure, or verify it and return it to service
description:
  - One step of the rolling MIG reconfiguration, on one node. The maintenance itself is one conflict-safe write.
  - O(step=begin) adds the maintenance taints (and cordons with O(cordon)) and writes the rollout record,
    the annotation C(mig-rollout.nvidia-mig-rollout.io/record), in the same write. The record says which
    taints and cordon this rollout added (taints and a cordon an admin set before are not recorded, so
    they are never removed) and the node's config before the rollout. A record left by an interrupted
    run is kept and continued.
  - With O(evacuation), O(step=begin) then moves the node's GPU workloads off it (as M(nvidia_mig.rollout.k8s_node_evacuate)
    does). Before the node is touched, each GPU pod to evict must have somewhere to go (O(capacity)); with the
    C(refuse) policy a node whose pods have nowhere to go is left untouched and reported (RV(capacity_refused)).
  - With O(rollout_lock.slots_file), O(step=begin) changes the node only while it holds a slot of the run's
    maintenance window (the C(nvidia_mig.rollout.mig_window) strategy keeps that file).
  - O(step=failed) marks the record failed with the step and error; the node keeps its maintenance taints,
    so no broken GPUs go back into service. A node that no longer exists is reported (RV(node_gone)), not
    failed.
  - O(step=finish) removes exactly what the record says a rollout added, and the record. With O(verify), it
    first waits (a watch) until the node advertises what its MIG config must produce, and returns the node to
    service only then, writing against the version of the node it verified (no read in between).
  - O(step=finish) and O(step=failed) write only while the node's record still names this O(run). A record
    naming another run means that run took the node over, and the step stops (C(lock_lost)).
  - With O(rollout_lock.events), each step writes a Kubernetes Event on the node (C(MigReconfigurationStarted),
    C(GpuWorkloadsEvacuated), C(MigConfigVerified), C(MigReconfigurationSucceeded), C(MigReconfigurationFailed),
    C(MigReconfigurationSkipped)); an Event that cannot be written is a warning, never a failure.
version_added: "0.1.0"
seealso:
  - module: nvidia_mig.rollout.k8s_node_evacuate
  - module: nvidia_mig.rollout.mig_node_verify
  - module: nvidia_mig.rollout.mig_rollout_plan
options:
  name:
    description: Node name.
    type: str
    required: true
  step:
    description: The step.
    type: str
    required: true
    choices: [begin, finish, failed]
  run:
    description: The rollout run's identity (the lock holder).
    type: str
    required: true
  to_config:
    description: The MIG config the node is being brought to (O(step=begin)).
    type: str
  cordon:
    description:
      - Also cordon the node (O(step=begin)), for example because GPU pods on it tolerate the maintenance taints
        (the plan says so in C(cordon)). The record says the rollout cordoned it, so O(step=finish) uncordons it.
      - An admin's cordon is never recorded, so never undone.
    type: bool
    default: false
  evacuation:
    description:
      - Evacuate the node's GPU workloads once it is in maintenance (O(step=begin)); the options of
        M(nvidia_mig.rollout.k8s_node_evacuate). Pods whose replacements would come straight back are refused.
    type: dict
    suboptions:
      gpu_only:
        description: Evacuate only GPU workloads (pods requesting C(nvidia.com/gpu) or C(nvidia.com/mig-*), or
          using one of O(evacuation.gpu_runtime_classes)).
        type: bool
        default: true
      gpu_runtime_classes:
        description: Runtime classes that mark a pod as a GPU workload.
        type: list
        elements: str
        default: [nvidia]
      pod_selector:
        description: Label selector narrowing the evacuation.
        type: str
      ignore_daemonsets:
        description: Leave DaemonSet pods.
        type: bool
        default: true
      delete_emptydir_data:
        description: Evict pods with emptyDir volumes.
        type: bool
        default: false
      force:
        description: Evict pods no controller manages.
        type: bool
        default: false
      disable_eviction:
        description: Delete pods instead of evicting them (bypasses PodDisruptionBudgets).
        type: bool
        default: false
      grace_period:
        description: Termination grace period (-1, each pod's own).
        type: int
        default: -1
      timeout:
        description: Seconds for the evacuation.
        type: int
        default: 600
      max_parallel:
        description: Evictions at once.
        type: int
        default: 10
  capacity:
    description:
      - Before the node is touched (O(step=begin) with O(evacuation)), check that each GPU pod to evict has
        somewhere to go - another schedulable node, not in maintenance or about to be, with the pod's
        C(nvidia.com/gpu) and C(nvidia.com/mig-*) requests free, matching its nodeSelector, required node
        affinity and taints. CPU, memory, pod affinity, topology spread and volumes are not checked.
      - Costs one LIST of nodes and one of pods, only when the node has GPU pods to evict.
    type: dict
    suboptions:
      policy:
        description: C(refuse) leaves the node untouched and reports it; C(wait) looks again every 5 seconds up
          to O(capacity.timeout), then refuses; C(ignore) does not check.
        type: str
        choices: [refuse, wait, ignore]
        default: refuse
      timeout:
        description: Seconds to wait for room with C(wait).
        type: int
        default: 600
  verify:
    description:
      - Before returning the node to service (O(step=finish)), wait until it advertises what its MIG config must
        produce (as M(nvidia_mig.rollout.mig_node_verify) does); the node stays in maintenance if it does not.
    type: dict
    suboptions:
      config:
        description: The node's MIG config.
        type: str
        required: true
      expected:
        description: What the node must advertise (C(resources), C(labels)), as the rollout's plan computed it.
          Without it, it is computed from the MIG config ConfigMap (read once).
        type: dict
      operator_namespace:
        description: The GPU Operator's namespace (without O(verify.expected)).
        type: str
      config_map:
        description: The MIG config ConfigMap (without O(verify.expected)).
        type: str
      strategy:
        description: The MIG strategy (without O(verify.expected)).
        type: str
        choices: [none, single, mixed]
      gpu_count:
        description: The node's physical GPU count (without O(verify.expected)).
        type: int
  verify_timeout:
    description: Seconds to wait for the node to advertise what its MIG config must produce (O(verify)).
    type: int
    default: 300
  moved:
    description: How many GPU pods the rollout moved off the node (O(step=finish)), for its Event.
    type: int
    default: 0
  failed_step:
    description: The step that failed (O(step=failed)).
    type: str
    default: ""
  error:
    description: The error (O(step=failed)).
    type: str
    default: ""
extends_documentation_fragment:
  - nvidia_mig.rollout.kube_connection
  - nvidia_mig.rollout.maintenance_taints
  - nvidia_mig.rollout.rollout_lock
attributes:
  check_mode:
    support: full
    description: The API server validates the write (dry run); nothing is stored, nothing is evicted, no Event.
  diff_mode:
    support: full
    description: Shows the node's taints and cordon before and after.
author: NVIDIA MIG rollout toolkit maintainers (@nvidia-mig-rollout)
"""

EXAMPLES = r"""
- name: Put the node into maintenance and move its GPU workloads off
  mig_rollout_node:
    name: gpu-node-17
    step: begin
    run: "{{ mig_rollout_run }}"
    to_config: all-1g.10gb
    maintenance_taints: [{key: mig, value: maintenance, effect: NoSchedule}]
    evacuation: {timeout: 600}
    capacity: {policy: refuse}

- name: Verify the node and return it to service
  mig_rollout_node:
    name: gpu-node-17
    step: finish
    run: "{{ mig_rollout_run }}"
    verify: {config: all-1g.10gb}
    verify_timeout: 300
"""

RETURN = r"""
record:
  description: The rollout record after the step (C(null) when the node had none to finish).
  returned: always
  type: dict
  sample: {run: host-4242-ab12cd, from_config: all-disabled, to_config: all-1g.10gb, step: maintenance,
           added_taints: [{key: mig, value: maintenance, effect: NoSchedule}], cordoned: false}
taints:
  description: The node's taints after the step.
  returned: always
  type: list
  elements: dict
cordoned:
  description: Whether the node is cordoned after the step.
  returned: when the node exists
  type: bool
evacuation:
  description: The evacuation (O(step=begin) with O(evacuation)) - evicted, skipped and pending pods, blocking
    PodDisruptionBudgets, pods whose replacements could come back, seconds (as M(nvidia_mig.rollout.k8s_node_evacuate)).
  returned: O(step=begin) with O(evacuation)
  type: dict
room:
  description: Where the GPU pods to evict could go (O(capacity)) - each pod's node or why nowhere (as the
    scheduler words it), how often it looked and how long it waited.
  returned: O(step=begin) with O(evacuation)
  type: dict
capacity_refused:
  description: The node was left untouched because GPU pods on it have nowhere to go (RV(room)).
  returned: O(step=begin)
  type: bool
moved:
  description: How many GPU pods the evacuation moved off the node.
  returned: O(step=begin)
  type: int
verification:
  description: What the node must advertise, what it advertises, the mismatches, seconds (O(verify)).
  returned: O(step=finish) with O(verify)
  type: dict
steps:
  description: Seconds per part of the step (C(maintenance), C(evacuate); C(verify), C(finish)), one after the other
    from RV(began).
  returned: success
  type: dict
began:
  description: When the step's first part began (UTC, microseconds), for the report's timeline.
  returned: success
  type: str
phase:
  description: The part of the step that failed (C(window), C(capacity), C(maintenance), C(evacuate), C(verify),
    C(finish)).
  returned: failure
  type: str
node_gone:
  description: The node no longer exists (O(step=failed)), so nothing was recorded and nothing stays in maintenance.
  returned: O(step=failed)
  type: bool
lock_lost:
  description: The step stopped before writing because this run no longer holds the rollout lock.
  returned: failure
  type: bool
"""

import datetime
import time
from typing import Any

from ansible_collections.nvidia_mig.rollout.plugins.module_utils.kube_task import (
    TaskContext,
    TaskFailed,
    TaskSpec,
    run_module,
)
from ansible_collections.nvidia_mig.rollout.plugins.module_utils.option_specs import (
    EVACUATION_SPEC,
    ROLLOUT_LOCK_SPEC,
    TAINT_OPTIONS,
)

try:
    from migrollout import capacity, events, nodes, taints, timestamps
    from migrollout.evacuation.engine import Evacuator, options_problem
    from migrollout.evacuation.selection import EVICT, Options, keeping_off
    from migrollout.migsetup import discover
    from migrollout.migstate import wait_advertised
    from migrollout.rollout import fence, maintenance, record
    from migrollout.verification import Expectation, expect
except ImportError:  # run_module reports the missing package
    pass

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "name": {"type": "str", "required": True},
    "step": {"type": "str", "required": True, "choices": ["begin", "finish", "failed"]},
    "run": {"type": "str", "required": True},
    "to_config": {"type": "str"},
    "maintenance_taints": {"type": "list", "elements": "dict", "default": [], "options": TAINT_OPTIONS},
    "cordon": {"type": "bool", "default": False},
    "evacuation": {"type": "dict", "options": EVACUATION_SPEC},
    "capacity": {"type": "dict", "options": {
        "policy": {"type": "str", "choices": ["refuse", "wait", "ignore"], "default": "refuse"},
        "timeout": {"type": "int", "default": 600},
    }},
    "verify": {"type": "dict", "options": {
        "config": {"type": "str", "required": True},
        "expected": {"type": "dict"},
        "operator_namespace": {"type": "str"},
        "config_map": {"type": "str"},
        "strategy": {"type": "str", "choices": ["none", "single", "mixed"]},
        "gpu_count": {"type": "int"},
    }},
    "verify_timeout": {"type": "int", "default": 300},
    "moved": {"type": "int", "default": 0},
    "failed_step": {"type": "str", "default": ""},
    "error": {"type": "str", "default": ""},
    **ROLLOUT_LOCK_SPEC,
}


class Step:
    """One step's shared means: the parameters, the fence, the Events, the seconds of each part."""

    def __init__(self, ctx: TaskContext):
        self.ctx = ctx
        self.params = ctx.params
        self.name = ctx.params["name"]
        lock = ctx.params.get("rollout_lock") or {}
        self.guard = fence.NoFence() if ctx.check_mode else fence.from_params(lock or None)
        self.recorder = events.Recorder(None, ctx.params["run"], enabled=False)
        if lock.get("events") and not ctx.check_mode:
            self.recorder = events.Recorder(ctx.api, ctx.params["run"])
        self.steps: dict[str, float] = {}
        self.started = time.monotonic()

    def lap(self, part: str) -> None:
        now = time.monotonic()
        self.steps[part] = round(now - self.started, 3)
        self.started = now

    def emit(self, kind: Any, note: str) -> None:
        self.recorder.emit(self.name, kind, note)   # sent in the background: see end()

    def end(self) -> None:
        """Wait for the step's Events (an Event not written is a warning)."""
        for warning in self.recorder.wait():
            self.ctx.warn(warning)

    def check(self) -> None:
        self.guard.check(f"node {self.name}")

    def fail(self, phase: str, message: str, **result: Any) -> TaskFailed:
        return TaskFailed(message, phase=phase, steps=self.steps, **result)


def _write(step: Step, mutate_patch: Any, what: str, current: dict[str, Any] | None = None):
    written: dict[str, Any] = {}

    def mutate(node: dict[str, Any]) -> dict[str, Any] | None:
        patch, rec = mutate_patch(node)
        written["record"] = rec
        if patch:
            step.check()  # right before the write: this run must still hold the lock
        return patch

    before, after, changed = nodes.update(step.ctx.api, step.name, mutate, dry_run=step.ctx.check_mode,
                                          what=what, current=current)
    return before, after, changed, written.get("record")


def _evacuator(step: Step, options: dict[str, Any]) -> Evacuator:
    name = step.name
    problem = options_problem(options)
    if problem:
        raise TaskFailed(f"node {name}: evacuation {problem}")
    return Evacuator(step.ctx.api, name, Options.from_params(options), pod_selector=options.get("pod_selector"),
                     timeout=options["timeout"], max_parallel=options["max_parallel"],
                     grace_period=options["grace_period"], disable_eviction=options["disable_eviction"],
                     returning="refuse", stop_check=step.check)


def begin(step: Step) -> dict[str, Any]:
    params, name, ctx = step.params, step.name, step.ctx
    if not params.get("to_config"):
        raise TaskFailed(f"node {name}: to_config is required with step=begin")
    maintenance_taints = taints.checked_list(params["maintenance_taints"])
    lock = params.get("rollout_lock") or {}
    result: dict[str, Any] = {"changed": False, "name": name, "step": "begin", "capacity_refused": False, "moved": 0}
    if lock.get("slots_file") and not ctx.check_mode:
        try:
            result["slot"] = maintenance.require_slot(lock["slots_file"], name)
        except maintenance.NotInWindow as exc:
            raise step.fail("window", str(exc)) from None

    # Where would its GPU pods go? Looked at before the node is touched, so a refusal leaves it as it was.
    evacuator = _evacuator(step, params["evacuation"]) if params.get("evacuation") else None
    if evacuator is not None:
        pods, _ = evacuator.list_pods()
        moving = [d.pod for d in evacuator.plan(pods) if d.action == EVICT and capacity.gpu_requests(d.pod)]
        policy = (params.get("capacity") or {}).get("policy", "refuse")
        room = maintenance.find_room(ctx.api, name, moving, policy, (params.get("capacity") or {}).get("timeout", 600),
                                     lock.get("slots_file"))
        result["room"] = room.as_dict()
        if room.stuck and policy != "ignore":
            waited = f" after waiting {room.waited_s:.0f} s" if policy == "wait" else ""
            result.update(capacity_refused=True, record=None, taints=[], cordoned=False,
                          reason=f"node {name} was not touched: {len(room.stuck)} GPU pod(s) would have nowhere to "
                                 f"go{waited}: {'; '.join(room.stuck)}")
            step.emit(events.SKIPPED, events.skipped_note(step.params["run"], room.stuck))
            step.lap("capacity")
            result["steps"] = step.steps
            return result
        step.lap("capacity")

    def put_in_maintenance(node: dict[str, Any]) -> Any:
        nodes.require_mig_node(node)
        return record.begin_patch(node, params["run"], params["to_config"], maintenance_taints, params["cordon"])

    before, after, changed, rec = _write(step, put_in_maintenance, f"begin MIG maintenance of node {name}")
    step.lap("maintenance")
    result.update(changed=changed, record=vars(rec) if rec is not None else None, taints=nodes.node_taints(after),
                  cordoned=nodes.is_cordoned(after))
    if ctx.diff and changed:
        result["diff"] = _diff(name, before, after)
    if changed or rec is not None:
        added = [str(taints.Taint.from_dict(t)) for t in (rec.added_taints if rec else [])]
        step.emit(events.STARTED, events.started_note(params["run"], rec.from_config if rec else "",
                                                      params["to_config"], added))
    if evacuator is None:
        result["steps"] = step.steps
        return result

    evacuator.keeping_off = keeping_off(nodes.node_taints(after), nodes.is_cordoned(after))
    if ctx.check_mode:
        planned = evacuator.check()
        for warning in planned.warnings:
            ctx.warn(warning)
        result["evacuation"] = {**planned.as_dict(), "would_evict": planned.as_dict()["evicted"], "evicted": []}
        result["steps"] = step.steps
        return result
    pods, version = evacuator.list_pods()       # again, now that nothing new lands: what leaves is final
    outcome = evacuator.run(pods, version)
    for warning in outcome.warnings:
        ctx.warn(warning)
    step.lap("evacuate")
    result["evacuation"] = outcome.as_dict()
    result["changed"] = result["changed"] or bool(outcome.evicted)
    problem = outcome.problem(name, params["evacuation"]["timeout"])
    if problem:
        raise step.fail("evacuate", problem, **{k: v for k, v in result.items() if k != "steps"})
    moved = [f"{e['namespace']}/{e['name']}" for e in outcome.evicted]
    result["moved"] = len(moved)
    step.emit(events.EVACUATED, events.evacuated_note(params["run"], moved, outcome.duration_s))
    result["steps"] = step.steps
    return result


def _expectation(step: Step, verify: dict[str, Any], node: dict[str, Any]) -> Any:
    if verify.get("expected"):
        found = verify["expected"]
        return Expectation(dict(found.get("resources") or {}), dict(found.get("labels") or {}))
    model = nodes.require_mig_node(node)
    setup = discover(step.ctx.api, step.name, verify.get("operator_namespace"), verify.get("config_map"),
                     verify.get("strategy"))
    count = verify.get("gpu_count") or nodes.physical_gpu_count(node, setup.config, model)
    if not count:
        raise TaskFailed(f"node {step.name}: cannot tell how many GPUs it has from its labels; pass gpu_count")
    return expect(setup.config, verify["config"], model, count, setup.strategy)


def finish(step: Step) -> dict[str, Any]:
    params, name, ctx = step.params, step.name, step.ctx
    result: dict[str, Any] = {"changed": False, "name": name, "step": "finish"}
    current = None
    verify = params.get("verify")
    if verify:
        config = verify["config"]
        node = nodes.read(ctx.api, name) if not verify.get("expected") else None
        expectation = _expectation(step, verify, node or {})
        comparison, current = wait_advertised(ctx.api, name, config, expectation, params["verify_timeout"],
                                              node=node, stop_check=step.check)
        step.lap("verify")
        result["verification"] = {"expected": comparison.expected, "actual": comparison.actual,
                                  "mismatches": comparison.mismatches, "duration_s": step.steps["verify"]}
        if comparison.mismatches:
            raise step.fail("verify", f"node {name} does not advertise what {config} should give after "
                            f"{params['verify_timeout']} s: " + "; ".join(comparison.mismatches[:4])
                            + (f" (and {len(comparison.mismatches) - 4} more)" if len(comparison.mismatches) > 4
                               else ""), **result)
        step.emit(events.VERIFIED, events.verified_note(params["run"], config, step.steps["verify"]))

    def return_to_service(node: dict[str, Any]) -> Any:
        nodes.require_mig_node(node)
        return record.finish_patch(node, params["run"])

    before, after, changed, rec = _write(step, return_to_service, f"finish MIG maintenance of node {name}",
                                         current=current)
    step.lap("finish")
    result.update(changed=changed, record=vars(rec) if rec is not None else None, taints=nodes.node_taints(after),
                  cordoned=nodes.is_cordoned(after), steps=step.steps)
    if ctx.diff and changed:
        result["diff"] = _diff(name, before, after)
    if rec is not None:
        total = _since(rec.started)
        step.emit(events.SUCCEEDED, events.succeeded_note(params["run"], rec.from_config, rec.to_config,
                                                          params["moved"], total))
    return result


def failed(step: Step) -> dict[str, Any]:
    params, name = step.params, step.name

    def mark_failed(node: dict[str, Any]) -> Any:
        return record.failed_patch(node, params["run"], params["failed_step"], params["error"])

    try:
        before, after, changed, rec = _write(step, mark_failed, f"failed MIG maintenance of node {name}")
    except nodes.NodeGone:
        return {"changed": False, "name": name, "step": "failed", "record": None, "node_gone": True,
                "taints": [], "cordoned": False}
    step.emit(events.FAILED, events.failed_note(params["run"], params["failed_step"], params["error"]))
    result = {"changed": changed, "name": name, "step": "failed", "record": vars(rec) if rec is not None else None,
              "taints": nodes.node_taints(after), "cordoned": nodes.is_cordoned(after), "node_gone": False}
    if step.ctx.diff and changed:
        result["diff"] = _diff(name, before, after)
    return result


def _since(text: str) -> float | None:
    started = timestamps.parse(text)
    if started is None:
        return None
    return (datetime.datetime.now(datetime.UTC) - started).total_seconds()


def _diff(name: str, before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {"before": {"taints": nodes.node_taints(before), "unschedulable": nodes.is_cordoned(before)},
            "after": {"taints": nodes.node_taints(after), "unschedulable": nodes.is_cordoned(after)},
            "before_header": f"node/{name}", "after_header": f"node/{name}"}


def run(ctx: TaskContext) -> dict[str, Any]:
    name = ctx.params["name"]
    try:
        maintenance_taints = taints.checked_list(ctx.params["maintenance_taints"])
    except ValueError as exc:
        raise TaskFailed(f"node {name}: {exc}") from None
    refused = [str(t) for t in maintenance_taints if t.effect == "NoExecute"]
    if refused:
        raise TaskFailed(f"node {name}: maintenance taint {', '.join(refused)} refused: a NoExecute taint makes the "
                         f"taint manager delete every pod on the node that does not tolerate it, CPU pods too, without "
                         f"honouring PodDisruptionBudgets; use NoSchedule")
    step = Step(ctx)
    began = timestamps.micro_time_text()
    try:
        return {**{"begin": begin, "finish": finish, "failed": failed}[ctx.params["step"]](step), "began": began}
    finally:
        step.end()


SPEC = TaskSpec("mig_rollout_node", ARGUMENT_SPEC, run)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
