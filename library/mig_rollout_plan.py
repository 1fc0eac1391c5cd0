#!/usr/bin/python
# Thin adapter: the logic lives in migrollout.tasks.rollout_plan and migrollout.rollout.plan.

DOCUMENTATION = r"""
module: mig_rollout_plan
short_description: Check every node of a MIG rollout before anything changes, and plan the order
description:
  - Reads the cluster once (nodes, the ClusterPolicy, the MIG config ConfigMaps, MIG manager pods and operand
    DaemonSets in the operator's namespace) and decides, for each node in O(nodes), to change, resume,
    skip or refuse it.
  - A node is refused when it does not exist, has no MIG-capable GPU, its config is not in the MIG config
    ConfigMap it uses or does not fit its GPU model and count, its MIG manager is busy (C(pending),
    C(rebooting)) with another config, or no MIG manager runs on it. Any refusal fails the task, listing
    every problem, before a single node is touched.
  - The operand DaemonSets (device plugin, feature discovery, MIG manager) must tolerate the maintenance
    taints, or a node under maintenance could never be verified; otherwise the task fails.
  - A node already at its config, in state C(success) and advertising what the config should produce is
    skipped. A node with a rollout record (an interrupted or failed run) is resumed, first.
  - With O(list_pods), lists the GPU pods that would be evacuated from each node (for check mode).
  - Changes nothing.
options:
  nodes:
    description: Node name to the MIG config it should get (V(null) or empty to leave a node alone).
    type: dict
    required: true
  cordon:
    description: Whether the rollout also cordons nodes.
    type: bool
    default: false
  operator_namespace:
    description: The GPU Operator's namespace. Default, the ClusterPolicy's C(status.namespace).
    type: str
  list_pods:
    description: List the pods that would be evacuated from each node.
    type: bool
    default: false
extends_documentation_fragment:
  - kube_connection
  - maintenance_taints
  - read_only
  - evacuation_selection
author: NVIDIA MIG rollout toolkit maintainers
"""

EXAMPLES = r"""
- name: Plan the rollout of the A100 pool
  mig_rollout_plan:
    nodes: {gpu-1: all-1g.10gb, gpu-2: all-1g.10gb}
    maintenance_taints: [{key: mig, value: maintenance, effect: NoSchedule}]
"""

RETURN = r"""
plan:
  description: One entry per node, in the order the rollout will take them (resumed nodes first), with the
    action (change, resume, skip, refuse), configs, reason, GPU model and count, the ConfigMap used, and
    (with O(list_pods)) the pods to evict and the pods whose eviction would be refused.
  returned: always
  type: list
  elements: dict
  sample: [{node: gpu-1, action: change, from_config: all-disabled, to_config: all-1g.10gb,
            reason: "all-disabled -> all-1g.10gb", gpu_model: A100-SXM4-80GB, gpu_count: 8,
            config_map: default-mig-parted-config, evict: [ml/train-0], blocked: []}]
counts:
  description: Nodes per action.
  returned: always
  type: dict
namespace:
  description: The operator's namespace.
  returned: always
  type: str
strategy:
  description: The cluster's MIG strategy.
  returned: always
  type: str
problems:
  description: Every reason the rollout cannot start.
  returned: failure
  type: list
  elements: str
"""

from ansible.module_utils.migrollout_loader import run_task


def main():
    run_task("migrollout.tasks.rollout_plan")


if __name__ == "__main__":
    main()
