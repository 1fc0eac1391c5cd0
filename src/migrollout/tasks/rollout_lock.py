"""mig_rollout_lock: hold (or release) the cluster-wide lock that keeps two MIG rollouts from overlapping."""

from __future__ import annotations

import datetime
from typing import Any

from migrollout import clusterpolicy
from migrollout.ansible_glue import TaskContext, TaskFailed, TaskSpec
from migrollout.kube import Connection
from migrollout.migsetup import SetupError, read_policy
from migrollout.rollout import lock

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
    "holder": {"type": "str"},
    "namespace": {"type": "str"},
    "duration": {"type": "int", "default": 30},
    "wait": {"type": "int", "default": 90},
    "renewer_pid": {"type": "int"},
    "renewer_log": {"type": "path"},
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
        if params.get("renewer_pid"):
            lock.stop_renewer(params["renewer_pid"])
        released = False if ctx.check_mode else lock.release(ctx.api, namespace, params["holder"])
        return {"changed": released, "holder": params["holder"], "namespace": namespace, "released": released}

    if params["duration"] < 10:
        raise TaskFailed("duration must be at least 10 seconds")
    holder = params.get("holder") or lock.new_holder()
    if ctx.check_mode:
        current = ctx.api.get_or_none(lock.lease_path(namespace), what="read the rollout Lease")
        held = lock.state(current) if current else None
        now = datetime.datetime.now(datetime.UTC)
        if held and held.holder and held.holder != holder and held.remaining_s(now) > 0:
            ctx.warn(f"another MIG rollout holds the lock now: {held.holder} ({held.details})")
        return {"changed": True, "holder": holder, "namespace": namespace}
    try:
        lock.acquire(ctx.api, namespace, holder, params["duration"], params["wait"], lock.run_details())
    except lock.LockHeld as exc:
        raise TaskFailed(str(exc), namespace=namespace) from None
    try:
        renewer = lock.start_renewer(Connection.from_params(params), namespace, holder, params["duration"],
                                     lock.controller_pid(), params.get("renewer_log"))
    except OSError as exc:
        lock.release(ctx.api, namespace, holder)
        raise TaskFailed(f"cannot start the process that renews the rollout lock: {exc}") from None
    return {"changed": True, "holder": holder, "namespace": namespace, "renewer_pid": renewer,
            "lease": f"{namespace}/{lock.LEASE_NAME}"}


SPEC = TaskSpec("mig_rollout_lock", ARGUMENT_SPEC, run)
