"""Applying a MIG config to one node: set its ``nvidia.com/mig.config`` label (``migstate.label_decision`` says
whether to write, wait or refuse), restart its MIG manager when the same config must be applied again, and
follow the MIG manager's state label to a verdict (``migstate.follow``).

The module ``mig_node_label`` is the adapter: it validates the parameters and returns what ``apply_config``
returns, or the ``StepFailed`` it raises as a failure with the facts gathered so far.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from migrollout import events, kube, labels, nodes, timestamps
from migrollout.catalogue import GpuModel
from migrollout.failures import StepFailed
from migrollout.kube import KubeClient
from migrollout.migconfig.layouts import fit_problems
from migrollout.migsetup import MigSetup, discover
from migrollout.migstate import FollowResult, follow, label_decision, mode_change, reboot_allowed
from migrollout.rollout import fence, fence_policy, record
from migrollout.taints import Taint, tolerates

CONFLICT_ATTEMPTS = 10  # the node changed between the read and the write: read it and decide again, this often
# With the plan's checks (checked), the MIG manager pod is looked for only when no final state came this soon.
MANAGER_LOOK_AFTER_S = 60


def manager_running(api: KubeClient, setup: MigSetup, name: str) -> dict[str, Any] | None:
    pods, _ = api.list(kube.pods_path(setup.namespace), what=f"list MIG manager pods on node {name}",
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
        raise StepFailed(f"node {name}: MIG config {config} is not in ConfigMap {setup.namespace}/"
                         f"{setup.config_map} (it has {known}{', ...' if len(setup.config.names()) > 12 else ''})")
    count = nodes.physical_gpu_count(node, setup.config, model)
    if count is None:
        raise StepFailed(f"node {name}: cannot tell how many GPUs it has from its labels "
                         f"({labels.GPU_COUNT}={nodes.node_labels(node).get(labels.GPU_COUNT)})")
    problems = fit_problems(setup.config, config, model, count)
    if problems:
        raise StepFailed(f"node {name} ({count} x {model.key}): MIG config {config} does not fit: "
                         + "; ".join(problems))
    return count


class _Conflict(Exception):
    """The label write met a newer version of the node."""


class ConfigApply:
    """One application of MIG config ``config`` to node ``name`` (the module's parameters, as plain data)."""

    def __init__(self, api: KubeClient, name: str, config: str, *, wait: bool = True, timeout: float = 1800,
                 reapply: bool = False, checked: dict[str, Any] | None = None, operator_namespace: str | None = None,
                 config_map: str | None = None, rollout_lock: dict[str, Any] | None = None,
                 pending_timeout: float = 0, check_mode: bool = False, diff: bool = False,
                 warn: Callable[[str], None] | None = None):
        self.api = api
        self.pending_timeout = pending_timeout   # seconds in pending before the MIG manager is restarted once
        self.name = name
        self.config = config
        self.wait = wait
        self.timeout = timeout
        self.reapply = reapply
        self.checked = checked
        self.operator_namespace = operator_namespace
        self.config_map = config_map
        self.rollout_lock = rollout_lock or {}
        self.check_mode = check_mode
        self.diff = diff
        self.warn: Callable[[str], None] = warn or (lambda _message: None)
        self.guard = fence.NoFence() if check_mode else fence.from_params(rollout_lock)
        # Writes go through the fence (checked before each attempt, bounded by the lock's freshness) and name the
        # run for the API server's fence (fence_policy).
        self.writer = api.fenced(self.guard.write_guard(f"node {name}"))
        self.holder: str = "" if check_mode else self.rollout_lock.get("holder", "")


class PendingWatch:
    """NVIDIA's MIG manager (mig-parted up to v0.15.0, NVIDIA/mig-parted#485) leaves a node in ``pending`` for good
    when stopping the GPU clients times out, and acts again only on a change of the label or a new pod. After
    ``pending_timeout`` seconds in pending, restart its pod once, as an admin would (the new pod applies the
    label's config at its start), saying so in the node's rollout record and an Event; still pending that long
    after the restart: fail the node with what to do."""

    def __init__(self, apply: ConfigApply, setup: MigSetup, config: str, manager: dict[str, Any] | None):
        self.apply, self.setup, self.config, self.manager = apply, setup, config, manager
        self.note = ""
        self.restarted_at: float | None = None

    def __call__(self, so_far: FollowResult, elapsed: float) -> None:
        current = so_far.in_state_since()
        if current is None or current[0] != "pending":
            return
        apply, name = self.apply, self.apply.name
        if self.restarted_at is not None:
            if elapsed - self.restarted_at >= apply.pending_timeout:
                raise StepFailed(f"node {name}: its MIG manager is still in state pending for {self.config} "
                                 f"{elapsed - self.restarted_at:.0f} s after this run restarted it ({self.note}); "
                                 f"look at its log (kubectl -n {self.setup.namespace} logs -l "
                                 f"app={labels.APP_MIG_MANAGER} --field-selector spec.nodeName={name}): a GPU client "
                                 f"it waits for may not stop (gpu.deploy.* labels, DaemonSets of GPU clients), then "
                                 f"set another config and back, or restart its pod, and run the rollout again")
            return
        stuck_for = elapsed - current[1]
        if stuck_for < apply.pending_timeout:
            return
        pod = manager_running(apply.api, self.setup, name) or self.manager
        if pod is None:
            return   # nothing to restart: the wait ends with the hint of a missing MIG manager
        node = nodes.read(apply.api, name)
        stranded = untolerated_taints(pod, node)
        if stranded:
            raise StepFailed(f"node {name}: its MIG manager is stuck in pending for {self.config} ({stuck_for:.0f} s) "
                             f"and a restarted pod could not be scheduled past taint {', '.join(stranded)}; restart "
                             f"it once the taint is gone")
        meta = pod["metadata"]
        self.note = (f"its MIG manager stayed in state pending for {stuck_for:.0f} s (mig-parted up to v0.15.0 leaves "
                     f"pending after a failed wait for GPU clients to stop): run {apply.holder or '(none)'} restarted "
                     f"pod {meta['namespace']}/{meta['name']} once, whose successor applies {self.config} again")
        if apply.holder:
            nodes.update(apply.writer, name,
                         lambda found: _marked(record.recovery_patch(found, apply.holder, self.note)[0], apply.holder),
                         what=f"record the MIG manager restart on node {name}")
        try:
            apply.writer.delete(kube.pod_path(meta["namespace"], meta["name"]), what=f"restart MIG manager on {name}",
                                body={"preconditions": {"uid": meta["uid"]}})
        except kube.KubeError as exc:
            if not (exc.conflict or exc.not_found):
                raise
        self.restarted_at = elapsed
        apply.warn(f"node {name}: {self.note}")
        if apply.rollout_lock.get("events"):
            recorder = events.Recorder(apply.writer, apply.holder)
            recorder.emit(name, events.RECOVERED, events.recovered_note(apply.holder, self.note))
            for warning in recorder.wait():
                apply.warn(warning)


def _marked(patch: dict[str, Any] | None, holder: str) -> dict[str, Any] | None:
    if patch is not None:
        patch["metadata"].setdefault("annotations", {}).update(fence_policy.mark(holder))
    return patch


def apply_config(apply: ConfigApply) -> dict[str, Any]:
    """Set the label and (with ``wait``) follow the apply to ``success``; StepFailed for any other verdict."""
    for _ in range(CONFLICT_ATTEMPTS):
        try:
            return _apply_once(apply)
        except _Conflict:
            continue  # re-read the node and decide again (labels others wrote meanwhile are kept)
    raise StepFailed(f"node {apply.name}: the node changed under every one of {CONFLICT_ATTEMPTS} attempts to write "
                     f"its MIG config label (HTTP 409 Conflict each time); nothing was written")


def _apply_once(apply: ConfigApply) -> dict[str, Any]:
    api, name, config, checked, guard = apply.api, apply.name, apply.config, apply.checked, apply.guard
    writer = apply.writer
    node = nodes.read(api, name)
    model = nodes.require_mig_node(node)  # before reading the operator's settings: the clearer error first
    setup = discover(api, name, apply.operator_namespace, apply.config_map, need_strategy=False,
                     need_config=not checked)
    if not checked:
        validate(node, model, setup, config)
    current, state = nodes.mig_config(node), nodes.mig_state(node)
    result: dict[str, Any] = {"name": name, "config": config, "previous_config": current,
                              "previous_state": state, "config_map": f"{setup.namespace}/{setup.config_map}",
                              "transitions": [], "changed": False}

    decision = label_decision(current, state, config, apply.reapply)
    if decision.applied:
        result["state"] = state
        return result
    if decision.refusal:
        raise StepFailed(f"node {name}: {decision.refusal}", **result)
    retrigger = decision.retrigger

    # The plan saw a MIG manager running there: look for it now only to restart it, or if the apply hangs.
    manager = manager_running(api, setup, name) if not checked or retrigger else None
    if manager is None and apply.wait and (not checked or retrigger):
        raise StepFailed(f"node {name}: no running MIG manager pod (namespace {setup.namespace}, app="
                         f"{labels.APP_MIG_MANAGER}); nothing would apply the config. Is "
                         f"{labels.DEPLOY_MIG_MANAGER}=true on the node?", **result)

    if retrigger and manager is not None:
        stranded = untolerated_taints(manager, node)
        if stranded:
            raise StepFailed(f"node {name}: restarting its MIG manager to re-apply {config} would strand the node: "
                             f"the new pod could not be scheduled past taint {', '.join(stranded)} (the MIG manager's "
                             f"DaemonSet does not tolerate it)", **result)

    writes = decision.write
    if apply.diff and writes:
        result["diff"] = {
            "before_header": f"node/{name} labels", "after_header": f"node/{name} labels",
            "before": f"{labels.MIG_CONFIG}={current}\n{labels.MIG_CONFIG_STATE}={state}\n",
            "after": f"{labels.MIG_CONFIG}={config}\n",
        }
    if apply.check_mode:
        result["changed"] = writes
        return result

    started = time.monotonic()
    result["began"] = timestamps.micro_time_text()   # when duration_s starts, for the report's timeline
    version = node["metadata"]["resourceVersion"]
    if writes:
        # Clear the old state in the same write, so an old "success" is never taken for the new one.
        patch: dict[str, Any] = {"metadata": {"resourceVersion": version,
                                              "labels": {labels.MIG_CONFIG: config, labels.MIG_CONFIG_STATE: None}}}
        if apply.holder:
            patch["metadata"]["annotations"] = fence_policy.mark(apply.holder)
        try:
            # The writer checks the rollout lock right before the write.
            written = writer.patch(kube.node_path(name), patch, what=f"label node {name}")
        except kube.KubeError as exc:
            if not exc.conflict:
                raise
            raise _Conflict() from None
        version = written["metadata"]["resourceVersion"]
        result["changed"] = True
        if retrigger and manager is not None:
            meta = manager["metadata"]
            # That pod, not a replacement started meanwhile (which applies the new label on its own start).
            try:
                writer.delete(kube.pod_path(meta["namespace"], meta["name"]), what=f"restart MIG manager on {name}",
                              body={"preconditions": {"uid": meta["uid"]}})
            except kube.KubeError as exc:
                if not (exc.conflict or exc.not_found):
                    raise
            result["restarted_mig_manager"] = meta["name"]
    if not apply.wait:
        result["state"] = "" if writes else state
        return result

    looked = {"done": bool(manager) or not checked}

    def stop_check() -> None:
        guard.check(f"node {name}")
        if not looked["done"] and time.monotonic() - started >= MANAGER_LOOK_AFTER_S:
            looked["done"] = True
            if manager_running(api, setup, name) is None:
                raise StepFailed(f"node {name}: no MIG manager pod runs on the node any more (namespace "
                                 f"{setup.namespace}, app={labels.APP_MIG_MANAGER}), and MIG config {config} was not "
                                 f"applied after {MANAGER_LOOK_AFTER_S} s: nothing will apply it. Is "
                                 f"{labels.DEPLOY_MIG_MANAGER}=true on the node?", **result)

    unstick = PendingWatch(apply, setup, config, manager)
    outcome = follow(api, name, config, version, apply.timeout, started, stop_check=stop_check,
                     watchdog=unstick if apply.pending_timeout > 0 else None)
    if unstick.note:
        result["recovered"] = unstick.note
    if outcome.final != "success" and manager is None:
        manager = manager_running(api, setup, name)   # for the hints of a failure
    hints = _hints(setup, model, node, current, config, manager, checked)
    done = apply_verdict(result, outcome, started, apply.timeout, hints)
    lock = apply.rollout_lock
    if lock.get("events") and done.get("state") == "success":
        recorder = events.Recorder(writer, lock["holder"])
        recorder.emit(name, events.APPLIED, events.applied_note(lock["holder"], config, done.get("duration_s"),
                                                                done.get("state", "")))
        for warning in recorder.wait():
            apply.warn(warning)
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


def apply_verdict(result: dict[str, Any], outcome: FollowResult, started: float, timeout: float,
                  hints: dict[str, str] | None = None) -> dict[str, Any]:
    """The result of a followed apply: ``result`` with the transitions, the final state and the seconds spent
    in each state when it is ``success``; StepFailed naming the state, the time and the likely cause otherwise."""
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
        raise StepFailed(f"node {name}: the MIG manager failed to apply {result['config']} after {elapsed:.1f} s "
                         f"({spent}){paused_text}; its pod log says why{hint}", **result)
    hint = f"; {hints['pending']}" if result["state"] == "pending" and "pending" in hints else ""
    raise StepFailed(f"node {name}: MIG config {result['config']} not applied within {timeout:.0f} s; last state "
                     f"{result['state'] or '(none)'} ({spent}){paused_text}{hint}", **result)
