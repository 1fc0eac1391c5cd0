"""The simulated kubelet's rules for pods that run for real: which images and commands, environment,
crash-loop back-off, probe thresholds, and the pod status it reports."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from simcluster.sim import images
from simcluster.sim.container_rules import Backoff, ProbeState, exit_reason, restarts
from simcluster.sim.pod_env import ConfigError, container_env, expand, field_value
from simcluster.sim.pod_sandbox import ContainerRun, PodSandbox, Termination


@pytest.mark.parametrize(("reference", "path"), [
    ("nvcr.io/nvidia/gpu-operator:v25.3.0", "nvidia/gpu-operator"),
    ("nvcr.io/nvidia/gpu-operator:devel-ubi8", "nvidia/gpu-operator"),
    ("registry.local:5000/nvidia/gpu-operator:v26.7.0", "nvidia/gpu-operator"),
    ("localhost/nvidia/gpu-operator", "nvidia/gpu-operator"),
    ("nvidia/gpu-operator@sha256:" + "a" * 64, "nvidia/gpu-operator"),
    ("nvcr.io/nvidia/cloud-native/gpu-operator-validator:v25.3.0", "nvidia/cloud-native/gpu-operator-validator"),
    ("busybox", "busybox"),
])
def test_repository_path_drops_registry_tag_and_digest(reference, path):
    assert images.repository_path(reference) == path


def pod(*containers: dict[str, Any], init: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"containers": list(containers), "initContainers": list(init), "nodeName": "n1"}}


OPERATOR = "nvcr.io/nvidia/gpu-operator:v25.3.0"


def test_the_chart_operator_pod_and_its_crd_hook_run_for_real():
    controller = {"name": "gpu-operator", "image": OPERATOR, "command": ["gpu-operator"], "args": ["--leader-elect"]}
    hook = {"name": "upgrade-crd", "image": OPERATOR, "command": ["/bin/sh", "-c", "kubectl apply -f /opt/x.yaml"]}
    entrypoint = {"name": "c", "image": "mirror.example.com/nvidia/gpu-operator:v1"}
    for container in (controller, hook, entrypoint):
        assert images.classify(pod(container)).real
    assert images.argv(controller, images.GPU_OPERATOR) == ["gpu-operator", "--leader-elect"]
    assert images.argv(entrypoint, images.GPU_OPERATOR) == ["/usr/bin/gpu-operator"]
    assert images.executable(hook, images.GPU_OPERATOR) == "/bin/sh"


@pytest.mark.parametrize(("containers", "init", "why"), [
    ([{"name": "v", "image": OPERATOR, "command": ["nvidia-validator"]}], (), "nvidia-validator is not a command"),
    ([{"name": "d", "image": "nvcr.io/nvidia/k8s-device-plugin:v0.17.4"}], (), "is simulated"),
    # One container the simulator cannot run keeps the whole pod simulated.
    ([{"name": "a", "image": OPERATOR}, {"name": "b", "image": "busybox"}], (), "container b"),
    ([{"name": "a", "image": OPERATOR}], ({"name": "i", "image": "nvcr.io/nvidia/cuda:12"},), "container i"),
    ([{"name": "a", "image": OPERATOR}], ({"name": "s", "image": OPERATOR, "restartPolicy": "Always"},),
     "sidecar"),
])
def test_pods_the_simulator_cannot_run_stay_simulated(containers, init, why):
    verdict = images.classify(pod(*containers, init=init))
    assert not verdict.real
    assert why in verdict.reason


def test_image_files_follow_the_dockerfile(tmp_path: Path):
    assets = tmp_path / "assets"
    for name in ("state-driver", "gpu-feature-discovery"):
        (assets / name).mkdir(parents=True)
    sources = images.Sources(operator=tmp_path / "gpu-operator", assets=assets, manifests=tmp_path / "manifests",
                             chart=tmp_path / "chart", kubectl=tmp_path / "kubectl")
    files = dict((target, source) for source, target in images.image_files(images.GPU_OPERATOR, sources))
    assert files["/usr/bin/gpu-operator"] == str(tmp_path / "gpu-operator")
    assert files["/opt/gpu-operator/state-driver"] == str(assets / "state-driver")
    assert files["/opt/gpu-operator/gpu-feature-discovery"] == str(assets / "gpu-feature-discovery")
    assert files["/opt/gpu-operator/manifests"] == str(tmp_path / "manifests")
    assert files["/opt/gpu-operator/nvidia.com_clusterpolicies.yaml"] == \
        str(tmp_path / "chart" / "crds" / "nvidia.com_clusterpolicies.yaml")
    assert files["/opt/gpu-operator/nfd-api-crds.yaml"] == \
        str(tmp_path / "chart" / "charts" / "node-feature-discovery" / "crds" / "nfd-api-crds.yaml")
    assert files["/usr/local/bin/kubectl"] == str(tmp_path / "kubectl")


# -- environment -----------------------------------------------------------------------------------------------


class FakeApi:
    def __init__(self, objects: dict[str, dict[str, Any]]):
        self.objects = objects

    def get_or_none(self, path: str, what: str = "") -> dict[str, Any] | None:
        return self.objects.get(path)


def test_environment_resolves_field_refs_and_expands_references():
    the_pod = {"metadata": {"name": "op", "namespace": "gpu-operator", "uid": "123", "labels": {"app": "x"}},
               "spec": {"nodeName": "cpu-1", "serviceAccountName": "gpu-operator"},
               "status": {"podIP": "10.244.0.7"}}
    container = {"env": [
        {"name": "OPERATOR_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "WHERE", "value": "$(NODE)/$(OPERATOR_NAMESPACE) $$(NODE) $(UNDEFINED)"},
        {"name": "FROM_MAP", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
        {"name": "WATCH_NAMESPACE", "value": ""},
    ]}
    api = FakeApi({"/api/v1/namespaces/gpu-operator/configmaps/cm": {"data": {"k": "v"}}})
    env = container_env(api, the_pod, container, {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "NODE": "image"})
    assert env["OPERATOR_NAMESPACE"] == "gpu-operator"
    assert env["NODE"] == "cpu-1"
    assert env["APP"] == "x"
    assert env["WHERE"] == "cpu-1/gpu-operator $(NODE) $(UNDEFINED)"
    assert env["FROM_MAP"] == "v"
    assert env["WATCH_NAMESPACE"] == ""
    assert env["KUBERNETES_SERVICE_HOST"] == "10.0.0.1"
    assert field_value(the_pod, "status.podIP") == "10.244.0.7"


def test_a_missing_config_map_is_a_config_error_unless_optional():
    the_pod = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {}}
    missing = {"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}}]}
    with pytest.raises(ConfigError, match='configmap "nope" not found'):
        container_env(FakeApi({}), the_pod, missing, {})
    missing["env"][0]["valueFrom"]["configMapKeyRef"]["optional"] = True
    assert "X" not in container_env(FakeApi({}), the_pod, missing, {})


def test_expand_leaves_unknown_references_and_unescapes_dollars():
    assert expand("a$(B)c$$d", {"B": "b"}) == "abc$d"


# -- restarts --------------------------------------------------------------------------------------------------


def test_backoff_restarts_at_once_then_doubles_to_the_cap():
    backoff = Backoff(10, 300)
    waits = [backoff.wait_after_exit(ran_for=1) for _ in range(8)]
    assert waits == [0, 10, 20, 40, 80, 160, 300, 300]
    # A container that ran for twice the cap starts over.
    assert backoff.wait_after_exit(ran_for=600) == 0
    assert backoff.wait_after_exit(ran_for=1) == 10


@pytest.mark.parametrize(("policy", "code", "expected"), [
    ("Always", 0, True), ("Always", 1, True), ("OnFailure", 0, False), ("OnFailure", 2, True),
    ("Never", 1, False),
])
def test_restart_policy(policy, code, expected):
    assert restarts(policy, code) is expected


def test_exit_reasons():
    assert exit_reason(0) == "Completed"
    assert exit_reason(1) == "Error"
    assert exit_reason(137) == "Error"
    assert exit_reason(125) == "StartError"


def test_readiness_needs_the_success_threshold_and_fails_after_the_failure_threshold():
    probe = ProbeState.start("readiness", {"initialDelaySeconds": 5, "periodSeconds": 10, "failureThreshold": 2},
                             now=100)
    assert probe.next_at == 105 and not probe.passing
    assert probe.record(True, 105) and probe.passing and probe.next_at == 115
    assert not probe.record(False, 115, "refused")
    assert probe.record(False, 125, "refused") and not probe.passing
    assert probe.last_error == "refused"


def test_liveness_starts_passing_and_a_startup_probe_that_never_passes_still_fails():
    liveness = ProbeState.start("liveness", {}, now=0)
    assert liveness.passing
    assert not liveness.record(False, 0) and not liveness.record(False, 10)
    assert liveness.record(False, 20) and not liveness.passing
    startup = ProbeState.start("startup", {"failureThreshold": 1}, now=0)
    assert startup.record(False, 0) and not startup.passing


# -- the status the kubelet reports ----------------------------------------------------------------------------


def _sandbox(policy: str = "Always", init: bool = False) -> PodSandbox:
    sandbox = PodSandbox.__new__(PodSandbox)  # no runtime: only the status rules are exercised
    sandbox.uid, sandbox.namespace, sandbox.name = "uid-1", "ns", "p"
    sandbox.policy = policy
    sandbox.pod_ip, sandbox.host_ip = "10.244.0.2", "10.200.0.11"
    sandbox.init = [ContainerRun({"name": "i", "image": OPERATOR}, images.GPU_OPERATOR, True, Backoff(10, 300))] \
        if init else []
    sandbox.containers = [ContainerRun({"name": "c", "image": OPERATOR}, images.GPU_OPERATOR, False,
                                       Backoff(10, 300))]
    sandbox.network = None
    sandbox.sandbox_error = None
    sandbox.init_failed = False
    sandbox.terminating = False
    sandbox.conditions = {}
    sandbox.start_time = ""
    sandbox.lock = threading.RLock()
    return sandbox


def _exit(code: int) -> Termination:
    return Termination(code, exit_reason(code), "t0", "t1", "simcluster://x")


def test_a_crash_looping_container_waits_in_back_off_with_its_last_state():
    sandbox = _sandbox()
    run = sandbox.containers[0]
    run.starts, run.restart_count, run.exit, run.restart_wait = 2, 1, _exit(1), 10
    status = sandbox.status()
    container = status["containerStatuses"][0]
    assert status["phase"] == "Running"
    assert container["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert container["state"]["waiting"]["message"].startswith("back-off 10s restarting failed container=c pod=p_ns")
    assert container["lastState"]["terminated"]["exitCode"] == 1
    assert container["restartCount"] == 1 and not container["ready"]
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "False"


def test_a_job_container_that_exited_zero_under_on_failure_makes_the_pod_succeed():
    sandbox = _sandbox(policy="OnFailure")
    run = sandbox.containers[0]
    run.starts, run.exit = 1, _exit(0)
    status = sandbox.status()
    assert status["phase"] == "Succeeded"
    assert status["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    assert {c["type"]: c.get("reason") for c in status["conditions"]}["Ready"] == "PodCompleted"


def test_a_failed_init_container_under_never_fails_the_pod_and_containers_wait_for_init():
    sandbox = _sandbox(policy="Never", init=True)
    assert sandbox.status()["containerStatuses"][0]["state"]["waiting"]["reason"] == "PodInitializing"
    assert sandbox.status()["phase"] == "Pending"
    sandbox.init[0].starts, sandbox.init[0].exit = 1, _exit(3)
    sandbox.init_failed = True
    assert sandbox.status()["phase"] == "Failed"
