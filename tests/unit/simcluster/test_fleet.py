"""Fleet files: the default fleet, scaling, and validation errors that name the field and the line."""

import pytest

from simcluster import fleet, upstream
from simcluster.fleet import FleetError


def test_default_fleet_covers_the_catalogue():
    nodes = fleet.load().nodes()
    by_model: dict[str, int] = {}
    for node in nodes:
        key = node.gpu.key if node.gpu else "cpu"
        by_model[key] = by_model.get(key, 0) + 1
    assert by_model["A100-SXM4-40GB"] >= 2 and by_model["A100-SXM4-80GB"] >= 2 and by_model["H100-SXM5-80GB"] >= 2
    assert by_model["H200-141GB"] >= 1 and by_model["A30"] >= 1 and by_model["L4"] >= 1 and by_model["cpu"] >= 2
    assert all(node.mig_config is None for node in nodes)  # MIG-capable nodes boot with MIG disabled


def test_scaling_keeps_every_pool():
    scaled = fleet.load().scaled(1000)
    assert len(scaled.nodes()) == 1000
    assert all(pool.count >= 1 for pool in scaled.pools)
    with pytest.raises(FleetError, match="at least that many nodes"):
        fleet.load().scaled(3)


def write(tmp_path, text):
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("pools:\n  - name: a\n    count: 1\n    gpu: A200\n", ":4: pools[0].gpu: unknown GPU model 'A200'"),
    ("pools:\n  - name: a\n    count: 1\n    gpu: L4\n    mig_config: all-disabled\n",
     ":5: pools[0].mig_config: only pools of MIG-capable GPUs"),
    ("pools:\n  - name: a\n    count: -1\n", ":3: pools[0].count: must be a whole number from 0 to 5000"),
    ("pools:\n  - name: Big_Pool\n    count: 1\n", ":2: pools[0].name: must be a lowercase DNS label"),
    ("pools:\n  - name: a\n    count: 1\n    faults: {explode: true}\n", ":4: pools[0].faults.explode: unknown field"),
    ("pools:\n  - name: a\n    count: 1\n    nodes: {3: {faults: {apply_fails: true}}}\n",
     ":4: pools[0].nodes[3]: must be a node index from 1 to 1"),
    ("simulation: {reboot_s: soon}\npools:\n  - name: a\n    count: 1\n", ":1: simulation.reboot_s: must be a number"),
    ("pools: [\n", "not valid YAML"),
    ("nodes: 3\n", ":1: nodes: unknown field"),
])
def test_validation_errors_name_field_and_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(FleetError) as raised:
        fleet.load(path)
    assert str(raised.value).startswith(str(path))
    assert message in str(raised.value)


# Checked by NVIDIA's code: mig-parted's CLI and selection, the MIG tables, the operator's default MIG ConfigMap.
@pytest.mark.parametrize("text, message", [
    ("pools:\n  - name: a\n    count: 1\n    gpu: A100-80GB\n    mig_config: all-1g.5gb\n",
     ":5: pools[0].mig_config: all-1g.5gb: nvidia-mig-parted apply succeeded but its assert fails: mig-parted "
     "drops MIG device names that NVIDIA A100-SXM4-80GB has no profile for"),
    ("pools:\n  - name: a\n    count: 1\n    gpu: A100-80GB\n    mig_config: all-9g.99gb\n",
     ":5: pools[0].mig_config: all-9g.99gb: Error selecting MIG config: selected mig-config not present: all-9g.99gb"),
    ("pools:\n  - name: a\n    count: 1\n    gpu: A100-80GB\n    mig_devices:\n      1g.10gb: 8\n",
     ":6: pools[0].mig_devices.1g.10gb: Error applying MIG configuration with hooks: error setting MIGConfig: "
     "error attempting multiple config orderings: all orderings failed"),
    # 2 x 3g.20gb take all 8 memory slices: no placement is left for the 2g.10gb.
    ("pools:\n  - name: a\n    count: 1\n    gpu: A100-40GB\n    mig_devices: {3g.20gb: 2, 2g.10gb: 1}\n",
     "pools[0].mig_devices.3g.20gb: Error applying MIG configuration with hooks: error setting MIGConfig: "
     "error attempting multiple config orderings: all orderings failed"),
])
def test_mig_layouts_are_checked_by_nvidias_code(tmp_path, text, message):
    if upstream.find() is None:
        pytest.fail("NVIDIA's components are not built: run 'simcluster build' first", pytrace=False)
    path = write(tmp_path, text)
    with pytest.raises(FleetError) as raised:
        fleet.load(path)
    assert message in str(raised.value)


def test_a_pool_that_fits_boots_with_its_config(tmp_path):
    if upstream.find() is None:
        pytest.fail("NVIDIA's components are not built: run 'simcluster build' first", pytrace=False)
    loaded = fleet.load(write(tmp_path, "pools:\n  - name: a\n    count: 1\n    gpu: A100-40GB\n"
                                        "    mig_devices: {4g.20gb: 1, 2g.10gb: 1, 1g.5gb: 1}\n"))
    assert loaded.nodes()[0].mig_devices == {"4g.20gb": 1, "2g.10gb": 1, "1g.5gb": 1}


def test_faults_merge_pool_and_node(tmp_path):
    path = write(tmp_path, "pools:\n  - name: a\n    count: 2\n    gpu: H100-80GB\n    faults: {apply_delay_s: 2}\n"
                           "    nodes:\n      2: {faults: {apply_fails: true}}\n")
    first, second = fleet.load(path).nodes()
    assert first.faults.apply_delay_s == 2 and not first.faults.apply_fails
    assert second.faults.apply_delay_s == 2 and second.faults.apply_fails


def test_restart_back_off_defaults_to_the_kubelets_and_can_be_scaled_down(tmp_path):
    assert (fleet.load().simulation.restart_backoff_s, fleet.load().simulation.restart_backoff_max_s) == (10, 300)
    path = write(tmp_path, "simulation: {restart_backoff_s: 1, restart_backoff_max_s: 8}\n"
                           "pools:\n  - name: a\n    count: 1\n")
    loaded = fleet.load(path).simulation
    assert (loaded.restart_backoff_s, loaded.restart_backoff_max_s) == (1, 8)
    bad = write(tmp_path, "simulation: {restart_backoff_s: fast}\npools:\n  - name: a\n    count: 1\n")
    with pytest.raises(FleetError, match=r"simulation\.restart_backoff_s: must be a number"):
        fleet.load(bad)
