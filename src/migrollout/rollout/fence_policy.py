"""The exact fence: the API server itself refuses a write that names a run which no longer holds the Lease.

The time-based fence (``rollout/fence.py``) checks, before each write, that the run's hold on its Lease is
fresh, and bounds the write by what is left of it. It cannot see a process frozen between that check and the
send. The ValidatingAdmissionPolicy of ``rbac/mig-rollout-fence.yaml`` closes that gap: every node write and
Eviction of the rollout carries ``FENCE_ANNOTATION`` = ``<run>/<value new with each write>``, and the policy
admits it only while ``<run>`` holds the Lease. This module makes that annotation and tells whether the policy
is in force.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from typing import Any

from migrollout.kube import KubeClient, KubeError
from migrollout.rollout.lock import LEASE_NAME

FENCE_ANNOTATION = "mig-rollout.nvidia-mig-rollout.io/fence"
POLICY = "mig-rollout-fence"
POLICY_PATH = f"/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/{POLICY}"
BINDING_PATH = f"/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings/{POLICY}"
EXACT, TIME_BASED = "exact", "time-based"

_writes = itertools.count()


def mark(holder: str) -> dict[str, str]:
    """The annotation a fenced write carries: the run, and a value no earlier write had (so the policy sees a
    change even when the node already names this run)."""
    return {FENCE_ANNOTATION: f"{holder}/{time.time_ns():x}.{os.getpid():x}.{next(_writes):x}"}


def run_of(value: str) -> str:
    return value.split("/", 1)[0]


@dataclass(frozen=True)
class FenceMode:
    mode: str       # EXACT or TIME_BASED
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"mode": self.mode, "reason": self.reason}

    def sentence(self) -> str:
        return f"{self.mode} ({self.reason})"


def judge(policy: dict[str, Any] | None, binding: dict[str, Any] | None, lease_namespace: str,
          lease_name: str) -> FenceMode:
    """Whether the policy and its binding, as read, enforce the fence on this rollout's Lease."""
    if policy is None:
        return FenceMode(TIME_BASED, f"the admission policy {POLICY} is not installed (rbac/mig-rollout-fence.yaml)")
    if binding is None:
        return FenceMode(TIME_BASED, f"the admission policy {POLICY} has no binding {POLICY}")
    spec = binding.get("spec") or {}
    ref = spec.get("paramRef") or {}
    if "Deny" not in (spec.get("validationActions") or []):
        return FenceMode(TIME_BASED, f"the binding {POLICY} does not deny (validationActions "
                                     f"{spec.get('validationActions')})")
    if (ref.get("name"), ref.get("namespace")) != (lease_name, lease_namespace):
        return FenceMode(TIME_BASED, f"the binding {POLICY} watches Lease {ref.get('namespace')}/{ref.get('name')}, "
                                     f"not this rollout's {lease_namespace}/{lease_name}")
    warnings = ((policy.get("status") or {}).get("typeChecking") or {}).get("expressionWarnings") or []
    if warnings:
        return FenceMode(TIME_BASED, f"the admission policy {POLICY} has expression warnings: {warnings[0]}")
    return FenceMode(EXACT, f"the API server refuses a write of a run that no longer holds Lease "
                            f"{lease_namespace}/{lease_name} (admission policy {POLICY})")


def in_force(api: KubeClient, lease_namespace: str, lease_name: str = LEASE_NAME) -> FenceMode:
    """Read the policy and its binding (a 403 counts as not known, hence time-based)."""
    try:
        policy = api.get_or_none(POLICY_PATH, what=f"read ValidatingAdmissionPolicy {POLICY}")
        binding = api.get_or_none(BINDING_PATH, what=f"read ValidatingAdmissionPolicyBinding {POLICY}")
    except KubeError as exc:
        if exc.status in (401, 403):
            return FenceMode(TIME_BASED, f"cannot tell whether the admission policy {POLICY} is in force: "
                                         f"{exc.one_line()}")
        raise
    return judge(policy, binding, lease_namespace, lease_name)
