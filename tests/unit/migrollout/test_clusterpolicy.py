"""Reading the ClusterPolicy."""

import pytest

from migrollout import clusterpolicy


@pytest.mark.parametrize("policy, strategy", [
    ({"spec": {"mig": {"strategy": "mixed"}}}, "mixed"),
    ({"spec": {"mig": {"strategy": "single"}}}, "single"),
    # No strategy: the operator sets no MIG_STRATEGY and the device plugin's default, none, applies.
    ({"spec": {"mig": {}}}, "none"),
    ({"spec": {"mig": {"strategy": ""}}}, "none"),
    ({"spec": {}}, "none"),
    (None, "none"),
])
def test_strategy(policy, strategy):
    assert clusterpolicy.strategy(policy) == strategy


def _daemonset(app: str, env: dict[str, str] | None = None, config_map: str | None = None) -> dict:
    volumes = [{"name": "mig-parted-config", "configMap": {"name": config_map}}] if config_map else []
    return {"spec": {"template": {"metadata": {"labels": {"app": app}}, "spec": {
        "containers": [{"name": "c", "env": [{"name": k, "value": v} for k, v in (env or {}).items()]}],
        "volumes": volumes}}}}


@pytest.mark.parametrize("policy_spec, daemonset, lag", [
    ({"mig": {"strategy": "single"}}, _daemonset("gpu-feature-discovery", {"MIG_STRATEGY": "mixed"}),
     "runs MIG_STRATEGY=mixed, the ClusterPolicy asks for single"),
    ({"mig": {"strategy": "mixed"}}, _daemonset("nvidia-device-plugin-daemonset", {"MIG_STRATEGY": "mixed"}), None),
    ({"migManager": {"config": {"name": "custom-mig-parted-config"}}},
     _daemonset("nvidia-mig-manager", config_map="default-mig-parted-config"),
     "reads MIG configs from ConfigMap default-mig-parted-config, the ClusterPolicy names custom-mig-parted-config"),
    ({"migManager": {}}, _daemonset("nvidia-mig-manager", config_map="default-mig-parted-config"), None),
    ({"migManager": {"env": [{"name": "WITH_REBOOT", "value": "true"}]}},
     _daemonset("nvidia-mig-manager", {"WITH_REBOOT": "false"}, "default-mig-parted-config"),
     "runs WITH_REBOOT=false, the ClusterPolicy sets true"),
    ({"mig": {"strategy": "single"}}, _daemonset("nvidia-dcgm-exporter"), None),
])
def test_operand_lag(policy_spec: dict, daemonset: dict, lag: str | None) -> None:
    assert clusterpolicy.operand_lag({"spec": policy_spec}, daemonset) == lag
