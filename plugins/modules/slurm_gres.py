#!/usr/bin/python
# slurm_gres: the GPU GRES a Slurm node declares for its MIG layout (slurm.conf's Gres= and gres.conf's lines).
# Docs, argument spec and the adapter to the core (migrollout.slurm) in one file.

from __future__ import annotations

DOCUMENTATION = r"""
module: slurm_gres
short_description: The GPU GRES of a Slurm node for its MIG layout, as slurm.conf and gres.conf declare them
description:
  - From the layout C(nvidia-mig-parted export) prints, the C(Gres=) of the node's C(slurm.conf) line and the
    node's C(gres.conf) lines. A GPU with MIG disabled is one C(gpu:<type>) (C(File=/dev/nvidia<index>)); a MIG
    device is one C(gpu:<type>_<profile>) (Slurm's MIG type names, for example C(a100_3g.20gb)) with the MIG
    capability file of its GPU instance (numbered as the driver's C(mig-minors); instance ids in the order of the
    layout's profiles).
  - For sites without C(AutoDetect=nvml) (a slurmd built with NVML detects MIG devices itself).
  - Computes only; runs on the control host.
version_added: "0.3.0"
requirements:
  - python >= 3.11
  - the C(nvidia-mig-rollout) Python package
options:
  node:
    description: The Slurm node name.
    type: str
    required: true
  exported:
    description: The output of C(nvidia-mig-parted export) on the node (YAML text).
    type: str
    required: true
  gpu_count:
    description: How many GPUs the node has.
    type: int
    required: true
  product:
    description: The GPUs' product name (C(nvidia-smi --query-gpu=name)), for the GPU type when O(gpu_type) is not given.
    type: str
  gpu_type:
    description: Slurm's GPU type for whole GPUs (default, the first word of the product, for example C(a100)).
    type: str
  slurm_node:
    description: The node's C(scontrol show node --oneliner) text; with it, RV(declared_now) and RV(matches) are returned.
    type: str
attributes:
  check_mode:
    support: full
    description: Computes the same in check mode.
  diff_mode:
    support: none
    description: Nothing is changed.
author: NVIDIA MIG rollout toolkit maintainers (@nvidia-mig-rollout)
"""

EXAMPLES = r"""
- name: GRES of the new layout
  nvidia_mig.rollout.slurm_gres:
    node: gpu-01
    exported: "{{ exported.stdout }}"
    gpu_count: 8
    product: NVIDIA A100-SXM4-80GB
"""

RETURN = r"""
gres:
  description: The C(Gres=) value of the node's slurm.conf line.
  returned: success
  type: str
  sample: gpu:a100_1g.10gb:14
gres_conf:
  description: The node's gres.conf lines.
  returned: success
  type: list
  elements: str
counts:
  description: GPUs per GRES type.
  returned: success
  type: dict
declared_now:
  description: GPUs per GRES type that Slurm's node record declares (with O(slurm_node)).
  returned: when slurm_node is given
  type: dict
matches:
  description: Whether Slurm's node record declares RV(counts) (with O(slurm_node)).
  returned: when slurm_node is given
  type: bool
"""

from typing import Any

import yaml

from ansible_collections.nvidia_mig.rollout.plugins.module_utils.kube_task import (
    TaskContext,
    TaskFailed,
    TaskSpec,
    run_module,
)

try:
    from migrollout import slurm
except ImportError:  # run_module reports the missing package
    pass

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "node": {"type": "str", "required": True},
    "exported": {"type": "str", "required": True},
    "gpu_count": {"type": "int", "required": True},
    "product": {"type": "str"},
    "gpu_type": {"type": "str"},
    "slurm_node": {"type": "str"},
}


def run(ctx: TaskContext) -> dict[str, Any]:
    params = ctx.params
    try:
        base = params["gpu_type"] or slurm.gpu_type(params["product"] or "")
        exported = yaml.safe_load(params["exported"]) or {}
        layout = slurm.layout_per_gpu(exported, params["gpu_count"])
        found = slurm.gres(params["node"], base, layout)
    except (slurm.SlurmError, yaml.YAMLError) as exc:
        raise TaskFailed(f"{params['node']}: {exc}") from None
    result: dict[str, Any] = {"changed": False, "gres": found.field, "gres_conf": list(found.conf_lines),
                              "counts": found.counts}
    if params["slurm_node"] is not None:
        declared = slurm.reported_gres(slurm.node_fields(params["slurm_node"]))
        result.update(declared_now=declared, matches=declared == found.counts)
    return result


SPEC = TaskSpec("slurm_gres", ARGUMENT_SPEC, run, connection=False)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
