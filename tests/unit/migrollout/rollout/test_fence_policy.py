"""The exact fence: the annotation fenced writes carry, and whether the admission policy is in force."""

from pathlib import Path

import pytest
import yaml

from migrollout.rollout import fence_policy

POLICY_FILE = Path(__file__).resolve().parents[4] / "rbac" / "mig-rollout-fence.yaml"


def shipped():
    documents = [d for d in yaml.safe_load_all(POLICY_FILE.read_text()) if d]
    return ({d["kind"]: d for d in documents}["ValidatingAdmissionPolicy"],
            {d["kind"]: d for d in documents}["ValidatingAdmissionPolicyBinding"])


def test_every_mark_is_new_and_names_its_run():
    first, second = fence_policy.mark("run-a"), fence_policy.mark("run-a")
    assert first != second
    assert {fence_policy.run_of(v) for v in (*first.values(), *second.values())} == {"run-a"}


def test_the_shipped_policy_and_binding_make_the_fence_exact():
    policy, binding = shipped()
    judged = fence_policy.judge(policy, binding, "gpu-operator", "mig-rollout")
    assert judged.mode == fence_policy.EXACT
    # The policy's expressions name the annotation the toolkit writes.
    assert fence_policy.FENCE_ANNOTATION in yaml.safe_dump(policy)


@pytest.mark.parametrize(("change", "why"), [
    (lambda p, b: (None, b), "not installed"),
    (lambda p, b: (p, None), "has no binding"),
    (lambda p, b: (p, {**b, "spec": {**b["spec"], "validationActions": ["Warn"]}}), "does not deny"),
    (lambda p, b: (p, {**b, "spec": {**b["spec"], "paramRef": {"name": "x", "namespace": "y"}}}), "watches Lease y/x"),
    (lambda p, b: ({**p, "status": {"typeChecking": {"expressionWarnings": [{"warning": "no such field"}]}}}, b),
     "expression warnings"),
])
def test_anything_less_is_time_based_and_says_why(change, why):
    policy, binding = change(*shipped())
    judged = fence_policy.judge(policy, binding, "gpu-operator", "mig-rollout")
    assert judged.mode == fence_policy.TIME_BASED and why in judged.reason
