"""Transient API errors (issue 12 item 9): what KubeClient repeats, for how long, and what it never repeats."""

import json

import pytest
import urllib3
from kubernetes import client as k8s_client

from migrollout import kube
from migrollout.kube import KubeClient, KubeError, retryable

REFUSED = KubeError(0, "cannot reach", "refused", nothing_sent=True)
TIMED_OUT = KubeError(0, "cannot reach", "read timed out", timed_out=True)
BROKEN = KubeError(0, "cannot reach", "connection aborted", broken=True)
TLS = KubeError(0, "cannot reach", "certificate verify failed")


@pytest.mark.parametrize(("method", "error", "expected"), [
    # Nothing was sent: any verb may go again.
    ("GET", REFUSED, True), ("PATCH", REFUSED, True), ("POST", REFUSED, True), ("DELETE", REFUSED, True),
    # Reads (GET, LIST, the start of a WATCH) on overload, server errors and timeouts.
    *[("GET", KubeError(status, "x", "y"), True) for status in (429, 500, 502, 503, 504)],
    ("GET", TIMED_OUT, True), ("GET", BROKEN, True),
    # A write the server may have received: never.
    *[(method, error, False) for method in ("PATCH", "POST", "PUT", "DELETE")
      for error in (TIMED_OUT, BROKEN, KubeError(503, "x", "y"), KubeError(500, "x", "y"), KubeError(429, "x", "y"))],
    # Errors that repeating cannot cure.
    *[("GET", KubeError(status, "x", "y"), False) for status in (400, 401, 403, 404, 409, 410, 422)],
    ("GET", TLS, False),
])
def test_classification(method, error, expected):
    assert retryable(method, error) is expected


class Response:
    def __init__(self, status, body=None, headers=None):
        self.status = status
        self.reason = "Service Unavailable" if status == 503 else "OK"
        self.data = json.dumps(body or {}).encode()
        self.headers = {"Content-Type": "application/json", **(headers or {})}


class Pool:
    """Answers each request with the next outcome: a Response, or an exception to raise."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.calls = []

    def request(self, method, url, **kwargs):
        self.calls.append(method)
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def client(pool, budget=5.0):
    configuration = k8s_client.Configuration()
    configuration.host = "https://api.example:6443"
    api = KubeClient(configuration, retry_budget_s=budget)
    api._rest.pool_manager = pool
    return api


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    clock = {"now": 0.0}
    monkeypatch.setattr(kube.time, "sleep", lambda s: clock.__setitem__("now", clock["now"] + s))
    monkeypatch.setattr(kube.time, "monotonic", lambda: clock["now"])


def refused():
    return urllib3.exceptions.NewConnectionError(None, "Connection refused")


def test_a_refused_connection_is_retried_for_any_verb_until_the_server_is_back():
    pool = Pool(refused(), refused(), Response(200, {"metadata": {"name": "n"}}))
    assert client(pool).patch("/api/v1/nodes/n", {"metadata": {}})["metadata"]["name"] == "n"
    assert pool.calls == ["PATCH"] * 3


def test_a_read_is_retried_on_503_and_honours_retry_after():
    pool = Pool(Response(503, {"message": "restarting"}, {"Retry-After": "1"}), Response(200, {"items": []}))
    assert client(pool).get("/api/v1/nodes") == {"items": []}
    assert pool.calls == ["GET", "GET"]


def test_a_write_that_may_have_arrived_is_not_repeated():
    pool = Pool(urllib3.exceptions.ProtocolError("Connection aborted"), Response(200, {}))
    with pytest.raises(KubeError) as raised:
        client(pool).patch("/api/v1/nodes/n", {})
    assert pool.calls == ["PATCH"] and raised.value.broken


def test_retries_stop_after_the_budget_with_one_line_saying_so():
    pool = Pool(refused())
    with pytest.raises(KubeError) as raised:
        client(pool, budget=5.0).get("/api/v1/nodes", what="list nodes")
    message = raised.value.one_line()
    assert message.startswith("list nodes: cannot reach the API server at https://api.example:6443 "
                              "(NewConnectionError)")
    assert f"(after {len(pool.calls)} attempts over " in message and len(pool.calls) > 3
    assert "\n" not in message


# -- guarded writes (a fenced view): never sent after the fence's deadline --------------------------------------


class Guard:
    """A fence seen from the client: the seconds left before the deadline, on the tests' clock."""

    def __init__(self, deadline):
        self.deadline = deadline
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return self.deadline - kube.time.monotonic()


class RecordingPool(Pool):
    def __init__(self, *outcomes):
        super().__init__(*outcomes)
        self.sent = []

    def request(self, method, url, **kwargs):
        self.sent.append((method, url, kwargs["timeout"]))
        return super().request(method, url, **kwargs)


def test_a_guarded_write_carries_the_time_left_as_its_timeouts_and_the_servers():
    pool = RecordingPool(Response(200, {"metadata": {"name": "n"}}))
    guard = Guard(deadline=4.0)
    client(pool).fenced(guard).patch("/api/v1/nodes/n", {"metadata": {}})
    (_, url, timeout), = pool.sent
    assert guard.calls == 1
    assert url.endswith("?timeout=4000ms")
    assert timeout.connect_timeout == 4.0 and timeout.read_timeout == 4.0


def test_a_guarded_write_is_checked_again_before_each_retry_and_not_sent_past_the_deadline(monkeypatch):
    monkeypatch.setattr(kube.random, "uniform", lambda low, high: 1.0)   # backoff without jitter: 0.2, 0.4, 0.8 s
    pool = RecordingPool(refused())
    guard = Guard(deadline=3.0)
    with pytest.raises(KubeError) as failure:
        client(pool, budget=30.0).fenced(guard).patch("/api/v1/nodes/n", {"metadata": {}})
    # Retries (0.2 s, 0.4 s, 0.8 s ... of backoff) stop before the deadline, though the budget allows 30 s.
    assert guard.calls == len(pool.sent) >= 3
    assert all(timeout.connect_timeout <= 3.0 for _, _, timeout in pool.sent)
    assert kube.time.monotonic() < 3.0
    assert failure.value.nothing_sent


def test_a_guard_that_refuses_stops_the_write_before_anything_is_sent():
    class Lost(Exception):
        pass

    def guard():
        raise Lost("the run lost its lock")

    pool = RecordingPool(Response(200, {}))
    with pytest.raises(Lost):
        client(pool).fenced(guard).delete("/api/v1/namespaces/x/pods/p")
    assert pool.sent == []


def test_too_little_time_left_sends_nothing():
    pool = RecordingPool(Response(200, {}))
    with pytest.raises(kube.FenceDeadline):
        client(pool).fenced(Guard(deadline=0.1)).create("/api/v1/namespaces/x/events", {})
    assert pool.sent == []


def test_reads_of_a_fenced_view_are_not_guarded():
    pool = RecordingPool(Response(200, {"metadata": {"name": "n"}}))
    guard = Guard(deadline=-1.0)
    client(pool).fenced(guard).get("/api/v1/nodes/n")
    assert guard.calls == 0 and "timeout=" not in pool.sent[0][1]


def test_a_fenced_view_counts_its_requests_with_its_client():
    pool = RecordingPool(Response(200, {"metadata": {"name": "n"}}))
    api = client(pool)
    api.get("/api/v1/nodes/n")
    api.fenced(Guard(deadline=5.0)).patch("/api/v1/nodes/n", {"metadata": {}})
    assert api.requests == 2
