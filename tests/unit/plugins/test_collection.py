"""The collection's wiring: every module runs in-process through its action plugin, and the action group that
module_defaults sets the connection for lists exactly the modules that take one. (Documentation against
argument specs is ansible-test sanity's validate-modules, run by scripts/lint.sh.)"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
MODULES = sorted(path.stem for path in (REPO / "plugins" / "modules").glob("*.py"))
COLLECTION = "ansible_collections.nvidia_mig.rollout"


def spec(module: str):
    return importlib.import_module(f"{COLLECTION}.plugins.modules.{module}").SPEC


def test_the_checkout_is_the_collection() -> None:
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    link = REPO / "collections" / "ansible_collections" / galaxy["namespace"] / galaxy["name"]
    assert link.resolve() == REPO


@pytest.mark.parametrize("module", MODULES)
def test_module_spec_is_named_after_its_file(module: str) -> None:
    assert spec(module).name == module


@pytest.mark.parametrize("module", MODULES)
def test_every_module_has_an_in_process_action_plugin(module: str) -> None:
    plugin = (REPO / "plugins" / "action" / f"{module}.py").read_text()
    assert f'action_for("{module}")' in plugin


def test_cluster_action_group_is_the_modules_that_take_a_kubeconfig() -> None:
    runtime = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())
    takes_connection = {module for module in MODULES if "kubeconfig" in spec(module).full_argument_spec}
    assert set(runtime["action_groups"]["cluster"]) == takes_connection


def test_collection_and_python_package_versions_agree() -> None:
    import tomllib

    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert galaxy["version"] == project["version"]
