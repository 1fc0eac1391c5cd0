#!/usr/bin/python
# mig_node_label: set nvidia.com/mig.config on a node and follow the MIG manager to its verdict.
# Docs, argument spec and the adapter to the core (migrollout) in one file; see plugins/module_utils/kube_task.py.

from __future__ import annotations

DOCUMENTATION = r"""
module: mig_node_label
short_description: Set a node's MIG config and wait for the NVIDIA MIG manager's verdict
description:
  - Sets the C(nvidia.com/mig.config) label of a GPU node and follows the MIG manager's
    C(nvidia.com/mig.config.state) label through C(pending) (and C(rebooting), while the node goes
    NotReady and comes back) to C(success) or C(failed), with a watch on the node.
  - Before touching the node it refuses a config that is not in the MIG config ConfigMap the cluster
    uses (the one named in the ClusterPolicy; else the node's own C(<node>-mig-config), which MIG
    managers from v0.14 publish; else C(default-mig-parted-config), in the operator's namespace), a
    config whose profiles or counts do not fit this node's GPU model (the MIG catalogue), a node the
    MIG manager is busy with, and a node without a running MIG manager.
  - The stale C(nvidia.com/mig.config.state) is removed in the same write as the new label, so an old
    C(success) is never taken for the new one.
  - Already at O(config) with state C(success) changes nothing. The MIG manager only reacts to a change
    of the label's value, so re-applying the same config (after a C(failed), or after the ConfigMap entry
    was edited) restarts the MIG manager pod instead; that needs O(reapply=true). The restart is refused when
    the node carries a taint the MIG manager's pod does not tolerate, since its replacement could not be
    scheduled and the node would be left without a MIG manager.
  - A failure names the state and how to recover, for a MIG manager left in C(pending) (restart its pod, named)
    and for a MIG mode change that may need a reboot the MIG manager is not allowed to do (C(WITH_REBOOT)).
version_added: "0.1.0"
seealso:
  - module: nvidia_mig.rollout.mig_node_verify
  - module: nvidia_mig.rollout.mig_config_check
options:
  name:
    description: Node name.
    type: str
    required: true
  config:
    description: The MIG config name, an entry of the MIG config ConfigMap (for example C(all-1g.10gb)).
    type: str
    required: true
  wait:
    description: Wait for the MIG manager's verdict. With V(false), return right after writing the label.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for C(success) or C(failed).
      - A reboot and the MIG manager's own waits (up to 5 minutes each) can take long.
    type: int
    default: 1800
  reapply:
    description:
      - When the label already has O(config), restart the MIG manager so it applies it again (for example after a
        C(failed) apply whose cause was fixed).
      - The rollout sets it for a node whose label already has its config in state C(failed)
        (C(mig_rollout_reapply_failed), default true).
    type: bool
    default: false
  checked:
    description:
      - What the rollout's plan found for this node when it checked it (O(config) is in the node's ConfigMap and
        fits its GPUs, a MIG manager runs there), so the step reads neither the ConfigMap nor the MIG manager's
        pod - C(gpu_count), the node's physical GPU count, and C(mode_change) (V(on), V(off) or empty), whether
        the change switches MIG mode.
      - A MIG manager that went away since is found when no final state came after
        60 seconds (one LIST then); the failure then says so.
    type: dict
    suboptions:
      gpu_count:
        description: The node's physical GPU count.
        type: int
        required: true
      mode_change:
        description: Whether the change switches MIG mode on (V(on)) or off (V(off)) on some GPU.
        type: str
        default: ""
extends_documentation_fragment:
  - nvidia_mig.rollout.kube_connection
  - nvidia_mig.rollout.mig_setup
  - nvidia_mig.rollout.rollout_lock
attributes:
  check_mode:
    support: full
    description: Runs every check and reports whether the label would change; writes nothing, waits for nothing.
  diff_mode:
    support: full
    description: Shows the node's C(nvidia.com/mig.config) label before and after.
author: NVIDIA MIG rollout toolkit maintainers (@nvidia-mig-rollout)
"""

EXAMPLES = r"""
- name: Partition every GPU of the node into seven 1g.10gb instances
  mig_node_label:
    name: gpu-node-17
    config: all-1g.10gb

- name: Try again after a failed apply
  mig_node_label:
    name: gpu-node-17
    config: all-1g.10gb
    reapply: true
"""

RETURN = r"""
name:
  description: The node.
  returned: always
  type: str
config:
  description: The MIG config asked for.
  returned: always
  type: str
previous_config:
  description: The node's MIG config label before the task.
  returned: always
  type: str
state:
  description: The final C(nvidia.com/mig.config.state) (C(success) on success).
  returned: success
  type: str
transitions:
  description: Every state the node went through, with the time and seconds since the write. During a
    reboot, C(node-not-ready) and C(node-ready) mark the node's readiness.
  returned: when waited
  type: list
  elements: dict
  sample: [{state: "", at: "2026-11-28T10:00:00.12Z", elapsed_s: 0.05}, {state: pending, at: "2026-11-28T10:00:00.31Z", elapsed_s: 0.24},
           {state: success, at: "2026-11-28T10:00:41.90Z", elapsed_s: 41.83}]
state_durations:
  description: Seconds spent in each state.
  returned: when waited
  type: dict
  sample: {pending: 41.59, success: 0.0}
paused_operands:
  description: On failure, the C(nvidia.com/gpu.deploy.*) labels still C(paused-for-mig-change).
  returned: failure
  type: list
  elements: str
config_map:
  description: The ConfigMap (namespace/name) the config was checked against.
  returned: always
  type: str
restarted_mig_manager:
  description: The MIG manager pod restarted to re-apply the config (with O(reapply)).
  returned: when restarted
  type: str
duration_s:
  description: Seconds from the write to the verdict.
  returned: when waited
  type: float
began:
  description: When RV(duration_s) began (UTC, microseconds), for the report's timeline.
  returned: when waited
  type: str
"""

import time
from typing import Any

from ansible_collections.nvidia_mig.rollout.plugins.module_utils.kube_task import (
    TaskContext,
    TaskFailed,
    TaskSpec,
    run_module,
)
from ansible_collections.nvidia_mig.rollout.plugins.module_utils.option_specs import ROLLOUT_LOCK_SPEC

try:
    from migrollout import events, kube, labels, nodes, timestamps
    from migrollout.catalogue import GpuModel
    from migrollout.migconfig.layouts import fit_problems
    from migrollout.migsetup import MigSetup, discover
    from migrollout.migstate import FollowResult, follow, label_decision, mode_change, reboot_allowed
    from migrollout.rollout import fence
    from migrollout.taints import Taint, tolerates
except ImportError:  # run_module reports the missing package
    pass

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "name": {"type": "str", "required": True},
    "config": {"type": "str", "required": True},
    "wait": {"type": "bool", "default": True},
    "timeout": {"type": "int", "default": 1800},
    "reapply": {"type": "bool", "default": False},
    "checked": {"type": "dict", "options": {
        "gpu_count": {"type": "int", "required": True},
        "mode_change": {"type": "str", "default": ""},
    }},
    "operator_namespace": {"type": "str"},
    "config_map": {"type": "str"},
    **ROLLOUT_LOCK_SPEC,
}

CONFLICT_ATTEMPTS = 10  # the node changed between the read and the write: read it and decide again, this often
# With the plan's checks (checked), the MIG manager pod is looked for only when no final state came this soon.
MANAGER_LOOK_AFTER_S = 60


def manager_running(ctx: TaskContext, setup: MigSetup, name: str) -> dict[str, Any] | None:
    pods, _ = ctx.api.list(kube.pods_path(setup.namespace), what=f"list MIG manager pods on node {name}",
                           field_selector=f"spec.nodeName={name}", label_selector=f"app={labels.APP_MIG_MANAGER}")
    return next((p for p in pods if p.get("status", {}).get("phase") == "Running"
                 and not p["metadata"].get("deletionTimestamp")), None)


def untolerated_taints(pod: dict[str, Any], node: dict[str, Any]) -> list[str]:
    """The node's NoSchedule/NoExecute taints this (DaemonSet) pod does not tolerate: a replacement would not land."""
    tolerations = pod.get("spec", {}).get("tolerations") or []
    blocking = []
    for item in nodes.node_taints(node):
        taint = Taint.from_dict(item)
        if taint.effect in ("NoSchedule", "NoExecute") and not any(tolerates(t, taint) for t in tolerations):
            blocking.append(str(taint))
    return blocking


def validate(node: dict[str, Any], model: GpuModel, setup: MigSetup, config: str) -> int:
    """Everything that must hold before the node is touched; returns the physical GPU count."""
    name = node["metadata"]["name"]
    if config not in setup.config:
        known = ", ".join(setup.config.names()[:12])
        raise TaskFailed(f"node {name}: MIG config {config} is not in ConfigMap {setup.namespace}/"
                         f"{setup.config_map} (it has {known}{', ...' if len(setup.config.names()) > 12 else ''})")
    count = nodes.physical_gpu_count(node, setup.config, model)
    if count is None:
        raise TaskFailed(f"node {name}: cannot tell how many GPUs it has from its labels "
                         f"({labels.GPU_COUNT}={nodes.node_labels(node).get(labels.GPU_COUNT)})")
    problems = fit_problems(setup.config, config, model, count)
    if problems:
        raise TaskFailed(f"node {name} ({count} x {model.key}): MIG config {config} does not fit: "
                         + "; ".join(problems))
    return count


class _Conflict(Exception):
    """The label write met a newer version of the node."""


def run(ctx: TaskContext) -> dict[str, Any]:
    params = ctx.params
    name = params["name"]
    if params["timeout"] <= 0:
        raise TaskFailed(f"node {name}: timeout is {params['timeout']}; it must be at least 1 second")
    guard = fence.NoFence() if ctx.check_mode else fence.from_params(params.get("rollout_lock"))
    for _ in range(CONFLICT_ATTEMPTS):
        try:
            return _run_once(ctx, guard)
        except _Conflict:
            continue  # re-read the node and decide again (labels others wrote meanwhile are kept)
    raise TaskFailed(f"node {name}: the node changed under every one of {CONFLICT_ATTEMPTS} attempts to write its "
                     f"MIG config label (HTTP 409 Conflict each time); nothing was written")


def _run_once(ctx: TaskContext, guard: Any) -> dict[str, Any]:
    params = ctx.params
    name, config = params["name"], params["config"]
    node = nodes.read(ctx.api, name)
    model = nodes.require_mig_node(node)  # before reading the operator's settings: the clearer error first
    checked = params.get("checked")
    setup = discover(ctx.api, name, params.get("operator_namespace"), params.get("config_map"), need_strategy=False,
                     need_config=not checked)
    if not checked:
        validate(node, model, setup, config)
    current, state = nodes.mig_config(node), nodes.mig_state(node)
    result: dict[str, Any] = {"name": name, "config": config, "previous_config": current,
                              "previous_state": state, "config_map": f"{setup.namespace}/{setup.config_map}",
                              "transitions": [], "changed": False}

    decision = label_decision(current, state, config, params["reapply"])
    if decision.applied:
        result["state"] = state
        return result
    if decision.refusal:
        raise TaskFailed(f"node {name}: {decision.refusal}", **result)
    retrigger = decision.retrigger

    # The plan saw a MIG manager running there: look for it now only to restart it, or if the apply hangs.
    manager = manager_running(ctx, setup, name) if not checked or retrigger else None
    if manager is None and params["wait"] and (not checked or retrigger):
        raise TaskFailed(f"node {name}: no running MIG manager pod (namespace {setup.namespace}, app="
                         f"{labels.APP_MIG_MANAGER}); nothing would apply the config. Is "
                         f"{labels.DEPLOY_MIG_MANAGER}=true on the node?", **result)

    if retrigger and manager is not None:
        stranded = untolerated_taints(manager, node)
        if stranded:
            raise TaskFailed(f"node {name}: restarting its MIG manager to re-apply {config} would strand the node: "
                             f"the new pod could not be scheduled past taint {', '.join(stranded)} (the MIG manager's "
                             f"DaemonSet does not tolerate it)", **result)

    writes = decision.write
    if ctx.diff and writes:
        result["diff"] = {
            "before_header": f"node/{name} labels", "after_header": f"node/{name} labels",
            "before": f"{labels.MIG_CONFIG}={current}\n{labels.MIG_CONFIG_STATE}={state}\n",
            "after": f"{labels.MIG_CONFIG}={config}\n",
        }
    if ctx.check_mode:
        result["changed"] = writes
        return result

    started = time.monotonic()
    result["began"] = timestamps.micro_time_text()   # when duration_s starts, for the report's timeline
    version = node["metadata"]["resourceVersion"]
    if writes:
        # Clear the old state in the same write, so an old "success" is never taken for the new one.
        patch = {"metadata": {"resourceVersion": version,
                              "labels": {labels.MIG_CONFIG: config, labels.MIG_CONFIG_STATE: None}}}
        guard.check(f"node {name}")  # right before the write: this run must still hold the rollout lock
        try:
            written = ctx.api.patch(kube.node_path(name), patch, what=f"label node {name}")
        except kube.KubeError as exc:
            if not exc.conflict:
                raise
            raise _Conflict() from None
        version = written["metadata"]["resourceVersion"]
        result["changed"] = True
        if retrigger and manager is not None:
            meta = manager["metadata"]
            guard.check(f"node {name}")
            ctx.api.delete(kube.pod_path(meta["namespace"], meta["name"]), what=f"restart MIG manager on {name}")
            result["restarted_mig_manager"] = meta["name"]
    if not params["wait"]:
        result["state"] = "" if writes else state
        return result

    looked = {"done": bool(manager) or not checked}

    def stop_check() -> None:
        guard.check(f"node {name}")
        if not looked["done"] and time.monotonic() - started >= MANAGER_LOOK_AFTER_S:
            looked["done"] = True
            if manager_running(ctx, setup, name) is None:
                raise TaskFailed(f"node {name}: no MIG manager pod runs on the node any more (namespace "
                                 f"{setup.namespace}, app={labels.APP_MIG_MANAGER}), and MIG config {config} was not "
                                 f"applied after {MANAGER_LOOK_AFTER_S} s: nothing will apply it. Is "
                                 f"{labels.DEPLOY_MIG_MANAGER}=true on the node?", **result)

    outcome = follow(ctx.api, name, config, version, params["timeout"], started, stop_check=stop_check)
    if outcome.final != "success" and manager is None:
        manager = manager_running(ctx, setup, name)   # for the hints of a failure
    hints = _hints(setup, model, node, current, config, manager, checked)
    done = finish(result, outcome, started, params["timeout"], hints)
    lock = params.get("rollout_lock") or {}
    if lock.get("events") and done.get("state") == "success":
        recorder = events.Recorder(ctx.api, lock["holder"])
        recorder.emit(name, events.APPLIED, events.applied_note(lock["holder"], config, done.get("duration_s"),
                                                                done.get("state", "")))
        for warning in recorder.wait():
            ctx.warn(warning)
    return done


def _hints(setup: MigSetup, model: GpuModel, node: dict[str, Any], current: str, config: str,
           manager: dict[str, Any] | None, checked: dict[str, Any] | None = None) -> dict[str, str]:
    """What to say if the apply fails (a reboot may be needed) or hangs (restart the MIG manager)."""
    hints = {}
    name = node["metadata"]["name"]
    if manager is not None:
        meta = manager["metadata"]
        hints["pending"] = (f"if the MIG manager is stuck (mig-parted up to v0.15.0 leaves pending after a failed "
                            f"wait for operand pods), restart its pod: kubectl -n {meta['namespace']} delete pod "
                            f"{meta['name']}, then run the rollout again")
    if checked:
        change = checked.get("mode_change") or ""
    else:
        count = nodes.physical_gpu_count(node, setup.config, model)
        change = mode_change(setup.config, current, config, model, count) if count else ""
    if change and not (manager is not None and reboot_allowed(manager)):
        hints["failed"] = (f"this change turns MIG {change} on the GPUs of node {name}, which needs a GPU reset, or a "
                           f"reboot where the GPUs cannot be reset (GPUs in use, some VMs), and its MIG manager may "
                           f"not reboot the node (WITH_REBOOT is not true): if its log says a reboot is needed, "
                           f"reboot the node, or allow the MIG manager to (WITH_REBOOT=true in its environment: "
                           f"gpu_operator_mig_manager_env in config/group_vars/k8s-cluster.yml), then run the "
                           f"rollout again")
    return hints


def finish(result: dict[str, Any], outcome: FollowResult, started: float, timeout: float,
           hints: dict[str, str] | None = None) -> dict[str, Any]:
    elapsed = time.monotonic() - started
    result["transitions"] = [t.as_dict() for t in outcome.transitions]
    result["state"] = outcome.final or nodes.mig_state(outcome.node)
    result["duration_s"] = round(elapsed, 3)
    result["state_durations"] = outcome.state_durations(elapsed)
    if outcome.final == "success":
        return result
    paused = nodes.paused_operands(outcome.node) if outcome.node else {}
    name = result["name"]
    spent = ", ".join(f"{state} {seconds:.1f} s" for state, seconds in result["state_durations"].items())
    paused_text = f"; operands still paused: {', '.join(sorted(paused))}" if paused else ""
    result["paused_operands"] = sorted(paused)
    hints = hints or {}
    if outcome.final == "failed":
        hint = f"; {hints['failed']}" if "failed" in hints else ""
        raise TaskFailed(f"node {name}: the MIG manager failed to apply {result['config']} after {elapsed:.1f} s "
                         f"({spent}){paused_text}; its pod log says why{hint}", **result)
    hint = f"; {hints['pending']}" if result["state"] == "pending" and "pending" in hints else ""
    raise TaskFailed(f"node {name}: MIG config {result['config']} not applied within {timeout:.0f} s; last state "
                     f"{result['state'] or '(none)'} ({spent}){paused_text}{hint}", **result)


SPEC = TaskSpec("mig_node_label", ARGUMENT_SPEC, run)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
