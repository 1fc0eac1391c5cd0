"""What AWX and Automation Platform run: an execution environment built by ansible-builder from
ee/execution-environment.yml (no container engine here: the build context, its contents, and the context's own
dependency step run against the installed collection), and the rollout run through ansible-runner against the
shared simulated cluster, judged by the run's artifacts."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import ansible_runner
import pytest
import yaml
from conftest import REPO, Cluster, NodePool
from user_venv import CACHE, build_collection, pip, user_core, user_venv

EE_COLLECTIONS = "/usr/share/ansible/collections"      # where an EE build installs collections (ansible-builder 3)


def builder() -> Path:
    """ansible-builder in a virtualenv of its own (made once, under the cache directory)."""
    venv = CACHE / "ansible-builder"
    if not (venv / ".ready").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        pip(venv, "install", "--quiet", "ansible-builder>=3.1,<4")
        (venv / ".ready").touch()
    return venv / "bin" / "ansible-builder"


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("ee")
    artifact = build_collection(work / "dist")
    definition = work / "definition"
    definition.mkdir()
    shutil.copy(REPO / "ee" / "execution-environment.yml", definition)
    shutil.copy(artifact, definition)
    result = subprocess.run([str(builder()), "create", "-f", "execution-environment.yml", "-c", str(work / "context")],
                            capture_output=True, text=True, cwd=definition)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work / "context"


def test_ansible_builder_makes_a_context_with_the_collection(context: Path) -> None:
    containerfile = next(path for path in (context / "Containerfile", context / "Dockerfile") if path.exists())
    text = containerfile.read_text()
    # ansible-core of the supported range, the collection from its tarball, the collections' dependencies.
    assert re.search(r'ANSIBLE_INSTALL_REFS="ansible-core>=2\.19,<2\.22 ansible-runner"', text)
    assert f'--collections-path "{EE_COLLECTIONS}"' in text
    assert "introspect.py introspect" in text and "/output/scripts/assemble" in text
    requirements = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    assert requirements["collections"] == [{"name": "collections/nvidia_mig-rollout-0.2.0.tar.gz", "type": "file"}]
    tarball = context / "_build" / "collections" / "nvidia_mig-rollout-0.2.0.tar.gz"
    listing = subprocess.run(["tar", "tzf", str(tarball)], capture_output=True, text=True, check=True).stdout.split()
    for part in ("meta/execution-environment.yml", "meta/ee-requirements.txt", "bindep.txt", "requirements.txt",
                 "wheels/nvidia_mig_rollout-0.2.0-py3-none-any.whl"):
        assert part in listing, part


def test_the_contexts_dependency_step_finds_the_core_and_helm(context: Path, tmp_path: Path) -> None:
    """The builder stage's introspection, run from the context on the collection installed as the EE installs it;
    pip then resolves its requirements (the core from the carried wheel) into a virtualenv of the EE's ansible-core
    range."""
    collections = tmp_path / "collections"
    # --force: ansible-galaxy skips a collection it finds installed in any configured path (~/.ansible/collections).
    subprocess.run([str(Path(sys.executable).parent / "ansible-galaxy"), "collection", "install", "--force", "-p",
                    str(collections), str(context / "_build" / "collections" / "nvidia_mig-rollout-0.2.0.tar.gz")],
                   check=True, capture_output=True, cwd=tmp_path)
    result = subprocess.run([sys.executable, str(context / "_build" / "scripts" / "introspect.py"), "introspect",
                             str(collections), "--write-pip", str(tmp_path / "requirements.txt"),
                             "--write-bindep", str(tmp_path / "bindep.txt")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^helm \[platform:rpm\]", (tmp_path / "bindep.txt").read_text(), re.M)
    pip_lines = (tmp_path / "requirements.txt").read_text()
    assert f"--find-links {EE_COLLECTIONS}/ansible_collections/nvidia_mig/rollout/wheels" in pip_lines
    assert re.search(r"^nvidia-mig-rollout==0\.2\.0", pip_lines, re.M)

    # Here the collection is in tmp_path, not in the EE's path: the same file with that one path moved.
    moved = tmp_path / "requirements-here.txt"
    moved.write_text(pip_lines.replace(EE_COLLECTIONS, str(collections)))
    core, python = user_core()
    venv = user_venv(python, core)
    report = tmp_path / "report.json"
    pip(venv, "install", "--quiet", "--dry-run", "--report", str(report), "-r", str(moved))
    planned = {item["metadata"]["name"]: item["download_info"]["url"] for item in json.loads(report.read_text())["install"]}
    assert planned["nvidia-mig-rollout"].endswith("/wheels/nvidia_mig_rollout-0.2.0-py3-none-any.whl")
    assert "ansible-core" not in planned


def test_ansible_runner_runs_the_rollout_with_its_artifacts(cluster: Cluster, node_pool: NodePool,
                                                           tmp_path: Path) -> None:
    node = node_pool.take("a100-80gb")
    env = cluster.env(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    (tmp_path / "runner").mkdir()
    run = ansible_runner.run(
        private_data_dir=str(tmp_path / "runner"), project_dir=str(REPO), playbook="playbooks/mig-reconfigure.yml",
        inventory=[str(REPO / "config" / "hosts.yml"), str(REPO / "config" / "gpu_nodes.yml")], limit=node,
        extravars={"mig_config": "all-1g.10gb", "mig_rollout_cordon": True, "mig_rollout_maintenance_taints": [],
                   "mig_rollout_report_dir": str(tmp_path / "reports")},
        envvars=env, quiet=True, timeout=600)
    stdout = Path(run.config.artifact_dir, "stdout").read_text()
    assert run.status == "successful" and run.rc == 0, stdout[-3000:]

    events = list(run.events)
    ok_tasks = {(event["event_data"].get("host"), event["event_data"].get("task")) for event in events
                if event["event"] == "runner_on_ok"}
    for task in ("Check this ansible-core loads the rollout's scheduler",
                 "Put the node into maintenance and move its GPU workloads off",
                 "Set the MIG config and wait for the MIG manager",
                 "Verify the node advertises its new MIG layout and return it to service"):
        assert (node, task) in ok_tasks, (task, sorted(ok_tasks))
    stats = next(event for event in events if event["event"] == "playbook_on_stats")["event_data"]
    assert stats["failures"] == {} and stats["ok"].get(node), stats
    assert run.stats["changed"].get(node), run.stats
    assert "PLAY RECAP" in stdout and node in stdout
    # Every event is also an artifact file, as AWX reads them.
    assert len(list(Path(run.config.artifact_dir, "job_events").glob("*.json"))) == len(events)
    labels = cluster.labels(node)
    assert labels["nvidia.com/mig.config"] == "all-1g.10gb"
    assert labels["nvidia.com/mig.config.state"] == "success"
