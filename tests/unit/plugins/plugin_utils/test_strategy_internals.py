"""The window strategy's hold on ansible-core internals: every entry of StrategyInternals.CONTRACT exists in the
installed ansible-core as the strategy expects it, and neither the adapter nor the strategy reaches for anything
the contract does not list (read from their source: nothing runs)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from ansible_collections.nvidia_mig.rollout.plugins.plugin_utils.strategy_internals import CONTRACT

REPO = Path(__file__).resolve().parents[4]
ADAPTER = REPO / "plugins" / "plugin_utils" / "strategy_internals.py"
STRATEGY = REPO / "plugins" / "strategy" / "mig_window.py"


def owners() -> dict[str, type]:
    from ansible.executor.play_iterator import PlayIterator
    from ansible.executor.stats import AggregateStats
    from ansible.executor.task_queue_manager import TaskQueueManager
    from ansible.inventory.host import Host
    from ansible.plugins.strategy import StrategyBase
    from ansible.plugins.strategy.free import StrategyModule as FreeStrategy
    from ansible.vars.manager import VariableManager

    return {"StrategyBase": StrategyBase, "TaskQueueManager": TaskQueueManager, "AggregateStats": AggregateStats,
            "PlayIterator": PlayIterator, "Host": Host, "FreeStrategy": FreeStrategy,
            "VariableManager": VariableManager}


def present(owner: type, attribute: str) -> bool:
    """A method or class attribute, or an attribute its __init__ sets."""
    if hasattr(owner, attribute):
        return True
    return f"self.{attribute}" in inspect.getsource(owner.__init__)


@pytest.mark.parametrize(("owner", "attribute"), [(owner, attribute) for owner, attribute, _ in CONTRACT],
                         ids=[f"{owner}.{attribute}" for owner, attribute, _ in CONTRACT])
def test_every_internal_the_strategy_relies_on_is_there(owner, attribute):
    assert present(owners()[owner], attribute)


def test_what_the_contract_says_of_them_holds():
    found = owners()
    loop = inspect.getsource(found["FreeStrategy"].run)
    assert "hosts_left = self.get_hosts_left(iterator)" in loop          # asked at every turn
    assert "host = hosts_left[last_host]" in loop                         # an index kept across turns
    assert "peek" in inspect.signature(found["PlayIterator"].get_next_task_for_host).parameters
    assert "self._results: deque" in inspect.getsource(found["StrategyBase"].__init__)  # the results thread fills it
    assert "increment('rescued'" in inspect.getsource(found["StrategyBase"]._process_pending_results)
    assert isinstance(found["Host"]("x").vars, dict)
    assert list(inspect.signature(found["StrategyBase"]._queue_task).parameters) == [
        "self", "host", "task", "task_vars", "play_context"]


def private_attributes(path: Path) -> set[str]:
    return {node.attr for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Attribute)
            and node.attr.startswith("_") and not node.attr.startswith("__")}


def test_the_adapter_touches_only_what_the_contract_lists():
    listed = {attribute for _, attribute, _ in CONTRACT}
    assert private_attributes(ADAPTER) - {"_strategy"} <= listed


def test_the_strategy_touches_ansible_cores_internals_only_through_the_adapter():
    tree = ast.parse(STRATEGY.read_text())
    own = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)} | {"_window", "_core"}
    assert private_attributes(STRATEGY) - own == set()
    # The attributes read directly off a Host or an iterator are the adapter's too.
    public = {"vars", "get_next_task_for_host", "is_failed", "_play"}
    assert not {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)} & public
