"""NVIDIA's GPU Operator for real: its chart installed with helm, its controller run by the simulated kubelet
as a container (identity, RBAC, network namespace, probes, restarts, logs), and the simulated node agents
following the operands the real operator deploys."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Any

import pytest
from conftest import FLEETS, SIMCLUSTER, Cluster, launched_from, start_cluster, stop_cluster

from migrollout import kube
from migrollout.processes import pid_alive

NAMESPACE = "gpu-operator"
OPERATOR_IMAGE = "nvcr.io/nvidia/gpu-operator:v26.7.0"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (namespaces)")


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> Cluster:
    cluster = start_cluster(tmp_path_factory.mktemp("real") / "c", FLEETS / "small.yaml", "--real-operator")
    yield cluster
    stop_cluster(cluster)


def simcluster(cluster: Cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SIMCLUSTER, "--state-dir", str(cluster.state_dir), *args], capture_output=True, text=True)


def operator_pod(cluster: Cluster) -> dict[str, Any]:
    pods = cluster.pods(NAMESPACE, label_selector="app=gpu-operator")
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def shell_pod(namespace: str, name: str, script: str, **spec: Any) -> dict[str, Any]:
    """A pod of the operator's image running a shell script (the image has a shell and kubectl)."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [{"name": "sh", "image": OPERATOR_IMAGE, "command": ["/bin/sh", "-c", script]}],
                     **spec}}


def container_status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    statuses = cluster.api.get(kube.pod_path(namespace, name)).get("status", {}).get("containerStatuses") or [{}]
    return statuses[0]


# -- the controller ----------------------------------------------------------------------------------------------


def test_the_controller_runs_as_a_container_with_its_chart_identity(real):
    pod = operator_pod(real)
    status = pod["status"]["containerStatuses"][0]
    assert pod["status"]["phase"] == "Running" and status["ready"] and status["state"].get("running")
    assert status["containerID"].startswith("simcluster://")
    # The controller elected itself leader through the API, as the chart's ServiceAccount.
    lease = real.api.get(f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/53822513.nvidia.com")
    assert lease["spec"]["holderIdentity"].startswith(pod["metadata"]["name"])
    logs = simcluster(real, "logs", f"{NAMESPACE}/{pod['metadata']['name']}")
    assert logs.returncode == 0, logs.stderr
    assert "starting manager" in logs.stdout and "successfully acquired lease" in logs.stdout


def test_the_operator_deploys_its_operands_and_reports_ready(real):
    policy = real.policy()
    assert policy["status"]["state"] == "ready" and policy["status"]["namespace"] == NAMESPACE
    # The operator writes its conditions in a second status update, after the state.
    real.wait(lambda: any(c["type"] == "Ready" and c["status"] == "True" and c["reason"] == "Reconciled"
                          for c in real.policy()["status"].get("conditions") or []), what="Ready condition")
    daemonsets, _ = real.api.list(f"/apis/apps/v1/namespaces/{NAMESPACE}/daemonsets")
    owned = {ds["metadata"]["name"] for ds in daemonsets
             if any(ref["kind"] == "ClusterPolicy" for ref in ds["metadata"].get("ownerReferences") or [])}
    assert {"nvidia-driver-daemonset", "nvidia-container-toolkit-daemonset", "nvidia-device-plugin-daemonset",
            "gpu-feature-discovery", "nvidia-mig-manager", "nvidia-dcgm-exporter",
            "nvidia-operator-validator"} <= owned
    mig_manager = next(ds for ds in daemonsets if ds["metadata"]["name"] == "nvidia-mig-manager")
    # The chart of the pinned module deploys MIG manager v0.12.3, reading the operator's default ConfigMap.
    assert ":v0.12.3" in mig_manager["spec"]["template"]["spec"]["containers"][0]["image"]


def test_node_labels_are_the_operators_and_the_os_is_ubuntu(real):
    node = real.node("a100-80gb-1")
    labels = node["metadata"]["labels"]
    assert labels["nvidia.com/gpu.present"] == "true"
    assert labels["nvidia.com/gpu.deploy.mig-manager"] == "true"
    assert labels["nvidia.com/mig.config"] == "all-disabled"
    owners = {entry["manager"] for entry in node["metadata"]["managedFields"]
              if "f:nvidia.com/gpu.deploy.driver" in json.dumps(entry.get("fieldsV1", {}))}
    assert owners == {"gpu-operator"}  # written by NVIDIA's controller, not by the simulator
    assert node["status"]["nodeInfo"]["osImage"] == "Ubuntu 22.04.5 LTS"
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert labels["feature.node.kubernetes.io/system-os_release.ID"] == "ubuntu"
    assert labels["feature.node.kubernetes.io/system-os_release.VERSION_ID"] == "22.04"
    # The driver image the operator chose from those labels:
    driver = real.api.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/daemonsets/nvidia-driver-daemonset")
    assert driver["spec"]["template"]["spec"]["containers"][0]["image"].endswith("-ubuntu22.04")
    # NFD's own pods are there (simulated: their image does not run here).
    workers = real.pods(NAMESPACE, label_selector="app.kubernetes.io/name=node-feature-discovery")
    assert workers and all(p["status"]["phase"] == "Running" for p in workers)
    assert not any(s.get("containerID", "").startswith("simcluster://")
                   for p in workers for s in p["status"].get("containerStatuses") or [])


def test_a_mig_change_goes_through_the_real_operators_mig_manager(real):
    node = "a100-80gb-2"
    real.label(node, {"nvidia.com/mig.config.state": None, "nvidia.com/mig.config": "all-3g.40gb"})
    real.wait_settled(node, "all-3g.40gb", timeout=60)
    real.wait(lambda: real.allocatable(node) == {"nvidia.com/mig-3g.40gb": "16"}, what="3g.40gb x16")
    # A config the operator's default-mig-parted-config does not have fails without pending.
    real.label(node, {"nvidia.com/mig.config.state": None, "nvidia.com/mig.config": "no-such-config"})
    real.wait_mig_state(node, "failed")
    real.label(node, {"nvidia.com/mig.config.state": None, "nvidia.com/mig.config": "all-disabled"})
    real.wait_settled(node, "all-disabled", timeout=60)


def test_strategy_change_reaches_the_device_plugin_through_the_operator(real):
    node = "a100-40gb-1"  # boots with all-1g.5gb applied
    real.wait(lambda: real.allocatable(node) == {"nvidia.com/mig-1g.5gb": "28"}, what="mixed resources")
    real.api.patch("/apis/nvidia.com/v1/clusterpolicies/cluster-policy", {"spec": {"mig": {"strategy": "single"}}})
    try:
        real.wait(lambda: real.allocatable(node) == {"nvidia.com/gpu": "28"}, timeout=90,
                  what="single strategy: MIG devices advertised as nvidia.com/gpu")
        plugin = real.pods(NAMESPACE, label_selector="app=nvidia-device-plugin-daemonset",
                           field_selector=f"spec.nodeName={node}")[0]
        env = {e["name"]: e.get("value") for e in plugin["spec"]["containers"][0]["env"]}
        assert env["MIG_STRATEGY"] == "single"
    finally:
        real.api.patch("/apis/nvidia.com/v1/clusterpolicies/cluster-policy",
                       {"spec": {"mig": {"strategy": "mixed"}}})
        real.wait(lambda: real.allocatable(node) == {"nvidia.com/mig-1g.5gb": "28"}, timeout=90,
                  what="mixed again")


def test_helm_upgrade_runs_the_charts_crd_hook_in_the_operator_image(real):
    crd = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/clusterpolicies.nvidia.com"
    assert "kubectl.kubernetes.io/last-applied-configuration" not in \
        (real.api.get(crd)["metadata"].get("annotations") or {})
    chart = subprocess.run([*SIMCLUSTER, "path", "chart"], capture_output=True, text=True, check=True).stdout.strip()
    upgrade = subprocess.run([f"{real.bin_dir}/helm", "upgrade", "gpu-operator", chart, "-n", NAMESPACE,
                              "--reuse-values", "--disable-openapi-validation", "--timeout", "120s"],
                             capture_output=True, text=True, env=real.env())
    assert upgrade.returncode == 0, upgrade.stderr
    # `kubectl apply`, run by /bin/sh in the hook's container as the hook's ServiceAccount, annotated the CRD.
    annotations = real.api.get(crd)["metadata"].get("annotations") or {}
    assert "kubectl.kubernetes.io/last-applied-configuration" in annotations


# -- the container runtime -----------------------------------------------------------------------------------------


def test_identity_rbac_environment_and_host_files(real):
    namespace = real.namespace()
    real.api.create(f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": "reader"}})
    script = ("kubectl auth whoami -o jsonpath='{.status.userInfo.username}'; echo;"
              "kubectl get nodes -o name 2>&1 | head -1;"
              "cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo;"
              "echo host=$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT node=$NODE id=$(id -u);"
              "grep PRETTY_NAME /host-etc/os-release")
    pod = shell_pod(namespace, "whoami", script, serviceAccountName="reader", restartPolicy="Never",
                    nodeSelector={"kubernetes.io/hostname": "cpu-1"},
                    volumes=[{"name": "os", "hostPath": {"path": "/etc/os-release"}}])
    pod["spec"]["containers"][0]["env"] = [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "os", "mountPath": "/host-etc/os-release"}]
    real.apply(pod)
    real.wait(lambda: real.api.get(kube.pod_path(namespace, "whoami"))["status"].get("phase") == "Succeeded",
              what="pod completed")
    output = simcluster(real, "logs", f"{namespace}/whoami").stdout
    assert f"system:serviceaccount:{namespace}:reader" in output
    assert 'cannot list resource "nodes"' in output  # the ServiceAccount's RBAC, not the simulator's
    assert f"{namespace}\nhost=10.0.0.1:443 node=cpu-1 id=1000" in output
    assert 'PRETTY_NAME="Ubuntu 22.04.5 LTS"' in output
    terminated = container_status(real, namespace, "whoami")["state"]["terminated"]
    assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"


def test_pods_have_their_own_network_so_fixed_ports_do_not_collide(real):
    namespace = real.namespace()
    # Two pods on one node bind the operator's fixed port; each answers its own probe.
    script = "mkdir -p /tmp/www && echo ok > /tmp/www/healthz && exec python3 -m http.server 8081 -d /tmp/www"
    for name in ("one", "two"):
        pod = shell_pod(namespace, name, script, nodeSelector={"kubernetes.io/hostname": "cpu-1"})
        pod["spec"]["containers"][0]["readinessProbe"] = {"httpGet": {"path": "/healthz", "port": 8081},
                                                          "periodSeconds": 1}
        real.apply(pod)
    for name in ("one", "two"):
        real.wait(lambda name=name: container_status(real, namespace, name).get("ready"), timeout=30,
                  what=f"pod {name} ready by its readiness probe")
    ips = {real.api.get(kube.pod_path(namespace, n))["status"]["podIP"] for n in ("one", "two")}
    assert len(ips) == 2


def test_a_crashing_container_backs_off_and_keeps_its_previous_log(real):
    namespace = real.namespace()
    real.apply(shell_pod(namespace, "crash", "echo run-$(date +%s%N); exit 3"))

    def backing_off() -> dict[str, Any] | None:
        status = container_status(real, namespace, "crash")
        waiting = status.get("state", {}).get("waiting", {})
        return status if waiting.get("reason") == "CrashLoopBackOff" else None

    status = real.wait(backing_off, timeout=30, what="CrashLoopBackOff")
    assert status["restartCount"] >= 1
    assert status["lastState"]["terminated"]["exitCode"] == 3
    assert status["lastState"]["terminated"]["reason"] == "Error"
    assert "back-off 10s restarting failed container=sh" in status["state"]["waiting"]["message"]
    # The back-off holds: no third start within 10 s of the second exit.
    time.sleep(5)
    assert container_status(real, namespace, "crash")["restartCount"] == status["restartCount"]
    current = simcluster(real, "logs", f"{namespace}/crash")
    previous = simcluster(real, "logs", f"{namespace}/crash", "--previous")
    assert current.stdout.startswith("run-") and previous.stdout.startswith("run-")
    assert current.stdout != previous.stdout


def test_a_failing_liveness_probe_restarts_the_container(real):
    namespace = real.namespace()
    pod = shell_pod(namespace, "unhealthy", "exec sleep 1000")
    pod["spec"]["containers"][0]["livenessProbe"] = {"tcpSocket": {"port": 9999}, "periodSeconds": 1,
                                                     "failureThreshold": 2}
    pod["spec"]["terminationGracePeriodSeconds"] = 1
    real.apply(pod)
    status = real.wait(lambda: (s := container_status(real, namespace, "unhealthy")).get("restartCount", 0) >= 1
                       and s, timeout=30, what="restart after failed liveness probe")
    assert status["lastState"]["terminated"]["exitCode"] == 137  # sleep as PID 1 ignores SIGTERM: SIGKILL


def test_delete_honours_the_grace_period(real):
    namespace = real.namespace()
    # PID 1 ignores SIGTERM unless it traps it: the first pod needs SIGKILL at the end of its grace period,
    # the second exits on SIGTERM at once.
    real.apply(shell_pod(namespace, "stubborn", "echo up; exec sleep 1000", terminationGracePeriodSeconds=4))
    real.apply(shell_pod(namespace, "polite", "trap 'echo bye; exit 0' TERM; echo up; while :; do sleep 0.1; done",
                         terminationGracePeriodSeconds=30))
    for name in ("stubborn", "polite"):
        real.wait(lambda name=name: container_status(real, namespace, name).get("state", {}).get("running"),
                  what=f"{name} running")
    time.sleep(0.5)
    timings = {}
    for name in ("stubborn", "polite"):
        started = time.monotonic()
        real.api.delete(kube.pod_path(namespace, name))
        real.wait(lambda name=name: real.api.get_or_none(kube.pod_path(namespace, name)) is None, timeout=40,
                  what=f"{name} gone")
        timings[name] = time.monotonic() - started
    assert 3.5 <= timings["stubborn"] < 10
    assert timings["polite"] < 3
    assert "bye" in simcluster(real, "logs", f"{namespace}/polite").stdout


def test_an_image_that_is_not_runnable_stays_simulated(real):
    namespace = real.namespace()
    pod = shell_pod(namespace, "validator", "")
    pod["spec"]["containers"][0]["command"] = ["nvidia-validator"]
    real.apply(pod)
    real.wait(lambda: container_status(real, namespace, "validator").get("ready"), what="simulated pod ready")
    assert not container_status(real, namespace, "validator")["containerID"].startswith("simcluster://")
    result = simcluster(real, "logs", f"{namespace}/validator")
    assert result.returncode == 1 and "is simulated" in result.stderr


# -- nothing outlives the cluster ----------------------------------------------------------------------------------


def test_no_container_outlives_a_killed_daemon(tmp_path):
    cluster = start_cluster(tmp_path / "c", FLEETS / "small.yaml", "--real-operator", "--without-operator")
    try:
        namespace = cluster.namespace()
        cluster.apply(shell_pod(namespace, "sleeper", "while :; do sleep 1; done"))
        processes = cluster.wait(lambda: len(launched_from(cluster.state_dir)) >= 3 and launched_from(cluster.state_dir),
                                 what="launcher, shell and sleep running")
        daemon = json.loads((cluster.state_dir / "state.json").read_text())["pids"]["simulator"]
        os.kill(daemon, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while any(pid_alive(pid) for pid in processes) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in processes if pid_alive(pid)], "a container outlived its killed daemon"
    finally:
        stop_cluster(cluster)


def test_down_stops_the_operator_container(tmp_path):
    cluster = start_cluster(tmp_path / "c", FLEETS / "small.yaml", "--real-operator")
    try:
        processes = launched_from(cluster.state_dir)
        pids = json.loads((cluster.state_dir / "state.json").read_text())["pids"]
        assert processes, "no container runs"
    finally:
        stop_cluster(cluster)
    assert not [pid for pid in [*processes, *pids.values()] if pid_alive(pid)]
