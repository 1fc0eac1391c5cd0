#!/usr/bin/python
# mig_rollout_report: write the rollout's report (JSON) and return it as a readable table.
# Docs, argument spec and the adapter to the core (migrollout) in one file; see plugins/module_utils/kube_task.py.

from __future__ import annotations

DOCUMENTATION = r"""
module: mig_rollout_report
short_description: Write a MIG rollout's report as JSON and return it as a table
description:
  - Combines the plan and each node's outcome into one entry per node (from and to config, result, seconds
    per step, evicted pods, and the reason for failures and nodes not reached).
  - Writes C(mig-rollout-<run>.json) (and a C(latest.json) link) into O(report_dir), and reports C(changed)
    when it wrote them.
  - Beside it, C(mig-rollout-<run>.html) (and C(latest.html)), the run's timeline as one self-contained page (inline
    SVG, no network) with a lane per node grouped by pool with its steps, failures, skips and refusals with their reasons
    on hover, the window's occupancy against its limit, each pool's use against its budget, the evicted pods per
    node, the settings and totals (see C(migrollout.rollout.timeline)).
  - A lost rollout lock (the loss the lock's renewer recorded in the state file of O(rollout_lock)) is part of
    the report and its table.
version_added: "0.1.0"
requirements:
  - python >= 3.11
  - the C(nvidia-mig-rollout) Python package
seealso:
  - module: nvidia_mig.rollout.mig_rollout_plan
  - module: nvidia_mig.rollout.mig_rollout_lock
options:
  run:
    description: The run's identity.
    type: str
    required: true
  plan:
    description: The plan (from M(nvidia_mig.rollout.mig_rollout_plan)).
    type: list
    elements: dict
    required: true
  results:
    description:
      - Each step's module results, by step (C(begin), C(evacuate), C(label), C(verify), C(finish)) and node,
        and C(outcome), the failure of each node that failed (result, reason).
    type: dict
    default: {}
  report_dir:
    description: Directory for the JSON report and the timeline page. Without it, nothing is written.
    type: path
  schedule:
    description:
      - The schedule the run followed (the C(schedule) M(nvidia_mig.rollout.mig_rollout_plan) returns), for the report and
        its page (the window's limit, the pool budgets); in check mode, the schedule whose simulation the page shows.
    type: dict
    default: {}
  wall_s:
    description: The run's wall time, for the report.
    type: float
  driver_upgrades_since:
    description:
      - When the run started (RFC 3339). The report then says what NVIDIA's driver upgrade controller did to
        nodes since (its C(GPUDriverUpgrade) Events, in the C(default) namespace), by node; best effort (a
        warning when they cannot be read). Not in check mode.
    type: str
extends_documentation_fragment:
  - nvidia_mig.rollout.kube_connection
  - nvidia_mig.rollout.rollout_lock.fence
attributes:
  check_mode:
    support: full
    description: Returns the table of what would happen (C(would change), C(would resume), with the pods to evict);
      writes no JSON, only the page of the plan's simulated schedule (C(mig-rollout-<run>-plan.html), equal node
      times), so the expected timeline can be seen before the run.
  diff_mode:
    support: none
    description: No diff, the report is written on the control host.
author: NVIDIA MIG rollout toolkit maintainers (@nvidia-mig-rollout)
"""

EXAMPLES = r"""
- name: Report
  mig_rollout_report:
    run: "{{ mig_rollout_run }}"
    plan: "{{ mig_rollout_plan_result.plan }}"
    results: "{{ results }}"
    report_dir: reports
"""

RETURN = r"""
driver_upgrades:
  description: What NVIDIA's driver upgrade controller did during the run, by node (its Events' messages, oldest
    first); also in the JSON report and the table.
  returned: with O(driver_upgrades_since), not in check mode
  type: dict
  sample: {a100-1: ["Scheduling drain of the node", "Successfully drained the node"]}
table:
  description: The report as lines of text.
  returned: always
  type: list
  elements: str
summary:
  description: Nodes per result (done, skipped, failed, not started).
  returned: always
  type: dict
lock_lost:
  description: Why the run lost its rollout lock (empty when it held it to the end).
  returned: always
  type: str
nodes:
  description: One entry per node.
  returned: always
  type: list
  elements: dict
path:
  description: The JSON report written.
  returned: when written
  type: str
page:
  description: The timeline page written (in check mode, the plan's).
  returned: when written
  type: str
"""

import json
import os
from pathlib import Path
from typing import Any

from ansible_collections.nvidia_mig.rollout.plugins.module_utils.kube_task import (
    TaskContext,
    TaskSpec,
    run_module,
)
from ansible_collections.nvidia_mig.rollout.plugins.module_utils.option_specs import FENCE_OPTIONS

try:
    from migrollout import driver_upgrade, kube
    from migrollout.rollout import fence, timeline
    from migrollout.rollout.report import entries, summary, table
    from migrollout.rollout.schedule import Schedule
    from migrollout.timestamps import time_text
except ImportError:  # run_module reports the missing package
    pass

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "run": {"type": "str", "required": True},
    "plan": {"type": "list", "elements": "dict", "required": True},
    "results": {"type": "dict", "default": {}},
    "report_dir": {"type": "path"},
    "wall_s": {"type": "float"},
    "schedule": {"type": "dict", "default": {}},
    "driver_upgrades_since": {"type": "str"},
    "rollout_lock": {"type": "dict", "options": FENCE_OPTIONS},
}


def run(ctx: TaskContext) -> dict[str, Any]:
    params = ctx.params
    rows = entries(params["plan"], params["results"], planned_only=ctx.check_mode)
    lock = params.get("rollout_lock") or {}
    state = fence.read(lock["state_file"]) if lock.get("state_file") else None
    lost = state.lost if state is not None and state.holder == lock.get("holder") else ""
    report = {"run": params["run"], "finished": time_text(), "wall_s": params.get("wall_s"),
              "summary": summary(rows), "nodes": rows, "lock_lost": lost, "schedule": params.get("schedule") or {}}
    if params.get("driver_upgrades_since") and not ctx.check_mode:
        report["driver_upgrades"] = _driver_upgrades(ctx, params["driver_upgrades_since"])
    result: dict[str, Any] = {"changed": False, "summary": report["summary"],
                              "table": table(rows, lost) + driver_upgrade.report_lines(report.get("driver_upgrades")
                                                                                       or {}),
                              "nodes": rows, "lock_lost": lost, "driver_upgrades": report.get("driver_upgrades", {})}
    if not params.get("report_dir"):
        return result
    directory = Path(params["report_dir"])
    directory.mkdir(parents=True, exist_ok=True)
    if ctx.check_mode:
        page = directory / f"mig-rollout-{params['run']}-plan.html"
        timeline.write(page, planned_picture(params["run"], params["plan"], rows, params.get("schedule") or {}))
        result["page"] = str(page)
        return result
    path = directory / f"mig-rollout-{params['run']}.json"
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    page = directory / f"mig-rollout-{params['run']}.html"
    timeline.write(page, timeline.from_report(report))
    for written, link in ((path, "latest.json"), (page, "latest.html")):
        latest = directory / link
        latest.unlink(missing_ok=True)
        os.symlink(written.name, latest)
    result.update(path=str(path), page=str(page), changed=True)
    return result


def _driver_upgrades(ctx: TaskContext, since: str) -> dict[str, list[str]]:
    """NVIDIA's driver upgrade controller's Events on nodes since the run started (best effort)."""
    try:
        found, _ = ctx.api.list(kube.namespaced_path("events.k8s.io/v1", "events", driver_upgrade.EVENTS_NAMESPACE),
                                what="list the driver upgrade controller's Events")
    except kube.KubeError as exc:
        ctx.warn(f"what NVIDIA's driver upgrade controller did during the run is not in the report: {exc.one_line()}")
        return {}
    return driver_upgrade.during_run(found, since)


def planned_picture(run_id: str, plan: list[dict[str, Any]], rows: list[dict[str, Any]],
                    schedule: dict[str, Any]) -> Any:
    """The page of the plan: its schedule simulated with equal node times, the nodes in the plan's order."""
    moving = [item for item in plan if item["action"] in ("change", "resume")]
    simulation = Schedule.from_dict(schedule, [item["node"] for item in moving],
                                    {item["node"]: item.get("pool", "") for item in moving}).simulate()
    return timeline.from_simulation(run_id, rows, schedule, vars(simulation))


SPEC = TaskSpec("mig_rollout_report", ARGUMENT_SPEC, run)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
