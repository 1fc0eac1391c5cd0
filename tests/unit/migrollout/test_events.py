"""Node Events: the object the API accepts, the notes, and best effort (a failure is a warning)."""

import datetime
import threading
import time

import pytest

from migrollout import events
from migrollout.kube import KubeError

RUN = "20261129T020000Z-control-1-ab12cd"
MOMENT = datetime.datetime(2026, 11, 29, 2, 0, 0, 123456, tzinfo=datetime.UTC)


class FakeApi:
    def __init__(self, error=None):
        self.error = error
        self.created = []

    def create(self, path, body, what="", **query):
        if self.error is not None:
            raise self.error
        self.created.append((path, body))
        return body


def test_the_event_names_the_node_as_the_kubelet_does():
    body = events.event("gpu-7", events.STARTED, "run x: ...", RUN, MOMENT)
    assert body["apiVersion"] == "events.k8s.io/v1" and body["metadata"]["namespace"] == "default"
    # kubectl describe node looks Events up by uid = the node's name
    assert body["regarding"] == {"apiVersion": "v1", "kind": "Node", "name": "gpu-7", "uid": "gpu-7"}
    assert body["metadata"]["name"].startswith("gpu-7.")
    assert body["eventTime"] == "2026-11-29T02:00:00.123456Z"
    assert body["reportingController"] == "nvidia.com/mig-rollout"
    assert body["reportingInstance"] == "control-1"           # the run's control host
    assert (body["reason"], body["action"], body["type"]) == ("MigReconfigurationStarted", "Taint", "Normal")


def test_every_field_within_the_api_limits():
    for kind in events.KINDS:
        assert len(kind.reason) <= 128 and len(kind.action) <= 128 and kind.type in ("Normal", "Warning")
    note = events.event("n", events.FAILED, "x" * 5000, RUN)["note"]
    assert len(note.encode()) <= 1024 and note.endswith("...")
    assert events.instance_of("not-a-run-id") and len(events.instance_of("x" * 300)) <= 128


def test_names_differ_for_events_of_one_node():
    first = events.event("n", events.STARTED, "", RUN)["metadata"]["name"]
    second = events.event("n", events.EVACUATED, "", RUN)["metadata"]["name"]
    assert first != second


@pytest.mark.parametrize(("note", "expected"), [
    (events.started_note(RUN, "all-disabled", "all-1g.10gb", ["mig=maintenance:NoSchedule"]),
     f"run {RUN}: MIG config all-disabled -> all-1g.10gb; node in maintenance, added mig=maintenance:NoSchedule"),
    (events.evacuated_note(RUN, ["ml/a", "ml/b"], 2.04), f"run {RUN}: 2 GPU pod(s) evicted in 2.0 s: ml/a, ml/b"),
    (events.evacuated_note(RUN, []), f"run {RUN}: no GPU pod to move"),
    (events.applied_note(RUN, "all-1g.10gb", 35.25), f"run {RUN}: the MIG manager applied all-1g.10gb in 35.2 s "
                                                      "(state success)"),
    (events.succeeded_note(RUN, "", "all-1g.10gb", 3, 41.0),
     f"run {RUN}: MIG config (none) -> all-1g.10gb done in 41.0 s, 3 GPU pod(s) moved; back in service"),
    (events.failed_note(RUN, "Verify", "timed out"),
     f"run {RUN}: step 'Verify' failed: timed out; the node stays in maintenance"),
])
def test_notes(note, expected):
    assert note == expected


def test_the_recorder_writes_to_the_events_api():
    api = FakeApi()
    recorder = events.Recorder(api, RUN)
    recorder.emit("gpu-1", events.SUCCEEDED, "done")
    assert recorder.wait() == []
    (path, body), = api.created
    assert path == "/apis/events.k8s.io/v1/namespaces/default/events"
    assert body["reason"] == "MigReconfigurationSucceeded" and recorder.written == [body]


@pytest.mark.parametrize("error", [KubeError(403, "Forbidden", "cannot create events"),
                                   KubeError(0, "cannot reach the API server", "refused"),
                                   RuntimeError("anything else")])
def test_a_failure_to_record_is_a_warning_never_an_error(error):
    recorder = events.Recorder(FakeApi(error), RUN)
    recorder.emit("gpu-1", events.STARTED, "x")
    (warning,) = recorder.wait()
    assert warning.startswith("Event MigReconfigurationStarted on node gpu-1 not recorded: ")
    assert recorder.wait() == []                       # told once


def test_a_step_does_not_wait_for_its_events_until_it_ends():
    gate = threading.Event()

    class SlowApi(FakeApi):
        def create(self, path, body, what="", **query):
            gate.wait(5)
            return super().create(path, body, what, **query)

    api = SlowApi()
    recorder = events.Recorder(api, RUN)
    started = time.monotonic()
    recorder.emit("gpu-1", events.STARTED, "x")
    recorder.emit("gpu-1", events.EVACUATED, "y")
    assert time.monotonic() - started < 0.5 and api.created == []
    gate.set()
    assert recorder.wait() == [] and len(api.created) == 2
    blocked = events.Recorder(SlowApi(), RUN)
    gate.clear()
    blocked.emit("gpu-1", events.STARTED, "x")
    assert blocked.wait(timeout=0.2) == ["an Event (MigReconfigurationStarted) was not confirmed within 0 s"]
    gate.set()


def test_a_disabled_recorder_sends_nothing():
    api = FakeApi()
    events.Recorder(api, RUN, enabled=False).emit("n", events.STARTED, "x")
    events.Recorder(None, RUN).emit("n", events.STARTED, "x")
    assert api.created == []
