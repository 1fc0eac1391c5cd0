#!/usr/bin/python
# Thin adapter: the logic lives in migrollout.tasks.mig_strategy_check.

DOCUMENTATION = r"""
module: mig_strategy_check
short_description: Refuse the single MIG strategy while some MIG node's layout would break the device plugin
description:
  - Under the C(single) strategy the NVIDIA device plugin refuses to start on a node whose MIG-enabled GPUs
    hold more than one MIG profile, hold none, or are mixed with MIG-disabled GPUs.
  - For O(strategy=single), checks the current layout of every node labelled C(nvidia.com/mig.config)
    (its config, resolved with the MIG config ConfigMap the cluster uses) and fails, listing the offending
    nodes and their configs, if any would break. A node whose last apply did not succeed counts as offending.
  - Other strategies pass. Changes nothing.
options:
  strategy:
    description: The MIG strategy about to be set.
    type: str
    required: true
    choices: [none, single, mixed]
  operator_namespace:
    description: The GPU Operator's namespace. Default, the ClusterPolicy's C(status.namespace).
    type: str
extends_documentation_fragment:
  - kube_connection
  - read_only
author: NVIDIA MIG rollout toolkit maintainers
"""

EXAMPLES = r"""
- name: Every MIG node must be homogeneous before the switch
  mig_strategy_check:
    strategy: single
"""

RETURN = r"""
checked:
  description: The MIG nodes checked.
  returned: always
  type: list
  elements: str
offending:
  description: Nodes whose layout the single strategy rejects, with their config and the reason.
  returned: always
  type: list
  elements: dict
  sample: [{node: gpu-7, config: all-balanced, reason: More than one MIG device type present on node}]
"""

from ansible.module_utils.migrollout_loader import run_task


def main():
    run_task("migrollout.tasks.mig_strategy_check")


if __name__ == "__main__":
    main()
