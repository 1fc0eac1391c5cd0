# Shared by every module in library/: load the task from the toolkit's Python package and run it.
# Kept tiny on purpose: AnsiballZ ships this file with each module; the logic stays in the package.

import importlib
import json
import sys


def run_task(task_module):
    """Run the TaskSpec ``SPEC`` of ``task_module`` (e.g. ``migrollout.tasks.taint``) as this module."""
    try:
        glue = importlib.import_module("migrollout.ansible_glue")
        spec = importlib.import_module(task_module).SPEC
    except ImportError as exc:
        print(json.dumps({
            "failed": True,
            "msg": f"this module needs the nvidia-mig-rollout Python package (pip install -e <the toolkit's "
                   f"repository>) in the interpreter that runs it ({sys.executable}): {exc}",
        }))
        sys.exit(1)
    glue.module_main(spec)
