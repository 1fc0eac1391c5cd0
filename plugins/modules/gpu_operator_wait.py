#!/usr/bin/python
# gpu_operator_wait: wait until the ClusterPolicy is ready and its operands run what was asked.
# Docs, argument spec and the adapter to the core (migrollout) in one file; see plugins/module_utils/kube_task.py.

from __future__ import annotations

DOCUMENTATION = r"""
module: gpu_operator_wait
short_description: Wait until the NVIDIA GPU Operator reports ready and its operands run what was asked
description:
  - Waits until the ClusterPolicy's C(status.state) is C(ready), every operand DaemonSet it owns is fully
    rolled out (observed, updated and ready on every node it targets), and, with O(strategy), the device
    plugin and GPU feature discovery DaemonSets run that MIG strategy (a stale C(ready) from before an
    upgrade is not taken for the new one).
  - On timeout, fails naming what is not ready (the ClusterPolicy state, each DaemonSet's rollout, and up
    to five operand pods that are waiting, with their reason).
  - Fails at once, without waiting, when the API server refuses the credentials (401) or the identity's rights
    (403), or when the ClusterPolicy resource type does not exist (its CRD is not installed); keeps waiting
    through transient errors (the API server unreachable or overloaded).
  - Changes nothing.
version_added: "0.1.0"
seealso:
  - module: nvidia_mig.rollout.helm_release
  - module: nvidia_mig.rollout.mig_strategy_check
options:
  strategy:
    description: The MIG strategy the operands must run.
    type: str
    choices: [none, single, mixed]
  timeout:
    description: Seconds to wait.
    type: int
    default: 600
  driver_upgrade:
    description:
      - Also wait until NVIDIA's driver upgrade is over on every GPU node (no node left in a state of the driver
        upgrade state machine, C(nvidia.com/gpu-driver-upgrade-state), but C(upgrade-done); nodes excluded with
        C(nvidia.com/gpu-driver-upgrade.skip=true) do not count). A MIG rollout started during a driver upgrade
        collides with it (see C(nvidia_mig.rollout.mig_rollout_plan)). It may take hours on a large fleet.
    type: bool
    default: false
extends_documentation_fragment:
  - nvidia_mig.rollout.kube_connection
  - nvidia_mig.rollout.read_only
author: NVIDIA MIG rollout toolkit maintainers (@nvidia-mig-rollout)
"""

EXAMPLES = r"""
- name: Wait for the operator to roll out the mixed strategy
  gpu_operator_wait:
    strategy: mixed
    timeout: 900
"""

RETURN = r"""
state:
  description: The ClusterPolicy state (C(ready)).
  returned: success
  type: str
strategy:
  description: The MIG strategy the ClusterPolicy asks for.
  returned: success
  type: str
namespace:
  description: The operator's namespace.
  returned: success
  type: str
not_ready:
  description: What was not ready at the timeout.
  returned: failure
  type: list
  elements: str
duration_s:
  description: Seconds waited.
  returned: success
  type: float
"""

import time
from typing import Any

from ansible_collections.nvidia_mig.rollout.plugins.module_utils.kube_task import (
    TaskContext,
    TaskFailed,
    TaskSpec,
    run_module,
)

try:
    from migrollout import clusterpolicy, driver_upgrade, kube
    from migrollout.migsetup import CrdMissing, SetupError, read_policy
except ImportError:  # run_module reports the missing package
    pass

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "strategy": {"type": "str", "choices": ["none", "single", "mixed"]},
    "timeout": {"type": "int", "default": 600},
    "driver_upgrade": {"type": "bool", "default": False},
}
STRATEGY_OPERANDS = ("nvidia-device-plugin-daemonset", "gpu-feature-discovery")


def _env(ds: dict[str, Any], name: str) -> str | None:
    for container in ds["spec"]["template"]["spec"].get("containers") or []:
        for item in container.get("env") or []:
            if item.get("name") == name:
                return item.get("value")
    return None


def _rollout(ds: dict[str, Any]) -> str | None:
    """Why this DaemonSet is not fully rolled out (None when it is)."""
    status = ds.get("status") or {}
    desired = status.get("desiredNumberScheduled", 0)
    if status.get("observedGeneration", 0) < ds["metadata"].get("generation", 0):
        return "new spec not yet observed"
    if status.get("updatedNumberScheduled", 0) != desired or status.get("numberReady", 0) != desired:
        return (f"{status.get('updatedNumberScheduled', 0)}/{desired} updated, "
                f"{status.get('numberReady', 0)}/{desired} ready")
    return None


def fatal(exc: kube.KubeError) -> bool:
    """Errors that waiting cannot cure: credentials refused, rights missing, a resource type that does not exist."""
    return exc.status in (401, 403, 404)


def problems(ctx: TaskContext, strategy: str | None) -> tuple[list[str], dict[str, Any] | None]:
    try:
        return _problems(ctx, strategy)
    except CrdMissing:
        raise
    except SetupError as exc:
        return [str(exc)], None
    except kube.KubeError as exc:
        if fatal(exc):
            raise
        return [f"the API server did not answer: {exc.one_line()}"], None


def _problems(ctx: TaskContext, strategy: str | None) -> tuple[list[str], dict[str, Any] | None]:
    policy = read_policy(ctx.api)
    found = []
    state = (policy.get("status") or {}).get("state", "")
    if state != "ready":
        found.append(f"ClusterPolicy {policy['metadata']['name']} state is {state or 'unset'}")
    # The operator's own account of a failed reconcile (a call its RBAC denies, an invalid setting).
    for condition in (policy.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Error" and condition.get("status") == "True":
            found.append(f"the operator reports {condition.get('reason') or 'an error'}: "
                         f"{' '.join(str(condition.get('message', '')).split())[:400]}")
    if strategy and clusterpolicy.strategy(policy) != strategy:
        found.append(f"ClusterPolicy asks for the {clusterpolicy.strategy(policy)} strategy, not {strategy}")
    namespace = clusterpolicy.namespace(policy)
    daemonsets, _ = ctx.api.list(kube.namespaced_path("apps/v1", "daemonsets", namespace),
                                 what=f"list operand DaemonSets in {namespace}")
    owned = [ds for ds in daemonsets if any(ref.get("kind") == "ClusterPolicy"
                                            for ref in ds["metadata"].get("ownerReferences") or [])]
    names = {ds["metadata"]["name"] for ds in owned}
    for operand in STRATEGY_OPERANDS:
        if operand not in names:
            found.append(f"DaemonSet {namespace}/{operand} does not exist yet")
    for ds in owned:
        name = ds["metadata"]["name"]
        if strategy and name in STRATEGY_OPERANDS and _env(ds, "MIG_STRATEGY") != strategy:
            found.append(f"DaemonSet {namespace}/{name} still runs MIG_STRATEGY={_env(ds, 'MIG_STRATEGY')}")
        why = _rollout(ds) or clusterpolicy.operand_lag(policy, ds)
        if why:
            found.append(f"DaemonSet {namespace}/{name}: {why}")
    if found:
        found.extend(_unready_pods(ctx, namespace))
    elif ctx.params.get("driver_upgrade"):
        listed, _ = ctx.api.list("/api/v1/nodes", what="list nodes")
        upgrading = driver_upgrade.under_way(listed)
        if upgrading:
            shown = ", ".join(u.sentence() for u in upgrading[:5]) + (" ..." if len(upgrading) > 5 else "")
            found.append(f"NVIDIA's driver upgrade is under way on {len(upgrading)} node(s): {shown}")
    return found, policy


def _unready_pods(ctx: TaskContext, namespace: str) -> list[str]:
    pods, _ = ctx.api.list(kube.pods_path(namespace), what=f"list operand pods in {namespace}")
    notes = []
    for pod in pods:
        for status in pod.get("status", {}).get("containerStatuses") or []:
            waiting = (status.get("state") or {}).get("waiting")
            if waiting:
                notes.append(f"pod {pod['metadata']['name']} on {pod['spec'].get('nodeName')}: {waiting.get('reason')}"
                             f" ({waiting.get('message', '')[:120]})")
    return notes[:5]


def run(ctx: TaskContext) -> dict[str, Any]:
    params = ctx.params
    started = time.monotonic()
    deadline = started + params["timeout"]
    while True:
        try:
            found, policy = problems(ctx, params.get("strategy"))
        except CrdMissing as exc:
            raise TaskFailed(str(exc)) from None
        if not found:
            return {"changed": False, "state": "ready", "strategy": clusterpolicy.strategy(policy),
                    "namespace": clusterpolicy.namespace(policy), "duration_s": round(time.monotonic() - started, 3)}
        if time.monotonic() >= deadline:
            raise TaskFailed(f"the GPU Operator is not ready after {params['timeout']} s: " + "; ".join(found),
                             not_ready=found)
        # Wait for the next change of the ClusterPolicy (or 2 s, for DaemonSet progress) instead of a blind sleep.
        try:
            for _ in ctx.api.watch(clusterpolicy.path(), what="watch ClusterPolicies",
                                   resource_version=(policy or {}).get("metadata", {}).get("resourceVersion"),
                                   timeout_seconds=2):
                break
        except kube.KubeError as exc:
            if fatal(exc):
                raise
            time.sleep(1)  # transient (unreachable, overloaded, an expired resourceVersion): look again


SPEC = TaskSpec("gpu_operator_wait", ARGUMENT_SPEC, run)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
