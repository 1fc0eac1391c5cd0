"""The fence (issue 12 items 2 and 12): a step may change a node only while the run's lock is confirmed fresh
and the run lives; a stale confirmation wakes the renewer and waits briefly; no API request in the common case."""

import os

import pytest

from migrollout.kube import KubeError
from migrollout.rollout import fence
from migrollout.rollout.fence import Fence, LockLost, LockState


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def setup(tmp_path, confirmed, alive=(1, 2), duration=30, lost=""):
    path = str(tmp_path / "lock.json")
    fence.write(path, LockState("run-1", "gpu-operator", duration, controller_pid=1, renewer_pid=2,
                                confirmed=confirmed, lost=lost))
    clock = Clock()
    pokes = []
    guard = Fence(path, "run-1", clock=clock, alive=lambda pid: pid in alive, poke=pokes.append, sleep=clock.sleep)
    return path, clock, guard, pokes


def test_a_fresh_confirmation_lets_the_step_go_on_without_waking_the_renewer(tmp_path):
    _, _, guard, pokes = setup(tmp_path, confirmed=1000.0 - 20)  # 20 s ago, Lease 30 s, margin 5 s
    guard.check("node gpu-1")
    assert pokes == []


def test_a_stale_confirmation_wakes_the_renewer_and_goes_on_once_it_confirms(tmp_path):
    path, clock, guard, pokes = setup(tmp_path, confirmed=1000.0 - 26)

    def renewer_confirms(pid):
        pokes.append(pid)
        state = fence.read(path)
        state.confirmed = clock.now
        fence.write(path, state)

    guard.poke = renewer_confirms
    guard.check("node gpu-1")
    assert pokes == [2]


def test_a_run_that_was_frozen_past_its_lease_stops_when_the_renewer_finds_the_lock_taken(tmp_path):
    path, _, guard, _ = setup(tmp_path, confirmed=1000.0 - 300)

    def renewer_finds_it_taken(pid):
        state = fence.read(path)
        state.lost = "another run took the Lease gpu-operator/mig-rollout over"
        fence.write(path, state)

    guard.poke = renewer_finds_it_taken
    with pytest.raises(LockLost, match="node gpu-1: stopped before changing it: the rollout lock was lost: another "
                                       "run took the Lease gpu-operator/mig-rollout over"):
        guard.check("node gpu-1")


def test_no_confirmation_in_time_stops_the_step(tmp_path):
    _, clock, guard, pokes = setup(tmp_path, confirmed=1000.0 - 300)
    with pytest.raises(LockLost, match=r"could not be confirmed: last confirmed 30[0-9] s ago, the Lease lasts 30 s"):
        guard.check()
    assert pokes == [2] and clock.now >= 1000.0 + fence.CONFIRM_WAIT_S


@pytest.mark.parametrize(("alive", "lost", "message"), [
    ((2,), "", "the ansible-playbook process \\(pid 1\\) of run run-1 is gone"),
    ((1, 2), "the run's ansible-playbook process 1 is gone", "the rollout lock was lost"),
])
def test_a_dead_run_or_a_lost_lock_stops_at_once(tmp_path, alive, lost, message):
    _, _, guard, pokes = setup(tmp_path, confirmed=1000.0, alive=alive, lost=lost)
    with pytest.raises(LockLost, match=message):
        guard.check()
    assert pokes == []


def test_a_stale_confirmation_with_a_dead_renewer_stops(tmp_path):
    _, _, guard, _ = setup(tmp_path, confirmed=1000.0 - 60, alive=(1,))
    with pytest.raises(LockLost, match="its renewer \\(pid 2\\) is gone"):
        guard.check()


def test_a_missing_state_file_stops(tmp_path):
    with pytest.raises(LockLost, match=r"state file .* is missing"):
        Fence(str(tmp_path / "none.json"), "run-1").check()


def test_the_state_file_keeps_what_it_does_not_know(tmp_path):
    path = str(tmp_path / "lock.json")
    (tmp_path / "lock.json").write_text('{"holder": "run-1", "namespace": "ns", "duration_s": 30, '
                                        '"controller_pid": 1, "slots": {"pool-a": 2}}')
    state = fence.read(path)
    state.confirmed = 5.0
    fence.write(path, state)
    again = fence.read(path)
    assert again.extra == {"slots": {"pool-a": 2}} and again.confirmed == 5.0


def test_boottime_counts_forward():
    assert fence.boottime() > 0


class LeaseApi:
    def __init__(self, error=None):
        self.error = error
        self.patches = []

    def patch(self, path, body, **kwargs):
        self.patches.append(body)
        if self.error is not None:
            raise self.error
        return {}


def renewer(tmp_path, api, watch_pid=None):
    from migrollout.rollout.lock import Renewer

    path = str(tmp_path / "lock.json")
    fence.write(path, LockState("run-1", "gpu-operator", 30, controller_pid=os.getpid(), confirmed=1.0))
    return path, Renewer(api, "gpu-operator", "run-1", 30, watch_pid or os.getpid(), path)


def test_the_renewer_records_each_confirmed_renewal_and_its_own_pid(tmp_path):
    path, renew = renewer(tmp_path, LeaseApi())
    waits = []

    def wait(seconds):
        waits.append(seconds)
        if len(waits) > 2:
            raise SystemExit  # stop the loop after two renewals
    with pytest.raises(SystemExit):
        renew.run(wait)
    state = fence.read(path)
    assert state.renewals == 2 and state.confirmed > 1.0 and state.renewer_pid == os.getpid() and not state.lost
    assert renew.api.patches[0][0] == {"op": "test", "path": "/spec/holderIdentity", "value": "run-1"}


@pytest.mark.parametrize(("error", "lost"), [
    (KubeError(422, "Invalid", "the test operation failed"), "another run took the Lease gpu-operator/mig-rollout over"),
    (KubeError(404, "NotFound", "not found"), "the Lease gpu-operator/mig-rollout was deleted"),
])
def test_the_renewer_records_the_loss_of_the_lock(tmp_path, error, lost):
    path, renew = renewer(tmp_path, LeaseApi(error))
    assert renew.run(lambda seconds: None).startswith(lost)
    assert fence.read(path).lost.startswith(lost)


def test_the_renewer_records_the_end_of_its_run(tmp_path):
    path, renew = renewer(tmp_path, LeaseApi(), watch_pid=2 ** 22 + 1)  # no such process
    assert "ansible-playbook process" in renew.run(lambda seconds: None)
    assert "is gone" in fence.read(path).lost and renew.api.patches == []
