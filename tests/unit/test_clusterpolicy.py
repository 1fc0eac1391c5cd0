"""Reading the ClusterPolicy."""

import pytest

from migrollout import clusterpolicy


@pytest.mark.parametrize("policy, strategy", [
    ({"spec": {"mig": {"strategy": "mixed"}}}, "mixed"),
    ({"spec": {"mig": {"strategy": "single"}}}, "single"),
    # No strategy: the operator sets no MIG_STRATEGY and the device plugin's default, none, applies.
    ({"spec": {"mig": {}}}, "none"),
    ({"spec": {"mig": {"strategy": ""}}}, "none"),
    ({"spec": {}}, "none"),
    (None, "none"),
])
def test_strategy(policy, strategy):
    assert clusterpolicy.strategy(policy) == strategy
