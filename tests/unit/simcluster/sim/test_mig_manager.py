"""The simulated MIG manager's steps, run without a cluster: a fake node, a fake clock, a recording writer.

mig-parted's selection is faked here (every entry `devices: all`, no device-filter) so that the protocol can
be tested on its own; the tests at the end run it with NVIDIA's real CLI and mig-oracle.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest
import yaml

from simcluster import nvml_node, upstream
from simcluster.fleet import Simulation
from simcluster.sim import gpus, hardware, names
from simcluster.sim.boot import validator
from simcluster.sim.hardware import Gpu
from simcluster.sim.mig_configs import MigConfigs
from simcluster.sim.mig_manager import POD_WAIT_TIMEOUT_S, STEPS, MigManager, Tools
from simcluster.sim.mig_parted import Mirrored
from simcluster.sim.view import NodeView

NODE = "h100-1"
NS = "gpu-operator"
SCRIPT_IMAGE = "nvcr.io/nvidia/cloud-native/k8s-mig-manager:v0.12.3-ubuntu20.04"  # the pinned chart's
GO_IMAGE = "nvcr.io/nvidia/cloud-native/k8s-mig-manager:v0.15.0"

DOCUMENT = """version: v1
mig-configs:
  all-disabled:
    - devices: all
      mig-enabled: false
  all-1g.10gb:
    - devices: all
      mig-enabled: true
      mig-devices: {"1g.10gb": 7}
  all-3g.40gb:
    - devices: all
      mig-enabled: true
      mig-devices: {"3g.40gb": 2}
"""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeCluster:
    """One node and its pods; writes land on them as the API server would apply them."""

    def __init__(self, node: dict[str, Any], pods: list[dict[str, Any]]):
        self.node = node
        self.pods = pods
        self.label_writes: list[dict[str, str | None]] = []
        self.deleted: list[str] = []
        self.wakes: list[float] = []
        self.reboots: list[str] = []

    def labels(self) -> dict[str, str]:
        return self.node["metadata"]["labels"]

    def patch_node_labels(self, name: str, values: dict[str, str | None]) -> None:
        self.label_writes.append(dict(values))
        for key, value in values.items():
            if value is None:
                self.labels().pop(key, None)
            else:
                self.labels()[key] = value

    def patch_node_annotations(self, name: str, values: dict[str, str | None]) -> None:
        self.node["metadata"]["annotations"].update(values)

    def patch_node_status(self, name: str, body: dict[str, Any]) -> None:
        raise AssertionError("the MIG manager does not write node status")

    def patch_pod_status(self, pod: dict[str, Any], body: dict[str, Any]) -> bool:
        raise AssertionError("the MIG manager does not write pod status")

    def delete_pod(self, pod: dict[str, Any], grace_seconds: int | None = 0) -> None:
        self.deleted.append(pod["metadata"]["name"])
        self.pods = [p for p in self.pods if p is not pod]

    def read_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return {"data": {"config.yaml": self.document}} if name == "default-mig-parted-config" else None

    document = DOCUMENT


class FakeSelector:
    """Every entry applies to every GPU (what `devices: all` without a device-filter means)."""

    def select(self, document: str, config: str, devices: list[tuple[int, str]]) -> list[dict]:
        entry = yaml.safe_load(document)["mig-configs"][config][-1]
        return [{"index": index, "device_id": device_id, "entry": 0, "mig_enabled": entry["mig-enabled"],
                 "mig_devices": entry.get("mig-devices") or {}} for index, device_id in devices]


def fake_validate(document: str, config: str) -> tuple[bool, str]:
    configs = yaml.safe_load(document)["mig-configs"]
    return (True, "") if config in configs else (False, f"Error selecting MIG config: selected mig-config not "
                                                        f"present: {config}")


def pod(name: str, app: str, namespace: str = NS, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "labels": {"app": app}},
            "spec": {"nodeName": NODE, **spec}, "status": {"phase": "Running"}}


def manager_pod(image: str, with_reboot: bool = False) -> dict[str, Any]:
    env = [{"name": "CONFIG_FILE", "value": "/mig-parted-config/config.yaml"},
           {"name": "DEFAULT_GPU_CLIENTS_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]
    if with_reboot:
        env.append({"name": "WITH_REBOOT", "value": "true"})
    manager = pod("nvidia-mig-manager-abc", names.APP_MIG_MANAGER)
    manager["spec"].update({
        "containers": [{"name": "nvidia-mig-manager", "image": image, "env": env,
                        "volumeMounts": [{"name": "mig-parted-config", "mountPath": "/mig-parted-config"}]}],
        "volumes": [{"name": "mig-parted-config", "configMap": {"name": "default-mig-parted-config"}}]})
    return manager


def gpu_node(config: str, states: list[Gpu] | None = None, **annotations: str) -> dict[str, Any]:
    labels = {names.MIG_CONFIG: config, names.MIG_CONFIG_STATE: "success"}
    labels.update({names.DEPLOY_PREFIX + op: "true" for op in
                   ("device-plugin", "gpu-feature-discovery", "dcgm-exporter", "dcgm", "mig-manager")})
    return {"metadata": {"name": NODE, "labels": labels, "annotations": {
        hardware.GPU_MODEL: "H100-SXM5-80GB", hardware.GPU_COUNT: "2",
        hardware.GPU_STATE: hardware.encode(states or [Gpu(), Gpu()]), **annotations}}}


class Harness:
    def __init__(self, image: str = SCRIPT_IMAGE, operands: bool = True, with_reboot: bool = False,
                 validate: Any = fake_validate, mig_parted: Any = None, model: str = "H100-SXM5-80GB",
                 states: list[Gpu] | None = None, **annotations: str):
        node = gpu_node("all-disabled", states, **annotations)
        node["metadata"]["annotations"][hardware.GPU_MODEL] = model
        pods = [manager_pod(image, with_reboot)]
        if operands:
            pods += [pod("plugin", names.APP_DEVICE_PLUGIN), pod("gfd", names.APP_GFD)]
        self.cluster = FakeCluster(node, pods)
        self.clock = FakeClock()
        self.epoch = 0
        catalogue = gpus.catalogue() if mig_parted is not None else gpus.described()
        tools = Tools(writer=self.cluster, clock=self.clock, wake=lambda _n, s: self.cluster.wakes.append(s),
                      settings=Simulation(apply_delay_s=1.0), configs=MigConfigs(self.cluster.read_configmap,
                                                                                 lambda _m: None),
                      validate=validate, mig_parted=mig_parted or Mirrored(FakeSelector()),
                      reboot=self.cluster.reboots.append)
        self.manager = MigManager(tools, catalogue.find, lambda _node: self.epoch)

    def step(self, seconds: float = 0.0) -> None:
        self.clock.now += seconds
        self.manager.reconcile(NodeView(NODE, copy.deepcopy(self.cluster.node), list(self.cluster.pods), NS))

    def set_config(self, config: str) -> None:
        self.cluster.labels()[names.MIG_CONFIG] = config
        self.cluster.labels().pop(names.MIG_CONFIG_STATE, None)

    def state(self) -> str | None:
        return self.cluster.labels().get(names.MIG_CONFIG_STATE)

    def gpus(self) -> list[Gpu]:
        return hardware.gpus(self.cluster.node)

    def run_until_settled(self, limit_s: float = 30.0) -> None:
        waited = 0.0
        while self.manager.runs and waited <= limit_s:
            self.step(1.0)
            waited += 1.0


def start(harness: Harness, config: str) -> None:
    harness.step()  # the manager process starts: applies the current label (all-disabled: already applied)
    assert harness.state() == "success"
    harness.cluster.label_writes.clear()
    harness.set_config(config)
    harness.step()


def test_the_steps_are_the_reconfigure_sequence_in_order():
    assert [step.name for step in STEPS] == [
        "read-labels", "load-config", "assert-valid-config", "assert-applied", "assert-mode", "set-pending",
        "pause-operands", "wait-operands", "delete-validation-pods", "apply-mode", "apply-config",
        "restart-validator", "restore-operands", "succeed"]


def test_a_change_pauses_waits_applies_and_restores():
    harness = Harness(operands=False)
    start(harness, "all-3g.40gb")
    assert harness.state() == "pending"
    harness.run_until_settled()
    assert harness.state() == "success"
    assert [gpu.device_counts() for gpu in harness.gpus()] == [{"3g.40gb": 2}, {"3g.40gb": 2}]
    paused = harness.cluster.label_writes[1]
    assert paused == {names.DEPLOY_PREFIX + op: names.PAUSED for op in
                      ("device-plugin", "gpu-feature-discovery", "dcgm-exporter", "dcgm", "nvsm")}
    assert all(value == "true" for key, value in harness.cluster.labels().items() if key.startswith(names.DEPLOY_PREFIX))


def test_each_operand_kind_gets_a_five_minute_wait_of_its_own():
    # The device plugin takes 4 minutes to go, GFD 4 more: 8 minutes in all, but no single wait exceeds 5.
    harness = Harness(image=GO_IMAGE)
    start(harness, "all-1g.10gb")
    harness.step(240)
    harness.cluster.pods = [p for p in harness.cluster.pods if p["metadata"]["name"] != "plugin"]
    harness.step(1)
    harness.step(239)  # 8 minutes after the run started, GFD's wait is 4 minutes old
    assert harness.state() == "pending" and harness.manager.runs
    harness.cluster.pods = [p for p in harness.cluster.pods if p["metadata"]["name"] != "gfd"]
    harness.run_until_settled()
    assert harness.state() == "success"
    assert [gpu.device_counts() for gpu in harness.gpus()] == [{"1g.10gb": 7}, {"1g.10gb": 7}]


def test_the_go_port_leaves_pending_when_a_kind_outlives_its_wait():
    harness = Harness(image=GO_IMAGE)
    start(harness, "all-1g.10gb")
    harness.step(POD_WAIT_TIMEOUT_S - 1)
    assert harness.manager.runs
    harness.step(2)
    assert not harness.manager.runs
    assert harness.state() == "pending"
    assert harness.cluster.labels()[names.DEPLOY_PREFIX + "device-plugin"] == names.PAUSED
    assert harness.gpus() == [Gpu(), Gpu()]  # nothing applied


def test_the_script_carries_on_when_a_wait_times_out():
    # reconfigure-mig.sh ignores kubectl wait's failure: 5 minutes per kind, then the next step.
    harness = Harness(image=SCRIPT_IMAGE)
    start(harness, "all-1g.10gb")
    harness.step(POD_WAIT_TIMEOUT_S + 1)  # device plugin: timed out, on to GFD
    assert harness.state() == "pending"
    harness.step(POD_WAIT_TIMEOUT_S + 1)  # GFD: timed out too
    harness.run_until_settled()
    assert harness.state() == "success"


def test_every_exit_rewrites_the_deploy_labels_from_the_values_read_at_the_start():
    harness = Harness(operands=False)
    harness.cluster.labels()[names.DEPLOY_PREFIX + "dcgm"] = "false"  # an admin's false is honoured
    start(harness, "all-1g.10gb")
    # An admin changes a label while the run is on: the exit puts back what the run read at its start.
    harness.cluster.labels()[names.DEPLOY_PREFIX + "gpu-feature-discovery"] = "false"
    harness.run_until_settled()
    assert harness.state() == "success"
    labels = harness.cluster.labels()
    assert labels[names.DEPLOY_PREFIX + "gpu-feature-discovery"] == "true"
    assert labels[names.DEPLOY_PREFIX + "dcgm"] == "false"


@pytest.mark.parametrize("image, nvsm", [(SCRIPT_IMAGE, names.PAUSED), (GO_IMAGE, "true")])
def test_a_failed_apply_restores_the_operands_the_version_restores(image, nvsm):
    # reconfigure-mig.sh's exit restores device plugin, GFD, DCGM exporter and DCGM but not nvsm
    # (gpu-operator#2249); the Go port restores everything it paused.
    harness = Harness(image=image, operands=False, **{"simcluster.dev/fault-apply-fails": "true"})
    start(harness, "all-1g.10gb")
    harness.run_until_settled()
    assert harness.state() == "failed"
    labels = harness.cluster.labels()
    assert {labels[names.DEPLOY_PREFIX + op] for op in
            ("device-plugin", "gpu-feature-discovery", "dcgm-exporter", "dcgm")} == {"true"}
    assert labels[names.DEPLOY_PREFIX + "nvsm"] == nvsm
    # The mode changed before the apply failed: MIG-enabled, no devices.
    assert harness.gpus() == [Gpu(True), Gpu(True)]


def test_already_applied_rewrites_the_labels_and_touches_no_gpu():
    harness = Harness(operands=False)
    harness.cluster.labels()[names.DEPLOY_PREFIX + "device-plugin"] = names.PAUSED  # left over by someone
    harness.step()
    assert harness.state() == "success"
    assert harness.cluster.labels()[names.DEPLOY_PREFIX + "device-plugin"] == "true"
    assert names.PENDING not in [w.get(names.MIG_CONFIG_STATE) for w in harness.cluster.label_writes]


def test_an_unknown_config_fails_without_pending():
    harness = Harness(operands=False)
    start(harness, "all-9g.99gb")
    assert harness.state() == "failed"
    assert [w for w in harness.cluster.label_writes if w.get(names.MIG_CONFIG_STATE) == names.PENDING] == []


def test_a_mode_change_that_needs_a_reboot_reboots_with_with_reboot_and_fails_without():
    with_reboot = Harness(operands=False, with_reboot=True, **{"simcluster.dev/fault-reboot-required": "true"})
    start(with_reboot, "all-1g.10gb")
    with_reboot.run_until_settled()
    assert with_reboot.state() == "rebooting" and with_reboot.cluster.reboots == [NODE]
    assert [gpu.pending_mig for gpu in with_reboot.gpus()] == [True, True]
    # The reboot: the pending mode takes effect, the manager process restarts and runs again.
    with_reboot.cluster.node["metadata"]["annotations"][hardware.GPU_STATE] = hardware.encode(
        [hardware.after_reboot(gpu) for gpu in with_reboot.gpus()])
    with_reboot.epoch += 1
    with_reboot.step()
    with_reboot.run_until_settled()
    assert with_reboot.state() == "success"

    without = Harness(operands=False, **{"simcluster.dev/fault-reboot-required": "true"})
    start(without, "all-1g.10gb")
    without.run_until_settled()
    assert without.state() == "failed" and without.cluster.reboots == []


def test_a_gpu_in_use_makes_the_mode_change_fail():
    harness = Harness(operands=False)
    harness.cluster.pods.append(pod("cuda", "job", namespace="default", containers=[
        {"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]))
    start(harness, "all-1g.10gb")
    harness.run_until_settled()
    assert harness.state() == "failed"


def test_stuck_pending_fault_leaves_operands_paused():
    harness = Harness(operands=False, **{"simcluster.dev/fault-stuck-pending": "true"})
    start(harness, "all-1g.10gb")
    assert harness.state() == "pending" and not harness.manager.runs
    assert harness.cluster.labels()[names.DEPLOY_PREFIX + "device-plugin"] == names.PAUSED


def test_a_manager_stuck_in_pending_wakes_only_for_a_new_value_or_a_new_pod():
    harness = Harness(operands=False, **{"simcluster.dev/fault-stuck-pending-once": "true"})
    start(harness, "all-1g.10gb")
    assert harness.state() == "pending" and not harness.manager.runs
    # Writing the same value again wakes nothing, as NVIDIA's manager reacts only to a change of the label.
    harness.set_config("all-1g.10gb")
    harness.cluster.labels()[names.MIG_CONFIG_STATE] = "pending"
    harness.run_until_settled()
    harness.step(5.0)
    assert harness.state() == "pending" and not harness.manager.runs
    # A restarted pod applies the label's config at its start; the fault fired once and is gone.
    manager = harness.cluster.pods[0]
    manager["metadata"]["uid"] = "uid-restarted"
    harness.step()
    harness.run_until_settled()
    assert harness.state() == "success"
    assert harness.cluster.labels()[names.DEPLOY_PREFIX + "device-plugin"] == "true"


# -- with NVIDIA's own code ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nvidia() -> upstream.Upstream:
    built = upstream.find()
    if built is None:
        pytest.fail("NVIDIA's components are not built: run 'simcluster build' first", pytrace=False)
    return built


@pytest.fixture
def real_mig_parted(nvidia, tmp_path) -> nvml_node.RealMigParted:
    """NVIDIA's mig-parted on the node's GPUs through the GPU-less NVML, as the running simulator uses it."""
    return nvml_node.for_cluster(tmp_path)


def test_an_invalid_config_file_fails_with_mig_parteds_own_message(real_mig_parted, caplog):
    harness = Harness(operands=False, validate=validator(), mig_parted=real_mig_parted)
    harness.cluster.document = "version: v1\nmig-configs:\n  all-1g.10gb:\n    - devices: all\n"
    harness.set_config("all-1g.10gb")
    with caplog.at_level(logging.INFO, logger="simcluster.mig-manager"):
        harness.step()
    assert harness.state() == "failed"
    assert "missing required field: mig-enabled" in caplog.text  # nvidia-mig-parted's words


def test_a_layout_that_does_not_fit_the_placements_fails(real_mig_parted):
    # 2 x 3g.20gb take all 8 memory slices of an A100-40GB: no placement is left for the 2g.10gb.
    harness = Harness(operands=False, validate=validator(), mig_parted=real_mig_parted, model="A100-SXM4-40GB")
    harness.cluster.document = DOCUMENT + ('  too-much:\n    - devices: all\n      mig-enabled: true\n'
                                           '      mig-devices: {"3g.20gb": 2, "2g.10gb": 1}\n'
                                           '  fits:\n    - devices: all\n      mig-enabled: true\n'
                                           '      mig-devices: {"3g.20gb": 1, "4g.20gb": 1}\n')
    start(harness, "too-much")
    harness.run_until_settled()
    assert harness.state() == "failed"
    assert harness.gpus()[0].devices() == []  # mig-parted clears a GPU it could not configure
    harness.set_config("fits")
    harness.step()
    harness.run_until_settled()
    assert harness.state() == "success"
    # Only the ordering 4g first fits (the 4g.20gb placement is slices 0-3): mig-parted tries orderings.
    assert sorted((i.profile, i.start) for i in harness.gpus()[0].instances) == [("3g.20gb", 4), ("4g.20gb", 0)]


def test_device_filters_choose_the_entry_by_the_gpus_pci_id(real_mig_parted):
    # The operator's default all-1g.10gb has 7 per GPU on 80GB parts and 4 on 40GB parts, by device-filter.
    from simcluster.sim.boot import default_mig_document

    for model, count in (("A100-SXM4-80GB", 7), ("A100-SXM4-40GB", 4), ("H100-SXM5-80GB", 7)):
        harness = Harness(operands=False, validate=validator(), mig_parted=real_mig_parted, model=model)
        harness.cluster.document = default_mig_document()
        start(harness, "all-1g.10gb")
        harness.run_until_settled()
        assert harness.state() == "success", model
        assert harness.gpus()[0].device_counts() == {"1g.10gb": count}, model
