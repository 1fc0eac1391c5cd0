# The one place the mig_window strategy reaches into ansible-core beyond the plugin API.
#
# The window strategy runs the free strategy's loop and decides, at every turn of it, which hosts the loop may
# run. For that it must see what the loop sees: which hosts have a task queued or running, which failed, were
# rescued or are unreachable, whether a result waits to be processed, and what a host's next task is. ansible-core
# exposes none of it as API, so every such read or call goes through StrategyInternals below, and
# tests/unit/plugins/plugin_utils/test_strategy_internals.py checks each entry of CONTRACT against the installed
# ansible-core (`make matrix` runs it on each supported release). A change of ansible-core that breaks one fails
# that test by name, instead of a rollout.

from __future__ import annotations

from typing import Any

# (owner, attribute, what the strategy relies on). Owners: StrategyBase (the strategy itself), TaskQueueManager
# (strategy._tqm), AggregateStats (tqm._stats), PlayIterator (the iterator), Host, FreeStrategy (its run loop).
CONTRACT: tuple[tuple[str, str, str], ...] = (
    ("StrategyBase", "_blocked_hosts", "dict of host name -> True while a task of that host is queued or running"),
    ("StrategyBase", "_results", "the deque the results thread fills; not empty = a result waits to be processed"),
    ("StrategyBase", "_workers", "one slot per fork: its length is the number of forks"),
    ("StrategyBase", "_tqm", "the run's TaskQueueManager"),
    ("StrategyBase", "_inventory", "the run's InventoryManager (get_host(name))"),
    ("StrategyBase", "_variable_manager", "the run's VariableManager (get_vars, set_nonpersistent_facts)"),
    ("StrategyBase", "_queue_task", "(host, task, task_vars, play_context): forks the worker of one task; the "
                                    "strategy overrides it"),
    ("StrategyBase", "_set_hosts_cache", "(play): fills _hosts_cache with the play's host names, in order"),
    ("StrategyBase", "_hosts_cache", "the play's host names, in the play's order"),
    ("TaskQueueManager", "_failed_hosts", "dict of host name -> True for the hosts that failed"),
    ("TaskQueueManager", "_unreachable_hosts", "dict of host name -> True for the unreachable hosts"),
    ("TaskQueueManager", "_terminated", "True once the run is being stopped (a signal)"),
    ("TaskQueueManager", "_stats", "the run's AggregateStats"),
    ("AggregateStats", "rescued", "dict of host name -> how many of its blocks were rescued"),
    ("PlayIterator", "_play", "the play being run"),
    ("PlayIterator", "get_next_task_for_host", "(host, peek=True): the next task without moving on; "
                                               "(host): move on (stores the host's final state)"),
    ("PlayIterator", "is_failed", "(host): whether the host failed in this play"),
    ("Host", "vars", "the host's inventory variables (a dict)"),
    ("VariableManager", "get_vars", "(play=, host=): a host's variables in the play"),
    ("VariableManager", "set_nonpersistent_facts", "(host name, facts): facts for the rest of the run"),
    ("FreeStrategy", "run", "calls get_hosts_left(iterator) at every turn and keeps an index into the returned "
                            "list across turns (so that list must never get shorter)"),
)


class StrategyInternals:
    """What a strategy (a StrategyBase) and its play's iterator know, as the window strategy needs it."""

    def __init__(self, strategy: Any):
        self._strategy = strategy

    # -- the strategy and its task queue manager ----------------------------------------------------------------

    def play_host_names(self, play: Any) -> list[str]:
        self._strategy._set_hosts_cache(play)
        return list(self._strategy._hosts_cache)

    def host(self, name: str) -> Any:
        return self._strategy._inventory.get_host(name)

    def play_var(self, play: Any, host: Any, name: str) -> Any:
        """A host's variable as the play sees it (its inventory variables first: no templating needed there)."""
        found = host.vars.get(name)
        if found is None:
            found = self._strategy._variable_manager.get_vars(play=play, host=host).get(name)
        return found

    def set_facts(self, name: str, facts: dict[str, Any]) -> None:
        self._strategy._variable_manager.set_nonpersistent_facts(name, facts)

    def forks(self) -> int:
        return len(self._strategy._workers)

    def task_running(self, name: str) -> bool:
        return bool(self._strategy._blocked_hosts.get(name, False))

    def result_waiting(self) -> bool:
        return bool(self._strategy._results)

    def terminated(self) -> bool:
        return bool(self._strategy._tqm._terminated)

    def unreachable(self, name: str) -> bool:
        return name in self._strategy._tqm._unreachable_hosts

    def marked_failed(self, name: str) -> bool:
        return name in self._strategy._tqm._failed_hosts

    def rescued(self, name: str) -> int:
        return int(self._strategy._tqm._stats.rescued.get(name, 0))

    # -- the play's iterator and its hosts ----------------------------------------------------------------------

    @staticmethod
    def play(iterator: Any) -> Any:
        return iterator._play

    @staticmethod
    def has_next_task(iterator: Any, host: Any) -> bool:
        _, task = iterator.get_next_task_for_host(host, peek=True)
        return task is not None

    @staticmethod
    def move_past_last_task(iterator: Any, host: Any) -> None:
        """Store the host's final state in the iterator (later peeks are cheap)."""
        iterator.get_next_task_for_host(host)

    @staticmethod
    def failed_in_play(iterator: Any, host: Any) -> bool:
        return bool(iterator.is_failed(host))

    @staticmethod
    def host_vars(host: Any) -> dict[str, Any]:
        return host.vars
