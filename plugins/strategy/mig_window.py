# The MIG rollout's maintenance window as an Ansible strategy (the decisions: migrollout.rollout.schedule).
from __future__ import annotations

DOCUMENTATION = r"""
name: mig_window
short_description: A maintenance window for rolling MIG reconfigurations, instead of batch barriers
description:
  - Runs a play's hosts (GPU nodes) like the C(free) strategy, but starts a host only when the rollout's
    schedule admits it. With the window (the default), at most C(window) hosts are in maintenance at once
    and a host starts as soon as another one finishes, whatever the others are doing, so nobody waits for
    a batch's slowest node. With batches, a batch of C(batch_size) hosts starts once every host of the
    previous one has finished (as Ansible's C(serial) does).
  - Per-pool budgets apply in both modes. Never more than a pool's budget of its nodes are out of
    service, counting the nodes out of service before the run and this run's failed nodes (they stay
    tainted). A host whose pool is full waits; hosts of other pools go ahead. A failed host gives its slot
    of the window back once its block ends (the failure budget bounds failed hosts).
  - The failure budget. A host whose block was rescued, or that failed, is failed. Once more hosts have
    failed than C(max_failures), no new host starts; hosts already running finish. Hosts never started
    get the fact C(mig_rollout_not_started) (why), which the report shows; every started host gets
    C(mig_rollout_slot) (when it took and gave back its slot, and whether it failed).
  - No host starts once the run lost its rollout lock (C(rollout_lock), the fence the node steps check, see
    C(migrollout.rollout.fence)), or once the stop file exists (C(stop_file); its text is the reason; an
    operator may create it to stop a rollout gracefully). Running hosts finish (their steps stop at the fence).
  - The active hosts and the time each took its slot are written to C(slots_file) at every change, for
    the lock renewer to publish in the rollout's Lease (so slots expire with the Lease).
  - Inputs are read once when the play starts, never from the cluster. The host variable
    C(mig_rollout_schedule) of the play's first host (the plan sets it on every target with
    C(add_host)) holds C(mode) (V(window) or V(batches)), C(window), C(batch_size), C(pool_budgets)
    (pool to count), C(already_out) (pool to the nodes out of service before the run), C(max_failures),
    and optionally C(slots_file), C(stop_file), C(rollout_lock) and C(run). Each host's C(mig_rollout_node_plan.pool) is its
    pool. The order is the play's host order (the plan's order).
  - Do not set C(serial) on the play (the strategy schedules the hosts itself). C(forks) must be at least
    the window, or the forks limit how many hosts run at once.
  - It relies on ansible-core internals, all of them read through one class, C(StrategyInternals) in
    C(plugins/plugin_utils/strategy_internals.py), whose C(CONTRACT) lists each attribute and what the strategy
    expects of it; tests/unit/plugins/plugin_utils/test_strategy_internals.py checks every entry against the
    installed ansible-core. The free strategy's loop calls C(get_hosts_left) at each turn and keeps an index
    into the returned list across turns, so the list returned never gets shorter.
  - ansible-core 2.19 deprecates strategy plugins from outside C(ansible.builtin) (a deprecation warning at each
    run; no removal version, no replacement announced). An upgrade of ansible-core must re-check this plugin.
version_added: "0.2.0"
author: NVIDIA MIG rollout toolkit maintainers (@nvidia-mig-rollout)
"""

import contextlib
import gc
import os
import time
from dataclasses import dataclass, field
from typing import Any

from ansible.errors import AnsibleError
from ansible.plugins.strategy.free import StrategyModule as FreeStrategyModule
from ansible.utils.display import Display

from ansible_collections.nvidia_mig.rollout.plugins.plugin_utils.strategy_internals import StrategyInternals

try:
    from migrollout.rollout import progress, slots, stop
    from migrollout.rollout.schedule import Progress, Schedule, ScheduleError
    from migrollout.timestamps import micro_time_text

    IMPORT_ERROR = None
except ImportError as exc:  # reported when the strategy runs
    IMPORT_ERROR = exc

display = Display()

SCHEDULE_VAR = "mig_rollout_schedule"
NODE_PLAN_VAR = "mig_rollout_node_plan"
NOT_STARTED_FACT = "mig_rollout_not_started"
SLOT_FACT = "mig_rollout_slot"
IDLE_WAIT_S = 0.5         # at most this long in one wait for a result (the loop then looks around)
RESULT_POLL_S = 0.0005    # how often the wait looks for a result


def _now_text() -> str:
    return micro_time_text()


@dataclass
class Window:
    """One play's admissions: which hosts run, which finished, which failed, and when."""

    schedule: Any                                   # migrollout.rollout.schedule.Schedule
    settings: dict[str, Any]
    progress: Any = None                            # migrollout.rollout.schedule.Progress
    admitted: dict[str, str] = field(default_factory=dict)      # host -> when it took its slot
    finished: dict[str, str] = field(default_factory=dict)
    rescued_before: dict[str, int] = field(default_factory=dict)
    not_started: dict[str, str] = field(default_factory=dict)
    hosts: dict[str, Any] = field(default_factory=dict)          # name -> inventory Host
    listed: list[str] = field(default_factory=list)              # the hosts returned last turn
    listed_hosts: list[Any] = field(default_factory=list)
    watch: Any = None                                            # migrollout.rollout.progress.Watch: the lines

    def __post_init__(self) -> None:
        self.progress = Progress()
        self.watch = progress.Watch.for_plans(self.schedule, {
            name: StrategyInternals.host_vars(host).get(NODE_PLAN_VAR) for name, host in self.hosts.items()},
            self.settings)

    def stop_reason(self) -> str:
        return stop.stop_reason(self.settings)

    def write_slots(self) -> None:
        path = self.settings.get("slots_file")
        if path:
            slots.write(path, slots.window_record(self.settings.get("run", ""), self.schedule, self.progress,
                                                  self.admitted, self.not_started))


class StrategyModule(FreeStrategyModule):
    def __init__(self, tqm):
        super().__init__(tqm)
        self._window = None
        self._core = StrategyInternals(self)

    # -- the play ---------------------------------------------------------------------------------------------

    def run(self, iterator, play_context):
        if IMPORT_ERROR is not None:
            raise AnsibleError(f"the mig_window strategy needs the nvidia-mig-rollout Python package "
                               f"(pip install -r the collection's requirements.txt): {IMPORT_ERROR}")
        play = StrategyInternals.play(iterator)
        if play.serial and list(play.serial) not in ([0], ["100%"]):
            raise AnsibleError("the mig_window strategy schedules the hosts itself: remove serial from the play "
                               "(batches: mig_rollout_schedule: batches with mig_rollout_serial)")
        self._window = self._open_window(iterator, self._core.play_host_names(play))
        try:
            return super().run(iterator, play_context)
        finally:
            self._close_window(iterator)
            self._window = None

    def _open_window(self, iterator, names):
        if not names:
            return None
        settings = self._core.play_var(StrategyInternals.play(iterator), self._core.host(names[0]), SCHEDULE_VAR)
        if not isinstance(settings, dict):
            raise AnsibleError(f"the mig_window strategy needs the host variable {SCHEDULE_VAR} (a dict set by the "
                               f"rollout's plan) on {names[0]}; found {type(settings).__name__}")
        pools = {}
        for name in names:
            node_plan = StrategyInternals.host_vars(self._core.host(name)).get(NODE_PLAN_VAR) or {}
            pools[name] = str(node_plan.get("pool") or "") if isinstance(node_plan, dict) else ""
        try:
            schedule = Schedule.from_dict(settings, names, pools)
        except (ScheduleError, TypeError, ValueError) as exc:
            raise AnsibleError(f"the mig_window strategy cannot use {SCHEDULE_VAR}: {exc}") from None
        forks = self._core.forks()
        if schedule.mode == "window" and schedule.window > forks:
            display.warning(f"mig_window: the window is {schedule.window} nodes but Ansible runs {forks} forks: at "
                            f"most {forks} nodes run at once (raise forks)")
        display.display(f"mig_window: {len(names)} node(s), {schedule.mode} of "
                        f"{schedule.window if schedule.mode == 'window' else schedule.batch_size}"
                        + (f", pool budgets {dict(schedule.pool_budgets)}" if schedule.pool_budgets else "")
                        + f", failure budget {schedule.max_failures}")
        return Window(schedule, dict(settings), hosts={name: self._core.host(name) for name in names})

    def _close_window(self, iterator):
        window = self._window
        if window is None:
            return
        for name in window.schedule.nodes:
            if name not in window.admitted and name not in window.not_started:
                window.not_started[name] = "the play ended before it started"
        for name, reason in window.not_started.items():
            self._core.set_facts(name, {NOT_STARTED_FACT: reason})
        if window.not_started:
            display.warning(f"mig_window: {len(window.not_started)} node(s) never started: "
                            + "; ".join(f"{n}: {r}" for n, r in list(window.not_started.items())[:5])
                            + (" ..." if len(window.not_started) > 5 else ""))
        with contextlib.suppress(OSError):
            window.write_slots()

    # -- admission: called by the free strategy's loop at every turn --------------------------------------------

    def get_hosts_left(self, iterator):
        window = self._window
        if window is None:
            return super().get_hosts_left(iterator)
        changed = self._note_finished(iterator, window)
        if changed or not window.listed:
            changed |= self._admit(iterator, window)
        if changed:
            for line in window.watch.update(window.progress, window.not_started):
                display.display(line)
        if changed or not window.listed:
            self._list(window)
        else:
            self._wait_for_a_result(window)
        return window.listed_hosts

    def _admit(self, iterator, window) -> bool:
        decision = window.schedule.decide(window.progress)
        if decision.start:
            halted = window.stop_reason()
            if halted:
                window.progress.halted = halted
                decision = window.schedule.decide(window.progress)
        admitted = False
        for name in decision.start:
            if self._core.unreachable(name):
                window.not_started[name] = "unreachable"
                window.progress.failed.add(name)
                continue
            if not StrategyInternals.has_next_task(iterator, window.hosts[name]):   # ended first (meta: end_play)
                window.not_started[name] = "the play ended before it started"
                window.progress.done.add(name)
                continue
            window.admitted[name] = _now_text()
            window.rescued_before[name] = self._core.rescued(name)
            window.progress.active.add(name)
            admitted = True
        if decision.stopped:          # for good: failures only grow, the stop file stays, nothing runs
            for name, reason in decision.waiting.items():
                window.not_started.setdefault(name, reason)
        with contextlib.suppress(OSError):
            window.write_slots()
        return admitted

    def _note_finished(self, iterator, window) -> bool:
        """Move the active hosts that have nothing left to run to done or failed; True if any moved."""
        moved = False
        for name in sorted(window.progress.active):
            unreachable = self._core.unreachable(name)
            if not unreachable and self._core.task_running(name):
                continue              # a task of it is running
            host = window.hosts[name]
            rescued = self._core.rescued(name) > window.rescued_before.get(name, 0)
            failed = (unreachable or rescued or self._core.marked_failed(name)
                      or StrategyInternals.failed_in_play(iterator, host))
            if failed and name not in window.progress.failed:
                window.progress.failed.add(name)   # counts against the budget as soon as it is known
                moved = True
            if not unreachable:
                if StrategyInternals.has_next_task(iterator, host):
                    continue
                StrategyInternals.move_past_last_task(iterator, host)   # later peeks are cheap
            window.progress.active.discard(name)
            if not failed:
                window.progress.done.add(name)
            window.finished[name] = _now_text()
            self._core.set_facts(name, {SLOT_FACT: {
                "started": window.admitted.get(name, ""), "finished": window.finished[name],
                "result": "failed" if failed else "done"}})
            moved = True
        return moved

    def _list(self, window) -> None:
        """The hosts the free strategy's loop may run: the active ones, padded with finished ones to the
        previous turn's length (the loop keeps an index into this list across turns)."""
        names = [name for name in window.admitted if name in window.progress.active]
        finished = [name for name in reversed(list(window.admitted)) if name not in window.progress.active]
        while len(names) < len(window.listed) and finished:
            names.append(finished.pop(0))
        window.listed = names
        window.listed_hosts = [window.hosts[name] for name in names]

    def _queue_task(self, host, task, task_vars, play_context):
        # Each task runs in a worker forked from this process: a garbage collection in the worker would walk
        # (and, touching them, copy) every object of this large heap it shares copy-on-write. Frozen objects are
        # left out of collections; unfrozen again here right after the fork.
        if os.environ.get("MIGWINDOW_NOFREEZE"):
            return super()._queue_task(host, task, task_vars, play_context)
        gc.freeze()
        try:
            return super()._queue_task(host, task, task_vars, play_context)
        finally:
            gc.unfreeze()

    def _wait_for_a_result(self, window) -> None:
        """While every active host has a task running and no result is in, there is nothing to do but wait:
        wait here, cheaply, rather than let the free strategy's loop peek at every host a thousand times a
        second (CPU the API server and the nodes' agents need on a small control host)."""
        if not window.progress.active or any(not self._core.task_running(name) for name in window.progress.active):
            return
        deadline = time.monotonic() + IDLE_WAIT_S
        while not self._core.result_waiting() and not self._core.terminated() and time.monotonic() < deadline:
            time.sleep(RESULT_POLL_S)
