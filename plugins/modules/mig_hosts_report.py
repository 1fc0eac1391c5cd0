#!/usr/bin/python
# mig_hosts_report: the bare-metal rollout's report, in the Kubernetes path's format.
# Docs, argument spec and the adapter to the core (migrollout.baremetal) in one file.

from __future__ import annotations

DOCUMENTATION = r"""
module: mig_hosts_report
short_description: Report a rolling MIG reconfiguration of bare-metal GPU hosts
description:
  - One row per host (from and to config, result, seconds per step, the Slurm jobs waited for), as the Kubernetes
    path's report (C(migrollout.rollout.report)), that is a table for the log, rows and a summary as data, and the rows
    as JSON in O(report_file) when given.
  - Steps are named as the Kubernetes path's columns. C(maintenance) drains the Slurm node, C(evacuate) waits for
    its jobs, C(label) installs and applies, C(verify) asserts and checks Slurm's GRES, C(finish) resumes.
  - Fails when a host failed or never started because of the failure budget, after writing the report.
version_added: "0.3.0"
requirements:
  - python >= 3.11
  - the C(nvidia-mig-rollout) Python package
seealso:
  - module: nvidia_mig.rollout.mig_hosts_plan
options:
  plan:
    description: The plan (C(nvidia_mig.rollout.mig_hosts_plan)'s C(plan)).
    type: list
    elements: dict
    required: true
  results:
    description: By host, its outcome (C(failed), C(error), C(marks) (step name to epoch seconds), C(jobs_waited)).
    type: dict
    default: {}
  slots:
    description: By host, the window strategy's C(mig_rollout_slot) fact.
    type: dict
    default: {}
  not_started:
    description: By host, the window strategy's C(mig_rollout_not_started) fact.
    type: dict
    default: {}
  report_file:
    description: Where to write the rows as JSON (not written in check mode).
    type: path
attributes:
  check_mode:
    support: full
    description: Reports what would happen.
  diff_mode:
    support: none
    description: Nothing on the hosts is changed.
author: NVIDIA MIG rollout toolkit maintainers (@nvidia-mig-rollout)
"""

EXAMPLES = r"""
- name: Report
  nvidia_mig.rollout.mig_hosts_report:
    plan: "{{ mig_hosts_planned.plan }}"
    results: {gpu-01: {failed: false, marks: {started: 0, finished: 12.5}}}
"""

RETURN = r"""
rows:
  description: One row per host.
  returned: always
  type: list
  elements: dict
lines:
  description: The report as a table.
  returned: always
  type: list
  elements: str
summary:
  description: Hosts per result.
  returned: always
  type: dict
"""

import json
from typing import Any

from ansible_collections.nvidia_mig.rollout.plugins.module_utils.kube_task import (
    TaskContext,
    TaskFailed,
    TaskSpec,
    run_module,
)

try:
    from migrollout import baremetal
except ImportError:  # run_module reports the missing package
    pass

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "plan": {"type": "list", "elements": "dict", "required": True},
    "results": {"type": "dict", "default": {}},
    "slots": {"type": "dict", "default": {}},
    "not_started": {"type": "dict", "default": {}},
    "report_file": {"type": "path"},
}


def run(ctx: TaskContext) -> dict[str, Any]:
    rows = baremetal.report_rows(ctx.params["plan"], ctx.params["results"], ctx.params["slots"],
                                 ctx.params["not_started"], planned_only=ctx.check_mode)
    result = {"changed": False, "rows": rows, "lines": baremetal.report_text(rows),
              "summary": baremetal.summary(rows)}
    if ctx.params["report_file"] and not ctx.check_mode:
        with open(ctx.params["report_file"], "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=2)
    bad = [row["node"] for row in rows if row["result"] in ("failed", "not started")]
    if bad:
        raise TaskFailed(f"{len(bad)} hosts failed or did not start: {', '.join(bad)}", **result)
    return result


SPEC = TaskSpec("mig_hosts_report", ARGUMENT_SPEC, run, connection=False)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
