# Runs the slurm_gres module in-process on the control host (see plugins/plugin_utils/kube_action.py).
from ansible_collections.nvidia_mig.rollout.plugins.plugin_utils.kube_action import action_for

ActionModule = action_for("slurm_gres")
