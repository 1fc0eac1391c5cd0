#!/usr/bin/python
# mig_rollout_settings: check every rollout setting (type and range) before the lock is taken or a node is read.
# Docs, argument spec and the adapter to the core (migrollout) in one file; see plugins/module_utils/kube_task.py.

from __future__ import annotations

DOCUMENTATION = r"""
module: mig_rollout_settings
short_description: Check every setting of a MIG rollout before anything is locked or changed
description:
  - Checks the type and range of every C(mig_rollout_*) setting and each node's C(mig_config), against one table
    (C(migrollout.rollout.settings)), and fails with one sentence per problem, naming the setting, the bad value
    and the nodes that have it, before the rollout takes its lock or reads a node.
  - A C(mig_rollout_*) variable whose name is close to a setting's (a typo, whose value would be ignored) is warned about.
  - Settings read once for the whole run (batch size, failure budget, lock, report directory) must be the same
    for every node.
  - Returns the settings normalized (for example C(mig_rollout_serial) as a count or C("10%")).
version_added: "0.2.0"
requirements:
  - python >= 3.11
  - the C(nvidia-mig-rollout) Python package
seealso:
  - module: nvidia_mig.rollout.mig_rollout_plan
options:
  settings:
    description: Every rollout setting as the first node sees it (role defaults included), by name.
    type: dict
    required: true
  nodes:
    description:
      - What each node's inventory sets (group_vars, host_vars, extra vars), by node, then by setting name, so a
        bad value for one pool is found too.
    type: dict
    default: {}
attributes:
  check_mode:
    support: full
    description: Checks the same in check mode.
  diff_mode:
    support: none
    description: Nothing is changed, so there is nothing to diff.
author: NVIDIA MIG rollout toolkit maintainers (@nvidia-mig-rollout)
"""

EXAMPLES = r"""
- name: Check the rollout settings
  mig_rollout_settings:
    settings: {mig_rollout_serial: "10%", mig_rollout_evacuation_timeout: 600}
    nodes: {gpu-1: {mig_config: all-1g.10gb}}
"""

RETURN = r"""
settings:
  description: The settings, normalized (numbers from text, booleans, C(mig_rollout_serial) as a count or C("N%")).
  returned: success
  type: dict
problems:
  description: Every problem found, one sentence each.
  returned: failure
  type: list
  elements: str
"""

from typing import Any

from ansible_collections.nvidia_mig.rollout.plugins.module_utils.kube_task import (
    TaskContext,
    TaskFailed,
    TaskSpec,
    run_module,
)

try:
    from migrollout.rollout import settings
except ImportError:  # run_module reports the missing package
    pass

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "settings": {"type": "dict", "required": True},
    "nodes": {"type": "dict", "default": {}},
}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, settings.CountOrPercent):
        # As a play's `serial` takes it: a whole number, or the text "N%".
        return str(value) if value.percent else value.value
    return value


def run(ctx: TaskContext) -> dict[str, Any]:
    names = list(ctx.params["settings"]) + [name for values in ctx.params["nodes"].values() for name in values]
    for warning in settings.unknown(names):
        ctx.warn(warning)
    try:
        checked = settings.check(ctx.params["settings"], ctx.params["nodes"])
    except settings.SettingError as exc:
        count = len(exc.problems)
        raise TaskFailed(f"the rollout cannot start, nothing was locked or changed: {count} bad setting"
                         f"{'s' if count > 1 else ''}: " + "; ".join(exc.problems), problems=exc.problems) from None
    return {"changed": False, "settings": {name: _plain(value) for name, value in checked.items()}}


SPEC = TaskSpec("mig_rollout_settings", ARGUMENT_SPEC, run, connection=False)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
