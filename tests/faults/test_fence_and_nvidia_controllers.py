"""The rollout beside NVIDIA's own controllers on the same nodes (the MIG manager stuck in pending, the driver
upgrade state machine of the real GPU Operator controller), and its exact fence, checked by the API server.
Every outcome is read from the API server. The driver upgrade test leaves its nodes' other pools excluded from
driver upgrades: it comes last."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from conftest import (
    CONFIG,
    DRIVER_UPGRADE_STATE,
    RECORD,
    REPO,
    STATE,
    ansible_env,
    driver_upgrade_states,
    inject_fault,
    latest_report,
    lease,
    node_changes,
    nodes_of,
    record,
    renewer_pids,
    run_rollout,
    toolkit_changes,
    wait_exit,
    wait_settled,
)

from migrollout.kube import KubeError

TARGET = "all-1g.10gb"
FENCE_POLICY = REPO / "rbac" / "mig-rollout-fence.yaml"
FENCE = "mig-rollout.nvidia-mig-rollout.io/fence"


def frozen_pid(path: Path) -> int | None:
    """The pid the test hook wrote once it froze (stopped) its process, or None yet."""
    try:
        pid = int(path.read_text())
    except (OSError, ValueError):
        return None
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return pid if state == "T" else None


@pytest.fixture
def exact_fence(cluster):
    """The admission policy of rbac/mig-rollout-fence.yaml, in force (an admin installs it), removed afterwards."""
    cluster.kubectl("apply", "-f", str(FENCE_POLICY))

    def denies() -> bool:
        # A dry run of a write that names a run while no Lease exists: the policy, once in force, refuses it.
        probe = f"/api/v1/nodes/{nodes_of(cluster, 'exact')[1]}"
        try:
            cluster.api.patch(probe, {"metadata": {"annotations": {FENCE: f"probe/{uuid.uuid4().hex}"}}},
                              dryRun="All")
        except KubeError as exc:
            return exc.status in (403, 422) and "mig-rollout-fence" in exc.message   # no Lease: 422
        return False

    cluster.wait(denies, timeout=60, what="the API server enforcing the admission policy mig-rollout-fence")
    yield
    cluster.kubectl("delete", "--ignore-not-found", "-f", str(FENCE_POLICY))


def test_the_api_server_refuses_the_write_of_a_run_woken_after_another_took_its_lease(cluster, runs, tmp_path,
                                                                                      exact_fence):
    frozen_node, other_node = nodes_of(cluster, "exact")
    trigger = tmp_path / "freeze"
    trigger.write_text("")
    args = ("-e", f"mig_config={TARGET}", "-e", "mig_rollout_lock_duration=10")
    # The first run freezes between the fence check of its first node write and the send (the test hook).
    first = runs.start(tmp_path / "first", *args, limit=frozen_node,
                       env=ansible_env(cluster, MIGROLLOUT_TEST_FREEZE_BEFORE_SEND=str(trigger)))
    claimed = Path(f"{trigger}.frozen")
    pid = cluster.wait(lambda: frozen_pid(claimed), timeout=120, what="the first run frozen before its node write")
    holder = lease(cluster)["spec"]["holderIdentity"]
    renewers = renewer_pids(holder)
    assert renewers, "the first run's lock renewer"
    for renewer in renewers:
        os.kill(renewer, signal.SIGSTOP)   # the whole control host stalls
    inject_fault(cluster, other_node, "apply-delay-s", "25")
    try:
        # Another run takes the Lease over (unchanged for its 10 s plus 5 s) and is busy with another node ...
        second = runs.start(tmp_path / "second", *args, limit=other_node)
        cluster.wait(lambda: cluster.labels(other_node).get(STATE) == "pending", timeout=120,
                     what="the second run's MIG apply")
        second_holder = lease(cluster)["spec"]["holderIdentity"]
        assert second_holder != holder
        # ... when the first wakes and sends the write it had checked before it froze.
        with node_changes(cluster, frozen_node) as changes:
            for renewer in renewers:
                os.kill(renewer, signal.SIGCONT)
            os.kill(pid, signal.SIGCONT)
            code = wait_exit(first, 120)
    finally:
        for process in [*renewers, pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process, signal.SIGCONT)
    assert code != 0
    # The API server refused it: the node stays as it was, untouched by the toolkit.
    assert not toolkit_changes(changes), changes
    assert record(cluster, frozen_node) is None and not cluster.node(frozen_node)["spec"].get("taints")
    log = " ".join((tmp_path / "first" / "run.log").read_text().split())
    assert (f"MIG rollout fence: this write names run {holder}, but the rollout Lease is held by {second_holder}"
            in log), log[-3000:]
    # The run that holds the Lease goes on, and its plan said its fence is exact.
    assert wait_exit(second, 180) == 0, (tmp_path / "second" / "run.log").read_text()[-3000:]
    assert "fence: exact" in (tmp_path / "second" / "run.log").read_text()
    assert wait_settled(cluster, other_node, TARGET)
    inject_fault(cluster, other_node, "apply-delay-s", None)


def node_events(cluster, node: str, reason: str) -> list[dict]:
    found, _ = cluster.api.list("/apis/events.k8s.io/v1/namespaces/default/events")
    return [e for e in found if e.get("reason") == reason and (e.get("regarding") or {}).get("name") == node]


def mig_manager_pod(cluster, node: str) -> dict:
    return next(p for p in cluster.pods("gpu-operator", field_selector=f"spec.nodeName={node}")
                if p["metadata"]["name"].startswith("nvidia-mig-manager") and not p["metadata"].get("deletionTimestamp"))


def test_a_mig_manager_stuck_in_pending_is_restarted_once_and_the_node_finishes(cluster, tmp_path):
    node = nodes_of(cluster, "stuck")[0]
    stuck = mig_manager_pod(cluster, node)
    inject_fault(cluster, node, "stuck-pending-once")   # its next run leaves pending, as mig-parted#485 does
    result = run_rollout(cluster, tmp_path, "-e", f"mig_config={TARGET}", "-e", "mig_rollout_pending_timeout=5",
                         limit=node)
    assert result.returncode == 0, result.stdout[-3000:]
    assert wait_settled(cluster, node, TARGET)
    # It restarted that pod (a new one runs), once, and said so: the report, an Event on the node, the output.
    assert mig_manager_pod(cluster, node)["metadata"]["uid"] != stuck["metadata"]["uid"]
    row = latest_report(tmp_path)["nodes"][0]
    assert row["result"] == "done"
    assert f"restarted pod gpu-operator/{stuck['metadata']['name']} once" in row["reason"], row
    [event] = node_events(cluster, node, "MigManagerRestarted")
    assert "stayed in state pending" in event["note"]
    assert "restarted pod" in " ".join((result.stdout + result.stderr).split())   # Ansible's warning


def test_a_driver_upgrade_under_way_refuses_the_rollout_and_the_wait_policy_waits_for_it(cluster, tmp_path):
    upgraded = nodes_of(cluster, "upgrade")
    others = [name for name in driver_upgrade_states(cluster) if name not in upgraded]
    # Only this pool's nodes take part in the driver upgrade: an admin excludes the others (NVIDIA's skip label).
    # They upgrade one after the other (the chart's maxParallelUpgrades, 1), which leaves the second under way
    # for a minute or more after the refused run below.
    for name in others:
        cluster.label(name, {"nvidia.com/gpu-driver-upgrade.skip": "true"})
    policy = cluster.policy()
    env = [*list(policy["spec"]["driver"].get("env") or []), {"name": "MIG_ROLLOUT_TEST", "value": uuid.uuid4().hex}]
    # A new driver setting restarts the driver on every node NVIDIA's controller upgrades: a real driver upgrade.
    cluster.api.patch(f"/apis/nvidia.com/v1/clusterpolicies/{policy['metadata']['name']}",
                      {"spec": {"driver": {"env": env}}})
    cluster.wait(lambda: any(driver_upgrade_states(cluster)[n] not in ("", "upgrade-done") for n in upgraded),
                 timeout=120, what="NVIDIA's driver upgrade under way on the upgrade pool")

    # The plan refuses, naming the nodes and their states, and changes nothing.
    with node_changes(cluster, *upgraded) as changes:
        refused = run_rollout(cluster, tmp_path / "refused", "-e", f"mig_config={TARGET}", limit=upgraded[0])
    assert refused.returncode != 0
    text = " ".join(refused.stdout.split())
    assert "the rollout cannot start, nothing was changed: NVIDIA's driver upgrade is under way on" in text, text[-3000:]
    assert any(f"{name} (" in text for name in upgraded)
    assert not toolkit_changes(changes) and lease(cluster) is None

    # With the wait policy it waits for the upgrade to end, then reconfigures both nodes, each only once its
    # driver upgrade is done; the report says what NVIDIA's controller did meanwhile.
    with contextlib.ExitStack() as stack:
        watches = {name: stack.enter_context(cluster.watch_node(name)) for name in upgraded}
        waited = run_rollout(cluster, tmp_path / "waited", "-e", f"mig_config={TARGET}",
                             "-e", "mig_rollout_capacity_policy=wait", "-e", "mig_rollout_capacity_timeout=600",
                             limit=",".join(upgraded))
        time.sleep(0.5)
    assert waited.returncode == 0, waited.stdout[-3000:]
    assert "waited for NVIDIA's driver upgrade on" in " ".join(waited.stdout.split())
    for name in upgraded:
        assert wait_settled(cluster, name, TARGET)
        begun = next(node for _, node in watches[name].events
                     if RECORD in (node["metadata"].get("annotations") or {}))
        assert begun["metadata"]["labels"].get(DRIVER_UPGRADE_STATE) == "upgrade-done", begun["metadata"]["labels"]
    report = latest_report(tmp_path / "waited")
    assert set(report["driver_upgrades"]) & set(upgraded), report.get("driver_upgrades")
    assert [row["result"] for row in report["nodes"]] == ["done", "done"]
    assert {(cluster.labels(name).get(CONFIG)) for name in upgraded} == {TARGET}
