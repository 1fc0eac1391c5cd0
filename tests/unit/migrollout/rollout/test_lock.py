"""Taking over the rollout Lease: judged on the taker's own monotonic clock, never on wall clocks."""

import pytest

from migrollout.kube import KubeError
from migrollout.rollout import lock


class Leases:
    """One Lease, as the API server keeps it: every write bumps its resourceVersion."""

    def __init__(self, holder, renew_time, duration=10):
        self.version = 1
        self.lease = {"metadata": {"name": lock.LEASE_NAME, "namespace": "ns", "resourceVersion": "1"},
                      "spec": {"holderIdentity": holder, "renewTime": renew_time, "leaseDurationSeconds": duration}}
        self.taken_at = None
        self.renew_at: list[float] = []   # clock times at which the holder renews

    def get_or_none(self, path, what=""):
        while self.renew_at and self.renew_at[0] <= lock.time.monotonic():
            self.renew_at.pop(0)
            self._bump()
        return self.lease

    def _bump(self):
        self.version += 1
        self.lease["metadata"]["resourceVersion"] = str(self.version)

    def patch(self, path, body, what=""):
        if body["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", "changed")
        self.lease["spec"].update(body["spec"])
        self.lease["metadata"].setdefault("annotations", {}).update(body["metadata"].get("annotations") or {})
        self._bump()
        self.taken_at = lock.time.monotonic()
        return self.lease


@pytest.fixture
def clock(monkeypatch):
    now = {"t": 1000.0}
    monkeypatch.setattr(lock.time, "monotonic", lambda: now["t"])
    monkeypatch.setattr(lock.time, "sleep", lambda s: now.__setitem__("t", now["t"] + s))
    return now


# A renewTime far in the future or far in the past (a skewed clock on either host) decides nothing.
@pytest.mark.parametrize("renew_time", ["2000-01-01T00:00:00.000000Z", "2999-01-01T00:00:00.000000Z"])
def test_a_dead_holders_lease_is_taken_once_seen_unchanged_for_its_duration_plus_the_grace(clock, renew_time):
    leases = Leases("dead-run", renew_time, duration=10)
    start = clock["t"]
    lock.acquire(leases, "ns", "me", 10, wait_s=60, details={})
    waited = leases.taken_at - start
    assert 10 + lock.TAKEOVER_GRACE_S <= waited < 10 + lock.TAKEOVER_GRACE_S + 2.5
    assert leases.lease["spec"]["holderIdentity"] == "me"


def test_a_live_holder_that_renews_keeps_its_lease_and_the_refusal_says_how_long_it_was_seen_unchanged(clock):
    leases = Leases("live-run", "2000-01-01T00:00:00.000000Z", duration=10)
    leases.renew_at = [clock["t"] + 3.0 * i for i in range(1, 40)]
    with pytest.raises(lock.LockHeld) as held:
        lock.acquire(leases, "ns", "me", 10, wait_s=60, details={})
    assert leases.taken_at is None
    assert "live-run" in str(held.value) and "as seen from here" in str(held.value)


def test_a_released_or_own_lease_is_taken_at_once(clock):
    for holder in ("", "me"):
        leases = Leases(holder, "2999-01-01T00:00:00.000000Z")
        start = clock["t"]
        lock.acquire(leases, "ns", "me", 10, wait_s=0, details={})
        assert leases.taken_at == start


def test_release_clears_the_holder_and_keeps_the_lease(clock):
    leases = Leases("me", "2026-12-07T10:00:00.000000Z")
    leases.lease["metadata"]["annotations"] = {lock.HOLDER_ANNOTATION: "{}"}
    assert lock.release(leases, "ns", "someone-else") is False
    assert lock.release(leases, "ns", "me") is True
    assert leases.lease["spec"]["holderIdentity"] is None
    # The next run takes it at once.
    start = clock["t"]
    lock.acquire(leases, "ns", "next", 10, wait_s=0, details={})
    assert leases.taken_at == start and leases.lease["spec"]["holderIdentity"] == "next"
