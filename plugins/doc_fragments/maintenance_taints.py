# The rollout's maintenance taints option (mig_rollout_plan, mig_rollout_node).


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  maintenance_taints:
    description:
      - The taints the rollout puts on a node under maintenance.
      - Effect C(NoExecute) is refused, before anything is written. The taint manager would delete every pod on the node
        that does not tolerate it, CPU pods too, without honouring PodDisruptionBudgets; the rollout evicts GPU pods
        through the Eviction API instead, and cordons a node whose GPU pods tolerate the taints.
    type: list
    elements: dict
    default: []
    suboptions:
      key:
        description: Taint key.
        type: str
        required: true
      value:
        description: Taint value.
        type: str
        default: ""
      effect:
        description: Taint effect.
        type: str
        required: true
        choices: [NoSchedule, PreferNoSchedule, NoExecute]
"""
