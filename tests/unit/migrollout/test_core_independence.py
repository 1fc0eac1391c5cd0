"""The core (src/migrollout) must not import Ansible: it is what the modules, the action plugins, the strategy,
the inventory plugin, the simulator's tests and the benchmarks share, and it is unit-tested without Ansible.

Every Python file is read (its AST, so no import runs). Where the core still knows Ansible by design, the place
is named below with why; any other mention of Ansible in code (not in docstrings or comments) fails the test,
so a new one is either moved to the adapter side (plugins/) or added here on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[3] / "src" / "migrollout"
FILES = sorted(SRC.rglob("*.py"))

# file -> why the core knows Ansible there.
DELIBERATE = {
    # The lock lives as long as the run's ansible-playbook process: the renewer finds that process among its
    # parents, and a step stops when it is gone.
    "rollout/lock.py": "the renewer follows the run's ansible-playbook process",
    "rollout/fence.py": "a step stops when the run's ansible-playbook process is gone",
    # The page says what the grey time between a node's steps is.
    "rollout/timeline.py": "the timeline's legend names the time Ansible spends between tasks",
}
# Also deliberate, without the word: rollout/settings.py reads booleans with Ansible's spellings, because the
# settings are inventory variables and -e values (test_settings_booleans_are_spelled_as_ansible_spells_them).


def ansible_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module)
    return [name for name in found if name.split(".")[0] in ("ansible", "ansible_collections")]


def docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def mentions(path: Path) -> list[str]:
    """Every string constant (docstrings aside) and name in the file's code that says "ansible"."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = docstrings(tree)
    found = []
    for node in ast.walk(tree):
        text = None
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            text = node.value
        elif isinstance(node, ast.Name):
            text = node.id
        elif isinstance(node, ast.Attribute):
            text = node.attr
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            text = node.name
        elif isinstance(node, ast.arg):
            text = node.arg
        if text is not None and "ansible" in text.lower():
            found.append(f"{getattr(node, 'lineno', '?')}: {text[:60]!r}")
    return found


@pytest.mark.parametrize("path", [pytest.param(path, id=str(path.relative_to(SRC))) for path in FILES])
def test_the_core_imports_nothing_of_ansible(path):
    assert ansible_imports(path) == []


def test_the_core_mentions_ansible_only_where_it_is_deliberate():
    found = {path.relative_to(SRC).as_posix(): mentions(path) for path in FILES}
    assert {name: hits for name, hits in found.items() if hits and name not in DELIBERATE} == {}
    # Each deliberate place still is one (else the list above says something that is no longer true).
    assert sorted(name for name in DELIBERATE if found.get(name)) == sorted(DELIBERATE)


def test_the_checks_see_imports_and_mentions(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('"""Ansible in a docstring is prose."""\nimport ansible.module_utils.basic\n'
                      "from ansible_collections.x.y import z\nimport json\n"
                      "def ansible_view(value):\n    return 'ansible-playbook'\n")
    assert ansible_imports(sample) == ["ansible.module_utils.basic", "ansible_collections.x.y"]
    assert [hit.split(": ", 1)[1] for hit in mentions(sample)] == ["'ansible_view'", "'ansible-playbook'"]


def test_settings_booleans_are_spelled_as_ansible_spells_them():
    from ansible.module_utils.parsing.convert_bool import BOOLEANS_FALSE, BOOLEANS_TRUE

    from migrollout.rollout import settings

    assert {word for word in BOOLEANS_TRUE if isinstance(word, str)} == settings._TRUE
    assert {word for word in BOOLEANS_FALSE if isinstance(word, str)} == settings._FALSE
