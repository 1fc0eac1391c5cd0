"""The simcluster command: idempotent up that keeps state, env, status, clear errors, down, a cluster without the
operator; the identities it offers (a ServiceAccount token, an exec credential plugin); simcluster.testing."""

import calendar
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import FLEETS, SIMCLUSTER, start_cluster, stop_cluster

from migrollout.kube import Connection, KubeClient, KubeError
from migrollout.processes import pid_alive
from simcluster import credential
from simcluster.testing import OPERATOR_USER, SimCluster, SimClusterError


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
    assert f"export SIMCLUSTER_OPERATOR_KUBECONFIG={bare.operator_kubeconfig}" in env
    assert f"export SIMCLUSTER_EXEC_KUBECONFIG={bare.exec_kubeconfig}" in env
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


def test_non_admin_identities_are_subject_to_rbac(bare):
    for kubeconfig in (bare.operator_kubeconfig, bare.exec_kubeconfig):
        denied = bare.kubectl("get", "nodes", kubeconfig=kubeconfig, check=False)
        assert denied.returncode != 0
        assert f'User "{OPERATOR_USER}" cannot list resource "nodes"' in denied.stderr


def user_entry(kubeconfig):
    return yaml.safe_load(Path(kubeconfig).read_text())["users"][0]["user"]


def test_the_least_privileged_identity_is_a_service_account_token(bare):
    assert set(user_entry(bare.operator_kubeconfig)) == {"token"}
    # As kubectl (client-go) and as the toolkit's client (the official Python client's auth settings) see it.
    whoami = json.loads(bare.kubectl("auth", "whoami", "-o", "json", kubeconfig=bare.operator_kubeconfig).stdout)
    assert whoami["status"]["userInfo"]["username"] == OPERATOR_USER
    assert bare.whoami(bare.operator_kubeconfig)["groups"] == [
        "system:serviceaccounts", "system:serviceaccounts:mig-rollout", "system:authenticated"]


def test_the_exec_kubeconfig_runs_the_credential_plugin_for_the_same_service_account(bare):
    entry = user_entry(bare.exec_kubeconfig)["exec"]
    assert entry["args"][:2] == ["-m", "simcluster.credential"]
    whoami = json.loads(bare.kubectl("auth", "whoami", "-o", "json", kubeconfig=bare.exec_kubeconfig).stdout)
    assert whoami["status"]["userInfo"]["username"] == OPERATOR_USER
    seen = bare.whoami(bare.exec_kubeconfig)
    assert seen["username"] == OPERATOR_USER
    # The token the API server authenticated is the one the plugin issued last (its JWT id).
    assert seen["extra"]["authentication.kubernetes.io/credential-id"] == [
        f"JTI={bare.credentials_handed_out()[-1]['jti']}"]


def plugin(state_dir, lifetime):
    result = subprocess.run([sys.executable, "-m", "simcluster.credential", "--state-dir", str(state_dir),
                             "--lifetime", str(lifetime)], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def test_exec_credentials_expire_and_are_revoked_after_their_expiry(bare):
    first = plugin(bare.state_dir, 2)
    assert first["apiVersion"] == "client.authentication.k8s.io/v1" and first["kind"] == "ExecCredential"
    expires = calendar.timegm(time.strptime(first["status"]["expirationTimestamp"], "%Y-%m-%dT%H:%M:%SZ"))
    assert abs(expires - time.time() - 2) <= 1.5

    def who(token):
        api = KubeClient.connect(Connection(host=bare.server, api_key=token, ca_cert=bare.ca_file))
        try:
            return api.create("/apis/authentication.k8s.io/v1/selfsubjectreviews",
                              {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
                              )["status"]["userInfo"]["username"]
        except KubeError as exc:
            return exc.status

    assert who(first["status"]["token"]) == OPERATOR_USER
    # Revoked on time, by the simulator, while nobody runs the plugin.
    time.sleep(2 + credential.REVOKE_GRACE_S + 2)
    assert who(first["status"]["token"]) == 401
    revoked = [entry for entry in bare.credentials_revoked() if entry["by"] == "simulator"]
    secret = [entry for entry in bare.credentials_handed_out() if entry["lifetime"] == 2][-1]["secret"]
    assert any(secret in entry["secrets"] for entry in revoked)
    second = plugin(bare.state_dir, 2)
    assert second["status"]["token"] != first["status"]["token"]
    assert who(second["status"]["token"]) == OPERATOR_USER


def test_clients_that_start_together_share_a_token(bare):
    # Within REUSE_S (5 s at this lifetime): an Ansible run starts many clients at once.
    tokens = {plugin(bare.state_dir, 60)["status"]["token"] for _ in range(3)}
    assert len(tokens) == 1


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


def test_testing_environment_refuses_a_directory_without_a_cluster(tmp_path):
    with pytest.raises(SimClusterError, match=f"no simulated cluster in {tmp_path}"):
        SimCluster.attach(tmp_path)


def test_testing_environment_env_and_kubectl(bare):
    env = bare.env(EXTRA="1")
    assert env["KUBECONFIG"] == bare.kubeconfig and env["EXTRA"] == "1"
    assert env["PATH"].split(":")[0] == bare.bin_dir and env["SIMCLUSTER_DIR"] == str(bare.state_dir)
    assert "a100-80gb-1" in bare.kubectl("get", "nodes", "-o", "name").stdout
    with pytest.raises(SimClusterError, match="kubectl get nodes failed"):
        bare.kubectl("get", "nodes", kubeconfig=bare.operator_kubeconfig)


def test_up_on_a_running_cluster_refuses_options_that_would_make_it_another(bare):
    refused = simcluster(bare.state_dir, "up", "--nodes", "12", "--port", str(bare.state.api_port + 1))
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"simcluster: the cluster in {bare.state_dir} runs with other settings (--nodes 12: it runs the fleet as "
        f"written; --port {bare.state.api_port + 1}: it listens on {bare.state.api_port}); 'simcluster up' keeps "
        f"a cluster as it is: drop those options, or replace it with 'simcluster up --fresh'")
    assert all(bare.state.alive().values())


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
