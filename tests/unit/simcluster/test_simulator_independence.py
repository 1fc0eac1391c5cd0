"""The simulator must not share the toolkit's MIG knowledge: a mistake in the toolkit's parser, catalogue or
resource rules would then be a mistake of the simulator too, and no test could see it.

Every Python file of src/simcluster is read (its AST, so no import runs) and its imports of the toolkit's
package checked: the only parts allowed are the Kubernetes HTTP client, Kubernetes' time formats and the
process helper.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[3] / "src" / "simcluster"
ALLOWED = {"migrollout.kube", "migrollout.timestamps", "migrollout.processes"}


def toolkit_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import of the toolkit's package in the file."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "migrollout"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "migrollout":
            if node.module == "migrollout":
                # `from migrollout import catalogue` imports the module migrollout.catalogue.
                found += [(node.lineno, f"migrollout.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def forbidden(path: Path) -> list[str]:
    return [f"{path.relative_to(SRC.parent)}:{line}: imports {module}"
            for line, module in toolkit_imports(path) if module not in ALLOWED]


FILES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", [pytest.param(path, id=str(path.relative_to(SRC))) for path in FILES])
def test_the_simulator_imports_nothing_of_the_toolkits_mig_knowledge(path):
    assert forbidden(path) == []


def test_the_check_sees_every_form_of_import(tmp_path):
    source = tmp_path / "sample.py"
    source.write_text("import migrollout.migconfig\nfrom migrollout import advertised, kube\n"
                      "from migrollout.catalogue import GpuModel\nfrom migrollout.timestamps import time_text\n"
                      "import json\n")
    assert [module for _, module in toolkit_imports(source)] == [
        "migrollout.migconfig", "migrollout.advertised", "migrollout.kube", "migrollout.catalogue",
        "migrollout.timestamps"]


def test_every_simulator_file_is_checked():
    checked = {path.relative_to(SRC).as_posix() for path in FILES}
    assert {"sim/mig_manager.py", "sim/device_plugin.py", "sim/feature_discovery.py", "sim/hardware.py",
            "fleet.py"} <= checked
