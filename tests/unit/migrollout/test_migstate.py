"""What setting a node's MIG config label takes, from its label, its state and whether to re-apply."""

import pytest

from migrollout.migstate import LabelDecision, label_decision

WRITE = LabelDecision(write=True)
RETRIGGER = LabelDecision(write=True, retrigger=True)
WAIT = LabelDecision()          # nothing to write: follow the apply under way
APPLIED = LabelDecision(applied=True)


@pytest.mark.parametrize(("current", "state", "wanted", "reapply", "expected"), [
    # Another config: write it, unless the MIG manager is busy with the current one.
    ("all-disabled", "success", "all-1g.10gb", False, WRITE),
    ("all-disabled", "failed", "all-1g.10gb", False, WRITE),
    ("all-disabled", "", "all-1g.10gb", False, WRITE),
    ("all-disabled", "success", "all-1g.10gb", True, WRITE),
    ("all-disabled", "pending", "all-1g.10gb", False, "busy applying all-disabled (state pending)"),
    ("all-disabled", "rebooting", "all-1g.10gb", True, "busy applying all-disabled (state rebooting)"),
    # The same config: done, refused, waited for, or re-applied by restarting the MIG manager.
    ("all-1g.10gb", "success", "all-1g.10gb", False, APPLIED),
    ("all-1g.10gb", "success", "all-1g.10gb", True, RETRIGGER),
    ("all-1g.10gb", "failed", "all-1g.10gb", False, "already set and its last apply failed"),
    ("all-1g.10gb", "failed", "all-1g.10gb", True, RETRIGGER),
    ("all-1g.10gb", "pending", "all-1g.10gb", False, WAIT),
    ("all-1g.10gb", "pending", "all-1g.10gb", True, WAIT),
    ("all-1g.10gb", "rebooting", "all-1g.10gb", True, WAIT),
    ("all-1g.10gb", "", "all-1g.10gb", False, WAIT),
])
def test_label_decision(current, state, wanted, reapply, expected):
    decision = label_decision(current, state, wanted, reapply)
    if isinstance(expected, str):
        assert expected in decision.refusal
        assert not decision.write and not decision.applied
    else:
        assert decision == expected
