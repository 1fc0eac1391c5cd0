#!/usr/bin/python
# Thin adapter: the logic lives in migrollout.tasks.rollout_lock and migrollout.rollout.lock.

DOCUMENTATION = r"""
module: mig_rollout_lock
short_description: Hold or release the cluster-wide lock of MIG rollouts (a coordination.k8s.io Lease)
description:
  - O(state=present) takes the Lease C(mig-rollout) for this run (a new holder identity unless O(holder) is
    given) and starts a small process that renews it every third of O(duration) while the C(ansible-playbook)
    process lives. When another run holds an unexpired Lease, waits up to O(wait) seconds for it to be
    released or to expire, then fails naming the holder, its host and user, and when it expires.
  - A run that dies stops renewing, so its Lease expires after O(duration) seconds and the next run takes it over.
  - O(state=absent) stops the renewer and deletes the Lease if this holder still holds it.
options:
  state:
    description: Hold or release the lock.
    type: str
    default: present
    choices: [present, absent]
  holder:
    description: The holder identity (required to release).
    type: str
  namespace:
    description: Namespace of the Lease. Default, the GPU Operator's namespace.
    type: str
  duration:
    description: Lease duration in seconds; a dead run's lock expires after this long.
    type: int
    default: 30
  wait:
    description: Seconds to wait for another run's Lease to be released or to expire.
    type: int
    default: 90
  renewer_pid:
    description: The renewer process to stop (O(state=absent)).
    type: int
  renewer_log:
    description: A file for the renewer's messages.
    type: path
extends_documentation_fragment:
  - kube_connection
attributes:
  check_mode:
    support: full
    description: Reports whether another run holds the lock; takes nothing.
  diff_mode:
    support: none
author: NVIDIA MIG rollout toolkit maintainers
"""

EXAMPLES = r"""
- name: Take the rollout lock
  mig_rollout_lock:
  register: lock

- name: Release it
  mig_rollout_lock:
    state: absent
    holder: "{{ lock.holder }}"
    renewer_pid: "{{ lock.renewer_pid }}"
"""

RETURN = r"""
holder:
  description: The holder identity (the run's identity).
  returned: always
  type: str
namespace:
  description: Namespace of the Lease.
  returned: always
  type: str
renewer_pid:
  description: The renewer process.
  returned: state=present, not in check mode
  type: int
released:
  description: Whether the Lease was released.
  returned: state=absent
  type: bool
"""

from ansible.module_utils.migrollout_loader import run_task


def main():
    run_task("migrollout.tasks.rollout_lock")


if __name__ == "__main__":
    main()
