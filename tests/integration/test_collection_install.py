"""The collection as users install it: `ansible-galaxy collection build`, `ansible-galaxy collection install`,
then the demo's rollout run from the installed copy (its playbooks, roles and plugins; its core package
installed from the same artifact), outside this checkout, against the simulated cluster."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, start_cluster, stop_cluster

from migrollout import kube
from migrollout.inventory import group_name
from simcluster import upstream

BIN = Path(sys.executable).parent


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The collection built from this checkout and installed into an empty collections path."""
    work = tmp_path_factory.mktemp("galaxy")
    run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(work / "dist"), str(REPO)])
    artifact = next((work / "dist").glob("nvidia_mig-rollout-*.tar.gz"))
    # From outside the checkout (whose ansible.cfg finds the checkout itself "already installed"), and forced:
    # ansible-lint keeps a copy in ~/.ansible/collections.
    run([str(BIN / "ansible-galaxy"), "collection", "install", "--force", str(artifact), "-p",
         str(work / "collections")],
        cwd=work)
    return work / "collections"


def test_installed_collection_runs_the_demo_rollout(installed: Path, tmp_path: Path) -> None:
    home = installed / "ansible_collections" / "nvidia_mig" / "rollout"
    assert (home / "plugins" / "modules" / "mig_node_label.py").is_file()
    assert not (home / "collections").exists() and not (home / ".venv").exists()

    # The core package, from the artifact too: pip installs the collection's directory (no dependencies: the
    # test's interpreter has them), and it comes first on the path.
    site = tmp_path / "site"
    run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
         str(home)])
    assert (site / "migrollout" / "kube.py").is_file()

    # Outside the checkout: an inventory of the installed collection's config/ plus the demo's pool settings, and
    # an ansible.cfg that knows only the installed collections path.
    project = tmp_path / "project"
    shutil.copytree(home / "config", project / "inventory")
    shutil.copytree(home / "demo" / "inventory" / "group_vars", project / "inventory" / "group_vars",
                    dirs_exist_ok=True)
    (project / "ansible.cfg").write_text(
        "[defaults]\n"
        f"collections_path = {installed}\n"
        "inventory = ./inventory/hosts.yml,./inventory/gpu_nodes.yml\n"
        "force_valid_group_names = ignore\ngathering = explicit\nretry_files_enabled = false\n"
        "[inventory]\nenable_plugins = ansible.builtin.yaml, nvidia_mig.rollout.gpu_nodes\n")

    cluster = start_cluster(tmp_path / "cluster", None, "--without-operator")
    try:
        env = cluster.env(ANSIBLE_CONFIG=str(project / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                          PYTHONPATH=str(site), ANSIBLE_COLLECTIONS_PATH=str(installed))
        run([str(BIN / "ansible-playbook"), str(home / "playbooks" / "nvidia-gpu-operator.yml"),
             "-e", f"gpu_operator_chart_path={upstream.build().chart}"], cwd=project, env=env)
        rollout = run([str(BIN / "ansible-playbook"), str(home / "playbooks" / "mig-reconfigure.yml"),
                       "-e", f"mig_rollout_report_dir={tmp_path / 'reports'}", "-vv"], cwd=project, env=env)
        # Every task came from the installed copy (-vv prints each task's path), none from this checkout.
        assert f"task path: {home}/roles/mig_rollout/tasks/node.yml" in rollout.stdout
        for checkout_part in ("roles", "plugins", "collections", "playbooks", "src"):
            assert str(REPO / checkout_part) not in rollout.stdout
        wanted = {path.stem: yaml.safe_load(path.read_text())["mig_config"]
                  for path in (home / "demo" / "inventory" / "group_vars").glob("gpu_pool_*.yml")}
        nodes, _ = cluster.api.list("/api/v1/nodes", label_selector="gpu-pool")
        checked = 0
        for node in nodes:
            labels = node["metadata"]["labels"]
            pool = "gpu_pool_" + group_name(labels["gpu-pool"])
            if pool not in wanted:
                continue
            checked += 1
            assert labels.get("nvidia.com/mig.config") == wanted[pool], node["metadata"]["name"]
            assert labels.get("nvidia.com/mig.config.state") == "success", node["metadata"]["name"]
            assert not [t for t in node["spec"].get("taints") or [] if t["key"] == "mig"], node["metadata"]["name"]
        assert checked == 8
        assert cluster.api.get_or_none(kube.namespaced_path("coordination.k8s.io/v1", "leases", "gpu-operator",
                                                            "mig-rollout")) is None
    finally:
        stop_cluster(cluster)
