# The rollout lock as the modules take it (one source: module_utils.option_specs: FENCE_OPTIONS, ROLLOUT_LOCK_SPEC).
# DOCUMENTATION: the fence of the steps that change a node during a rollout (ROLLOUT_LOCK_SPEC).
# FENCE: the lock read by the report, which says whether the run lost it (FENCE_OPTIONS).
# Both are whole string literals: ansible-test's yamllint sanity test reads doc fragments without running them,
# so their three shared suboptions (holder, namespace, state_file) are written out in each.

class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  rollout_lock:
    description:
      - The rollout lock this step must still hold, as M(nvidia_mig.rollout.mig_rollout_lock) returns it (its C(fence)).
      - Right before each change to the node (and while it waits), the step checks the lock's state file, which the
        lock's renewer updates on every renewal; this costs no API request. The step stops with C(lock_lost=true),
        before writing, when the lock was taken over or released, when no renewal was confirmed within the Lease's
        duration (less a margin) and the renewer cannot confirm one within a few seconds (a run frozen by a
        suspended machine), or when the run's C(ansible-playbook) process is gone.
      - Without it the step runs unfenced (outside a rollout).
    type: dict
    suboptions:
      holder:
        description: The run's holder identity.
        type: str
        required: true
      namespace:
        description: The namespace of the Lease.
        type: str
      state_file:
        description: The run's lock state file.
        type: path
        required: true
      events:
        description:
          - Write a Kubernetes Event (C(events.k8s.io/v1)) on the node for each part of this step, reporting controller
            C(nvidia.com/mig-rollout), the note naming the run (O(rollout_lock.holder)); best effort, a failed write is a
            warning.
        type: bool
        default: false
      slots_file:
        description:
          - The run's maintenance window, which the C(nvidia_mig.rollout.mig_window) strategy keeps. A step that puts a
            node into maintenance does so only while the node holds a slot there.
        type: path
"""

    FENCE = r"""
options:
  rollout_lock:
    description:
      - The run's rollout lock, as M(nvidia_mig.rollout.mig_rollout_lock) returns it (its C(fence)); the report says
        whether the run lost it. Read before the lock is released (releasing removes its state file).
    type: dict
    suboptions:
      holder:
        description: The run's holder identity.
        type: str
        required: true
      namespace:
        description: The namespace of the Lease.
        type: str
      state_file:
        description: The run's lock state file.
        type: path
        required: true
"""
