"""A user's virtualenv: a given Python with a given ansible-core and nothing of ours, made once per machine under
the cache directory (~/.cache/nvidia-mig-rollout/user-venvs) and reused by later sessions; the combinations are
those of tests/matrix/combinations.yaml."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
COMBINATIONS = yaml.safe_load((REPO / "tests" / "matrix" / "combinations.yaml").read_text())["ansible-core"]
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nvidia-mig-rollout" / "user-venvs"


def interpreter(version: str) -> str | None:
    """The path of python<version> on this machine (PATH or pyenv), or None."""
    found = subprocess.run([str(REPO / "scripts" / "find-python.sh"), f"python{version}"], capture_output=True,
                           text=True)
    return found.stdout.strip() if found.returncode == 0 else None


def newest_interpreter(core: str) -> str | None:
    """The newest Python this machine has among those ``core`` supports."""
    for version in sorted(COMBINATIONS[core], key=lambda v: tuple(map(int, v.split("."))), reverse=True):
        if path := interpreter(version):
            return path
    return None


def pip(venv: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", *args],
                            capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"pip {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def user_venv(python: str, core: str, purpose: str = "") -> Path:
    """A virtualenv of ``python`` holding ansible-core ``core`` (and what it needs), as a user has one. Tests that
    install into it give a ``purpose`` of their own, so the untouched one stays untouched."""
    version = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    venv = CACHE / "-".join(filter(None, [f"python{version}", f"ansible-core-{core}", purpose]))
    ready = venv / ".ready"
    if not ready.exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([python, "-m", "venv", str(venv)], check=True, capture_output=True)
        pip(venv, "install", "--quiet", f"ansible-core=={core}")
        ready.touch()
    return venv


def installed(venv: Path) -> dict[str, str]:
    """Every distribution in ``venv``: canonical name -> version."""
    listing = json.loads(pip(venv, "list", "--format=json").stdout)
    return {canonical(item["name"]): item["version"] for item in listing}


def canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def build_collection(output: Path) -> Path:
    """The collection tarball as released (scripts/build-collection.sh: the core's wheel inside)."""
    result = subprocess.run([str(REPO / "scripts" / "build-collection.sh"), str(output)], capture_output=True,
                            text=True, env={**os.environ, "VENV": str(Path(sys.executable).parent.parent)})
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(result.stdout.strip().splitlines()[-1])


def user_core() -> tuple[str, str]:
    """The ansible-core and the Python of the user's virtualenv the install tests make: MIGROLLOUT_USER_ANSIBLE
    ("<ansible-core>:<python>", which `make matrix` sets to its combination), else the newest ansible-core of the
    matrix this machine has a Python for (2.21 with Python 3.12 or later)."""
    if chosen := os.environ.get("MIGROLLOUT_USER_ANSIBLE"):
        core, python = chosen.split(":", 1)
        return core, python
    for core in sorted(COMBINATIONS, key=lambda v: tuple(map(int, v.split("."))), reverse=True):
        if python := newest_interpreter(core):
            return core, python
    raise AssertionError(f"no Python on this machine runs any ansible-core of {sorted(COMBINATIONS)}")


def users_virtualenv(purpose: str) -> tuple[Path, str]:
    """The user's virtualenv a test installs into, and its ansible-core: MIGROLLOUT_USER_VENV names one made by hand
    (to try, say, the lowest kubernetes of the supported range), else the cached one of user_core() for
    ``purpose``."""
    if given := os.environ.get("MIGROLLOUT_USER_VENV"):
        venv = Path(given)
        return venv, installed(venv)["ansible-core"]
    core, python = user_core()
    return user_venv(python, core, purpose), core
