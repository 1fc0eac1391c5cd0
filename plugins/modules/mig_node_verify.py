#!/usr/bin/python
# mig_node_verify: check that a node advertises the resources and labels its MIG config should produce.
# Docs, argument spec and the adapter to the core (migrollout) in one file; see plugins/module_utils/kube_task.py.

from __future__ import annotations

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
    node for up to O(timeout) seconds before it reports the mismatches and fails.
  - Never changes anything. With O(rollout_lock), the wait stops as soon as the rollout lost its lock.
version_added: "0.1.0"
seealso:
  - module: nvidia_mig.rollout.mig_node_label
  - module: nvidia_mig.rollout.mig_rollout_node
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
  timeout:
    description: Seconds to wait for the node to advertise the expected resources and labels.
    type: int
    default: 300
    aliases: [wait_timeout]
  gpu_count:
    description: Physical GPUs on the node, when its labels cannot tell (an invalid single-strategy layout).
    type: int
extends_documentation_fragment:
  - nvidia_mig.rollout.kube_connection
  - nvidia_mig.rollout.mig_setup
  - nvidia_mig.rollout.read_only
  - nvidia_mig.rollout.rollout_lock
author: NVIDIA MIG rollout toolkit maintainers (@nvidia-mig-rollout)
"""

EXAMPLES = r"""
- name: The node must now offer 56 x nvidia.com/mig-1g.10gb (8 GPUs, mixed strategy)
  mig_node_verify:
    name: gpu-node-17
    config: all-1g.10gb
    timeout: 180
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

import time
from typing import Any

from ansible_collections.nvidia_mig.rollout.plugins.module_utils.kube_task import (
    TaskContext,
    TaskFailed,
    TaskSpec,
    run_module,
)
from ansible_collections.nvidia_mig.rollout.plugins.module_utils.option_specs import ROLLOUT_LOCK_SPEC

try:
    from migrollout import labels, nodes
    from migrollout.migsetup import discover
    from migrollout.migstate import wait_advertised
    from migrollout.rollout import fence
    from migrollout.verification import expect
except ImportError:  # run_module reports the missing package
    pass

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "name": {"type": "str", "required": True},
    "config": {"type": "str"},
    "strategy": {"type": "str", "choices": ["none", "single", "mixed"]},
    "timeout": {"type": "int", "default": 300, "aliases": ["wait_timeout"]},
    "gpu_count": {"type": "int"},
    "operator_namespace": {"type": "str"},
    "config_map": {"type": "str"},
    **ROLLOUT_LOCK_SPEC,
}


def run(ctx: TaskContext) -> dict[str, Any]:
    params = ctx.params
    name = params["name"]
    started = time.monotonic()
    if params["timeout"] < 0:
        raise TaskFailed(f"node {name}: timeout is {params['timeout']}; it must be 0 or more")
    guard = fence.NoFence() if ctx.check_mode else fence.from_params(params.get("rollout_lock"))
    node = nodes.read(ctx.api, name)
    model = nodes.require_mig_node(node)
    config = params.get("config") or nodes.mig_config(node)
    if not config:
        raise TaskFailed(f"node {name} has no {labels.MIG_CONFIG} label and no config was given")
    setup = discover(ctx.api, name, params.get("operator_namespace"), params.get("config_map"),
                     params.get("strategy"))
    if config not in setup.config:
        raise TaskFailed(f"node {name}: MIG config {config} is not in ConfigMap {setup.namespace}/{setup.config_map}")
    count = params.get("gpu_count") or nodes.physical_gpu_count(node, setup.config, model)
    if not count:
        raise TaskFailed(f"node {name}: cannot tell how many GPUs it has from its labels; pass gpu_count")
    expectation = expect(setup.config, config, model, count, setup.strategy)

    comparison, node = wait_advertised(ctx.api, name, config, expectation,
                                       max(0.0, started + params["timeout"] - time.monotonic()), node=node,
                                       stop_check=lambda: guard.check(f"node {name}"))
    result = {
        "changed": False, "name": name, "config": config, "strategy": setup.strategy, "gpu_model": model.key,
        "gpu_count": count, "expected": comparison.expected, "actual": comparison.actual,
        "mismatches": comparison.mismatches, "duration_s": round(time.monotonic() - started, 3),
    }
    if comparison.mismatches:
        raise TaskFailed(f"node {name} does not advertise what {config} should give under the {setup.strategy} "
                         f"strategy after {params['timeout']} s: " + "; ".join(comparison.mismatches[:4])
                         + (f" (and {len(comparison.mismatches) - 4} more)" if len(comparison.mismatches) > 4
                            else ""), **result)
    return result


SPEC = TaskSpec("mig_node_verify", ARGUMENT_SPEC, run)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
