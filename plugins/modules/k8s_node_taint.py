#!/usr/bin/python
# k8s_node_taint: add or remove taints on one node, touching no other taint.
# Docs, argument spec and the adapter to the core (migrollout) in one file; see plugins/module_utils/kube_task.py.

from __future__ import annotations

DOCUMENTATION = r"""
module: k8s_node_taint
short_description: Add or remove taints on one Kubernetes node, leaving every other taint alone
description:
  - Adds (O(state=present)) or removes (O(state=absent)) taints on one node.
  - A taint is identified by its key and effect, as Kubernetes does. Adding one whose key and effect
    exist updates its value; removing one ignores the value.
  - Taints not named in O(taints), including the C(node.kubernetes.io/*) taints of the node lifecycle
    controller, are never touched.
  - The write carries the node's resourceVersion and is retried on conflict, so a concurrent change to
    the node (another taint, a label) is never lost.
version_added: "0.1.0"
seealso:
  - module: nvidia_mig.rollout.k8s_node_evacuate
  - module: nvidia_mig.rollout.mig_rollout_node
options:
  name:
    description: Node name.
    type: str
    required: true
  taints:
    description: Taints to add or remove.
    type: list
    elements: dict
    required: true
    suboptions:
      key:
        description: Taint key (a qualified name, for example C(mig) or C(example.com/maintenance)).
        type: str
        required: true
      value:
        description: Taint value. Ignored when removing.
        type: str
        default: ""
      effect:
        description: Taint effect.
        type: str
        required: true
        choices: [NoSchedule, PreferNoSchedule, NoExecute]
  state:
    description: Whether the taints must be present or absent.
    type: str
    default: present
    choices: [present, absent]
  require_gpu:
    description:
      - Refuse nodes without an NVIDIA GPU (no C(nvidia.com/gpu.present) or NFD PCI label), before writing.
      - Set to V(false) to taint any node.
    type: bool
    default: true
extends_documentation_fragment:
  - nvidia_mig.rollout.kube_connection
attributes:
  check_mode:
    support: full
    description: Asks the API server to validate the write (dry run) and reports the taints it would set.
  diff_mode:
    support: full
    description: Shows the node's taints before and after.
author: NVIDIA MIG rollout toolkit maintainers (@nvidia-mig-rollout)
"""

EXAMPLES = r"""
- name: Put a GPU node into MIG maintenance
  k8s_node_taint:
    name: gpu-node-17
    taints:
      - {key: mig, value: maintenance, effect: NoSchedule}

- name: Take it out again (other taints stay)
  k8s_node_taint:
    name: gpu-node-17
    state: absent
    taints:
      - {key: mig, effect: NoSchedule}
"""

RETURN = r"""
name:
  description: The node.
  returned: always
  type: str
taints_before:
  description: The node's taints before the task.
  returned: success
  type: list
  elements: dict
  sample: [{key: node.kubernetes.io/unschedulable, effect: NoSchedule}]
taints_after:
  description: The node's taints after the task (in check mode, what the server would store).
  returned: success
  type: list
  elements: dict
  sample: [{key: node.kubernetes.io/unschedulable, effect: NoSchedule}, {key: mig, value: maintenance, effect: NoSchedule}]
"""

from typing import Any

from ansible_collections.nvidia_mig.rollout.plugins.module_utils.kube_task import (
    TaskContext,
    TaskFailed,
    TaskSpec,
    run_module,
)
from ansible_collections.nvidia_mig.rollout.plugins.module_utils.option_specs import TAINT_OPTIONS

try:
    from migrollout import nodes, taints
except ImportError:  # run_module reports the missing package
    pass

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "name": {"type": "str", "required": True},
    "taints": {"type": "list", "elements": "dict", "required": True, "options": TAINT_OPTIONS},
    "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
    "require_gpu": {"type": "bool", "default": True},
}


def run(ctx: TaskContext) -> dict[str, Any]:
    params = ctx.params
    name = params["name"]
    try:
        wanted = taints.checked_list(params["taints"])
    except ValueError as exc:
        raise TaskFailed(f"node {name}: {exc}") from None
    adding = params["state"] == "present"

    def mutate(node: dict[str, Any]) -> dict[str, Any] | None:
        if params["require_gpu"]:
            nodes.require_gpu_node(node)
        current = nodes.node_taints(node)
        updated = taints.add(current, wanted) if adding else taints.remove(current, wanted)
        return None if taints.same(current, updated) else {"spec": {"taints": updated or None}}

    before, after, changed = nodes.update(ctx.api, name, mutate, dry_run=ctx.check_mode,
                                          what=f"{'taint' if adding else 'untaint'} node {name}")
    result: dict[str, Any] = {
        "changed": changed,
        "name": name,
        "taints_before": nodes.node_taints(before),
        "taints_after": nodes.node_taints(after),
    }
    if ctx.diff:
        result["diff"] = {
            "before_header": f"node/{name} taints", "after_header": f"node/{name} taints",
            "before": "".join(f"{taints.Taint.from_dict(t)}\n" for t in result["taints_before"]),
            "after": "".join(f"{taints.Taint.from_dict(t)}\n" for t in result["taints_after"]),
        }
    return result


SPEC = TaskSpec("k8s_node_taint", ARGUMENT_SPEC, run)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
