#!/usr/bin/python
# Thin adapter: the logic lives in migrollout.tasks.rollout_report and migrollout.rollout.report.

DOCUMENTATION = r"""
module: mig_rollout_report
short_description: Write a MIG rollout's report as JSON and return it as a table
description:
  - Combines the plan and each node's outcome into one entry per node (from and to config, result, seconds
    per step, evicted pods, and the reason for failures and nodes not reached).
  - Writes C(mig-rollout-<run>.json) (and a C(latest.json) link) into O(report_dir).
options:
  run:
    description: The run's identity.
    type: str
    required: true
  plan:
    description: The plan (from M(mig_rollout_plan)).
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
    description: Directory for the JSON report. Without it, nothing is written.
    type: path
  wall_s:
    description: The run's wall time, for the report.
    type: float
attributes:
  check_mode:
    support: full
    description: Returns the table of what would happen (C(would change), C(would resume), with the pods to evict);
      writes no file.
  diff_mode:
    support: none
author: NVIDIA MIG rollout toolkit maintainers
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
table:
  description: The report as lines of text.
  returned: always
  type: list
  elements: str
summary:
  description: Nodes per result (done, skipped, failed, not started).
  returned: always
  type: dict
nodes:
  description: One entry per node.
  returned: always
  type: list
  elements: dict
path:
  description: The JSON report written.
  returned: when written
  type: str
"""

from ansible.module_utils.migrollout_loader import run_task


def main():
    run_task("migrollout.tasks.rollout_report")


if __name__ == "__main__":
    main()
