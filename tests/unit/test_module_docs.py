"""Every module's DOCUMENTATION matches the argument spec it runs with, and every module has an action plugin."""

import ast
from pathlib import Path

import pytest
import yaml

from migrollout.ansible_glue import CONNECTION_SPEC

REPO = Path(__file__).resolve().parents[2]
MODULES = sorted(path.stem for path in (REPO / "library").glob("*.py"))


def documentation(module):
    tree = ast.parse((REPO / "library" / f"{module}.py").read_text())
    docs = {n.targets[0].id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
            and isinstance(n.targets[0], ast.Name) and n.targets[0].id in ("DOCUMENTATION", "EXAMPLES", "RETURN")}
    return {key: yaml.safe_load(value) for key, value in docs.items()}


def task_spec(module):
    source = (REPO / "library" / f"{module}.py").read_text()
    task_module = source.split('run_task("')[1].split('"')[0]
    return __import__(task_module, fromlist=["SPEC"]).SPEC


def fragment(name):
    tree = ast.parse((REPO / "doc_fragments" / f"{name}.py").read_text())
    cls = next(node for node in tree.body if isinstance(node, ast.ClassDef))
    return yaml.safe_load(cls.body[0].value.value)


def fragment_options(name="kube_connection"):
    return fragment(name).get("options") or {}


def compare(doc_options, spec, where):
    assert set(doc_options) == set(spec), f"{where}: documented {sorted(doc_options)} vs spec {sorted(spec)}"
    for name, spec_option in spec.items():
        doc_option = doc_options[name]
        assert doc_option.get("type", "str") == spec_option.get("type", "str"), f"{where}.{name} type"
        assert doc_option.get("required", False) == spec_option.get("required", False), f"{where}.{name} required"
        assert doc_option.get("default") == spec_option.get("default"), f"{where}.{name} default"
        assert doc_option.get("choices") == spec_option.get("choices"), f"{where}.{name} choices"
        assert doc_option.get("elements") == spec_option.get("elements"), f"{where}.{name} elements"
        if "options" in spec_option:
            compare(doc_option["suboptions"], spec_option["options"], f"{where}.{name}")


@pytest.mark.parametrize("module", MODULES)
def test_documentation_matches_argument_spec(module):
    docs = documentation(module)
    assert docs["DOCUMENTATION"]["module"] == module
    assert docs["EXAMPLES"] and docs["RETURN"]
    spec = task_spec(module)
    options = dict(docs["DOCUMENTATION"]["options"])
    fragments = docs["DOCUMENTATION"].get("extends_documentation_fragment") or []
    assert ("kube_connection" in fragments) == spec.connection
    for name in fragments:
        options.update(fragment_options(name))
    compare(options, spec.full_argument_spec, module)


def _descriptions(node, where):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "description":
                yield where, value
            else:
                yield from _descriptions(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _descriptions(value, f"{where}[{index}]")


@pytest.mark.parametrize("module", MODULES)
def test_descriptions_are_text(module):
    # A ": " inside an unquoted description line turns it into a mapping, which ansible-doc cannot render.
    docs = documentation(module)
    for section in ("DOCUMENTATION", "RETURN"):
        for where, text in _descriptions(docs[section], section):
            items = text if isinstance(text, list) else [text]
            assert all(isinstance(item, str) for item in items), f"{module} {where}: {text!r}"


@pytest.mark.parametrize("module", MODULES)
def test_every_module_has_an_in_process_action_plugin(module):
    plugin = (REPO / "action_plugins" / f"{module}.py").read_text()
    task_module = (REPO / "library" / f"{module}.py").read_text().split('run_task("')[1].split('"')[0]
    assert task_spec(module).name == module
    assert f'action_for("{task_module}")' in plugin


def test_connection_options_are_documented_once():
    assert set(fragment_options()) == set(CONNECTION_SPEC)
