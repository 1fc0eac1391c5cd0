"""Which pods leave a node, and how: pure decisions over pod objects.

First the selection (GPU workloads, optionally narrowed by a label selector the
LIST already applied), then kubectl drain's filters in kubectl's order
(``k8s.io/kubectl/pkg/drain/filters.go``): already terminating, DaemonSet
(by controllerRef), mirror, local storage (emptyDir), unreplicated. Each filter
keeps, skips, or refuses a pod, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from migrollout import labels
from migrollout.taints import Taint, tolerates

Pod = Mapping[str, Any]

EVICT = "evict"
DELETE = "delete"  # finished pods: nothing to protect, no budget to consult
WAIT = "wait"      # already terminating: only wait for it to go
SKIP = "skip"
REFUSE = "refuse"
ALLOW = "allow"    # a filter's "fine by me, with a warning": the next filters still judge

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


@dataclass(frozen=True)
class Options:
    gpu_only: bool = True
    gpu_runtime_classes: tuple[str, ...] = ("nvidia",)
    ignore_daemonsets: bool = True
    delete_emptydir_data: bool = False
    force: bool = False

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Options:
        """The options of a module's evacuation-selection parameters (same names)."""
        return cls(gpu_only=params["gpu_only"], gpu_runtime_classes=tuple(params["gpu_runtime_classes"]),
                   ignore_daemonsets=params["ignore_daemonsets"], delete_emptydir_data=params["delete_emptydir_data"],
                   force=params["force"])


@dataclass(frozen=True)
class Decision:
    pod: Pod
    action: str
    reason: str = ""
    warning: str = ""

    @property
    def ref(self) -> str:
        meta = self.pod["metadata"]
        return f"{meta.get('namespace')}/{meta['name']}"

    def describe(self) -> dict[str, str]:
        meta = self.pod["metadata"]
        entry = {"namespace": meta.get("namespace", ""), "name": meta["name"], "uid": meta.get("uid", "")}
        if self.reason:
            entry["reason"] = self.reason
        return entry


def requests_gpu(pod: Pod) -> bool:
    spec = pod.get("spec") or {}
    for container in list(spec.get("containers") or []) + list(spec.get("initContainers") or []):
        resources = container.get("resources") or {}
        for section in ("requests", "limits"):
            for name in resources.get(section) or {}:
                if labels.is_gpu_resource(name):
                    return True
    return False


def selected(pod: Pod, options: Options) -> bool:
    """Is this pod one the evacuation is about? (GPU workloads by default)"""
    if not options.gpu_only:
        return True
    if requests_gpu(pod):
        return True
    runtime_class = (pod.get("spec") or {}).get("runtimeClassName")
    return bool(runtime_class and runtime_class in options.gpu_runtime_classes)


def finished(pod: Pod) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def controller_ref(pod: Pod) -> Mapping[str, Any] | None:
    for ref in pod["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


DaemonSetExists = Callable[[str, str], bool]


def _terminating(pod: Pod, options: Options, ds_exists: DaemonSetExists) -> Decision | None:
    if pod["metadata"].get("deletionTimestamp"):
        return Decision(pod, WAIT, "already terminating")
    return None


def _daemonset(pod: Pod, options: Options, ds_exists: DaemonSetExists) -> Decision | None:
    ref = controller_ref(pod)
    if ref is None or ref.get("kind") != "DaemonSet" or not str(ref.get("apiVersion", "")).startswith("apps/"):
        return None
    if finished(pod):
        return Decision(pod, DELETE, "finished")
    if not ds_exists(pod["metadata"].get("namespace", ""), ref.get("name", "")):
        if options.force:
            return Decision(pod, ALLOW, warning=f"pod {pod['metadata']['name']}: its DaemonSet "
                                                f"{ref.get('name')} no longer exists; evicting it (force)")
        return Decision(pod, REFUSE, f"its DaemonSet {ref.get('name')} no longer exists (set force to evict it)")
    if options.ignore_daemonsets:
        return Decision(pod, SKIP, "DaemonSet-managed")
    return Decision(pod, REFUSE, "DaemonSet-managed (set ignore_daemonsets to leave it)")


def _mirror(pod: Pod, options: Options, ds_exists: DaemonSetExists) -> Decision | None:
    if MIRROR_ANNOTATION in (pod["metadata"].get("annotations") or {}):
        return Decision(pod, SKIP, "mirror pod of a static pod")
    return None


def _local_storage(pod: Pod, options: Options, ds_exists: DaemonSetExists) -> Decision | None:
    volumes = (pod.get("spec") or {}).get("volumes") or []
    if not any("emptyDir" in volume for volume in volumes) or finished(pod):
        return None
    if options.delete_emptydir_data:
        # Allowed; later filters still judge (an unmanaged pod also needs force).
        return Decision(pod, ALLOW, warning=f"pod {pod['metadata']['name']}: its emptyDir data will be lost")
    return Decision(pod, REFUSE, "uses emptyDir local storage (set delete_emptydir_data to lose it)")


def _unreplicated(pod: Pod, options: Options, ds_exists: DaemonSetExists) -> Decision | None:
    if controller_ref(pod) is not None or finished(pod):
        return None
    if options.force:
        return Decision(pod, ALLOW, warning=f"pod {pod['metadata']['name']} is not managed by a controller; "
                                            f"evicting it deletes it for good (force)")
    return Decision(pod, REFUSE, "not managed by a controller: nothing would recreate it (set force to evict it)")


FILTERS = (_terminating, _daemonset, _mirror, _local_storage, _unreplicated)


def decide(pod: Pod, options: Options, ds_exists: DaemonSetExists) -> Decision:
    """The first filter that keeps, skips or refuses the pod decides; a pod every filter allows is
    evicted (deleted when it has finished), with the warnings the filters gave on the way."""
    warnings: list[str] = []
    for check in FILTERS:
        decision = check(pod, options, ds_exists)
        if decision is None:
            continue
        if decision.action != ALLOW:
            return decision
        warnings.append(decision.warning)
    if finished(pod):
        return Decision(pod, DELETE, "finished", "; ".join(warnings))
    return Decision(pod, EVICT, warning="; ".join(warnings))


def plan(pods: Iterable[Pod], options: Options, ds_exists: DaemonSetExists) -> list[Decision]:
    return [decide(pod, options, ds_exists) for pod in pods if selected(pod, options)]


# -- pods that would come straight back ---------------------------------------------------------------------

UNSCHEDULABLE = Taint("node.kubernetes.io/unschedulable", "NoSchedule")


def keeping_off(node_taints: Iterable[Mapping[str, Any]], cordoned: bool) -> list[Taint]:
    """What keeps new pods off a node: its NoSchedule and NoExecute taints, and a cordon (which the scheduler
    reads as the node.kubernetes.io/unschedulable:NoSchedule taint)."""
    found = [Taint.from_dict(t) for t in node_taints if t.get("effect") in ("NoSchedule", "NoExecute")]
    if cordoned and UNSCHEDULABLE.identity() not in {t.identity() for t in found}:
        found.append(UNSCHEDULABLE)
    return found


def tolerated(pod: Pod, blocking: Iterable[Taint]) -> list[Taint]:
    """The taints of ``blocking`` this pod tolerates."""
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    return [taint for taint in blocking if any(tolerates(t, taint) for t in tolerations)]


def comes_back(pod: Pod, blocking: list[Taint]) -> bool:
    """Would this pod's replacement (same template, same tolerations) be let back onto the node? Yes when it
    tolerates everything that keeps new pods off it (or nothing does)."""
    return len(tolerated(pod, blocking)) == len(blocking)


def returning_reason(blocking: list[Taint]) -> str:
    if not blocking:
        return "the node is neither cordoned nor tainted NoSchedule: its replacement could be scheduled right back"
    return (f"it tolerates {', '.join(map(str, blocking))}: its replacement could be scheduled right back onto "
            f"the node")
