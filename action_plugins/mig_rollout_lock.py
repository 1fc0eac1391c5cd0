# Runs the mig_rollout_lock module in-process on the control host (see migrollout.ansible_action).
from migrollout.ansible_action import action_for

ActionModule = action_for("migrollout.tasks.rollout_lock")
