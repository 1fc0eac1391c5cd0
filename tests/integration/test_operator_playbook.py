"""playbooks/nvidia-gpu-operator.yml installing NVIDIA's GPU Operator chart (the pinned module's) with the real helm;
NVIDIA's controller then runs in the simulated cluster (started without the operator) and does the rest."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
from conftest import FLEETS, REPO, ansible_env, launched_from, run_module, start_cluster, stop_cluster

from simcluster import upstream

CHART = str(upstream.build().chart)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    cluster = start_cluster(tmp_path_factory.mktemp("operator") / "c", FLEETS / "small.yaml", "--without-operator")
    yield cluster
    stop_cluster(cluster)


def playbook(cluster, *extra: str, check: bool = False, diff: bool = False, chart: str | None = CHART):
    command = [str(REPO / ".venv" / "bin" / "ansible-playbook"), "playbooks/nvidia-gpu-operator.yml"]
    if chart:
        command += ["-e", f"gpu_operator_chart_path={chart}"]
    command += list(extra) + (["--check"] if check else []) + (["--diff"] if diff else [])
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=ansible_env(cluster))


def release(cluster) -> dict:
    result = subprocess.run([f"{cluster.bin_dir}/helm", "list", "-n", "gpu-operator", "-o", "json"],
                            capture_output=True, text=True, env=cluster.env(), check=True)
    found = json.loads(result.stdout)
    return found[0] if found else {}


def recap_changed(output: str) -> int:
    line = next(line for line in output.splitlines() if line.startswith("localhost"))
    return int(line.split("changed=")[1].split()[0])


def untouched(cluster, before_release: dict, before_policy_generation: int) -> None:
    # The generation, not the resourceVersion: NVIDIA's controller keeps writing the ClusterPolicy's status.
    assert release(cluster).get("revision") == before_release.get("revision")
    assert cluster.policy()["metadata"]["generation"] == before_policy_generation


def test_install_is_idempotent_and_check_mode_only_shows(sim):
    first = playbook(sim)
    assert first.returncode == 0, first.stdout[-3000:]
    assert recap_changed(first.stdout) == 1
    policy = sim.policy()
    assert policy["spec"]["mig"]["strategy"] == "mixed"
    assert policy["status"]["state"] == "ready"
    # The operator now runs: the node booted with 7 x 1g.5gb per GPU advertises them under mixed.
    sim.wait(lambda: sim.allocatable("a100-40gb-1") == {"nvidia.com/mig-1g.5gb": "28"}, what="MIG resources")
    # The role lets operands tolerate the rollout's maintenance taint.
    assert {"key": "mig", "operator": "Exists"} in policy["spec"]["daemonsets"]["tolerations"]

    again = playbook(sim)
    assert again.returncode == 0 and recap_changed(again.stdout) == 0

    before_release, before_generation = release(sim), sim.policy()["metadata"]["generation"]
    preview = playbook(sim, "-e", "k8s_gpu_mig_strategy=single", check=True, diff=True)
    assert preview.returncode == 0, preview.stdout[-3000:]
    assert "-  strategy: mixed" in preview.stdout and "+  strategy: single" in preview.stdout
    untouched(sim, before_release, before_generation)


def driver_upgrade_states(cluster) -> dict[str, str]:
    listed, _ = cluster.api.list("/api/v1/nodes", label_selector="nvidia.com/gpu.present=true")
    return {n["metadata"]["name"]: (n["metadata"].get("labels") or {}).get("nvidia.com/gpu-driver-upgrade-state", "")
            for n in listed}


def test_a_change_that_restarts_the_driver_everywhere_is_named_and_refused(sim):
    # The maintenance toleration, set at install time by the role (the first test), restarted no driver.
    assert set(driver_upgrade_states(sim).values()) <= {"", "upgrade-done"}, driver_upgrade_states(sim)
    assert not [n["metadata"]["name"] for n in sim.api.list("/api/v1/nodes")[0] if n["spec"].get("unschedulable")]
    before_release, before_generation = release(sim), sim.policy()["metadata"]["generation"]
    another = json.dumps({"gpu_operator_extra_tolerations": [{"key": "mig", "operator": "Exists"},
                                                             {"key": "maintenance", "operator": "Exists"}]})
    preview = playbook(sim, "-e", another, check=True)
    assert preview.returncode == 0, preview.stdout[-3000:]
    assert "this change restarts the NVIDIA driver on every GPU node: daemonsets.tolerations changes" \
        in " ".join((preview.stdout + preview.stderr).split())   # Ansible's warning
    untouched(sim, before_release, before_generation)
    refused = playbook(sim, "-e", another)
    assert refused.returncode != 0
    text = " ".join(refused.stdout.split())
    assert "release gpu-operator/gpu-operator was not changed: this change restarts the NVIDIA driver" in text
    assert "gpu_operator_allow_driver_restart: true" in text and "Traceback" not in text
    untouched(sim, before_release, before_generation)
    assert set(driver_upgrade_states(sim).values()) <= {"", "upgrade-done"}


def test_single_is_refused_while_a_node_mixes_profiles(sim):
    labelled = run_module(sim, "nvidia_mig.rollout.mig_node_label", {"name": "a100-80gb-1", "config": "all-balanced"})
    assert labelled["state"] == "success", labelled
    before_release, before_generation = release(sim), sim.policy()["metadata"]["generation"]
    refused = playbook(sim, "-e", "k8s_gpu_mig_strategy=single")
    assert refused.returncode != 0
    assert "cannot switch to the single MIG strategy: 1 node(s)" in refused.stdout
    assert "a100-80gb-1 (all-balanced: more than one MIG device type present on node)" in refused.stdout
    untouched(sim, before_release, before_generation)
    restored = run_module(sim, "nvidia_mig.rollout.mig_node_label", {"name": "a100-80gb-1", "config": "all-disabled"})
    assert restored["state"] == "success"


@pytest.mark.parametrize("configs, message", [
    ({"tiny": [{"devices": "all", "mig-enabled": True, "mig-devices": {"1g.99gb": 1}}]},
     "fits none of the GPU models it could target"),
    ({"typo": [{"devices": "all", "mig-enabled": True, "mig-devces": {"1g.10gb": 7}}]},
     "unknown field(s) mig-devces"),
    ({"greedy": [{"device-filter": "0x20B210DE", "devices": "all", "mig-enabled": True,
                  "mig-devices": {"1g.10gb": 8}}]},
     "8 x 1g.10gb exceeds the maximum of 7 per A100-SXM4-80GB GPU"),
])
def test_bad_custom_configs_are_refused_before_anything_changes(sim, configs, message):
    before_release, before_generation = release(sim), sim.policy()["metadata"]["generation"]
    refused = playbook(sim, "-e", json.dumps({"gpu_operator_mig_configs": configs}))
    assert refused.returncode != 0
    assert message in refused.stdout
    assert "Install or upgrade" not in refused.stdout  # failed before the helm task
    untouched(sim, before_release, before_generation)


def test_chart_version_and_strategy_are_validated_before_anything_runs(sim):
    before_release, before_generation = release(sim), sim.policy()["metadata"]["generation"]
    number = playbook(sim, "-e", json.dumps({"gpu_operator_chart_version": 26.1}), chart=None)
    assert number.returncode != 0
    assert "gpu_operator_chart_version must be a quoted string" in number.stdout
    strategy = playbook(sim, "-e", "k8s_gpu_mig_strategy=double")
    assert strategy.returncode != 0
    assert "k8s_gpu_mig_strategy must be one of: none, single, mixed" in strategy.stdout
    untouched(sim, before_release, before_generation)


def test_missing_helm_unreachable_chart_and_bad_kubeconfig_are_one_sentence(sim):
    before_release, before_generation = release(sim), sim.policy()["metadata"]["generation"]
    no_helm = playbook(sim, "-e", "gpu_operator_helm_binary=/nonexistent/helm")
    assert "helm not found ('/nonexistent/helm' is not an executable on PATH)" in no_helm.stdout
    unreachable = playbook(sim, "-e", "gpu_operator_chart_repo_url=http://127.0.0.1:9/charts", chart=None)
    assert unreachable.returncode != 0
    assert 'read chart gpu-operator: looks like "http://127.0.0.1:9/charts" is not a valid chart repository' \
        in unreachable.stdout
    # The play's module_defaults hand k8s_kubeconfig to every module of the collection's cluster group.
    bad_config = playbook(sim, "-e", "k8s_kubeconfig=/nonexistent/kubeconfig")
    assert bad_config.returncode != 0
    assert ("list release gpu-operator/gpu-operator: Kubernetes cluster unreachable: stat /nonexistent/kubeconfig: "
            "no such file or directory") in bad_config.stdout
    for output in (no_helm.stdout, unreachable.stdout, bad_config.stdout):
        assert "Traceback" not in output
    untouched(sim, before_release, before_generation)


def test_custom_configs_become_the_mig_managers_configmap(sim):
    configs = {"half-3g": [{"devices": [0, 1, 2, 3], "mig-enabled": True, "mig-devices": {"3g.40gb": 2}},
                           {"devices": [4, 5, 6, 7], "mig-enabled": False}]}
    installed = playbook(sim, "-e", json.dumps({"gpu_operator_mig_configs": configs}))
    assert installed.returncode == 0, installed.stdout[-3000:]
    assert sim.policy()["spec"]["migManager"]["config"]["name"] == "custom-mig-parted-config"
    configmap = sim.api.get("/api/v1/namespaces/gpu-operator/configmaps/custom-mig-parted-config")
    assert "half-3g:" in configmap["data"]["config.yaml"]
    assert "all-disabled:" in configmap["data"]["config.yaml"]  # the standard configs stay available
    labelled = run_module(sim, "nvidia_mig.rollout.mig_node_label", {"name": "a100-80gb-2", "config": "half-3g"})
    assert labelled["state"] == "success", labelled
    assert labelled["config_map"] == "gpu-operator/custom-mig-parted-config"
    sim.wait(lambda: sim.allocatable("a100-80gb-2") == {"nvidia.com/mig-3g.40gb": "8", "nvidia.com/gpu": "4"},
             what="half of the GPUs partitioned")


def test_uninstall(sim):
    removed = playbook(sim, "-e", "gpu_operator_state=absent")
    assert removed.returncode == 0, removed.stdout[-3000:]
    assert release(sim) == {}
    assert sim.api.get_or_none("/apis/nvidia.com/v1/clusterpolicies/cluster-policy") is None
    # The operands went with the ClusterPolicy (garbage collector): nothing advertises GPUs any more.
    sim.wait(lambda: not sim.allocatable("a100-80gb-3"), what="device plugin gone")


def test_the_charts_rbac_is_in_force_and_a_denied_call_fails_visibly(sim):
    """The controller runs as the chart's ServiceAccount: take its right to touch DaemonSets away, and the next
    reconcile is denied by the API server, which the role's wait reports instead of waiting out its timeout."""
    assert playbook(sim).returncode == 0
    paths = ["/apis/rbac.authorization.k8s.io/v1/namespaces/gpu-operator/roles/gpu-operator",
             "/apis/rbac.authorization.k8s.io/v1/clusterroles/gpu-operator"]
    saved = {path: sim.api.get(path) for path in paths}
    strategy = sim.policy()["spec"]["mig"]["strategy"]
    other = "single" if strategy == "mixed" else "mixed"
    try:
        for path, role in saved.items():
            rules = [{**rule, "resources": [r for r in rule.get("resources", []) if r != "daemonsets"]}
                     for rule in role["rules"]]
            narrowed = {**role, "rules": [rule for rule in rules if rule["resources"] or rule.get("nonResourceURLs")]}
            sim.api.replace(path, {k: v for k, v in narrowed.items() if k != "status"})
        sim.api.patch("/apis/nvidia.com/v1/clusterpolicies/cluster-policy", {"spec": {"mig": {"strategy": other}}})
        waited = run_module(sim, "nvidia_mig.rollout.gpu_operator_wait", {"strategy": other, "timeout": 60})
        assert waited["failed"] is True
        assert "forbidden" in waited["msg"] and "system:serviceaccount:gpu-operator:gpu-operator" in waited["msg"]
        assert "daemonsets" in waited["msg"]
        # Nothing the denied calls would have done happened: the device plugin still runs the old strategy.
        plugin = sim.api.get("/apis/apps/v1/namespaces/gpu-operator/daemonsets/nvidia-device-plugin-daemonset")
        env = {e["name"]: e.get("value") for e in plugin["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["MIG_STRATEGY"] == strategy
    finally:
        for path, role in saved.items():
            current = sim.api.get(path)
            sim.api.replace(path, {**{k: v for k, v in role.items() if k != "status"},
                                   "metadata": {**role["metadata"],
                                                "resourceVersion": current["metadata"]["resourceVersion"]}})
        sim.api.patch("/apis/nvidia.com/v1/clusterpolicies/cluster-policy", {"spec": {"mig": {"strategy": strategy}}})
    recovered = run_module(sim, "nvidia_mig.rollout.gpu_operator_wait", {"strategy": strategy, "timeout": 300})
    assert recovered["state"] == "ready", recovered


def _operator_processes(cluster) -> list[int]:
    """Host pids of this cluster's GPU Operator controller (a real process in its own namespaces)."""

    found = []
    for pid in launched_from(cluster.state_dir):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                argv = file.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"gpu-operator") and b"--leader-elect" in argv:
            found.append(pid)
    return found


def test_a_controller_crash_during_the_install_still_ends_ready(sim):
    """Kill NVIDIA's controller while the playbook waits for it: the kubelet restarts it, it finishes the
    reconcile, and the role's wait ends with the ClusterPolicy ready (no false failure, no false success)."""
    if release(sim):
        assert playbook(sim, "-e", "gpu_operator_state=absent").returncode == 0
    running = subprocess.Popen([str(REPO / ".venv" / "bin" / "ansible-playbook"), "playbooks/nvidia-gpu-operator.yml",
                                "-e", f"gpu_operator_chart_path={CHART}"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, cwd=REPO, env=ansible_env(sim))
    try:
        pids = sim.wait(lambda: _operator_processes(sim), timeout=120, what="the controller process")
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        output, _ = running.communicate(timeout=600)
    finally:
        if running.poll() is None:
            running.kill()
    assert running.returncode == 0, output[-3000:]
    assert sim.policy()["status"]["state"] == "ready"
    pod = sim.pods("gpu-operator", label_selector="app=gpu-operator")[0]
    status = pod["status"]["containerStatuses"][0]
    assert status["restartCount"] >= 1
    assert status["lastState"]["terminated"]["exitCode"] == 137  # 128 + SIGKILL
