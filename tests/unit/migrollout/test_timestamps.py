"""Kubernetes' two time formats, written and read in one place."""

import datetime

from migrollout import timestamps

MOMENT = datetime.datetime(2026, 11, 29, 5, 1, 2, 345678, tzinfo=datetime.UTC)


def test_time_and_micro_time_round_trip():
    assert timestamps.time_text(MOMENT) == "2026-11-29T05:01:02Z"
    assert timestamps.micro_time_text(MOMENT) == "2026-11-29T05:01:02.345678Z"
    assert timestamps.parse(timestamps.time_text(MOMENT)) == MOMENT.replace(microsecond=0)
    assert timestamps.parse(timestamps.micro_time_text(MOMENT)) == MOMENT


def test_what_is_not_a_kubernetes_time_reads_as_none():
    for text in (None, "", "yesterday", "2026-11-29 05:01:02"):
        assert timestamps.parse(text) is None
