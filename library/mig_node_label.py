#!/usr/bin/python
# Thin adapter: the logic lives in migrollout.tasks.mig_label.

DOCUMENTATION = r"""
module: mig_node_label
short_description: Set a node's MIG config and wait for the NVIDIA MIG manager's verdict
description:
  - Sets the C(nvidia.com/mig.config) label of a GPU node and follows the MIG manager's
    C(nvidia.com/mig.config.state) label through C(pending) (and C(rebooting), while the node goes
    NotReady and comes back) to C(success) or C(failed), with a watch on the node.
  - Before touching the node it refuses a config that is not in the MIG config ConfigMap the cluster
    uses (the one named in the ClusterPolicy; else the node's own C(<node>-mig-config), which MIG
    managers from v0.14 publish; else C(default-mig-parted-config), in the operator's namespace), a
    config whose profiles or counts do not fit this node's GPU model (the MIG catalogue), a node the
    MIG manager is busy with, and a node without a running MIG manager.
  - The stale C(nvidia.com/mig.config.state) is removed in the same write as the new label, so an old
    C(success) is never taken for the new one.
  - Already at O(config) with state C(success) changes nothing. The MIG manager only reacts to a change
    of the label's value, so re-applying the same config (after a C(failed), or after the ConfigMap entry
    was edited) restarts the MIG manager pod instead; that needs O(reapply=true). The restart is refused when
    the node carries a taint the MIG manager's pod does not tolerate, since its replacement could not be
    scheduled and the node would be left without a MIG manager.
options:
  name:
    description: Node name.
    type: str
    required: true
  config:
    description: The MIG config name, an entry of the MIG config ConfigMap (for example C(all-1g.10gb)).
    type: str
    required: true
  wait:
    description: Wait for the MIG manager's verdict. With V(false), return right after writing the label.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for C(success) or C(failed).
      - A reboot and the MIG manager's own waits (up to 5 minutes each) can take long.
    type: int
    default: 1800
  reapply:
    description: When the label already has O(config), restart the MIG manager so it applies it again.
    type: bool
    default: false
extends_documentation_fragment:
  - kube_connection
  - mig_setup
attributes:
  check_mode:
    support: full
    description: Runs every check and reports whether the label would change; writes nothing, waits for nothing.
  diff_mode:
    support: full
author: NVIDIA MIG rollout toolkit maintainers
"""

EXAMPLES = r"""
- name: Partition every GPU of the node into seven 1g.10gb instances
  mig_node_label:
    name: gpu-node-17
    config: all-1g.10gb

- name: Try again after a failed apply
  mig_node_label:
    name: gpu-node-17
    config: all-1g.10gb
    reapply: true
"""

RETURN = r"""
name:
  description: The node.
  returned: always
  type: str
config:
  description: The MIG config asked for.
  returned: always
  type: str
previous_config:
  description: The node's MIG config label before the task.
  returned: always
  type: str
state:
  description: The final C(nvidia.com/mig.config.state) (C(success) on success).
  returned: success
  type: str
transitions:
  description: Every state the node went through, with the time and seconds since the write. During a
    reboot, C(node-not-ready) and C(node-ready) mark the node's readiness.
  returned: when waited
  type: list
  elements: dict
  sample: [{state: "", at: "2026-11-28T10:00:00.12Z", elapsed_s: 0.05}, {state: pending, at: "2026-11-28T10:00:00.31Z", elapsed_s: 0.24},
           {state: success, at: "2026-11-28T10:00:41.90Z", elapsed_s: 41.83}]
state_durations:
  description: Seconds spent in each state.
  returned: when waited
  type: dict
  sample: {pending: 41.59, success: 0.0}
paused_operands:
  description: On failure, the C(nvidia.com/gpu.deploy.*) labels still C(paused-for-mig-change).
  returned: failure
  type: list
  elements: str
config_map:
  description: The ConfigMap (namespace/name) the config was checked against.
  returned: always
  type: str
restarted_mig_manager:
  description: The MIG manager pod restarted to re-apply the config (with O(reapply)).
  returned: when restarted
  type: str
duration_s:
  description: Seconds from the write to the verdict.
  returned: when waited
  type: float
"""

from ansible.module_utils.migrollout_loader import run_task


def main():
    run_task("migrollout.tasks.mig_label")


if __name__ == "__main__":
    main()
