#!/usr/bin/python
# mig_hosts_plan: the bare-metal rollout's plan, from what the preflight read on each GPU host over SSH.
# Docs, argument spec and the adapter to the core (migrollout.baremetal) in one file.

from __future__ import annotations

DOCUMENTATION = r"""
module: mig_hosts_plan
short_description: Plan a rolling MIG reconfiguration of bare-metal GPU hosts, before any host is touched
description:
  - Decides, for each GPU host, whether the run changes it, resumes it (a rollout record left by an interrupted or
    failed run), skips it (already at its C(mig_config), with NVIDIA's mig-parted and service installed as this run
    installs them, and the boot-time service set to the same config), or cannot reach it.
  - Refuses the whole run, naming each host and why, when a host's C(mig_config) is not in the config file, the file
    is refused by mig-parted's parser of the release in use, or the config does not fit the host's GPUs (profiles
    that do not exist on the model, counts that do not fit NVIDIA's placements). Nothing has been touched then.
  - Orders and schedules the hosts with the Kubernetes path's rules (C(migrollout.rollout.schedule)), that is the window
    (C(mig_rollout_max_unavailable)), per-pool budgets (a pool is the host's C(pool)), the failure budget, hosts to
    resume first. A Slurm node an admin drained before the run counts as out of service in its pool.
  - Changes nothing; runs on the control host.
version_added: "0.3.0"
requirements:
  - python >= 3.11
  - the C(nvidia-mig-rollout) Python package
seealso:
  - module: nvidia_mig.rollout.mig_hosts_report
  - module: nvidia_mig.rollout.mig_rollout_settings
options:
  hosts:
    description:
      - By host, what the preflight read. Keys C(pool), C(mig_config), C(gpus) (C(nvidia-smi) CSV text of the
        fields index, pci.bus_id, name, mig.mode.current, mig.mode.pending), C(installed) (bool), C(persisted)
        (the config of the service's C(override.conf)), C(asserted) (bool), C(record) (JSON text), C(unreachable)
        (the error, when the host could not be read), C(slurm_node) (C(scontrol show node --oneliner) text).
      - With O(install), C(install_state) instead of C(installed), what the host has (C(binary_sha256),
        C(version), C(config_sha256), C(unit), C(service)), judged against O(install).
    type: dict
    required: true
  install:
    description:
      - What this run installs, to judge each host's C(install_state) by. C(source) (files, package or url),
        C(binary_sha256) (files only, the control host's binary), C(config_sha256) (the config file's).
      - A files host is installed with the very binary; a package or url host with the release
        O(mig_parted_version) (its C(nvidia-mig-parted --version)); both with the same config file, the unit and
        NVIDIA's C(service.sh).
    type: dict
  config_file:
    description: The mig-parted config file (its text) the hosts get.
    type: str
    required: true
  mig_parted_version:
    description: The mig-parted release installed on the hosts (its parser judges the file).
    type: str
    required: true
  settings:
    description: The checked rollout settings (C(nvidia_mig.rollout.mig_rollout_settings)'s C(settings)).
    type: dict
    required: true
attributes:
  check_mode:
    support: full
    description: Plans the same in check mode (the plan is what check mode shows).
  diff_mode:
    support: none
    description: Nothing is changed.
author: NVIDIA MIG rollout toolkit maintainers (@nvidia-mig-rollout)
"""

EXAMPLES = r"""
- name: Plan
  nvidia_mig.rollout.mig_hosts_plan:
    hosts: {gpu-01: {pool: a100, mig_config: all-1g.10gb, gpus: "0, 00000000:07:00.0, NVIDIA A100-SXM4-80GB, Disabled, Disabled"}}
    config_file: "{{ lookup('ansible.builtin.file', 'config.yaml') }}"
    mig_parted_version: v0.10.0
    settings: "{{ checked.settings }}"
"""

RETURN = r"""
plan:
  description: One item per host, in the order the run takes them (node, pool, from_config, to_config, action, reason).
  returned: success
  type: list
  elements: dict
schedule:
  description: The schedule for the C(nvidia_mig.rollout.mig_window) strategy (mode, window, pool budgets, failure budget).
  returned: success
  type: dict
lines:
  description: The plan, one line per host.
  returned: success
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
    from migrollout import baremetal, slurm
    from migrollout.rollout.schedule import ScheduleError
except ImportError:  # run_module reports the missing package
    pass

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "hosts": {"type": "dict", "required": True},
    "config_file": {"type": "str", "required": True},
    "mig_parted_version": {"type": "str", "required": True},
    "settings": {"type": "dict", "required": True},
    "install": {"type": "dict"},
}


def run(ctx: TaskContext) -> dict[str, Any]:
    facts: dict[str, dict[str, Any]] = {}
    for name, raw in ctx.params["hosts"].items():
        host = dict(raw or {})
        if not host.get("unreachable") and host.get("mig_config"):
            try:
                gpus = baremetal.parse_gpus(str(host.get("gpus") or ""))
                host["problems"] = baremetal.fit_problems(ctx.params["config_file"], str(host["mig_config"]), gpus,
                                                          ctx.params["mig_parted_version"])
            except baremetal.PlanError as exc:
                host["problems"] = [str(exc)]
        if ctx.params["install"] is not None and "install_state" in host:
            try:
                host["installed"] = baremetal.installed(dict(host.pop("install_state") or {}), {
                    **ctx.params["install"], "mig_parted_version": ctx.params["mig_parted_version"]})
            except baremetal.PlanError as exc:
                raise TaskFailed(str(exc)) from None
        if host.get("slurm_node"):
            host["slurm_admin_drained"] = slurm.drained_by_admin(slurm.node_fields(str(host["slurm_node"])))
        facts[str(name)] = host
    try:
        return {"changed": False, **baremetal.plan(facts, ctx.params["settings"])}
    except (baremetal.PlanError, ScheduleError) as exc:
        raise TaskFailed(str(exc)) from None


SPEC = TaskSpec("mig_hosts_plan", ARGUMENT_SPEC, run, connection=False)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
