"""The rollout lock: a Lease one run holds; a second run is refused (naming the holder) until the first
releases it, or, when the first run died, until its Lease expires."""

import time

from conftest import run_module

LEASE = "/apis/coordination.k8s.io/v1/namespaces/gpu-operator/leases/mig-rollout"


def test_lock_contention_and_stale_expiry(cluster):
    first = run_module(cluster, "nvidia_mig.rollout.mig_rollout_lock", {"duration": 10, "timeout": 0})
    assert first.get("failed") is not True, first
    lease = cluster.api.get(LEASE)
    assert lease["spec"]["holderIdentity"] == first["holder"]

    # The first run's ansible process has ended: its renewer stops, but the Lease is still fresh.
    refused = run_module(cluster, "nvidia_mig.rollout.mig_rollout_lock", {"duration": 10, "timeout": 0})
    assert refused["failed"] is True
    assert refused["msg"].startswith(f"another MIG rollout holds the lock (Lease gpu-operator/mig-rollout): "
                                     f"{first['holder']}, run by ")
    assert "if that run has died" in refused["msg"]

    started = time.monotonic()
    second = run_module(cluster, "nvidia_mig.rollout.mig_rollout_lock", {"duration": 10, "timeout": 40})
    waited = time.monotonic() - started
    assert second.get("failed") is not True, second
    assert cluster.api.get(LEASE)["spec"]["holderIdentity"] == second["holder"]
    assert 2 < waited < 30  # it waited for the dead holder's Lease to expire, no longer

    # Only the holder can release it.
    not_ours = run_module(cluster, "nvidia_mig.rollout.mig_rollout_lock", {"state": "absent", "holder": first["holder"]})
    assert not_ours["released"] is False and cluster.api.get_or_none(LEASE) is not None
    released = run_module(cluster, "nvidia_mig.rollout.mig_rollout_lock", {"state": "absent", "holder": second["holder"],
                                                         "renewer_pid": second["renewer_pid"]})
    assert released["released"] is True
    # Released, not deleted: the Lease stays, held by no run (the exact fence's admission policy reads it).
    assert not cluster.api.get(LEASE)["spec"].get("holderIdentity")
