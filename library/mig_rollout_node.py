#!/usr/bin/python
# Thin adapter: the logic lives in migrollout.tasks.rollout_node and migrollout.rollout.record.

DOCUMENTATION = r"""
module: mig_rollout_node
short_description: Put a GPU node into MIG maintenance, record a failure, or return it to service
description:
  - One step of the rolling MIG reconfiguration, on one node, in one conflict-safe write.
  - O(step=begin) adds the maintenance taints (and cordons with O(cordon)) and writes the rollout record,
    the annotation C(mig-rollout.nvidia-mig-rollout.io/record), in the same write. The record says which
    taints and cordon this rollout added (taints and a cordon an admin set before are not recorded, so
    they are never removed) and the node's config before the rollout. A record left by an interrupted
    run is kept and continued.
  - O(step=failed) marks the record failed with the step and error; the node keeps its maintenance taints,
    so no broken GPUs go back into service.
  - O(step=finish) removes exactly what the record says a rollout added, and the record.
options:
  name:
    description: Node name.
    type: str
    required: true
  step:
    description: The step.
    type: str
    required: true
    choices: [begin, finish, failed]
  run:
    description: The rollout run's identity (the lock holder).
    type: str
    required: true
  to_config:
    description: The MIG config the node is being brought to (O(step=begin)).
    type: str
  cordon:
    description: Also cordon the node (O(step=begin)).
    type: bool
    default: false
  failed_step:
    description: The step that failed (O(step=failed)).
    type: str
    default: ""
  error:
    description: The error (O(step=failed)).
    type: str
    default: ""
extends_documentation_fragment:
  - kube_connection
  - maintenance_taints
attributes:
  check_mode:
    support: full
    description: The API server validates the write (dry run); nothing is stored.
  diff_mode:
    support: full
author: NVIDIA MIG rollout toolkit maintainers
"""

EXAMPLES = r"""
- name: Put the node into maintenance
  mig_rollout_node:
    name: gpu-node-17
    step: begin
    run: "{{ mig_rollout_run }}"
    to_config: all-1g.10gb
    maintenance_taints: [{key: mig, value: maintenance, effect: NoSchedule}]
"""

RETURN = r"""
record:
  description: The rollout record after the step (C(null) when the node had none to finish).
  returned: always
  type: dict
  sample: {run: host-4242-ab12cd, from_config: all-disabled, to_config: all-1g.10gb, step: maintenance,
           added_taints: [{key: mig, value: maintenance, effect: NoSchedule}], cordoned: false}
taints:
  description: The node's taints after the step.
  returned: always
  type: list
  elements: dict
cordoned:
  description: Whether the node is cordoned after the step.
  returned: always
  type: bool
"""

from ansible.module_utils.migrollout_loader import run_task


def main():
    run_task("migrollout.tasks.rollout_node")


if __name__ == "__main__":
    main()
