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
  pool_budget:
    description:
      - Before the node is touched (O(step=begin)), count the nodes of its pool out of service now (cordoned, not
        Ready, tainted NoSchedule or NoExecute), whoever took them out (this run, an admin, NVIDIA's driver upgrade
        controller); when taking this node out too would exceed the pool's budget, the node is left untouched
        (RV(pool_refused)), or with O(capacity.policy=wait) the step looks again every 5 seconds up to
        O(capacity.timeout). One LIST of the pool's nodes (of every GPU node when pools are GPU products).
      - The plan's pool of the node and its budget (the rollout's C(mig_rollout_max_unavailable_per_pool));
        without it, nothing is counted.
    type: dict
    suboptions:
      pool:
        description: The node's pool.
        type: str
        required: true
      budget:
        description: How many of the pool's nodes may be out of service at once.
        type: int
        required: true
      pool_by:
        description: How pools are told apart (C(pool) - the pool label, else the GPU product; C(product)).
        type: str
        choices: [pool, product]
        default: pool
      pool_label:
        description: The node label that names a node's pool.
        type: str
        default: gpu-pool
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
pool_refused:
  description: The node was left untouched because its pool had as many nodes out of service as its budget
    allows (O(pool_budget)).
  returned: O(step=begin)
  type: bool
driver_upgrade_refused:
  description: The node was left untouched because NVIDIA's driver upgrade is under way on it
    (C(nvidia.com/gpu-driver-upgrade-state)); with O(capacity.policy=wait) the step waits for the upgrade to end
    instead, up to O(capacity.timeout). A node resumed from its own rollout record is not held back.
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
    from migrollout import timestamps
    from migrollout.failures import StepFailed
    from migrollout.rollout.node_step import (
        NodeStep,
        begin_maintenance,
        maintenance_taints,
        mark_failed,
        return_to_service,
    )
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
    "pool_budget": {"type": "dict", "options": {
        "pool": {"type": "str", "required": True},
        "budget": {"type": "int", "required": True},
        "pool_by": {"type": "str", "choices": ["pool", "product"], "default": "pool"},
        "pool_label": {"type": "str", "default": "gpu-pool"},
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


def run(ctx: TaskContext) -> dict[str, Any]:
    params = ctx.params
    name = params["name"]
    try:
        taints = maintenance_taints(name, params["maintenance_taints"])
    except StepFailed as exc:
        raise TaskFailed(exc.msg, **exc.result) from None
    if params["step"] == "begin" and not params.get("to_config"):
        raise TaskFailed(f"node {name}: to_config is required with step=begin")
    step = NodeStep(ctx.api, name, params["run"], params.get("rollout_lock"), check_mode=ctx.check_mode,
                    diff=ctx.diff, warn=ctx.warn)
    began = timestamps.micro_time_text()
    try:
        if params["step"] == "begin":
            outcome = begin_maintenance(step, params["to_config"], taints, params["cordon"], params.get("evacuation"),
                                        params.get("capacity"), params.get("pool_budget"))
        elif params["step"] == "finish":
            outcome = return_to_service(step, params.get("verify"), params["verify_timeout"], params["moved"])
        else:
            outcome = mark_failed(step, params["failed_step"], params["error"])
        return {**outcome, "began": began}
    except StepFailed as exc:
        raise TaskFailed(exc.msg, **exc.result) from None
    finally:
        step.end()


SPEC = TaskSpec("mig_rollout_node", ARGUMENT_SPEC, run)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
