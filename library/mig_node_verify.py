#!/usr/bin/python
# Thin adapter: the logic lives in migrollout.tasks.mig_verify and migrollout.verification.

DOCUMENTATION = r"""
module: mig_node_verify
short_description: Check that a GPU node advertises what its MIG config should produce
description:
  - Computes, from the MIG config entry, the node's GPU model and count (from its GPU feature discovery
    labels) and the MIG strategy, with the MIG catalogue, the extended resources the device plugin must
    advertise (C(nvidia.com/gpu) or C(nvidia.com/mig-<profile>)) and the GPU feature discovery labels
    (C(nvidia.com/mig.strategy), C(nvidia.com/gpu.count), C(nvidia.com/gpu.product),
    C(nvidia.com/mig-<profile>.count)).
  - Compares them with the node's allocatable resources and labels. The node must also be at the config
    with state C(success), and no C(nvidia.com/gpu.deploy.*) label may still be C(paused-for-mig-change).
  - Feature discovery and the device plugin lag behind the MIG manager's C(success); the module watches the
    node for up to O(wait_timeout) seconds before it reports the mismatches and fails.
  - Never changes anything.
options:
  name:
    description: Node name.
    type: str
    required: true
  config:
    description: The MIG config to verify against. Default, the node's C(nvidia.com/mig.config) label.
    type: str
  strategy:
    description: The MIG strategy. Default, the ClusterPolicy's C(spec.mig.strategy).
    type: str
    choices: [none, single, mixed]
  wait_timeout:
    description: Seconds to wait for the node to advertise the expected resources and labels.
    type: int
    default: 300
  gpu_count:
    description: Physical GPUs on the node, when its labels cannot tell (an invalid single-strategy layout).
    type: int
extends_documentation_fragment:
  - kube_connection
  - mig_setup
  - read_only
author: NVIDIA MIG rollout toolkit maintainers
"""

EXAMPLES = r"""
- name: The node must now offer 56 x nvidia.com/mig-1g.10gb (8 GPUs, mixed strategy)
  mig_node_verify:
    name: gpu-node-17
    config: all-1g.10gb
    wait_timeout: 180
"""

RETURN = r"""
expected:
  description: Resources and labels the config should produce.
  returned: always
  type: dict
  sample: {resources: {nvidia.com/mig-1g.10gb: 56}, labels: {nvidia.com/mig.strategy: mixed, nvidia.com/gpu.count: "8",
           nvidia.com/gpu.product: NVIDIA-A100-SXM4-80GB, nvidia.com/mig-1g.10gb.count: "56"}}
actual:
  description: What the node advertises (non-zero NVIDIA resources, and the compared labels).
  returned: always
  type: dict
mismatches:
  description: Every difference, one sentence each; empty on success.
  returned: always
  type: list
  elements: str
gpu_model:
  description: The node's GPU model (catalogue key).
  returned: always
  type: str
gpu_count:
  description: Physical GPUs on the node.
  returned: always
  type: int
strategy:
  description: The MIG strategy verified against.
  returned: always
  type: str
duration_s:
  description: Seconds until the node matched (or the wait ended).
  returned: always
  type: float
"""

from ansible.module_utils.migrollout_loader import run_task


def main():
    run_task("migrollout.tasks.mig_verify")


if __name__ == "__main__":
    main()
