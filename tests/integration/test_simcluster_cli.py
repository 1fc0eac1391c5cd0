"""The simcluster command: idempotent up, env, status, clear errors, down, a cluster without the operator."""

import json
import socket
import subprocess

import pytest
from conftest import FLEETS, SIMCLUSTER, start_cluster, stop_cluster

from migrollout.processes import pid_alive


def simcluster(state_dir, *args):
    return subprocess.run([*SIMCLUSTER, "--state-dir", str(state_dir), *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    cluster = start_cluster(tmp_path_factory.mktemp("bare") / "c", FLEETS / "small.yaml", "--without-operator")
    yield cluster
    stop_cluster(cluster)


def test_up_again_is_a_no_op(bare):
    pids = json.loads((bare.state_dir / "state.json").read_text())["pids"]
    result = simcluster(bare.state_dir, "up")
    assert result.returncode == 0
    assert "already up" in result.stdout
    assert json.loads((bare.state_dir / "state.json").read_text())["pids"] == pids


def test_env_and_status(bare):
    env = simcluster(bare.state_dir, "env").stdout
    assert f"export KUBECONFIG={bare.kubeconfig}" in env
    assert "SIMCLUSTER_OPERATOR_KUBECONFIG" in env
    status = simcluster(bare.state_dir, "status")
    assert status.returncode == 0
    assert "nodes: 6/6 Ready" in status.stdout
    assert "GPU Operator not installed" in status.stdout


def test_without_operator_gpus_show_only_through_nfd(bare):
    labels = bare.labels("a100-80gb-1")
    assert labels["feature.node.kubernetes.io/pci-10de.present"] == "true"
    assert not any(key.startswith("nvidia.com/") for key in labels)
    assert not bare.allocatable("a100-80gb-1")
    assert bare.api.get_or_none("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/clusterpolicies.nvidia.com") \
        is None


def test_non_admin_identity_is_subject_to_rbac(bare):
    denied = bare.kubectl("get", "nodes", kubeconfig=bare.operator_kubeconfig, check=False)
    assert denied.returncode != 0
    assert 'User "mig-operator" cannot list resource "nodes"' in denied.stderr


def test_port_in_use_is_one_clear_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = simcluster(tmp_path / "c", "up", "--port", str(port))
    assert result.returncode == 1
    assert result.stderr.strip() == (f"simcluster: port {port} is in use on 127.0.0.1 (another cluster? run "
                                     f"'simcluster down' or choose one with --port)")
    assert not (tmp_path / "c" / "state.json").exists()


def test_bad_fleet_file_names_field_and_line(tmp_path):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("pools:\n  - name: big\n    count: 2\n    gpu: A200-80GB\n")
    result = simcluster(tmp_path / "c", "up", "--fleet", str(fleet))
    assert result.returncode == 1
    assert result.stderr.startswith(f"simcluster: {fleet}:4: pools[0].gpu: unknown GPU model 'A200-80GB'")
    assert "\n" not in result.stderr.strip()


def test_down_stops_everything_and_removes_state(tmp_path):
    cluster = start_cluster(tmp_path / "c", FLEETS / "small.yaml", "--without-operator")
    pids = json.loads((cluster.state_dir / "state.json").read_text())["pids"]
    assert len(pids) == 5 and all(pid_alive(pid) for pid in pids.values())
    result = simcluster(cluster.state_dir, "down")
    assert result.returncode == 0
    assert not any(pid_alive(pid) for pid in pids.values())
    assert not cluster.state_dir.exists()
    assert "nothing to stop" in simcluster(cluster.state_dir, "down").stdout


def test_binaries_come_from_the_cache(tmp_path):
    result = subprocess.run([*SIMCLUSTER, "build"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "Kubernetes v1.34.4" in result.stdout
    assert "building" not in result.stderr




def test_the_real_operator_needs_root_and_says_so_before_starting_anything(tmp_path, monkeypatch, capsys):
    from simcluster import cli
    from simcluster.sim import netns

    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    assert cli.main(["--state-dir", str(tmp_path / "c"), "up", "--real-operator"]) == 1
    message = capsys.readouterr().err.strip()
    assert message == ("simcluster: running the GPU Operator's containers needs root (network, mount and PID "
                       "namespaces); run simcluster as root, or use --simulated-operator")
    assert not (tmp_path / "c" / "state.json").exists()


def test_a_refused_namespace_is_one_clear_line(tmp_path, monkeypatch, capsys):
    from simcluster import cli
    from simcluster.sim import netns

    def refused(addresses):
        raise netns.NamespaceError("unshare(CLONE_NEWNET) failed: Operation not permitted")

    monkeypatch.setattr(netns.PodNetwork, "create", staticmethod(refused))
    assert cli.main(["--state-dir", str(tmp_path / "c"), "up", "--real-operator"]) == 1
    assert "cannot create a pod network namespace: unshare(CLONE_NEWNET) failed: Operation not permitted" in \
        capsys.readouterr().err
    assert not (tmp_path / "c" / "state.json").exists()


def test_logs_of_a_simulated_or_missing_pod(bare):
    namespace = bare.namespace()
    bare.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": namespace},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}})
    bare.wait(lambda: bare.api.get(f"/api/v1/namespaces/{namespace}/pods/web")["status"].get("phase") == "Running",
              what="simulated pod running")
    simulated = simcluster(bare.state_dir, "logs", f"{namespace}/web")
    assert simulated.returncode == 1
    assert simulated.stderr.strip() == f"simcluster: pod {namespace}/web is simulated: it runs no process and has no logs"
    missing = simcluster(bare.state_dir, "logs", f"{namespace}/nothing")
    assert missing.returncode == 1 and f"no pod {namespace}/nothing" in missing.stderr
