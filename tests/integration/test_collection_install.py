"""The collection as users install it, without this checkout: `scripts/build-collection.sh` (the tarball, the core's
wheel inside), then, in a user's virtualenv that has the newest ansible-core of the matrix this machine can run
(2.21 with Python 3.12+), `ansible-galaxy collection install` of the tarball and `pip install -r <installed
collection>/requirements.txt`: ansible-core stays as it was, and the demo's rollout (check mode, then the run) from
the installed copy reconfigures nodes of the shared simulated cluster."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO, Cluster, NodePool
from user_venv import build_collection, installed, pip, users_virtualenv

from migrollout.inventory import group_name

POOL = "a100-80gb"       # the demo gives its pool a config (demo/inventory/group_vars/gpu_pool_a100_80gb.yml)


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def users_ansible(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The user's virtualenv with the collection and its Python needs installed from the tarball; and the
    collections path it was installed into."""
    work = tmp_path_factory.mktemp("galaxy")
    artifact = build_collection(work / "dist")
    venv, core = users_virtualenv("collection")
    before = installed(venv)
    # From outside the checkout (whose ansible.cfg finds the checkout itself "already installed"), and forced:
    # ansible-lint keeps a copy in ~/.ansible/collections.
    run([str(venv / "bin" / "ansible-galaxy"), "collection", "install", "--force", str(artifact), "-p",
         str(work / "collections")], cwd=work)
    home = work / "collections" / "ansible_collections" / "nvidia_mig" / "rollout"
    # A reused virtualenv holds an earlier build of the same version: this build's wheel replaces it.
    pip(venv, "uninstall", "--yes", "nvidia-mig-rollout")
    pip(venv, "install", "--quiet", "-r", str(home / "requirements.txt"), cwd=work)
    after = installed(venv)
    assert after["ansible-core"] == before["ansible-core"] == core
    assert {name: version for name, version in before.items() if after.get(name) != version} == {}
    return venv, work / "collections"


def test_installed_collection_runs_the_demo_rollout(users_ansible: tuple[Path, Path], cluster: Cluster,
                                                   node_pool: NodePool, tmp_path: Path) -> None:
    venv, collections = users_ansible
    home = collections / "ansible_collections" / "nvidia_mig" / "rollout"
    assert (home / "plugins" / "modules" / "mig_node_label.py").is_file()
    assert not (home / "collections").exists() and not (home / ".venv").exists()
    # The core comes from the wheel the tarball carries, not from this checkout's src/.
    located = run([str(venv / "bin" / "python"), "-c", "import migrollout; print(migrollout.__file__)"], cwd=tmp_path)
    assert located.stdout.startswith(str(venv)), located.stdout

    nodes = [node_pool.take(POOL), node_pool.take(POOL)]
    # Outside the checkout: an inventory of the installed collection's config/ plus the demo's pool settings, and
    # an ansible.cfg that knows only the installed collections path.
    project = tmp_path / "project"
    shutil.copytree(home / "config", project / "inventory")
    shutil.copytree(home / "demo" / "inventory" / "group_vars", project / "inventory" / "group_vars",
                    dirs_exist_ok=True)
    (project / "ansible.cfg").write_text(
        "[defaults]\n"
        f"collections_path = {collections}\n"
        "inventory = ./inventory/hosts.yml,./inventory/gpu_nodes.yml\n"
        "force_valid_group_names = ignore\ngathering = explicit\nretry_files_enabled = false\n"
        "[inventory]\nenable_plugins = ansible.builtin.yaml, nvidia_mig.rollout.gpu_nodes\n")
    env = cluster.env(ANSIBLE_CONFIG=str(project / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                      ANSIBLE_COLLECTIONS_PATH=str(collections))
    # The user's virtualenv first; nothing of the test's own interpreter (its scripts, the checkout's src/).
    env["PATH"] = os.pathsep.join([str(venv / "bin"), cluster.bin_dir, os.environ["PATH"]])
    env.pop("PYTHONPATH", None)
    # The shared cluster's operator does not tolerate a maintenance taint: a cordon instead.
    settings = ["-e", json.dumps({"mig_rollout_maintenance_taints": [], "mig_rollout_cordon": True}),
                "-e", f"mig_rollout_report_dir={tmp_path / 'reports'}", "--limit", ",".join(nodes)]
    playbook = str(home / "playbooks" / "mig-reconfigure.yml")
    ansible_playbook = str(venv / "bin" / "ansible-playbook")

    plan = run([ansible_playbook, playbook, "--check", *settings], cwd=project, env=env)
    assert "Could not match supplied host pattern" not in plan.stderr
    for node in nodes:
        assert node in plan.stdout
        assert cluster.labels(node).get("nvidia.com/mig.config") != "all-1g.10gb"

    rollout = run([ansible_playbook, playbook, "-vv", *settings], cwd=project, env=env)
    # Every task came from the installed copy (-vv prints each task's path), none from this checkout.
    assert f"task path: {home}/roles/mig_rollout/tasks/node.yml" in rollout.stdout
    for checkout_part in ("roles", "plugins", "collections", "playbooks", "src"):
        assert str(REPO / checkout_part) not in rollout.stdout
    wanted = yaml.safe_load((home / "demo" / "inventory" / "group_vars" /
                             f"gpu_pool_{group_name(POOL)}.yml").read_text())["mig_config"]
    for node in nodes:
        labels = cluster.labels(node)
        assert labels.get("nvidia.com/mig.config") == wanted, node
        assert labels.get("nvidia.com/mig.config.state") == "success", node
        assert not cluster.node(node)["spec"].get("unschedulable"), node
    report = json.loads((tmp_path / "reports" / "latest.json").read_text())
    assert sorted(row["node"] for row in report["nodes"]) == sorted(nodes)
