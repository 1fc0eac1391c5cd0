"""One set of facts about what the collection installs: the version in galaxy.yml, pyproject.toml and both
requirements files; the ansible-core range in pyproject.toml and meta/runtime.yml; constraints.txt's pins inside
the ranges users get."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[3]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def requirement_lines(path: Path) -> list[str]:
    return [line.split("#")[0].strip() for line in path.read_text().splitlines()
            if line.split("#")[0].strip() and not line.startswith("-")]


def test_the_collection_and_the_package_have_one_version_and_requirements_pin_it() -> None:
    version = yaml.safe_load((REPO / "galaxy.yml").read_text())["version"]
    assert PROJECT["version"] == version
    for path in (REPO / "requirements.txt", REPO / "meta" / "ee-requirements.txt"):
        assert requirement_lines(path) == [f"{PROJECT['name']}=={version}"], path


def test_requires_ansible_is_the_packages_ansible_core_range() -> None:
    [core] = [Requirement(text) for text in PROJECT["dependencies"] if Requirement(text).name == "ansible-core"]
    requires = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())["requires_ansible"]
    assert SpecifierSet(requires) == SpecifierSet(re.sub(r"(\d+\.\d+)(?=,|$)", r"\1.0", str(core.specifier)))


def test_install_requirements_are_ranges_and_the_constraints_pin_inside_them() -> None:
    pins = {}
    for line in requirement_lines(REPO / "constraints.txt"):
        name, version = line.split("==")
        pins[canonicalize_name(name)] = version
    for text in PROJECT["dependencies"]:
        requirement = Requirement(text)
        assert not any(spec.operator in ("==", "===") for spec in requirement.specifier), text
        assert requirement.specifier.contains(pins[canonicalize_name(requirement.name)]), (text, pins)
    for text in PROJECT["optional-dependencies"]["dev"]:
        assert canonicalize_name(Requirement(text).name) in pins, f"{text} has no pin in constraints.txt"
