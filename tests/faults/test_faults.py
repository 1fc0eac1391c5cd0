"""Issue 12, "Fault injection found ways to lose the fleet's safety": one test per item, on the simulated cluster,
each judged from the API server's view (taints, cordons, labels, rollout records, pods, the Lease), and failing
on the toolkit as it was before the fix."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import (
    CONFIG,
    FLEETS,
    LEASE,
    RECORD,
    REPO,
    STATE,
    Cluster,
    ansible_env,
    inject_fault,
    latest_report,
    lease,
    node_changes,
    nodes_of,
    pods_by_uid,
    record,
    renewer_pids,
    run_rollout,
    taints,
    toolkit_changes,
    unbind_service_account,
    wait_exit,
    wait_settled,
)

from migrollout import kube
from migrollout.kube import KubeError
from migrollout.processes import pid_alive
from simcluster.testing import OPERATOR_USER

TARGET = "all-1g.10gb"


def nothing_changed(changes):
    """The toolkit wrote nothing to the watched nodes (other actors' writes are told apart by their field manager)."""
    return not toolkit_changes(changes)


def gpu_deployment(namespace, name, node, replicas=1, tolerations=None, volumes=None, labels=None):
    pod_labels = {"app": name, **(labels or {})}
    spec = {"nodeSelector": {"kubernetes.io/hostname": node}, "tolerations": tolerations or [],
            "containers": [{"name": "cuda", "image": "cuda", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}
    if volumes:
        spec["volumes"] = volumes
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": pod_labels}, "spec": spec}}}


def pdb(namespace, name, **spec):
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"matchLabels": {"app": name}}, **spec}}


def running(cluster, namespace, app=None):
    return [p for p in cluster.pods(namespace, label_selector=f"app={app}" if app else None)
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]


def wait_running(cluster, namespace, app, count):
    return cluster.wait(lambda: len(pods := running(cluster, namespace, app)) == count and pods, timeout=60,
                        what=f"{count} running {app} pods")


def wait_pdb(cluster, namespace, name, healthy):
    cluster.wait(lambda: cluster.api.get(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/{name}")
                 ["status"].get("currentHealthy") == healthy, what=f"PodDisruptionBudget {name} observed")


# -- 1. Bearer tokens in a kubeconfig are never sent ----------------------------------------------------------


@contextlib.contextmanager
def lease_holders(cluster) -> Iterator[list[str]]:
    """The holders of the rollout Lease, in order, while the block runs (a watch as the admin)."""
    holders: list[str] = []
    stop = threading.Event()
    namespace, name = LEASE.split("/namespaces/")[1].split("/leases/")

    def run() -> None:
        client = cluster.client()
        while not stop.is_set():
            with contextlib.suppress(KubeError):
                for kind, lease_object in client.watch(f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases",
                                                       field_selector=f"metadata.name={name}", timeout_seconds=2):
                    holder = (lease_object.get("spec") or {}).get("holderIdentity")
                    if kind in ("ADDED", "MODIFIED") and holder and holder not in holders:
                        holders.append(holder)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    time.sleep(0.5)
    try:
        yield holders
    finally:
        time.sleep(0.5)
        stop.set()
        thread.join(5)


def refused_as_the_service_account(cluster, tmp_path, kubeconfig):
    """Without the ServiceAccount's bindings, the same run is refused before anything changes, and the API
    server names the ServiceAccount as who it saw."""
    unbind_service_account(cluster)
    result = run_rollout(cluster, tmp_path / "unbound", "-e", f"mig_config={TARGET}",
                         env=ansible_env(cluster, KUBECONFIG=kubeconfig))
    assert result.returncode != 0
    assert lease(cluster) is None
    assert (f"refused to list nodes (HTTP 403 Forbidden): it sees you as user {OPERATOR_USER} (groups "
            f"system:serviceaccounts, system:serviceaccounts:mig-rollout)") in result.stdout, result.stdout[-2000:]


def test_01_the_rollout_runs_as_the_service_account_of_a_token_kubeconfig(cluster, rollout_rbac, tmp_path):
    node = nodes_of(cluster, "identity")[0]
    kubeconfig = cluster.operator_kubeconfig
    assert set(yaml.safe_load(Path(kubeconfig).read_text())["users"][0]["user"]) == {"token"}
    with lease_holders(cluster) as holders:
        result = run_rollout(cluster, tmp_path / "bound", "-e", f"mig_config={TARGET}", limit=node,
                             env=ansible_env(cluster, KUBECONFIG=kubeconfig))
    assert result.returncode == 0, result.stdout[-3000:]
    assert wait_settled(cluster, node, TARGET)
    assert holders == [latest_report(tmp_path / "bound")["run"]]
    refused_as_the_service_account(cluster, tmp_path, kubeconfig)
    assert wait_settled(cluster, node, TARGET)


def test_01_the_rollout_runs_as_an_exec_plugin_identity_and_refreshes_expiring_tokens(cluster, rollout_rbac,
                                                                                     tmp_path):
    node = nodes_of(cluster, "identity")[1]
    # Tokens that expire after 20 s and are revoked 10 s later: a run of a minute outlives several, so any of its
    # clients that kept a token past its expiry (its lock renewer renews the Lease every 3 s) would be refused.
    lifetime = 20
    kubeconfig = cluster.exec_kubeconfig_for(tmp_path / "kubeconfig-exec", lifetime_s=lifetime)
    inject_fault(cluster, node, "apply-delay-s", "45")
    handed_out_before, revoked_before = len(cluster.credentials_handed_out()), len(cluster.credentials_revoked())
    try:
        with lease_holders(cluster) as holders:
            result = run_rollout(cluster, tmp_path / "bound", "-e", f"mig_config={TARGET}",
                                 "-e", "mig_rollout_lock_duration=10", limit=node,
                                 env=ansible_env(cluster, KUBECONFIG=kubeconfig))
        ended = time.time()
    finally:
        inject_fault(cluster, node, "apply-delay-s", None)
    assert result.returncode == 0, result.stdout[-3000:]
    assert wait_settled(cluster, node, TARGET)
    assert holders == [latest_report(tmp_path / "bound")["run"]]

    handed_out = [entry for entry in cluster.credentials_handed_out()[handed_out_before:]
                  if entry["lifetime"] == lifetime]
    issued = {entry["secret"] for entry in handed_out if entry["event"] == "issued"}
    # Tokens of the run were revoked while it still had 10 s to go (three Lease renewals) ...
    revoked = {secret for entry in cluster.credentials_revoked()[revoked_before:] if entry["time"] < ended - 10
               for secret in entry["secrets"]}
    assert revoked & issued, (revoked, issued)
    # ... and its long-lived clients (the lock renewer, the MIG apply's wait) ran the plugin again and went on
    # with new tokens.
    tokens_by_client: dict[int, set[str]] = defaultdict(set)
    for entry in handed_out:
        tokens_by_client[entry["client_pid"]].add(entry["secret"])
    assert max(len(tokens) for tokens in tokens_by_client.values()) >= 3, dict(tokens_by_client)

    # The API server authenticates the plugin's token as the ServiceAccount (its credential id is the token's).
    seen = cluster.whoami(kubeconfig)
    assert seen["username"] == OPERATOR_USER
    latest = cluster.credentials_handed_out()[-1]
    assert seen["extra"]["authentication.kubernetes.io/credential-id"] == [f"JTI={latest['jti']}"]
    refused_as_the_service_account(cluster, tmp_path, kubeconfig)


# -- 2. A run that lost its lock keeps going ------------------------------------------------------------------


def test_02_a_run_frozen_past_its_lease_stops_without_touching_a_node(cluster, runs, tmp_path):
    first_node, second_node = nodes_of(cluster, "fence")
    inject_fault(cluster, first_node, "apply-delay-s", "6")  # the first run is frozen while this node applies
    args = ("-e", f"mig_config={TARGET}", "-e", "mig_rollout_lock_duration=10")
    limit = f"{first_node},{second_node}"
    frozen = runs.start(tmp_path / "first", *args, limit=limit)
    cluster.wait(lambda: cluster.labels(first_node).get(STATE) == "pending", timeout=60,
                 what="the first run's MIG apply on the first node")
    holder = lease(cluster)["spec"]["holderIdentity"]
    renewers = renewer_pids(holder)
    assert renewers, "the first run's lock renewer"
    # The control host stalls (laptop suspend, VM pause): every process of the run, its renewer included.
    os.killpg(frozen.pid, signal.SIGSTOP)
    for pid in renewers:
        os.kill(pid, signal.SIGSTOP)
    try:
        # Its Lease expires; a second run takes the lock over, finishes the node and does the other.
        second = run_rollout(cluster, tmp_path / "second", *args, limit=limit)
        assert second.returncode == 0, second.stdout[-3000:]
        assert latest_report(tmp_path / "second")["nodes"][0]["result"] == "resumed"
        assert wait_settled(cluster, first_node, TARGET) and wait_settled(cluster, second_node, TARGET)
        # The first run wakes up.
        with node_changes(cluster, first_node, second_node) as changes:
            for pid in renewers:
                os.kill(pid, signal.SIGCONT)
            os.killpg(frozen.pid, signal.SIGCONT)
            code = wait_exit(frozen, 90)
    finally:
        for pid in renewers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    # It stopped without touching a node, took no lock, and says it lost its lock.
    assert nothing_changed(changes), changes
    assert wait_settled(cluster, first_node, TARGET) and wait_settled(cluster, second_node, TARGET)
    assert lease(cluster) is None
    assert code != 0
    report = latest_report(tmp_path / "first")
    assert "another run took the Lease gpu-operator/mig-rollout over" in report["lock_lost"] or \
        "was deleted" in report["lock_lost"], report
    assert [row["result"] for row in report["nodes"]] == ["failed", "not started"]
    assert "lost" in report["nodes"][0]["reason"]
    inject_fault(cluster, first_node, "apply-delay-s", None)


# -- 3 and 7. Bad settings are refused before the lock --------------------------------------------------------


@pytest.mark.parametrize(("setting", "value"), [
    ("mig_rollout_serial", "0"), ("mig_rollout_serial", "-1"), ("mig_rollout_serial", "150%"),
    ("mig_rollout_serial", "abc"),
    # item 7
    ("mig_rollout_evacuation_timeout", "0"), ("mig_rollout_apply_timeout", "0"), ("mig_rollout_verify_timeout", "-1"),
])
def test_03_07_a_bad_setting_is_refused_before_the_lock_naming_it(cluster, tmp_path, setting, value):
    nodes = nodes_of(cluster, "settings")
    with node_changes(cluster, *nodes) as changes:
        result = run_rollout(cluster, tmp_path, "-e", f"mig_config={TARGET}", "-e", f"{setting}={value}",
                             limit="gpu_pool_settings")
    assert nothing_changed(changes), changes
    assert lease(cluster) is None
    assert result.returncode != 0
    assert f"{setting} is '{value}' (nodes {', '.join(nodes)}); it must be" in result.stdout, result.stdout[-3000:]
    assert "Traceback" not in result.stdout + result.stderr


# -- 4. A run that cannot reach or may not read the cluster ---------------------------------------------------


def test_04_a_run_that_cannot_list_the_cluster_fails_naming_who_and_what(cluster, tmp_path):
    config = yaml.safe_load(Path(cluster.operator_kubeconfig).read_text())
    config["users"][0]["user"] = {"token": "not-a-valid-token"}
    wrong = tmp_path / "wrong-token"
    wrong.write_text(yaml.safe_dump(config))
    cases = {
        "bad kubeconfig path": (str(tmp_path / "missing"), f"{tmp_path / 'missing'} does not exist"),
        "wrong token": (str(wrong), "refused the credentials (HTTP 401 Unauthorized)"),
        # The least-privileged identity, which nothing in this cluster binds to the rollout's roles.
        "no rights": (cluster.operator_kubeconfig, "refused to list nodes (HTTP 403 Forbidden): it sees you as user "
                                                   f"{OPERATOR_USER} (groups system:serviceaccounts, "
                                                   "system:serviceaccounts:mig-rollout)"),
    }
    nodes = nodes_of(cluster, "access")
    for case, (kubeconfig, expected) in cases.items():
        with node_changes(cluster, *nodes) as changes:
            result = run_rollout(cluster, tmp_path / case, "-e", f"mig_config={TARGET}",
                                 env=ansible_env(cluster, KUBECONFIG=kubeconfig))
        assert nothing_changed(changes) and lease(cluster) is None
        assert result.returncode != 0, f"{case}: {result.stdout[-2000:]}"
        assert "the rollout cannot start, the gpu_nodes inventory could not read the cluster" in result.stdout, case
        assert expected in result.stdout, f"{case}: {result.stdout[-2000:]}"
        # Limited to some nodes (which then match nothing), it fails too, and the inventory's warning says why.
        limited = run_rollout(cluster, tmp_path / case, "-e", f"mig_config={TARGET}", limit=nodes[0],
                              env=ansible_env(cluster, KUBECONFIG=kubeconfig))
        assert limited.returncode != 0 and expected in " ".join(limited.stderr.split()), f"{case}: {limited.stderr}"

    # The operator playbook shares the inventory and needs no GPU node (a cluster without any yet): there an
    # unlistable cluster only warns.
    operator = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "playbooks/nvidia-gpu-operator.yml",
                               "--list-hosts"], capture_output=True, text=True, cwd=REPO,
                              env=ansible_env(cluster, KUBECONFIG=cluster.operator_kubeconfig))
    assert operator.returncode == 0, operator.stdout + operator.stderr


# -- 5. The NoExecute maintenance option ----------------------------------------------------------------------


def test_05_a_noexecute_maintenance_taint_is_refused_and_cpu_pods_keep_running(cluster, tmp_path, namespace):
    node = nodes_of(cluster, "noexec")[0]
    service = gpu_deployment(namespace, "cpu-svc", node, replicas=2)
    del service["spec"]["template"]["spec"]["containers"][0]["resources"]  # a CPU-only service
    cluster.apply(service)
    cluster.apply(pdb(namespace, "cpu-svc", maxUnavailable=0))
    before = {p["metadata"]["uid"] for p in wait_running(cluster, namespace, "cpu-svc", 2)}
    taint = json.dumps({"mig_rollout_maintenance_taints": [{"key": "mig", "value": "maintenance",
                                                            "effect": "NoExecute"}]})
    with node_changes(cluster, node) as changes:
        result = run_rollout(cluster, tmp_path, "-e", f"mig_config={TARGET}", "-e", taint, limit=node)
        time.sleep(3)  # the taint manager acts within a second of a NoExecute taint
    assert nothing_changed(changes) and not taints(cluster, node) and lease(cluster) is None
    assert {p["metadata"]["uid"] for p in running(cluster, namespace, "cpu-svc")} == before
    assert result.returncode != 0
    assert "NoExecute is refused: the taint manager would delete every pod on the node" in result.stdout


# -- 6. GPU pods that tolerate the maintenance taint ----------------------------------------------------------


def test_06_gpu_pods_that_tolerate_the_taint_get_the_node_cordoned_and_stay_off_it(cluster, tmp_path, namespace):
    node = nodes_of(cluster, "tolerate")[0]
    cluster.apply(gpu_deployment(namespace, "tolerant", node, tolerations=[{"key": "mig", "operator": "Exists"}]))
    [old] = wait_running(cluster, namespace, "tolerant", 1)
    # The pod is pinned to the node (nowhere else to go): without the capacity check, to reach its evacuation.
    with node_changes(cluster, node) as changes:
        result = run_rollout(cluster, tmp_path, "-e", f"mig_config={TARGET}", "-e", "mig_rollout_capacity_policy=ignore",
                             limit=node)
    assert result.returncode == 0, result.stdout[-3000:]
    assert wait_settled(cluster, node, TARGET)
    # The node was cordoned as well as tainted while it was reconfigured, and both were undone.
    assert any(change["unschedulable"] and change["taints"] for change in changes[node]), changes
    assert old["metadata"]["uid"] not in pods_by_uid(cluster, namespace)
    assert cluster.labels(node).get(STATE) == "success"


def test_06_a_gpu_pod_that_tolerates_even_the_cordon_gets_its_node_refused(cluster, tmp_path, namespace):
    node = nodes_of(cluster, "tolerate")[1]
    cluster.apply(gpu_deployment(namespace, "anywhere", node, tolerations=[{"operator": "Exists"}]))
    [pod] = wait_running(cluster, namespace, "anywhere", 1)
    with node_changes(cluster, node) as changes:
        result = run_rollout(cluster, tmp_path, "-e", f"mig_config={TARGET}", limit=node)
    assert nothing_changed(changes) and lease(cluster) is None
    assert [p["metadata"]["uid"] for p in running(cluster, namespace, "anywhere")] == [pod["metadata"]["uid"]]
    assert result.returncode != 0
    assert f"node {node}: GPU pod {namespace}/{pod['metadata']['name']} tolerates every taint" in result.stdout


# -- 8. A node whose MIG apply failed can be finished by the next run -----------------------------------------


def test_08_a_node_left_failed_is_finished_by_the_next_run_once_the_cause_is_fixed(cluster, tmp_path):
    node = nodes_of(cluster, "resume")[0]
    inject_fault(cluster, node, "apply-fails")
    first = run_rollout(cluster, tmp_path / "first", "-e", f"mig_config={TARGET}", limit=node)
    assert first.returncode != 0
    left = record(cluster, node)
    assert left["step"] == "failed" and cluster.labels(node)[STATE] == "failed"
    inject_fault(cluster, node, "apply-fails", None)  # the cause is fixed

    second = run_rollout(cluster, tmp_path / "second", "-e", f"mig_config={TARGET}", limit=node)
    assert second.returncode == 0, second.stdout[-3000:]
    assert wait_settled(cluster, node, TARGET)
    assert latest_report(tmp_path / "second")["nodes"][0]["result"] == "resumed"


# -- 9. Transient API errors ------------------------------------------------------------------------------------


def test_09_an_api_server_restart_does_not_fail_the_node(cluster, runs, tmp_path, flaky_proxy):
    node = nodes_of(cluster, "flaky")[0]
    inject_fault(cluster, node, "apply-delay-s", "5")
    kubeconfig = flaky_proxy.kubeconfig(cluster.kubeconfig, tmp_path / "kubeconfig")
    run = runs.start(tmp_path / "run", "-e", f"mig_config={TARGET}", limit=node,
                     env=ansible_env(cluster, KUBECONFIG=kubeconfig))
    cluster.wait(lambda: cluster.labels(node).get(STATE) == "pending", timeout=60, what="the MIG apply under way")
    flaky_proxy.down()  # the API server restarts: connections refused, open ones (the run's watch) cut
    time.sleep(3)
    flaky_proxy.up()
    assert wait_exit(run, 120) == 0, (tmp_path / "run" / "run.log").read_text()[-3000:]
    assert wait_settled(cluster, node, TARGET)
    inject_fault(cluster, node, "apply-delay-s", None)


def test_09_a_failure_that_cannot_be_recorded_says_so(cluster, runs, tmp_path, flaky_proxy):
    node = nodes_of(cluster, "flaky")[1]
    inject_fault(cluster, node, "apply-delay-s", "5")
    kubeconfig = flaky_proxy.kubeconfig(cluster.kubeconfig, tmp_path / "kubeconfig")
    run = runs.start(tmp_path / "run", "-e", f"mig_config={TARGET}", limit=node,
                     env=ansible_env(cluster, KUBECONFIG=kubeconfig, MIGROLLOUT_API_RETRY_S="2"))
    cluster.wait(lambda: cluster.labels(node).get(STATE) == "pending", timeout=60, what="the MIG apply under way")
    flaky_proxy.down()  # longer than the run retries
    try:
        code = wait_exit(run, 120)
    finally:
        flaky_proxy.up()
    assert code != 0
    # Nothing reached the node after the outage began: its record still says maintenance, not failed ...
    assert record(cluster, node)["step"] == "maintenance"
    # ... and the run says so, instead of reporting the failure as recorded.
    row = latest_report(tmp_path / "run")["nodes"][0]
    assert row["result"] == "failed"
    assert "the failure could not be recorded on the node" in row["reason"], row
    log = (tmp_path / "run" / "run.log").read_text()
    assert "...ignoring" in log
    inject_fault(cluster, node, "apply-delay-s", None)
    # Leave the node as a rerun would: it resumes the node and completes it.
    again = run_rollout(cluster, tmp_path / "again", "-e", f"mig_config={TARGET}", limit=node)
    assert again.returncode == 0, again.stdout[-2000:]


# -- 10. Check mode shows what will block the real run ---------------------------------------------------------


def test_10_check_mode_names_every_pod_that_will_block_the_real_run(cluster, tmp_path, namespace):
    node = nodes_of(cluster, "check")[0]
    train = {"tier": "train"}
    bare = gpu_deployment(namespace, "bare", node, labels=train)["spec"]["template"]
    cluster.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare", "namespace": namespace,
                                                                   "labels": bare["metadata"]["labels"]},
                   "spec": bare["spec"]})
    cluster.apply(gpu_deployment(namespace, "scratch", node, labels=train,
                                 volumes=[{"name": "tmp", "emptyDir": {}}]))
    cluster.apply(gpu_deployment(namespace, "tolerant", node, labels={"tier": "batch"},
                                 tolerations=[{"key": "mig", "operator": "Exists"}]))
    cluster.apply(gpu_deployment(namespace, "guarded", node, labels=train))
    cluster.apply(pdb(namespace, "guarded", minAvailable=1))
    cluster.apply(gpu_deployment(namespace, "web", node, labels={"tier": "web"}))
    for app in ("bare", "scratch", "tolerant", "guarded", "web"):
        wait_running(cluster, namespace, app, 1)
    wait_pdb(cluster, namespace, "guarded", 1)
    names = {p["metadata"]["labels"]["app"]: f"{namespace}/{p['metadata']['name']}" for p in cluster.pods(namespace)}

    with node_changes(cluster, node) as changes:
        result = run_rollout(cluster, tmp_path, "--check", "-e", f"mig_config={TARGET}",
                             "-e", json.dumps({"mig_rollout_pod_selector": "tier in (train,batch)"}), limit=node)
    assert nothing_changed(changes) and lease(cluster) is None
    assert result.returncode == 0, result.stdout[-3000:]
    out = " ".join(result.stdout.split())
    assert f"{names['bare']}: not managed by a controller" in out
    assert f"{names['scratch']}: uses emptyDir local storage" in out
    assert f"{names['guarded']}: PodDisruptionBudget {namespace}/guarded allows no disruption now" in out
    assert f"cordoned as well: GPU pods {names['tolerant']} tolerate mig=maintenance:NoSchedule" in out
    # The set-based selector picks what the API server picks: not the web tier.
    assert names["tolerant"] in out and names["web"] not in out
    assert "the rollout would stop at this node" in " ".join(result.stderr.split())  # a warning


# -- 11. Messages ------------------------------------------------------------------------------------------------


def test_11_a_list_valued_mig_config_gets_a_type_error(cluster, tmp_path):
    nodes = nodes_of(cluster, "settings")
    with node_changes(cluster, *nodes) as changes:
        result = run_rollout(cluster, tmp_path, "-e", json.dumps({"mig_config": [TARGET]}), limit="gpu_pool_settings")
    assert nothing_changed(changes) and lease(cluster) is None
    assert result.returncode != 0
    assert "unhashable" not in result.stdout
    assert (f"mig_config is ['{TARGET}'] (nodes {', '.join(nodes)}); it must be the name of one MIG config "
            f"(such as all-1g.10gb), not a list") in " ".join(result.stdout.split())


def test_11_a_rerun_of_a_stuck_pending_node_says_how_to_recover(cluster, tmp_path):
    node = nodes_of(cluster, "msgs")[0]
    inject_fault(cluster, node, "stuck-pending")
    first = run_rollout(cluster, tmp_path / "first", "-e", f"mig_config={TARGET}", "-e", "mig_rollout_apply_timeout=5",
                        limit=node)
    assert first.returncode != 0
    out = " ".join(first.stdout.split())
    assert "last state pending" in out and "restart its pod: kubectl -n gpu-operator delete pod nvidia-mig-manager" in out
    left = record(cluster, node)
    assert left["step"] == "failed" and cluster.labels(node)[STATE] == "pending"

    with node_changes(cluster, node) as changes:
        second = run_rollout(cluster, tmp_path / "second", "-e", f"mig_config={TARGET}", limit=node)
    assert nothing_changed(changes) and record(cluster, node) == left and lease(cluster) is None
    assert second.returncode != 0
    out = " ".join(second.stdout.split())
    assert f"node {node}: its MIG manager is still in state pending for {TARGET}, which run {left['run']} gave up" in out
    manager = next(p for p in cluster.pods("gpu-operator", field_selector=f"spec.nodeName={node}")
                   if p["metadata"]["name"].startswith("nvidia-mig-manager"))
    assert f"kubectl -n gpu-operator delete pod {manager['metadata']['name']}" in out

    # The recovery it names works: restart the MIG manager, run again.
    inject_fault(cluster, node, "stuck-pending", None)
    cluster.api.delete(kube.pod_path("gpu-operator", manager["metadata"]["name"]))
    third = run_rollout(cluster, tmp_path / "third", "-e", f"mig_config={TARGET}", limit=node)
    assert third.returncode == 0, third.stdout[-3000:]
    assert wait_settled(cluster, node, TARGET)


def test_11_a_reboot_required_failure_says_a_reboot_is_needed_and_how_to_allow_it(cluster, tmp_path):
    node = nodes_of(cluster, "reboot")[0]
    inject_fault(cluster, node, "reboot-required")
    result = run_rollout(cluster, tmp_path, "-e", f"mig_config={TARGET}", limit=node)
    assert result.returncode != 0
    assert record(cluster, node)["step"] == "failed" and cluster.labels(node)[STATE] == "failed"
    reason = latest_report(tmp_path)["nodes"][0]["reason"]
    assert "needs a GPU reset, or a reboot" in reason and "WITH_REBOOT is not true" in reason
    assert "reboot the node, or allow the MIG manager to (WITH_REBOOT=true" in reason


def test_11_a_failed_rollback_is_shown_as_failed_and_in_the_report(cluster, tmp_path):
    node = nodes_of(cluster, "msgs")[2]
    # The previous config has MIG devices, so its re-apply has to create instances too, which the injected fault
    # makes fail (as mig-parted does, an apply that changes nothing, such as back to all-disabled, succeeds).
    previous = "all-3g.40gb"
    cluster.label(node, {CONFIG: previous})
    cluster.wait_settled(node, previous)
    inject_fault(cluster, node, "apply-fails")
    result = run_rollout(cluster, tmp_path, "-e", f"mig_config={TARGET}", "-e", "mig_rollout_rollback_on_failure=true",
                         limit=node)
    assert result.returncode != 0
    # The rollback was tried and failed, on the API server's view: back at the old config, state failed.
    labels = cluster.labels(node)
    assert labels[CONFIG] == previous and labels[STATE] == "failed"
    assert record(cluster, node)["step"] == "failed"
    row = latest_report(tmp_path)["nodes"][0]
    assert row["rollback"] == "failed"
    assert f"the rollback to {previous} FAILED: node" in row["reason"]
    assert "TASK [nvidia_mig.rollout.mig_rollout : Re-apply the node's previous MIG config]" in result.stdout
    assert "...ignoring" in result.stdout


def test_11_a_deleted_node_is_not_said_to_stay_in_maintenance(cluster, runs, tmp_path):
    node = nodes_of(cluster, "msgs")[3]
    inject_fault(cluster, node, "apply-delay-s", "5")
    run = runs.start(tmp_path, "-e", f"mig_config={TARGET}", limit=node)
    cluster.wait(lambda: cluster.labels(node).get(STATE) == "pending", timeout=60, what="the MIG apply under way")
    cluster.api.delete(kube.node_path(node))
    assert wait_exit(run, 120) != 0
    reason = latest_report(tmp_path)["nodes"][0]["reason"]
    assert "was deleted" in reason and "the node no longer exists" in reason
    assert "stays in maintenance" not in reason


# -- 12. A killed ansible-playbook leaves no evacuation running -------------------------------------------------


def test_12_killing_ansible_playbook_stops_its_evacuation(cluster, runs, tmp_path, namespace):
    node = nodes_of(cluster, "kill")[0]
    cluster.apply(gpu_deployment(namespace, "held", node))
    cluster.apply(pdb(namespace, "held", minAvailable=1))
    [pod] = wait_running(cluster, namespace, "held", 1)
    wait_pdb(cluster, namespace, "held", 1)
    run = runs.start(tmp_path, "-e", f"mig_config={TARGET}", "-e", "mig_rollout_evacuation_timeout=300",
                     "-e", "mig_rollout_lock_duration=10", "-e", "mig_rollout_capacity_policy=ignore", limit=node)
    cluster.wait(lambda: record(cluster, node), timeout=60, what="the node in maintenance")
    time.sleep(2)  # the evacuation is retrying the eviction the budget refuses
    os.kill(run.pid, signal.SIGKILL)  # ansible-playbook only: its worker process is left running
    time.sleep(3)
    # Were the evacuation still running, this would let its next eviction through.
    cluster.api.delete(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/held")
    time.sleep(10)
    assert [p["metadata"]["uid"] for p in running(cluster, namespace, "held")] == [pod["metadata"]["uid"]]


# -- 13. `simcluster up` on a cluster with a dead component deleted the cluster ----------------------------------


def _kill(cluster, *names):
    """SIGKILL these processes of the cluster; their pids before."""
    pids = dict(cluster.state.pids)
    for name in names:
        os.kill(pids[name], signal.SIGKILL)
    for name in names:
        deadline = time.monotonic() + 10
        while cluster.state.running(name) and time.monotonic() < deadline:
            time.sleep(0.1)
    return pids


def _running_pods(cluster, namespace, count):
    pods = cluster.pods(namespace)
    if len(pods) == count and all(p["status"].get("phase") == "Running" for p in pods):
        return {p["metadata"]["uid"] for p in pods}
    return None


def test_13_up_restarts_a_dead_component_and_keeps_the_cluster_only_fresh_replaces_it(tmp_path):
    # A cluster of its own: the suite's cluster must not lose its API server under another test.
    options = ("--port", "0", "--fleet", str(FLEETS / "small.yaml"), "--simulated-operator")
    with Cluster.start(tmp_path / "c", args=options) as cluster:
        ca = Path(cluster.ca_file).read_bytes()
        token = yaml.safe_load(Path(cluster.operator_kubeconfig).read_text())["users"][0]["user"]["token"]
        namespace = cluster.namespace()
        cluster.apply(gpu_deployment(namespace, "train", "a100-80gb-1", replicas=2))
        pods = cluster.wait(lambda: _running_pods(cluster, namespace, 2), what="two GPU pods running")
        cluster.annotate("a100-80gb-1", {RECORD: json.dumps({"step": "maintenance", "run": "in-flight"})})
        admin = cluster.client()  # made before: the same address and CA must keep working

        for dead in (("etcd", "simulator"), ("kube-apiserver",)):
            before = _kill(cluster, *dead)
            output = cluster.restart(*options)  # simcluster up, as a user runs it again
            assert f"restarted {', '.join(dead)}" in output and "its state is kept" in output, output
            after = cluster.state.pids
            assert {name for name in before if before[name] != after[name]} == set(dead)
            assert admin.request("GET", "/readyz") == "ok"
            assert Path(cluster.ca_file).read_bytes() == ca
            assert yaml.safe_load(Path(cluster.operator_kubeconfig).read_text())["users"][0]["user"]["token"] == token
            assert {p["metadata"]["uid"] for p in cluster.pods(namespace)} == pods
            assert record(cluster, "a100-80gb-1") == {"step": "maintenance", "run": "in-flight"}
            assert cluster.labels("a100-80gb-1").get(STATE) == "success"
            assert cluster.policy()["status"]["state"] == "ready"

        # Destroying it takes asking: --fresh (or simcluster down).
        old_pids = dict(cluster.state.pids)
        output = cluster.restart("--fresh", *options)
        assert "simcluster up --fresh: stopped" in output and f"removed {cluster.state_dir}" in output
        assert not any(pid_alive(pid) for pid in old_pids.values())
        assert Path(cluster.ca_file).read_bytes() != ca
        assert record(cluster, "a100-80gb-1") is None
        assert cluster.api.get_or_none(f"/api/v1/namespaces/{namespace}") is None
        assert cluster.whoami(cluster.operator_kubeconfig)["username"] == OPERATOR_USER
