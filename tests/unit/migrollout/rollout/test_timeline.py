"""The timeline page: lanes from the report's times, marks with reasons, occupancy, and a page that needs no network."""

from __future__ import annotations

import re

import pytest

from migrollout.rollout import timeline
from migrollout.rollout.report import step_began
from migrollout.rollout.schedule import Schedule

T0 = "2026-12-07T10:00:00.000000Z"


def at(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"2026-12-07T10:{int(minutes):02d}:{rest:09.6f}Z"


@pytest.mark.parametrize(("tasks", "expected"), [
    ({}, {}),
    # The parts of a task run one after the other from its start; the capacity check belongs to the maintenance.
    ({"begin": {"began": at(1), "steps": {"capacity": 0.5, "maintenance": 0.25, "evacuate": 2.0}},
      "label": {"began": at(4), "duration_s": 10.0},
      "finish": {"began": at(15), "steps": {"verify": 1.0, "finish": 0.5}}},
     {"maintenance": at(1), "evacuate": at(1.75), "label": at(4), "verify": at(15), "finish": at(16)}),
    # A step whose task said no start (an older module) is left out; the others stay.
    ({"begin": {"steps": {"maintenance": 1.0}}, "label": {"began": at(3), "duration_s": 2.0}}, {"label": at(3)}),
])
def test_step_began(tasks, expected):
    assert step_began(tasks) == expected


def report(**extra):
    return {"run": "r1", "wall_s": 60.0, "summary": {"done": 2, "failed": 1, "skipped": 1, "not started": 1},
            "schedule": {"mode": "window", "window": 2, "pool_budgets": {"a": 1}, "max_failures": 1},
            "nodes": [
                {"node": "n1", "pool": "a", "result": "done", "from": "x", "to": "y", "started": at(0),
                 "finished": at(20), "steps": {"maintenance": 1.0, "evacuate": 2.0, "label": 10.0, "verify": 3.0,
                                               "finish": 1.0},
                 "began": {"maintenance": at(0.5), "evacuate": at(1.5), "label": at(4), "verify": at(15),
                           "finish": at(18)}, "evicted": ["p1", "p2"]},
                {"node": "n2", "pool": "b", "result": "done", "started": at(10), "finished": at(30),
                 "steps": {"maintenance": 2.0, "label": 5.0}, "evicted": []},
                {"node": "n3", "pool": "b", "result": "failed", "reason": "n3: step 'x' failed: <boom>",
                 "started": at(20), "finished": at(25), "steps": {}, "evicted": []},
                {"node": "n4", "pool": "a", "result": "skipped", "reason": "1 GPU pod(s) would have nowhere to go",
                 "started": at(30), "finished": at(31), "steps": {}, "evicted": []},
                {"node": "n5", "pool": "a", "result": "not started", "reason": "the failure budget is spent",
                 "steps": {}, "evicted": []}],
            **extra}


def test_lanes_place_each_step_where_it_ran_and_add_up_to_the_recorded_time():
    picture = timeline.from_report(report())
    lanes = {lane.node: lane for lane in picture.lanes}
    assert [(s.step, s.start, s.length) for s in lanes["n1"].segments] == [
        ("maintenance", 0.5, 1.0), ("evacuate", 1.5, 2.0), ("label", 4.0, 10.0), ("verify", 15.0, 3.0),
        ("finish", 18.0, 1.0)]
    # Without step times (an older report), one after the other from the slot's start.
    assert [(s.step, s.start) for s in lanes["n2"].segments] == [("maintenance", 10.0), ("label", 12.0)]
    assert lanes["n1"].total == 17.0 and lanes["n3"].total == 0.0
    assert {node: lane.mark for node, lane in lanes.items()} == {
        "n1": "", "n2": "", "n3": "failed", "n4": "no room", "n5": "not started"}
    assert picture.end == 31.0


def test_occupancy_and_pool_use_against_their_limits():
    picture = timeline.from_report(report())
    assert picture.occupancy() == [(0, 1), (10, 2), (20, 2), (25, 1), (30, 1), (31, 0)]
    use = picture.pool_use()
    # The failed n3 stays out of service (tainted) to the end of the run.
    assert use["b"] == [(10, 1), (20, 2), (30, 1), (31, 0)]
    assert use["a"] == [(0, 1), (20, 0), (30, 1), (31, 0)]


def test_the_page_has_a_lane_per_node_marks_with_reasons_and_no_network():
    page = timeline.render(timeline.from_report(report()))
    assert re.findall(r'<g class="lane" data-node="([^"]+)"', page) == ["n1", "n4", "n5", "n2", "n3"]
    assert 'data-mark="failed"' in page and "n3: step &#x27;x&#x27; failed: &lt;boom&gt;" in page
    assert 'data-mark="no room"' in page and 'data-mark="not started"' in page
    assert "n1 evicted: p1, p2" in page
    assert 'data-peak="2" data-limit="2"' in page                     # the window's occupancy
    assert 'data-pool="a" data-peak="1" data-limit="1"' in page       # pool a against its budget
    for needle in ("http:", "https:", "src=", "<link", "@import", "url("):
        assert needle not in page
    assert "window of 2" in page and "pool budgets" in page and "evicted pods" in page


def test_many_nodes_fold_their_pools_except_where_something_went_wrong():
    rows = [{"node": f"n{i:04d}", "pool": f"p{i % 4}", "result": "done", "started": at(i * 0.01),
             "finished": at(i * 0.01 + 5), "steps": {"label": 4.0}, "evicted": []} for i in range(1000)]
    rows[7].update(result="failed", reason="boom", steps={})
    page = timeline.render(timeline.from_report({"run": "big", "nodes": rows, "schedule": {"window": 100}}))
    opened = re.findall(r'<details class="pool" data-pool="([^"]+)"( open)?>', page)
    assert opened == [("p0", ""), ("p1", ""), ("p2", ""), ("p3", " open")]   # n0007 is in p3
    assert page.count('<g class="lane"') == 1000


def test_check_mode_draws_the_plans_simulated_schedule():
    plan = Schedule(("n1", "n2", "n3"), {"n1": "a", "n2": "a", "n3": "b"}, window=2, pool_budgets={"a": 1})
    simulation = plan.simulate()
    rows = [{"node": n, "pool": plan.pools[n], "result": "would change", "evicted": []} for n in plan.nodes]
    rows.append({"node": "n4", "pool": "b", "result": "skipped", "reason": "already at its config", "evicted": []})
    picture = timeline.from_simulation("r2", rows, plan.as_dict(), vars(simulation))
    starts = {lane.node: lane.started for lane in picture.lanes}
    assert starts == {"n1": 0.0, "n2": 1.0, "n3": 0.0, "n4": None}   # pool a's budget of 1 holds n2 back
    assert picture.unit == "node times" and max(count for _, count in picture.occupancy()) == 2
    assert "the plan (check mode)" in timeline.render(picture)


def test_a_run_that_started_no_node_still_has_its_page():
    rows = [{"node": "n1", "pool": "a", "result": "not started", "reason": "the lock was lost", "started": "",
             "finished": "", "steps": {}, "evicted": []}]
    page = timeline.render(timeline.from_report({"run": "r", "nodes": rows, "schedule": {"window": 1}}))
    assert 'data-mark="not started"' in page and "the lock was lost" in page
