"""NVIDIA's driver upgrade controller, as the rollout sees it: the state it keeps on each GPU node.

The GPU Operator restarts the driver on every GPU node when the driver's DaemonSet changes (a chart upgrade,
a new driver version, and any change to the ClusterPolicy's operand template such as
``daemonsets.tolerations``) while ``driver.upgradePolicy.autoUpgrade`` is on. Its state machine
(k8s-operator-libs ``pkg/upgrade``, the version the pinned operator uses) walks each node through the states below, in the node label
``nvidia.com/gpu-driver-upgrade-state``, cordoning it and deleting its GPU pods on the way, a few nodes at a
time, for as long as it takes (hours on a large fleet). A MIG rollout and a driver upgrade on the same nodes
would together take more of a pool out of service than either's budget, and a MIG apply while the driver
restarts fails; so the rollout does not start while one is under way in its scope, and the window does not
start a node whose upgrade is pending.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from migrollout import timestamps

STATE_LABEL = "nvidia.com/gpu-driver-upgrade-state"
SKIP_LABEL = "nvidia.com/gpu-driver-upgrade.skip"
EVENT_REASON = "GPUDriverUpgrade"
EVENTS_NAMESPACE = "default"   # where client-go's recorder puts the Events of cluster-scoped objects (Nodes)

DONE = "upgrade-done"
FAILED = "upgrade-failed"
# Every state between "this node's driver is out of date" and "its new driver is validated and the node is back".
IN_PROGRESS = (
    "upgrade-required",          # the driver pod is out of date; the node waits for a free upgrade slot
    "cordon-required",           # the controller cordons the node next
    "wait-for-jobs-required",    # waits for the pods its waitForCompletion selector names
    "pod-deletion-required",     # deletes the node's GPU pods
    "drain-required",            # drains the node (when drain is enabled)
    "pod-restart-required",      # restarts the driver pod
    "validation-required",       # waits for the validator on the node
    "uncordon-required",         # uncordons the node (unless it was cordoned before the upgrade)
)
# What the rollout does about a node in each state (the plan's refusal and the closing note quote it).
ACTION = {
    "": "none: no driver upgrade on this node",
    DONE: "none: its driver upgrade is done",
    FAILED: "refuse the node: its driver upgrade failed (the node may stay cordoned); fix the driver first",
    **{state: "wait (mig_rollout_capacity_policy: wait) or refuse the run: a driver upgrade is under way"
       for state in IN_PROGRESS},
}


def state_of(node: Mapping[str, Any]) -> str:
    return ((node.get("metadata") or {}).get("labels") or {}).get(STATE_LABEL, "")


def in_progress(state: str) -> bool:
    """Whether the controller is still working on (or will soon start on) the node. A state this version does
    not know is taken as in progress: the controller is doing something to the node."""
    return state not in ("", DONE, FAILED)


@dataclass(frozen=True)
class UpgradeState:
    node: str
    state: str

    def sentence(self) -> str:
        return f"{self.node} ({self.state})"


def skipped(node: Mapping[str, Any]) -> bool:
    """An admin excluded the node from driver upgrades: the controller leaves it in ``upgrade-required`` for good
    and never cordons it, so it is no upgrade under way."""
    return ((node.get("metadata") or {}).get("labels") or {}).get(SKIP_LABEL) == "true"


def under_way(nodes: Iterable[Mapping[str, Any]]) -> list[UpgradeState]:
    """The nodes whose driver upgrade is under way, by name."""
    found = [UpgradeState(n["metadata"]["name"], state_of(n)) for n in nodes
             if not (skipped(n) and state_of(n) == "upgrade-required")]
    return sorted((s for s in found if in_progress(s.state)), key=lambda s: s.node)


def refusal(upgrading: list[UpgradeState], limit: int = 10) -> str:
    """One sentence naming the nodes whose driver upgrade is under way (the first ``limit``) and their states."""
    shown = ", ".join(s.sentence() for s in upgrading[:limit])
    more = f" and {len(upgrading) - limit} more" if len(upgrading) > limit else ""
    return (f"NVIDIA's driver upgrade is under way on {len(upgrading)} node(s) in the rollout's scope: {shown}{more}; "
            f"the GPU Operator cordons and drains them one after another, and a MIG rollout now would take more of "
            f"a pool out of service than its budget allows and race with the driver restart. Wait for "
            f"{STATE_LABEL}={DONE} on every node (gpu_operator_wait_for_driver_upgrade in the operator playbook), "
            f"or run with mig_rollout_capacity_policy: wait to have the rollout wait for it")


def during_run(events: Iterable[Mapping[str, Any]], since: str) -> dict[str, list[str]]:
    """What the driver upgrade controller did to each node from ``since`` (an RFC 3339 time) on: its
    GPUDriverUpgrade Events' messages, oldest first, by node (events.k8s.io/v1 or core/v1 Events)."""
    start = timestamps.parse(since)
    found: dict[str, list[tuple[Any, str]]] = {}
    for event in events:
        if event.get("reason") != EVENT_REASON:
            continue
        regarding = event.get("regarding") or event.get("involvedObject") or {}
        if regarding.get("kind") != "Node":
            continue
        at = timestamps.parse(event.get("eventTime") or event.get("deprecatedLastTimestamp")
                              or event.get("lastTimestamp") or (event.get("metadata") or {}).get("creationTimestamp"))
        if at is None or (start is not None and at < start):
            continue
        message = event.get("note") or event.get("message") or ""
        found.setdefault(regarding.get("name", ""), []).append((at, message))
    # Events of the same second keep the API's order (their names grow with time): a stable sort by time only.
    return {node: [message for _, message in sorted(entries, key=lambda entry: entry[0])]
            for node, entries in sorted(found.items())}


# -- what restarts the driver everywhere ---------------------------------------------------------------------------

# Chart values that reach the driver DaemonSet's pod template, whose change the upgrade controller answers by
# restarting the driver on every GPU node: the driver's own settings (its upgrade policy aside, which only steers
# the controller), and what the operator puts on every operand DaemonSet (tolerations, labels, annotations,
# priority class).
DRIVER_TEMPLATE_VALUES = ("driver", "daemonsets")
NOT_IN_TEMPLATE = (("driver", "upgradePolicy"),)


def _flatten(values: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if isinstance(values, Mapping) and values:
        flat: dict[tuple[str, ...], Any] = {}
        for key, value in values.items():
            flat.update(_flatten(value, (*path, str(key))))
        return flat
    return {path: values}


def _manages_driver(values: Mapping[str, Any]) -> bool:
    driver = values.get("driver") or {}
    policy = driver.get("upgradePolicy") or {}
    return driver.get("enabled", True) is not False and policy.get("autoUpgrade", True) is not False


def restart_reasons(deployed: Mapping[str, Any] | None, wanted: Mapping[str, Any], deployed_chart: str,
                    wanted_chart: str) -> list[str]:
    """Why installing ``wanted`` (chart values and chart ``<name>-<version>``) over what is deployed makes NVIDIA's
    driver upgrade controller restart the driver on every GPU node, one sentence per cause; empty when it does not
    (a first install, the operator not managing the driver or not upgrading it automatically, no change that
    reaches the driver's pod template). ``deployed`` is None when nothing is installed."""
    if deployed is None or not _manages_driver(wanted) or not _manages_driver(deployed):
        return []
    reasons = []
    if deployed_chart and wanted_chart and deployed_chart != wanted_chart:
        reasons.append(f"the chart changes from {deployed_chart} to {wanted_chart} (its driver and operator images "
                       f"with it)")
    before, after = _flatten(dict(deployed)), _flatten(dict(wanted))
    for path in sorted(set(before) | set(after)):
        if not path or path[0] not in DRIVER_TEMPLATE_VALUES:
            continue
        if any(path[:len(skip)] == skip for skip in NOT_IN_TEMPLATE):
            continue
        if before.get(path) != after.get(path):
            reasons.append(f"{'.'.join(path)} changes from {before.get(path)!r} to {after.get(path)!r}")
    return reasons


def restart_sentence(reasons: list[str], limit: int = 5) -> str:
    shown = "; ".join(reasons[:limit]) + (f"; and {len(reasons) - limit} more" if len(reasons) > limit else "")
    return (f"this change restarts the NVIDIA driver on every GPU node: {shown}. NVIDIA's driver upgrade controller "
            f"(driver.upgradePolicy.autoUpgrade) will cordon each node, delete its GPU pods and restart its driver, "
            f"a few nodes at a time, for as long as that takes on the whole fleet")


def report_lines(during: Mapping[str, list[str]], limit: int = 10) -> list[str]:
    """What the driver upgrade controller did during the run, for the report's table (nothing: no line)."""
    if not during:
        return []
    lines = [f"NVIDIA's driver upgrade controller acted on {len(during)} node(s) during the run "
             f"({EVENT_REASON} Events):"]
    for node, messages in list(during.items())[:limit]:
        lines.append(f"  {node}: {len(messages)} event(s), last: {messages[-1]}")
    if len(during) > limit:
        lines.append(f"  ... and {len(during) - limit} more node(s)")
    return lines
