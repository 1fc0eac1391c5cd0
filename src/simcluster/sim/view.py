"""What a node's simulated components see and how they write: one reconcile's snapshot of a node and its pods,
and the writes they may make (the Simulator implements them against the API server; tests use a fake)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from simcluster.sim import names

Clock = Callable[[], float]
Wake = Callable[[str, float], None]  # reconcile this node again after this many seconds


class Writer(Protocol):
    def patch_node_labels(self, name: str, values: dict[str, str | None]) -> None: ...

    def patch_node_annotations(self, name: str, values: dict[str, str | None]) -> None: ...

    def patch_node_status(self, name: str, body: dict[str, Any]) -> None: ...

    def patch_pod_status(self, pod: dict[str, Any], body: dict[str, Any]) -> bool: ...

    def delete_pod(self, pod: dict[str, Any], grace_seconds: int | None = 0) -> None: ...


def start_delay_left(ready_at: dict[str, float], pod: dict[str, Any], now: float, delay_s: float) -> float:
    """Seconds until an operand's process has started, ``delay_s`` after the kubelet made its pod ready
    (``ready_at``: pod uid -> when); 0 once it has."""
    ready = ready_at.get(pod["metadata"]["uid"])
    waited = now - ready if ready is not None else 1e9
    return max(0.0, delay_s - waited)


def _resource_names(pod: dict[str, Any]) -> set[str]:
    spec = pod.get("spec", {})
    found: set[str] = set()
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        resources = container.get("resources") or {}
        for part in ("requests", "limits"):
            found.update(resources.get(part) or {})
    return found


def holds_gpu(pod: dict[str, Any]) -> bool:
    """A running pod that was given NVIDIA devices: its processes hold the GPUs (a reset or a MIG change of
    them fails with "In use by another client")."""
    if pod.get("status", {}).get("phase") != "Running" or pod["metadata"].get("deletionTimestamp"):
        return False
    return any(names.is_nvidia_resource(name) for name in _resource_names(pod))


@dataclass
class NodeView:
    """A consistent snapshot of one node and the pods bound to it, for one reconcile."""

    name: str
    node: dict[str, Any]
    pods: list[dict[str, Any]]
    operator_namespace: str

    @property
    def labels(self) -> dict[str, str]:
        return self.node.get("metadata", {}).get("labels") or {}

    def running_operand(self, app: str) -> dict[str, Any] | None:
        """The live operand pod with this app label (Running, not being deleted)."""
        for pod in self.pods:
            meta = pod["metadata"]
            if (meta.get("namespace") == self.operator_namespace and (meta.get("labels") or {}).get("app") == app
                    and not meta.get("deletionTimestamp") and pod.get("status", {}).get("phase") == "Running"):
                return pod
        return None

    def gpu_in_use(self) -> bool:
        return any(holds_gpu(pod) for pod in self.pods)
