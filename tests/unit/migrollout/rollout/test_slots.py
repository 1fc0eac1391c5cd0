"""What the window strategy writes to the run's slots file at every change."""

from migrollout.rollout import slots
from migrollout.rollout.schedule import Progress, Schedule


def test_the_window_record_says_who_holds_a_slot_since_when_and_who_is_still_to_come(tmp_path):
    schedule = Schedule(("a", "b", "c", "d", "e"), {}, window=2)
    progress = Progress(active={"b"}, done={"a"}, failed=set())
    record = slots.window_record("run-1", schedule, progress, {"a": "t0", "b": "t1"}, {"e": "the failure budget"})
    assert {key: value for key, value in record.items() if key != "updated"} == {
        "run": "run-1", "mode": "window", "window": 2, "active": {"b": "t1"}, "done": ["a"], "failed": [],
        "not_started": {"e": "the failure budget"}, "pending": ["c", "d"]}
    path = str(tmp_path / "lock.slots")
    slots.write(path, record)
    assert slots.active(path) == {"b": "t1"}
