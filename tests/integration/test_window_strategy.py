"""The mig_window strategy plugin, on local hosts that only sleep (no cluster needed).

Each host records when its work started and ended (playbooks/window-strategy.yml); the strategy records
when each host took and gave back its slot (the mig_rollout_slot fact). Slots bound the work, so the
slot intervals prove the limits (never more than the window, or a pool's budget, at once) and the work
intervals prove the refill (a host starts as soon as another one's slot frees).
"""

from __future__ import annotations

import datetime
import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / "tests" / "integration" / "playbooks" / "window-strategy.yml"
# Ansible's per-task overhead here is tens of milliseconds; a refill slower than this is a barrier.
REFILL_S = 1.0


def run_window(tmp_path: Path, hosts: dict[str, dict[str, Any]], schedule: dict[str, Any]) -> dict[str, Any]:
    """Run the playbook on these hosts (name -> sleep_s, pool, fails) with this mig_rollout_schedule."""
    inventory = {"all": {"hosts": {"localhost": {"ansible_connection": "local"}},
                         "vars": {"ansible_python_interpreter": sys.executable},
                         "children": {"nodes": {"hosts": {
                             name: {"ansible_connection": "local", "sleep_s": spec.get("sleep_s", 0.3),
                                    "fails": spec.get("fails", False),
                                    "mig_rollout_node_plan": {"pool": spec.get("pool", "")}}
                             for name, spec in hosts.items()}}}}}
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    record = tmp_path / "record.json"
    schedule = {"slots_file": str(tmp_path / "slots.json"), **schedule}
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    started = time.monotonic()
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp_path / "inventory.yml"), str(PLAYBOOK),
         "-e", f"record_file={record}", "-e", json.dumps({"mig_rollout_schedule": schedule})],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    found = json.loads(record.read_text())
    found["_wall_s"] = time.monotonic() - started
    found["_stdout"] = result.stdout
    found["_slots"] = json.loads((tmp_path / "slots.json").read_text())
    return found


def epoch(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def slots(record: dict[str, Any], names=None) -> list[tuple[float, float, str]]:
    return [(epoch(r["slot"]["started"]), epoch(r["slot"]["finished"]), name) for name, r in record.items()
            if not name.startswith("_") and r["slot"] and (names is None or name in names)]


def most_at_once(intervals: list[tuple[float, float, str]]) -> int:
    """The most intervals open at one moment (an interval ending exactly when another starts is not open)."""
    edges = sorted([(start, 1) for start, _, _ in intervals] + [(end, -1) for _, end, _ in intervals])
    open_now = peak = 0
    for _, step in edges:
        open_now += step
        peak = max(peak, open_now)
    return peak


def test_the_window_refills_as_soon_as_a_slot_frees(tmp_path):
    hosts = {"n1": {"sleep_s": 4}} | {f"n{i}": {"sleep_s": 0.4} for i in range(2, 7)}
    record = run_window(tmp_path, hosts, {"window": 2})
    assert most_at_once(slots(record)) == 2
    # the slow node holds one slot; the five others pass through the other one, one after the other
    for before, after in zip(["n2", "n3", "n4", "n5"], ["n3", "n4", "n5", "n6"], strict=True):
        gap = record[after]["started_at"] - record[before]["ended_at"]
        assert 0 < gap < REFILL_S, (before, after, gap)
    assert record["n6"]["ended_at"] < record["n1"]["ended_at"]
    assert record["_slots"]["done"] == sorted(hosts) and record["_slots"]["active"] == {}


def test_batches_wait_for_their_slowest_node(tmp_path):
    hosts = {"n1": {"sleep_s": 3}} | {f"n{i}": {"sleep_s": 0.4} for i in range(2, 5)}
    record = run_window(tmp_path, hosts, {"mode": "batches", "batch_size": 2})
    assert record["n3"]["started_at"] > record["n1"]["ended_at"]     # the barrier serial has
    assert most_at_once(slots(record)) == 2


def test_per_pool_budgets_are_never_exceeded(tmp_path):
    hosts = ({f"a{i}": {"pool": "a", "sleep_s": 0.6} for i in range(1, 4)}
             | {f"b{i}": {"pool": "b", "sleep_s": 0.6} for i in range(1, 4)}
             | {f"c{i}": {"pool": "c", "sleep_s": 0.6} for i in range(1, 3)})
    # b-cordoned is out of service already (an admin's cordon): pool b has one place left
    record = run_window(tmp_path, hosts, {"window": 4, "pool_budgets": {"a": 1, "b": 2},
                                          "already_out": {"b": ["b-cordoned"]}})
    assert most_at_once(slots(record, {"a1", "a2", "a3"})) == 1
    assert most_at_once(slots(record, {"b1", "b2", "b3"})) == 1
    assert most_at_once(slots(record, {"c1", "c2"})) == 2           # no budget for c
    assert most_at_once(slots(record)) <= 4
    assert all(record[name]["ended_at"] for name in hosts)


def test_no_node_starts_once_the_failure_budget_is_spent(tmp_path):
    hosts = {"n1": {"sleep_s": 3}, "n2": {"sleep_s": 0.2, "fails": True}} | {f"n{i}": {} for i in range(3, 6)}
    record = run_window(tmp_path, hosts, {"window": 2, "max_failures": 0})
    assert record["n1"]["ended_at"] and not record["n1"]["rescued"]   # the running node finished
    assert record["n2"]["rescued"] and record["n2"]["slot"]["result"] == "failed"
    for name in ("n3", "n4", "n5"):
        assert record[name]["started_at"] is None
        assert record[name]["not_started"].startswith("the failure budget is spent: 1 node(s) failed")
    assert record["_slots"]["failed"] == ["n2"]


def test_within_the_failure_budget_a_failed_node_gives_its_slot_back(tmp_path):
    hosts = {"n1": {"sleep_s": 3}, "n2": {"sleep_s": 0.2, "fails": True}, "n3": {}}
    record = run_window(tmp_path, hosts, {"window": 2, "max_failures": 1})
    assert record["n2"]["rescued"]
    assert record["n3"]["started_at"] < record["n1"]["ended_at"]      # in n2's slot, while n1 still runs
    assert record["_slots"]["failed"] == ["n2"] and record["_slots"]["done"] == ["n1", "n3"]


def test_a_progress_line_at_each_change_of_state_with_counts_per_pool_and_an_eta(tmp_path):
    hosts = {"a1": {"pool": "a", "sleep_s": 1.5}, "a2": {"pool": "a", "sleep_s": 0.3, "fails": True},
             "b1": {"pool": "b", "sleep_s": 0.3}, "b2": {"pool": "b", "sleep_s": 0.3}}
    record = run_window(tmp_path, hosts, {"window": 2, "max_failures": 1, "pool_budgets": {"a": 2}})
    lines = [line for line in record["_stdout"].splitlines() if line.startswith("mig_window ")]
    # Each node's start and end is told (several in one line when they happen in the same turn).
    told = " ".join(lines)
    for name in hosts:
        assert f"{name} starts" in told
    assert "a2 failed after" in told and "a1 done after" in told
    assert lines[0].endswith("ETA after the first node finishes")
    assert all(" ETA " in line for line in lines[1:]), lines
    assert "a 0/2 done, 2 in maintenance (budget 2)" in lines[0]
    last = lines[-1]
    assert "3 done, 0 in maintenance, 1 failed, 0 waiting" in last and "(0s left)" in last, last
    assert "\x1b" not in record["_stdout"]              # a log, not a terminal: no terminal codes


def test_progress_off_says_only_when_nodes_start(tmp_path):
    record = run_window(tmp_path, {"n1": {}, "n2": {}}, {"window": 1, "progress": False})
    lines = [line for line in record["_stdout"].splitlines() if line.startswith("mig_window")]
    assert [line for line in lines if "starts" in line] == [
        "mig_window: n1 starts (1/1 in maintenance, 0 done, 0 failed)",
        "mig_window: n2 starts (1/1 in maintenance, 1 done, 0 failed)"]
    assert "ETA" not in record["_stdout"]


def test_a_stop_file_starts_nothing_more(tmp_path):
    stop = tmp_path / "stop"
    stop.write_text("the run lost its lock (Lease taken over)")
    record = run_window(tmp_path, {"n1": {}, "n2": {}}, {"window": 2, "stop_file": str(stop)})
    assert [record[n]["not_started"] for n in ("n1", "n2")] == ["the run lost its lock (Lease taken over)"] * 2


def test_the_ansible_core_internals_the_strategy_relies_on():
    """ansible-core is pinned; this fails loudly if an upgrade changes what plugins/strategy/mig_window.py uses."""
    from ansible.executor.play_iterator import PlayIterator
    from ansible.executor.stats import AggregateStats
    from ansible.executor.task_queue_manager import TaskQueueManager
    from ansible.inventory.host import Host
    from ansible.plugins.strategy import StrategyBase
    from ansible.plugins.strategy.free import StrategyModule as Free
    from ansible.vars.manager import VariableManager

    loop = inspect.getsource(Free.run)
    assert "hosts_left = self.get_hosts_left(iterator)" in loop          # asked at every turn
    assert "host = hosts_left[last_host]" in loop                         # an index kept across turns
    assert "peek" in inspect.signature(PlayIterator.get_next_task_for_host).parameters
    assert callable(PlayIterator.is_failed)
    assert "_blocked_hosts" in inspect.getsource(StrategyBase.__init__)
    assert "self._results: deque" in inspect.getsource(StrategyBase.__init__)   # filled by the results thread
    assert "self._terminated" in inspect.getsource(TaskQueueManager.__init__)
    assert "_failed_hosts" in inspect.getsource(StrategyBase._process_pending_results)
    assert "increment('rescued'" in inspect.getsource(StrategyBase._process_pending_results)
    assert hasattr(AggregateStats(), "rescued")
    assert isinstance(Host("x").vars, dict)
    assert callable(VariableManager.set_nonpersistent_facts)
