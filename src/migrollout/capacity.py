"""Before a node's GPU pods are evicted: has each of them somewhere to go?

Pure: it works on the nodes and pods the caller listed once. Each pod to move is placed, first fit, on
another node the way the scheduler's filters would judge it, for the predicates that decide where a GPU
pod can land:

- the node is schedulable: not cordoned (unless the pod tolerates ``node.kubernetes.io/unschedulable``),
  not in maintenance or about to be (the caller names those nodes), not the node being emptied;
- its GPU resources (``nvidia.com/gpu`` and every ``nvidia.com/mig-*``): allocatable minus what the
  non-terminated pods bound to it request, minus what this run has already claimed there, covers the
  pod's request (a pod's request as the scheduler counts it: the sum over its containers, or its
  largest init container if that is more, plus its overhead);
- the pod's ``nodeSelector`` and required node affinity (``requiredDuringSchedulingIgnoredDuringExecution``:
  terms ORed, expressions ANDed; ``In``, ``NotIn``, ``Exists``, ``DoesNotExist``, ``Gt``, ``Lt``, and
  ``matchFields`` on ``metadata.name``);
- the node's ``NoSchedule`` and ``NoExecute`` taints against the pod's tolerations, matched as the API
  defines it (an empty key with ``Exists`` tolerates everything; an empty effect matches every effect).

Not checked (this is not a scheduler): CPU, memory, ephemeral storage and other non-GPU resources; pod
affinity and anti-affinity; topology spread constraints; ``PreferNoSchedule`` taints and preferred
affinity (they rank, never exclude); volumes (zones, attach limits, node-local PersistentVolumes); host
ports; DRA claims; priority and preemption; scheduling gates; the node's pod count limit.

GPU pods waiting to be scheduled (Pending, no node yet) claim capacity first: they were there before this
run's pods. Capacity claimed by pods this run moved is counted as the caller passes the pods again (they
are bound, or pending) and, within one call, by :class:`Capacity` itself.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from migrollout.labels import is_gpu_resource

Pod = Mapping[str, Any]
Node = Mapping[str, Any]

UNSCHEDULABLE_TAINT = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
TERMINATED = ("Succeeded", "Failed")

CHECKED = ("node schedulable (cordon, maintenance)", "nvidia.com/gpu and nvidia.com/mig-* allocatable",
           "nodeSelector", "required node affinity", "NoSchedule and NoExecute taints vs tolerations")
NOT_CHECKED = ("CPU, memory and other non-GPU resources", "pod affinity and anti-affinity",
               "topology spread constraints", "PreferNoSchedule taints and preferred affinity",
               "volumes (zones, attach limits, local PersistentVolumes)", "host ports", "DRA resource claims",
               "priority and preemption", "scheduling gates", "the node's pod limit")


def _labels(node: Node) -> Mapping[str, str]:
    return (node.get("metadata") or {}).get("labels") or {}


def _quantity(value: Any) -> int:
    """An extended resource's quantity (whole numbers; the API refuses fractions for them)."""
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        pass
    for suffix, factor in (("k", 10**3), ("M", 10**6), ("Ki", 2**10), ("Mi", 2**20)):
        if text.endswith(suffix) and text[: -len(suffix)].isdigit():
            return int(text[: -len(suffix)]) * factor
    try:
        return int(float(text))
    except ValueError:
        return 0


def _container_requests(container: Mapping[str, Any]) -> dict[str, int]:
    resources = container.get("resources") or {}
    # An extended resource's request defaults to its limit (and must equal it when both are given).
    found = {name: _quantity(value) for name, value in (resources.get("limits") or {}).items()
             if is_gpu_resource(name)}
    found.update({name: _quantity(value) for name, value in (resources.get("requests") or {}).items()
                  if is_gpu_resource(name)})
    return found


def gpu_requests(pod: Pod) -> dict[str, int]:
    """The pod's GPU and MIG requests as the scheduler counts them."""
    spec = pod.get("spec") or {}
    total: dict[str, int] = {}
    for container in spec.get("containers") or []:
        for name, value in _container_requests(container).items():
            total[name] = total.get(name, 0) + value
    for container in spec.get("initContainers") or []:
        for name, value in _container_requests(container).items():
            # A restartable init container (a sidecar) runs alongside the containers.
            if container.get("restartPolicy") == "Always":
                total[name] = total.get(name, 0) + value
            else:
                total[name] = max(total.get(name, 0), value)
    for name, value in (spec.get("overhead") or {}).items():
        if is_gpu_resource(name):
            total[name] = total.get(name, 0) + _quantity(value)
    return {name: value for name, value in total.items() if value > 0}


def pod_ref(pod: Pod) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


# -- the predicates -------------------------------------------------------------------------------------------

def toleration_matches(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """The API's ``Toleration.ToleratesTaint``."""
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("key") and toleration["key"] != taint.get("key"):
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return True
    if operator == "Equal":
        return str(toleration.get("value") or "") == str(taint.get("value") or "")
    return False


def untolerated_taint(pod: Pod, node: Node) -> dict[str, Any] | None:
    """The first NoSchedule or NoExecute taint of the node that the pod does not tolerate."""
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    taints = [t for t in (node.get("spec") or {}).get("taints") or [] if t.get("effect") in ("NoSchedule", "NoExecute")]
    if (node.get("spec") or {}).get("unschedulable"):
        taints = [UNSCHEDULABLE_TAINT, *taints]
    for taint in taints:
        if not any(toleration_matches(t, taint) for t in tolerations):
            return dict(taint)
    return None


def _expression_matches(expression: Mapping[str, Any], found: Mapping[str, str]) -> bool:
    key, operator = expression.get("key", ""), expression.get("operator", "")
    values = [str(v) for v in expression.get("values") or []]
    if operator == "In":
        return key in found and found[key] in values
    if operator == "NotIn":
        return key not in found or found[key] not in values
    if operator == "Exists":
        return key in found
    if operator == "DoesNotExist":
        return key not in found
    if operator in ("Gt", "Lt"):
        if key not in found or len(values) != 1:
            return False
        try:
            have, bound = int(found[key]), int(values[0])
        except ValueError:
            return False
        return have > bound if operator == "Gt" else have < bound
    return False


def _term_matches(term: Mapping[str, Any], node: Node) -> bool:
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not expressions and not fields:
        return False  # an empty term matches no node
    node_labels = _labels(node)
    if not all(_expression_matches(e, node_labels) for e in expressions):
        return False
    node_fields = {"metadata.name": (node.get("metadata") or {}).get("name", "")}
    return all(f.get("key") == "metadata.name" and f.get("operator") in ("In", "NotIn")
               and _expression_matches(f, node_fields) for f in fields)


def selector_problem(pod: Pod, node: Node) -> str:
    """Why the pod's nodeSelector or required node affinity excludes the node ("" when they do not)."""
    spec = pod.get("spec") or {}
    node_labels = _labels(node)
    for key, value in (spec.get("nodeSelector") or {}).items():
        if node_labels.get(key) != value:
            return "node(s) didn't match Pod's node affinity/selector"
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms")
    if terms is not None and not any(_term_matches(term, node) for term in terms):
        return "node(s) didn't match Pod's node affinity/selector"
    return ""


# -- placing pods -------------------------------------------------------------------------------------------

@dataclass
class Placement:
    pod: str                              # namespace/name
    requests: dict[str, int]
    node: str = ""                        # where it fits ("" when nowhere)
    reason: str = ""                      # why nowhere, the scheduler's way: "0/12 nodes are available: ..."

    @property
    def fits(self) -> bool:
        return bool(self.node) or not self.requests

    def as_dict(self) -> dict[str, Any]:
        return {"pod": self.pod, "requests": self.requests, "node": self.node, "reason": self.reason}


@dataclass
class Capacity:
    """Free GPU resources per node, and the nodes a moved pod may not land on."""

    nodes: dict[str, Node]
    free: dict[str, dict[str, int]]
    unavailable: dict[str, str] = field(default_factory=dict)     # node -> why it takes no pod now
    last_resort: tuple[str, ...] = ()                             # nodes tried after every other one

    @classmethod
    def of(cls, cluster_nodes: Iterable[Node], pods: Iterable[Pod], unavailable: Mapping[str, str] | None = None,
           last_resort: Collection[str] = ()) -> Capacity:
        """The cluster's free GPU capacity: allocatable minus the requests of the non-terminated pods bound to
        each node. GPU pods not bound yet then claim theirs, first fit, as if the scheduler placed them first.

        ``unavailable``: nodes in maintenance or about to be (with why). ``last_resort``: nodes tried last
        (e.g. nodes this run has still to reconfigure: a pod moved there would move again)."""
        by_name = {n["metadata"]["name"]: n for n in cluster_nodes}
        free = {}
        for name, node in by_name.items():
            allocatable = (node.get("status") or {}).get("allocatable") or {}
            free[name] = {res: _quantity(v) for res, v in allocatable.items() if is_gpu_resource(res)}
        pending = []
        for pod in pods:
            if (pod.get("status") or {}).get("phase") in TERMINATED:
                continue
            bound = (pod.get("spec") or {}).get("nodeName")
            wanted = gpu_requests(pod)
            if not wanted:
                continue
            if bound:
                if bound in free:
                    for res, value in wanted.items():
                        free[bound][res] = free[bound].get(res, 0) - value
            else:
                pending.append(pod)
        last = set(last_resort)
        capacity = cls(by_name, free, dict(unavailable or {}),
                       tuple(name for name in by_name if name in last))
        for pod in pending:
            capacity.place(pod)
        return capacity

    def _candidates(self) -> list[str]:
        last = set(self.last_resort)
        return [name for name in self.nodes if name not in last] + list(self.last_resort)

    def place(self, pod: Pod, leaving: str = "") -> Placement:
        """Find the first node the pod fits, claim its requests there, and say where (or why nowhere)."""
        wanted = gpu_requests(pod)
        placement = Placement(pod_ref(pod), wanted)
        if not wanted:
            return placement  # no GPU request: not this check's business
        reasons: dict[str, int] = {}
        candidates = self._candidates()
        for name in candidates:
            why = self._refusal(pod, name, wanted, leaving)
            if not why:
                for res, value in wanted.items():
                    self.free[name][res] = self.free[name].get(res, 0) - value
                placement.node = name
                return placement
            reasons[why] = reasons.get(why, 0) + 1
        detail = ", ".join(f"{count} {why}" for why, count in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
        placement.reason = f"0/{len(candidates)} nodes are available: {detail}" if candidates else "no other node"
        return placement

    def _refusal(self, pod: Pod, name: str, wanted: Mapping[str, int], leaving: str) -> str:
        if name == leaving:
            return "node(s) being emptied"
        if name in self.unavailable:
            return f"node(s) {self.unavailable[name]}"
        node = self.nodes[name]
        taint = untolerated_taint(pod, node)
        if taint is not None:
            if taint.get("key") == UNSCHEDULABLE_TAINT["key"]:
                return "node(s) were unschedulable"
            value = f": {taint['value']}" if taint.get("value") else ""
            return f"node(s) had untolerated taint {{{taint.get('key')}{value}}}"
        problem = selector_problem(pod, node)
        if problem:
            return problem
        for res, value in sorted(wanted.items()):
            if self.free[name].get(res, 0) < value:
                return f"Insufficient {res}"
        return ""

    def place_all(self, pods: Iterable[Pod], leaving: str = "") -> list[Placement]:
        return [self.place(pod, leaving) for pod in pods]


def check_node(leaving: str, evicting: Iterable[Pod], cluster_nodes: Iterable[Node], pods: Iterable[Pod],
               unavailable: Mapping[str, str] | None = None, last_resort: Collection[str] = ()) -> list[Placement]:
    """Right before ``leaving`` is put into maintenance: where each of the GPU pods to evict from it could go."""
    capacity = Capacity.of(cluster_nodes, pods, unavailable, last_resort)
    return capacity.place_all(evicting, leaving)


def check_rollout(order: Iterable[str], evicting: Mapping[str, list[Pod]], cluster_nodes: Iterable[Node],
                  pods: Iterable[Pod], unavailable: Mapping[str, str] | None = None) -> dict[str, list[Placement]]:
    """The plan's estimate, node after node in the rollout's order: each pod moved claims its room, so later
    nodes see what earlier ones took; the nodes still to be reconfigured are the last resort (a pod moved there
    would move again). Nodes already reconfigured count with today's allocatable (their new layout is not
    known before the MIG manager applies it)."""
    listed = list(cluster_nodes)
    capacity = Capacity.of(listed, pods, unavailable)
    remaining = list(order)
    result = {}
    for node in list(remaining):
        remaining.remove(node)
        capacity.last_resort = tuple(name for name in capacity.nodes if name in set(remaining))
        result[node] = capacity.place_all(evicting.get(node, []), node)
        if all(p.fits for p in result[node]) and node in capacity.free:
            # evacuated: the node comes back with room for the pods of the nodes after it
            for pod in evicting.get(node, []):
                for res, value in gpu_requests(pod).items():
                    capacity.free[node][res] = capacity.free[node].get(res, 0) + value
    return result


def nowhere(placements: Iterable[Placement]) -> list[Placement]:
    return [p for p in placements if not p.fits]


def movable_first(order: list[str], stuck: Collection[str]) -> list[str]:
    """The plan's order with the nodes whose pods have nowhere to go moved last (stable otherwise):
    their pods may find room once other nodes are back."""
    blocked = set(stuck)
    return [n for n in order if n not in blocked] + [n for n in order if n in blocked]
