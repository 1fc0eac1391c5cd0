"""What a node's maintenance step checks on the cluster before it touches the node: that the node holds a slot
of the run's maintenance window, that its pool is not out of service beyond its budget now (others count: an
admin's cordon, NVIDIA's driver upgrade), and that each GPU pod to evict from it has somewhere to go.

The decisions are pure (rollout.schedule, capacity); this module reads what they need: the run's slots file
(local) and, only when the node has GPU pods to evict, one LIST of nodes and one of pods per look.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from migrollout import capacity, kube
from migrollout.kube import KubeClient
from migrollout.rollout import schedule, slots

REFUSE, WAIT, IGNORE = "refuse", "wait", "ignore"
POLICIES = (REFUSE, WAIT, IGNORE)


class NotInWindow(Exception):
    """The node does not hold a slot of the run's maintenance window."""


def require_slot(slots_file: str, name: str) -> str:
    """When ``name`` took its slot; NotInWindow when it holds none (only the window strategy starts nodes)."""
    held = slots.active(slots_file)
    if held is None:
        raise NotInWindow(f"node {name}: the run's maintenance window cannot be read ({slots_file}): only the "
                          f"nvidia_mig.rollout.mig_window strategy starts nodes; nothing was changed")
    if name not in held:
        raise NotInWindow(f"node {name} does not hold a slot of the run's maintenance window (active: "
                          f"{', '.join(sorted(held)) or 'none'}): nothing was changed")
    return held[name]


@dataclass
class Room:
    """Where the GPU pods of a node could go, as last looked."""

    placements: list[capacity.Placement] = field(default_factory=list)
    checked: bool = False        # looked at all (not when there is nothing to move, or with policy ignore)
    looks: int = 0
    waited_s: float = 0.0

    @property
    def stuck(self) -> list[str]:
        return [f"{p.pod}: {p.reason}" for p in capacity.nowhere(self.placements)]

    def as_dict(self) -> dict[str, Any]:
        return {"checked": self.checked, "looks": self.looks, "waited_s": round(self.waited_s, 3),
                "placements": [p.as_dict() for p in self.placements], "stuck": self.stuck}


def _unavailable(listed: list[dict[str, Any]], window: dict[str, Any] | None, leaving: str) -> dict[str, str]:
    """Nodes a moved pod may not land on: this run's other nodes in maintenance or about to be, and any node
    out of service (cordoned, not Ready, tainted)."""
    found = {node: "in maintenance (this rollout)" for node in (window or {}).get("active") or {} if node != leaving}
    for node in listed:
        why = schedule.out_of_service(node)
        if why:
            found.setdefault(node["metadata"]["name"], f"out of service ({why})")
    return found


def find_room(api: KubeClient, name: str, evicting: list[dict[str, Any]], policy: str, timeout: float,
              slots_file: str | None = None, poll_s: float = 5.0,
              sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> Room:
    """Check that each GPU pod of ``evicting`` has somewhere to go; with the ``wait`` policy, look again every
    ``poll_s`` seconds, up to ``timeout``, until they all have. The nodes this run has still to reconfigure
    are the last resort (a pod moved there would move again)."""
    room = Room()
    if policy == IGNORE or not any(capacity.gpu_requests(pod) for pod in evicting):
        return room
    started = clock()
    while True:
        window = slots.read(slots_file) if slots_file else None
        listed, _ = api.list("/api/v1/nodes", what="list nodes (room for the GPU pods to move)")
        pods, _ = api.list(kube.pods_path(), what="list pods (room for the GPU pods to move)")
        room.placements = capacity.check_node(name, evicting, listed, pods, _unavailable(listed, window, name),
                                              last_resort=(window or {}).get("pending") or ())
        room.checked, room.looks = True, room.looks + 1
        room.waited_s = clock() - started
        if not room.stuck or policy != WAIT or room.waited_s >= timeout:
            return room
        sleep(min(poll_s, max(0.0, timeout - room.waited_s)))


@dataclass(frozen=True)
class PoolBudget:
    """The node's pool and how many of its nodes may be out of service at once (mig_rollout_max_unavailable_per_pool,
    resolved by the plan), and how pools are told apart (rollout.schedule.pool_of)."""

    pool: str
    budget: int
    pool_by: str = "pool"
    pool_label: str = schedule.DEFAULT_POOL_LABEL

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> PoolBudget | None:
        if not params or params.get("budget") is None:
            return None
        return cls(params["pool"], int(params["budget"]), params.get("pool_by") or "pool",
                   params.get("pool_label") or schedule.DEFAULT_POOL_LABEL)


def pool_out_of_service(api: KubeClient, name: str, pool: PoolBudget) -> list[str]:
    """The other nodes of ``name``'s pool out of service now, each with why, whoever took them out: this run's
    other nodes (tainted), an admin's cordon, NVIDIA's driver upgrade. One LIST, of the pool's label where pools
    are labelled, else of every GPU node."""
    selector = (f"{pool.pool_label}={pool.pool}" if pool.pool_by == "pool"
                else "nvidia.com/gpu.present=true")
    listed, _ = api.list("/api/v1/nodes", label_selector=selector, what=f"list the nodes of pool {pool.pool}")
    return sorted(f"{node['metadata']['name']} ({why})" for node in listed
                  if node["metadata"]["name"] != name
                  and schedule.pool_of(node, pool.pool_by, pool.pool_label) == pool.pool
                  and (why := schedule.out_of_service(node)))


def wait_for_pool_room(api: KubeClient, name: str, pool: PoolBudget, policy: str, timeout: float,
                       stop_check: Callable[[], None], poll_s: float = 5.0,
                       sleep: Callable[[float], None] = time.sleep,
                       clock: Callable[[], float] = time.monotonic) -> tuple[list[str], float]:
    """The pool's nodes out of service while taking ``name`` out would exceed its budget (empty: room), and the
    seconds waited; with the ``wait`` policy it looks again every ``poll_s`` seconds, up to ``timeout``."""
    started = clock()
    while True:
        out = pool_out_of_service(api, name, pool)
        if len(out) + 1 <= pool.budget or policy != WAIT or clock() - started >= timeout:
            return (out if len(out) + 1 > pool.budget else []), clock() - started
        stop_check()
        sleep(min(poll_s, max(0.0, timeout - (clock() - started))))
