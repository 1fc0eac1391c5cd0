#!/usr/bin/python
# mig_node_label: set nvidia.com/mig.config on a node and follow the MIG manager to its verdict.
# Docs, argument spec and the adapter to the core (migrollout) in one file; see plugins/module_utils/kube_task.py.

from __future__ import annotations

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
  - A failure names the state and how to recover, for a MIG manager left in C(pending) (restart its pod, named)
    and for a MIG mode change that may need a reboot the MIG manager is not allowed to do (C(WITH_REBOOT)).
version_added: "0.1.0"
seealso:
  - module: nvidia_mig.rollout.mig_node_verify
  - module: nvidia_mig.rollout.mig_config_check
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
  pending_timeout:
    description:
      - Seconds the MIG manager may stay in C(pending) before its pod is restarted, once. NVIDIA's MIG manager
        (mig-parted up to v0.15.0) leaves a node in C(pending) for good when stopping the GPU clients times out,
        and acts again only on a change of the label or a new pod; a restarted pod applies the label's config
        at its start. The restart is deleted with the pod's uid as a precondition, said in a warning, in the
        node's rollout record (C(recoveries)) and an Event C(MigManagerRestarted). Still C(pending) as long after
        the restart, the task fails with what to do.
      - V(0) never restarts it (O(timeout) ends the wait).
    type: int
    default: 0
  reapply:
    description:
      - When the label already has O(config), restart the MIG manager so it applies it again (for example after a
        C(failed) apply whose cause was fixed).
      - The rollout sets it for a node whose label already has its config in state C(failed)
        (C(mig_rollout_reapply_failed), default true).
    type: bool
    default: false
  checked:
    description:
      - What the rollout's plan found for this node when it checked it (O(config) is in the node's ConfigMap and
        fits its GPUs, a MIG manager runs there), so the step reads neither the ConfigMap nor the MIG manager's
        pod - C(gpu_count), the node's physical GPU count, and C(mode_change) (V(on), V(off) or empty), whether
        the change switches MIG mode.
      - A MIG manager that went away since is found when no final state came after
        60 seconds (one LIST then); the failure then says so.
    type: dict
    suboptions:
      gpu_count:
        description: The node's physical GPU count.
        type: int
        required: true
      mode_change:
        description: Whether the change switches MIG mode on (V(on)) or off (V(off)) on some GPU.
        type: str
        default: ""
extends_documentation_fragment:
  - nvidia_mig.rollout.kube_connection
  - nvidia_mig.rollout.mig_setup
  - nvidia_mig.rollout.rollout_lock
attributes:
  check_mode:
    support: full
    description: Runs every check and reports whether the label would change; writes nothing, waits for nothing.
  diff_mode:
    support: full
    description: Shows the node's C(nvidia.com/mig.config) label before and after.
author: NVIDIA MIG rollout toolkit maintainers (@nvidia-mig-rollout)
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
recovered:
  description: What was done to a MIG manager stuck in C(pending) (O(pending_timeout)).
  returned: when its pod was restarted
  type: str
duration_s:
  description: Seconds from the write to the verdict.
  returned: when waited
  type: float
began:
  description: When RV(duration_s) began (UTC, microseconds), for the report's timeline.
  returned: when waited
  type: str
"""

from typing import Any

from ansible_collections.nvidia_mig.rollout.plugins.module_utils.kube_task import (
    TaskContext,
    TaskFailed,
    TaskSpec,
    run_module,
)
from ansible_collections.nvidia_mig.rollout.plugins.module_utils.option_specs import ROLLOUT_LOCK_SPEC

try:
    from migrollout.failures import StepFailed
    from migrollout.mig_apply import ConfigApply, apply_config
except ImportError:  # run_module reports the missing package
    pass

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "name": {"type": "str", "required": True},
    "config": {"type": "str", "required": True},
    "wait": {"type": "bool", "default": True},
    "timeout": {"type": "int", "default": 1800},
    "pending_timeout": {"type": "int", "default": 0},
    "reapply": {"type": "bool", "default": False},
    "checked": {"type": "dict", "options": {
        "gpu_count": {"type": "int", "required": True},
        "mode_change": {"type": "str", "default": ""},
    }},
    "operator_namespace": {"type": "str"},
    "config_map": {"type": "str"},
    **ROLLOUT_LOCK_SPEC,
}


def run(ctx: TaskContext) -> dict[str, Any]:
    params = ctx.params
    name = params["name"]
    if params["timeout"] <= 0:
        raise TaskFailed(f"node {name}: timeout is {params['timeout']}; it must be at least 1 second")
    try:
        return apply_config(ConfigApply(
            ctx.api, name, params["config"], wait=params["wait"], timeout=params["timeout"],
            reapply=params["reapply"], checked=params.get("checked"),
            operator_namespace=params.get("operator_namespace"), config_map=params.get("config_map"),
            rollout_lock=params.get("rollout_lock"), pending_timeout=params["pending_timeout"],
            check_mode=ctx.check_mode, diff=ctx.diff, warn=ctx.warn))
    except StepFailed as exc:
        raise TaskFailed(exc.msg, **exc.result) from None


SPEC = TaskSpec("mig_node_label", ARGUMENT_SPEC, run)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
