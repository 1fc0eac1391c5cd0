# Runs the mig_rollout_settings module in-process on the control host (see plugins/plugin_utils/kube_action.py).
from ansible_collections.nvidia_mig.rollout.plugins.plugin_utils.kube_action import action_for

ActionModule = action_for("mig_rollout_settings")
