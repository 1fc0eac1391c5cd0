#!/usr/bin/python
# Thin adapter: the logic lives in migrollout.tasks.gpu_operator_wait.

DOCUMENTATION = r"""
module: gpu_operator_wait
short_description: Wait until the NVIDIA GPU Operator reports ready and its operands run what was asked
description:
  - Waits until the ClusterPolicy's C(status.state) is C(ready), every operand DaemonSet it owns is fully
    rolled out (observed, updated and ready on every node it targets), and, with O(strategy), the device
    plugin and GPU feature discovery DaemonSets run that MIG strategy (a stale C(ready) from before an
    upgrade is not taken for the new one).
  - On timeout, fails naming what is not ready (the ClusterPolicy state, each DaemonSet's rollout, and up
    to five operand pods that are waiting, with their reason).
  - Changes nothing.
options:
  strategy:
    description: The MIG strategy the operands must run.
    type: str
    choices: [none, single, mixed]
  timeout:
    description: Seconds to wait.
    type: int
    default: 600
extends_documentation_fragment:
  - kube_connection
  - read_only
author: NVIDIA MIG rollout toolkit maintainers
"""

EXAMPLES = r"""
- name: Wait for the operator to roll out the mixed strategy
  gpu_operator_wait:
    strategy: mixed
    timeout: 900
"""

RETURN = r"""
state:
  description: The ClusterPolicy state (C(ready)).
  returned: success
  type: str
strategy:
  description: The MIG strategy the ClusterPolicy asks for.
  returned: success
  type: str
namespace:
  description: The operator's namespace.
  returned: success
  type: str
not_ready:
  description: What was not ready at the timeout.
  returned: failure
  type: list
  elements: str
duration_s:
  description: Seconds waited.
  returned: success
  type: float
"""

from ansible.module_utils.migrollout_loader import run_task


def main():
    run_task("migrollout.tasks.gpu_operator_wait")


if __name__ == "__main__":
    main()
