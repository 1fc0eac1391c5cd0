#!/usr/bin/python
# mig_rollout_lock: hold (or release) the cluster-wide lock that keeps two MIG rollouts from overlapping.
# Docs, argument spec and the adapter to the core (migrollout) in one file; see plugins/module_utils/kube_task.py.

from __future__ import annotations

DOCUMENTATION = r"""
module: mig_rollout_lock
short_description: Hold or release the cluster-wide lock of MIG rollouts (a coordination.k8s.io Lease)
description:
  - O(state=present) takes the Lease C(mig-rollout) for this run (a new holder identity unless O(holder) is
    given) and starts a small process that renews it every third of O(duration) while the C(ansible-playbook)
    process lives. When another run holds an unexpired Lease, waits up to O(timeout) seconds for it to be
    released or to expire, then fails naming the holder, its host and user, and when it expires.
  - A run that dies stops renewing, so its Lease expires after O(duration) seconds and the next run takes it over.
  - The renewer records each confirmed renewal (and the loss of the lock, when another run took the Lease over
    or it was deleted) in the run's lock state file, O(state_file). The steps that change nodes check it before
    each write (their C(rollout_lock) option, from RV(fence)), so a run that lost its lock stops.
  - O(state=absent) stops the renewer, deletes the Lease if this holder still holds it, and removes the state file.
version_added: "0.1.0"
seealso:
  - module: nvidia_mig.rollout.mig_rollout_plan
  - module: nvidia_mig.rollout.mig_rollout_report
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
  timeout:
    description: Seconds to wait for another run's Lease to be released or to expire (0, do not wait).
    type: int
    default: 90
  renewer_pid:
    description: The renewer process to stop (O(state=absent)).
    type: int
  renewer_log:
    description: A file for the renewer's messages.
    type: path
  state_file:
    description: The run's lock state file. Default, C(mig-rollout/<holder>.lock.json) in the temporary directory.
    type: path
extends_documentation_fragment:
  - nvidia_mig.rollout.kube_connection
attributes:
  check_mode:
    support: full
    description: Reports whether another run holds the lock; takes nothing.
  diff_mode:
    support: none
    description: No diff, the lock is the run's own bookkeeping (a Lease), not part of the cluster's setup.
author: NVIDIA MIG rollout toolkit maintainers (@nvidia-mig-rollout)
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
acquired:
  description: When the lock was asked for (RFC 3339, microseconds), the run's start.
  returned: O(state=present), not in check mode
  type: str
renewer_pid:
  description: The renewer process.
  returned: state=present, not in check mode
  type: int
released:
  description: Whether the Lease was released.
  returned: state=absent
  type: bool
fence:
  description: What the steps that change nodes need to check this lock (their C(rollout_lock) option).
  returned: state=present, not in check mode
  type: dict
  sample: {holder: 20261128T100000Z-ctl-ab12cd, namespace: gpu-operator, state_file: /tmp/mig-rollout/20261128T100000Z-ctl-ab12cd.lock.json}
lost:
  description: Why the lock was lost during the run (empty when it was held to the end).
  returned: state=absent
  type: str
"""

import datetime
from typing import Any

from ansible_collections.nvidia_mig.rollout.plugins.module_utils.kube_task import (
    TaskContext,
    TaskFailed,
    TaskSpec,
    run_module,
)

try:
    from migrollout import clusterpolicy
    from migrollout.kube import Connection
    from migrollout.migsetup import SetupError, read_policy
    from migrollout.rollout import fence, lock
    from migrollout.timestamps import micro_time_text
except ImportError:  # run_module reports the missing package
    pass

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
    "holder": {"type": "str"},
    "namespace": {"type": "str"},
    "duration": {"type": "int", "default": 30},
    "timeout": {"type": "int", "default": 90},
    "renewer_pid": {"type": "int"},
    "renewer_log": {"type": "path"},
    "state_file": {"type": "path"},
}


def _namespace(ctx: TaskContext) -> str:
    if ctx.params.get("namespace"):
        return ctx.params["namespace"]
    try:
        return clusterpolicy.namespace(read_policy(ctx.api))
    except SetupError:
        return clusterpolicy.DEFAULT_NAMESPACE


def run(ctx: TaskContext) -> dict[str, Any]:
    params = ctx.params
    namespace = _namespace(ctx)
    if params["state"] == "absent":
        if not params.get("holder"):
            raise TaskFailed("holder is required with state=absent")
        state_file = params.get("state_file") or fence.default_path(params["holder"])
        if params.get("renewer_pid"):
            lock.stop_renewer(params["renewer_pid"])
        known = fence.read(state_file)
        released = False if ctx.check_mode else lock.release(ctx.api, namespace, params["holder"])
        if not ctx.check_mode:
            fence.remove(state_file)
        return {"changed": released, "holder": params["holder"], "namespace": namespace, "released": released,
                "lost": known.lost if known is not None else ""}

    if params["duration"] < 10:
        raise TaskFailed(f"duration is {params['duration']}; it must be at least 10 seconds")
    holder = params.get("holder") or lock.new_holder()
    if ctx.check_mode:
        current = ctx.api.get_or_none(lock.lease_path(namespace), what="read the rollout Lease")
        held = lock.state(current) if current else None
        now = datetime.datetime.now(datetime.UTC)
        if held and held.holder and held.holder != holder and held.remaining_s(now) > 0:
            ctx.warn(f"another MIG rollout holds the lock now: {held.holder} ({held.details})")
        return {"changed": True, "holder": holder, "namespace": namespace}
    asked = micro_time_text()   # the run's start, as the report counts it (what others did to nodes since)
    try:
        _, confirmed = lock.acquire(ctx.api, namespace, holder, params["duration"], params["timeout"],
                                    lock.run_details())
    except lock.LockHeld as exc:
        raise TaskFailed(str(exc), namespace=namespace) from None
    state_file = params.get("state_file") or fence.default_path(holder)
    controller = lock.controller_pid()
    try:
        fence.write(state_file, fence.LockState(holder, namespace, params["duration"], controller,
                                                confirmed=confirmed))
        renewer = lock.start_renewer(Connection.from_params(params), namespace, holder, params["duration"],
                                     controller, state_file, params.get("renewer_log"))
    except OSError as exc:
        lock.release(ctx.api, namespace, holder)
        fence.remove(state_file)
        raise TaskFailed(f"cannot start the process that renews the rollout lock: {exc}") from None
    return {"changed": True, "holder": holder, "namespace": namespace, "renewer_pid": renewer,
            "acquired": asked,
            "lease": f"{namespace}/{lock.LEASE_NAME}",
            "fence": {"holder": holder, "namespace": namespace, "state_file": state_file}}


SPEC = TaskSpec("mig_rollout_lock", ARGUMENT_SPEC, run)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
