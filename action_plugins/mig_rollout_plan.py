# Runs the mig_rollout_plan module in-process on the control host (see migrollout.ansible_action).
from migrollout.ansible_action import action_for

ActionModule = action_for("migrollout.tasks.rollout_plan")
