"""Where the simulated MIG manager reads its config, as its pod and version say, and the config it generates."""

from __future__ import annotations

from typing import Any

import pytest

from simcluster import upstream
from simcluster.sim import gpus
from simcluster.sim.mig_configs import GENERATES_CONFIG, MigManagerPod, generated_config
from simcluster.sim.pod_env import pod_env


def manager_pod(image: str, env: dict[str, str], mounts: list[dict[str, Any]],
                volumes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"metadata": {"name": "nvidia-mig-manager-x", "namespace": "gpu-operator", "uid": "u"},
            "spec": {"containers": [{"name": "nvidia-mig-manager", "image": image,
                                     "env": [{"name": k, "value": v} for k, v in env.items()],
                                     "volumeMounts": mounts}],
                     "volumes": volumes}}


# The pinned operator's DaemonSet (assets/state-mig-manager/0600_daemonset.yaml) as the operator fills it in.
PINNED = manager_pod(
    "nvcr.io/nvidia/cloud-native/k8s-mig-manager:v0.12.3-ubuntu20.04",
    {"CONFIG_FILE": "/mig-parted-config/config.yaml", "GPU_CLIENTS_FILE": "/gpu-clients/clients.yaml"},
    [{"name": "mig-parted-config", "mountPath": "/mig-parted-config"},
     {"name": "gpu-clients", "mountPath": "/gpu-clients"},
     {"name": "nvidia-mig-manager-entrypoint", "mountPath": "/bin/entrypoint.sh", "subPath": "entrypoint.sh"}],
    [{"name": "mig-parted-config", "configMap": {"name": "default-mig-parted-config"}},
     {"name": "gpu-clients", "configMap": {"name": "default-gpu-clients"}},
     {"name": "nvidia-mig-manager-entrypoint", "configMap": {"name": "nvidia-mig-manager-entrypoint"}}],
)


def test_the_version_comes_from_the_image_tag():
    assert MigManagerPod.of(PINNED).version == (0, 12, 3)
    newest = manager_pod("nvcr.io/nvidia/cloud-native/k8s-mig-manager:v0.15.0", {}, [], [])
    assert MigManagerPod.of(newest).version == (0, 15, 0) >= GENERATES_CONFIG
    # A digest or "latest" says nothing: the newest known release's behaviour.
    assert MigManagerPod.of(manager_pod("k8s-mig-manager:latest", {}, [], [])).version == (0, 15, 0)


def test_the_config_file_is_the_configmap_mounted_at_its_directory():
    manager = MigManagerPod.of(PINNED)
    assert manager.config_file == "/mig-parted-config/config.yaml"
    assert manager.mounted_configmap(manager.config_file) == ("default-mig-parted-config", "config.yaml")
    assert manager.mounted_configmap("/bin/entrypoint.sh") == ("nvidia-mig-manager-entrypoint", "entrypoint.sh")
    assert manager.mounted_configmap("/etc/other.yaml") is None
    assert not manager.with_reboot


def test_items_map_a_file_to_another_key():
    pod = manager_pod("k8s-mig-manager:v0.15.0", {"CONFIG_FILE": "/cfg/mig.yaml", "WITH_REBOOT": "true"},
                      [{"name": "c", "mountPath": "/cfg/"}],
                      [{"name": "c", "configMap": {"name": "custom", "items": [{"key": "config.yaml",
                                                                                 "path": "mig.yaml"}]}}])
    manager = MigManagerPod.of(pod)
    assert manager.mounted_configmap("/cfg/mig.yaml") == ("custom", "config.yaml")
    assert manager.mounted_configmap("/cfg/config.yaml") is None
    assert manager.with_reboot


@pytest.fixture(scope="module")
def catalogue() -> gpus.Catalogue:
    if upstream.find() is None:
        pytest.fail("NVIDIA's components are not built: run 'simcluster build' first", pytrace=False)
    return gpus.catalogue()


def test_the_clients_namespace_is_the_pods_own_when_the_daemonset_says_so():
    pod = manager_pod("k8s-mig-manager:v0.12.3", {}, [], [])
    pod["spec"]["containers"][0]["env"] = [
        {"name": "DEFAULT_GPU_CLIENTS_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]
    assert MigManagerPod.of(pod).clients_namespace == "gpu-operator"
    assert pod_env(pod, "DEFAULT_GPU_CLIENTS_NAMESPACE") == "gpu-operator"
    # Without it, mig-parted's own default.
    assert MigManagerPod.of(manager_pod("k8s-mig-manager:v0.12.3", {}, [], [])).clients_namespace == "default"


@pytest.mark.parametrize("key", ["A100-SXM4-80GB", "A30", "H200-141GB"])
def test_generated_config_has_every_profile_at_its_maximum_and_a_balanced_entry(catalogue, key):
    model = catalogue.get(key)
    configs = generated_config(model)["mig-configs"]
    assert configs["all-disabled"] == [{"devices": "all", "mig-enabled": False}]
    for profile in model.profiles:
        name = "all-" + profile.name.replace("+", ".")
        assert configs[name][0]["mig-devices"] == {profile.name: profile.instances}
    balanced = configs["all-balanced"][0]["mig-devices"]
    assert sum(balanced.values()) == (3 if model.compute_slices == 4 else 4)
    assert not any("device-filter" in entry for entries in configs.values() for entry in entries)


def test_a100_80gb_balanced_is_two_1g_one_2g_one_3g(catalogue):
    configs = generated_config(catalogue.get("A100-SXM4-80GB"))["mig-configs"]
    assert configs["all-balanced"][0]["mig-devices"] == {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}
