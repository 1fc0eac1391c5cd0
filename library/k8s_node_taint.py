#!/usr/bin/python
# Thin adapter: the logic lives in migrollout.tasks.taint.

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
  - kube_connection
attributes:
  check_mode:
    support: full
    description: Asks the API server to validate the write (dry run) and reports the taints it would set.
  diff_mode:
    support: full
author: NVIDIA MIG rollout toolkit maintainers
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


from ansible.module_utils.migrollout_loader import run_task


def main():
    run_task("migrollout.tasks.taint")


if __name__ == "__main__":
    main()
