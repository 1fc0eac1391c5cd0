"""mig_rollout_report: write the rollout's report (JSON) and return it as a readable table."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from migrollout.ansible_glue import TaskContext, TaskSpec
from migrollout.rollout.report import entries, summary, table
from migrollout.timestamps import time_text

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "run": {"type": "str", "required": True},
    "plan": {"type": "list", "elements": "dict", "required": True},
    "results": {"type": "dict", "default": {}},
    "report_dir": {"type": "path"},
    "wall_s": {"type": "float"},
}


def run(ctx: TaskContext) -> dict[str, Any]:
    params = ctx.params
    rows = entries(params["plan"], params["results"], planned_only=ctx.check_mode)
    report = {"run": params["run"], "finished": time_text(), "wall_s": params.get("wall_s"),
              "summary": summary(rows), "nodes": rows}
    result: dict[str, Any] = {"changed": False, "summary": report["summary"], "table": table(rows), "nodes": rows}
    if params.get("report_dir") and not ctx.check_mode:
        directory = Path(params["report_dir"])
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"mig-rollout-{params['run']}.json"
        path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        latest = directory / "latest.json"
        latest.unlink(missing_ok=True)
        os.symlink(path.name, latest)
        result["path"] = str(path)
    return result


SPEC = TaskSpec("mig_rollout_report", ARGUMENT_SPEC, run, connection=False)
