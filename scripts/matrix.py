"""`make matrix`: the unit tests and a representative set on the simulated cluster for each ansible-core release of
tests/matrix/combinations.yaml on Python 3.11 to 3.13 as each supports, one virtualenv per combination (made once,
under ~/.cache/nvidia-mig-rollout/matrix: constraints.txt's pins but for ansible-core). A Python the machine lacks
is reported as missing, never passed. Prints the table docs/compatibility.md records, and writes it to
build/matrix/results.md.

    .venv/bin/python scripts/matrix.py [unit] [cluster] [--only 2.21.5/3.13 ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PYTHONS = ["3.11", "3.12", "3.13"]
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nvidia-mig-rollout" / "matrix"
# The representative set on the simulated cluster: the window strategy's internals (its own local hosts), and the
# demo's rollout from the installed collection in check mode and for real on the shared cluster.
CLUSTER_TESTS = ["tests/integration/test_window_strategy.py", "tests/integration/test_collection_install.py"]


def interpreter(version: str) -> str | None:
    found = subprocess.run([str(REPO / "scripts" / "find-python.sh"), f"python{version}"], capture_output=True,
                           text=True)
    return found.stdout.strip() if found.returncode == 0 else None


def venv_for(python: str, version: str, core: str) -> Path:
    venv = CACHE / f"python{version}-ansible-core-{core}"
    if (venv / ".ready").exists():
        return venv
    subprocess.run(["rm", "-rf", str(venv)], check=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    constraints = venv / "constraints.txt"
    constraints.write_text("".join(line + "\n" for line in (REPO / "constraints.txt").read_text().splitlines()
                                   if not line.lower().startswith("ansible-core==")))
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "--quiet", "-c", str(constraints), f"ansible-core=={core}", "-e", f"{REPO}[dev]"],
                   check=True)
    (venv / ".ready").touch()
    return venv


def run_part(venv: Path, python: str, core: str, tests: list[str], log: Path) -> str:
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
           # The collection install test installs into a user's virtualenv of this combination.
           "MIGROLLOUT_USER_ANSIBLE": f"{core}:{python}"}
    started = time.monotonic()
    with log.open("w") as out:
        result = subprocess.run([str(venv / "bin" / "pytest"), "-q", "-p", "no:cacheprovider", *tests], cwd=REPO,
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    summary = log.read_text().strip().splitlines()[-1:] or ["no output"]
    verdict = "passed" if result.returncode == 0 else "FAILED"
    return f"{verdict} ({summary[0].strip('= ')}; {time.monotonic() - started:.0f} s)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", default=["unit", "cluster"], choices=["unit", "cluster"])
    parser.add_argument("--only", action="append", default=[], help="core/python, e.g. 2.21.5/3.13")
    args = parser.parse_args()
    combinations = yaml.safe_load((REPO / "tests" / "matrix" / "combinations.yaml").read_text())["ansible-core"]
    logs = REPO / "build" / "matrix"
    logs.mkdir(parents=True, exist_ok=True)
    rows = ["| ansible-core | Python | unit tests | on the simulated cluster |", "| --- | --- | --- | --- |"]
    failed = False
    for core, supported in combinations.items():
        for version in PYTHONS:
            if args.only and f"{core}/{version}" not in args.only:
                continue
            cells = {"unit": "not run", "cluster": "not run"}
            python = interpreter(version)
            if version not in supported:
                cells = dict.fromkeys(cells, f"not supported (ansible-core {core} runs on {', '.join(supported)})")
            elif python is None:
                cells = dict.fromkeys(cells, f"missing: no python{version} on this machine")
                failed = True
            else:
                print(f"matrix: ansible-core {core} on Python {version} ({python})", flush=True)
                try:
                    venv = venv_for(python, version, core)
                except subprocess.CalledProcessError as exc:
                    cells = dict.fromkeys(cells, f"FAILED to install ({exc})")
                    failed = True
                else:
                    for part in args.parts:
                        tests = ["tests/unit"] if part == "unit" else CLUSTER_TESTS
                        cells[part] = run_part(venv, python, core, tests, logs / f"{core}-py{version}-{part}.log")
                        failed |= cells[part].startswith("FAILED")
                        print(f"matrix:   {part}: {cells[part]}", flush=True)
            rows.append(f"| {core} | {version} | {cells['unit']} | {cells['cluster']} |")
    table = "\n".join(rows)
    (logs / "results.md").write_text(table + "\n")
    print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
