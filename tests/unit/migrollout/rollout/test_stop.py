"""Why the window strategy starts no more nodes: the stop file (its text) or the lost rollout lock."""

from migrollout.rollout.stop import stop_reason


def test_nothing_stops_a_run_without_a_stop_file_or_lock(tmp_path):
    assert stop_reason({}) == ""
    assert stop_reason({"stop_file": str(tmp_path / "absent")}) == ""


def test_the_stop_files_text_is_the_reason(tmp_path):
    stop = tmp_path / "stop"
    stop.write_text("maintenance window closes at 06:00\n")
    assert stop_reason({"stop_file": str(stop)}) == "maintenance window closes at 06:00"
    stop.write_text("")
    assert stop_reason({"stop_file": str(stop)}) == f"the stop file {stop} exists"


def test_a_lock_that_cannot_be_confirmed_stops_the_run(tmp_path):
    lock = {"holder": "run-1", "state_file": str(tmp_path / "missing")}
    reason = stop_reason({"rollout_lock": lock})
    assert reason.startswith("this run lost its rollout lock: ") and "run-1" in reason
