"""Following the MIG manager's state label on one node, with a watch (no fixed sleeps)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from migrollout import labels, nodes
from migrollout.catalogue import GpuModel
from migrollout.kube import KubeClient, KubeError
from migrollout.migconfig.document import MigPartedConfig
from migrollout.migconfig.layouts import resolve
from migrollout.timestamps import micro_time_text
from migrollout.verification import Comparison, Expectation, compare

# While a stop check is given, a watch is re-opened at least this often so the check runs even when the node
# does not change (a long MIG apply).
STOP_CHECK_EVERY_S = 10


# The MIG manager is working on the config its label names: a new label now would race with it.
BUSY_STATES = ("pending", "rebooting")


@dataclass(frozen=True)
class LabelDecision:
    """What setting a node's MIG config label takes: nothing (``applied``: the config is there, in ``success``),
    the label write (which clears the stale state), a restart of the MIG manager as well (``retrigger``: it
    acts only on a change of the label, so re-applying the same config needs one), or nothing because the
    write must not happen now (``refusal``, a sentence)."""

    write: bool = False
    retrigger: bool = False
    applied: bool = False
    refusal: str = ""


def label_decision(current: str, state: str, wanted: str, reapply: bool) -> LabelDecision:
    """The decision for a node labelled ``current`` in state ``state`` that should be at ``wanted``."""
    if current == wanted:
        if state == "success" and not reapply:
            return LabelDecision(applied=True)
        if state == "failed" and not reapply:
            return LabelDecision(refusal=f"MIG config {wanted} is already set and its last apply failed; the MIG "
                                         f"manager reacts only to a change of the label: set reapply (in a rollout, "
                                         f"mig_rollout_reapply_failed) to restart it once the cause is fixed")
        retrigger = reapply and state not in BUSY_STATES
        return LabelDecision(write=retrigger, retrigger=retrigger)   # otherwise: wait for the apply under way
    if state in BUSY_STATES:
        return LabelDecision(refusal=f"the MIG manager is busy applying {current} (state {state}); changing the "
                                     f"label now would race with it. Wait for it to finish, or, if it is stuck, "
                                     f"restart the nvidia-mig-manager pod on the node")
    return LabelDecision(write=True)


@dataclass
class Transition:
    state: str          # a mig.config.state value, or "node-not-ready" / "node-ready" during reboots
    at: str
    elapsed_s: float

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "at": self.at, "elapsed_s": round(self.elapsed_s, 3)}


@dataclass
class FollowResult:
    node: dict[str, Any]
    final: str                      # success, failed, or "" on timeout
    transitions: list[Transition] = field(default_factory=list)

    def in_state_since(self) -> tuple[str, float] | None:
        """The MIG manager's current state and the seconds (since following started) it entered it."""
        marks = [t for t in self.transitions if not t.state.startswith("node-")]
        return (marks[-1].state, marks[-1].elapsed_s) if marks else None

    def state_durations(self, until: float) -> dict[str, float]:
        """Seconds spent in each state, in order of appearance."""
        durations: dict[str, float] = {}
        marks = [(t.state, t.elapsed_s) for t in self.transitions if not t.state.startswith("node-")]
        for index, (state, start) in enumerate(marks):
            end = marks[index + 1][1] if index + 1 < len(marks) else until
            durations[state or "(none)"] = round(durations.get(state or "(none)", 0.0) + end - start, 3)
        return durations


def follow(api: KubeClient, name: str, config: str, since_version: str, timeout: float,
           started: float | None = None, stop_check: Callable[[], None] | None = None,
           watchdog: Callable[[FollowResult, float], None] | None = None) -> FollowResult:
    """Watch node ``name`` from ``since_version`` until the MIG manager reports a final state
    for ``config`` (the label must still be ``config``), or ``timeout`` seconds pass. ``stop_check`` (the
    rollout's fence) runs on every change and at least every STOP_CHECK_EVERY_S seconds; it raises to stop.
    ``watchdog(result so far, seconds since started)`` runs as often, to act on a state that lasts too long."""
    started = time.monotonic() if started is None else started
    result = FollowResult(node={}, final="")

    def check() -> None:
        if stop_check is not None:
            stop_check()
        if watchdog is not None:
            watchdog(result, time.monotonic() - started)

    deadline = started + timeout
    last_state: str | None = None
    last_ready: bool | None = None
    version = since_version
    while time.monotonic() < deadline:
        check()
        remaining = max(1, int(deadline - time.monotonic()))
        try:
            for kind, node in api.watch("/api/v1/nodes", resource_version=version, what=f"watch node {name}",
                                        field_selector=f"metadata.name={name}",
                                        timeout_seconds=min(remaining, STOP_CHECK_EVERY_S
                                                            if stop_check or watchdog else 300)):
                check()
                if kind == "BOOKMARK":
                    version = node.get("metadata", {}).get("resourceVersion", version)
                    continue
                if kind == "DELETED":
                    raise nodes.NodeGone(f"node {name} was deleted while its MIG config was being applied")
                version = node["metadata"]["resourceVersion"]
                result.node = node
                now = time.monotonic() - started
                ready = nodes.is_ready(node)
                if last_ready is not None and ready != last_ready:
                    result.transitions.append(Transition("node-ready" if ready else "node-not-ready", micro_time_text(), now))
                last_ready = ready
                state = nodes.mig_state(node)
                if state != last_state:
                    result.transitions.append(Transition(state, micro_time_text(), now))
                    last_state = state
                if nodes.mig_config(node) != config:
                    raise nodes.NodeError(f"node {name}: someone changed {labels.MIG_CONFIG} to "
                                          f"{nodes.mig_config(node)!r} while {config} was being applied")
                if state in labels.MIG_FINAL_STATES and ready:
                    result.final = state
                    return result
                if time.monotonic() >= deadline:
                    return result
        except KubeError as exc:
            if not exc.gone:
                raise
            version = ""  # expired: the next watch starts with the node as it is now
    return result


def wait_advertised(api: KubeClient, name: str, config: str, expectation: Expectation, timeout: float,
                    node: dict[str, Any] | None = None, stop_check: Callable[[], None] | None = None,
                    ) -> tuple[Comparison, dict[str, Any]]:
    """Wait until node ``name`` advertises what ``config`` must produce (GPU feature discovery and the device
    plugin catch up after the MIG manager's success), or ``timeout`` seconds pass: the last comparison and
    the node as last seen. With ``node`` (as the caller just read it) it is judged first and watched from
    its version; without, the watch's first event is the node as it is now (no separate read)."""
    check = stop_check or (lambda: None)
    deadline = time.monotonic() + timeout
    version = node["metadata"]["resourceVersion"] if node is not None else None
    comparison = compare(node, config, expectation) if node is not None else None
    while comparison is None or (comparison.mismatches and time.monotonic() < deadline):
        check()
        try:
            for kind, current in api.watch("/api/v1/nodes", resource_version=version, what=f"watch node {name}",
                                           field_selector=f"metadata.name={name}",
                                           timeout_seconds=max(1, min(int(deadline - time.monotonic()),
                                                                      STOP_CHECK_EVERY_S))):
                check()
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED":
                    raise nodes.NodeGone(f"node {name} was deleted while waiting for it to advertise {config}")
                version, node = current["metadata"]["resourceVersion"], current
                comparison = compare(current, config, expectation)
                if not comparison.mismatches or time.monotonic() >= deadline:
                    break
        except KubeError as exc:
            if not exc.gone:
                raise
            version = None  # expired: the next watch starts with the node as it is now
        if comparison is None and time.monotonic() >= deadline:
            node = nodes.read(api, name)
            comparison = compare(node, config, expectation)
    assert node is not None
    return comparison, node


def mode_change(config: MigPartedConfig, current: str, wanted: str, model: GpuModel, gpu_count: int) -> str:
    """"on" or "off" when going from config ``current`` to ``wanted`` switches MIG mode on some GPU ("" when not,
    or when it cannot be told)."""
    if current not in config or wanted not in config:
        return ""
    try:
        before, after = resolve(config, current, model, gpu_count), resolve(config, wanted, model, gpu_count)
    except (KeyError, ValueError):
        return ""
    for have, want in zip(before, after, strict=False):
        if want is not None and (have.mig_enabled if have is not None else False) != want.mig_enabled:
            return "on" if want.mig_enabled else "off"
    return ""


def reboot_allowed(manager_pod: dict[str, Any]) -> bool:
    """Whether this MIG manager pod may reboot its node (WITH_REBOOT=true in its environment)."""
    for container in (manager_pod.get("spec") or {}).get("containers") or []:
        for item in container.get("env") or []:
            if item.get("name") == "WITH_REBOOT" and str(item.get("value", "")).lower() == "true":
                return True
    return False
