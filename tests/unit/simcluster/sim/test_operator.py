"""The opt-in simulated operator (scale runs): what it writes comes from the pinned operator module."""

from __future__ import annotations

import pytest
import yaml

from simcluster import upstream
from simcluster.sim.operator import OPERANDS, daemonset_manifest, default_mig_config_data


def test_the_default_mig_configmap_is_the_operator_modules_own():
    built = upstream.find()
    if built is None:
        pytest.fail("NVIDIA's components are not built: run 'simcluster build' first", pytrace=False)
    asset = yaml.safe_load(built.default_mig_config.read_text())
    assert default_mig_config_data() == asset["data"]
    assert "all-balanced" in yaml.safe_load(default_mig_config_data()["config.yaml"])["mig-configs"]


def cluster_policy(strategy):
    """The parts of a ClusterPolicy the simulated controller reads (the chart renders them from its values)."""
    return {"apiVersion": "nvidia.com/v1", "kind": "ClusterPolicy", "metadata": {"name": "cluster-policy", "uid": "u"},
            "spec": {"mig": {"strategy": strategy},
                     "daemonsets": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                                                     "effect": "NoSchedule"}]},
                     "devicePlugin": {"enabled": True}, "gfd": {"enabled": True},
                     "migManager": {"enabled": True, "env": [], "config": {"name": "", "default": "all-disabled"}}}}


def test_the_mig_manager_daemonset_waits_for_operands_in_its_own_namespace():
    policy = cluster_policy("single")
    manager = next(operand for operand in OPERANDS if operand.spec_key == "migManager")
    env = {e["name"]: e for e in daemonset_manifest(policy, manager, "gpu-operator")["spec"]["template"]["spec"]
           ["containers"][0]["env"]}
    assert env["CONFIG_FILE"]["value"] == "/mig-parted-config/config.yaml"
    assert env["DEFAULT_GPU_CLIENTS_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    plugin = next(operand for operand in OPERANDS if operand.spec_key == "devicePlugin")
    plugin_env = daemonset_manifest(policy, plugin, "gpu-operator")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "MIG_STRATEGY", "value": "single"} in plugin_env
    # No strategy in the policy: no MIG_STRATEGY, the plugin's own default (applyMIGConfiguration).
    del policy["spec"]["mig"]
    plugin_env = daemonset_manifest(policy, plugin, "gpu-operator")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert "MIG_STRATEGY" not in {e["name"] for e in plugin_env}
