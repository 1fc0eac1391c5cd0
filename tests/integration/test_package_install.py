"""Installing the toolkit's package into a user's virtualenv that already has an ansible-core of the supported
range changes none of what is there (its Ansible above all): `pip install --dry-run --report`, judged against the
virtualenv's own list. The virtualenvs are made once per machine (user_venv)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from user_venv import COMBINATIONS, REPO, canonical, installed, newest_interpreter, pip, user_venv


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package's wheel, built once (what `pip install <checkout>` would build each time)."""
    directory = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(directory),
                    str(REPO)], check=True, capture_output=True)
    return next(directory.glob("nvidia_mig_rollout-*.whl"))


@pytest.mark.parametrize("core", sorted(COMBINATIONS))
def test_installing_the_package_changes_none_of_the_users_ansible(core: str, wheel: Path, tmp_path: Path) -> None:
    python = newest_interpreter(core)
    if python is None:
        pytest.skip(f"no Python this machine has runs ansible-core {core} (it supports {COMBINATIONS[core]})")
    venv = user_venv(python, core)
    before = installed(venv)
    assert before["ansible-core"] == core

    report_path = tmp_path / "report.json"
    pip(venv, "install", "--quiet", "--dry-run", "--report", str(report_path), str(wheel))
    planned = {canonical(item["metadata"]["name"]): item["metadata"]["version"]
               for item in json.loads(report_path.read_text())["install"]}

    changed = {name: f"{before[name]} -> {version}" for name, version in planned.items() if name in before}
    assert changed == {}, f"installing nvidia-mig-rollout would change the user's {changed}"
    # What is missing is installed: the check above is not passing because nothing resolved.
    assert "nvidia-mig-rollout" in planned and "kubernetes" in planned, planned
