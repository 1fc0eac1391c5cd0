"""The capacity check before eviction: where each GPU pod could go, and why nowhere."""

import pytest

from migrollout.capacity import (
    Capacity,
    check_node,
    check_rollout,
    gpu_requests,
    movable_first,
    nowhere,
    selector_problem,
    toleration_matches,
    untolerated_taint,
)

MIG = "nvidia.com/mig-1g.10gb"


def node(name, gpus=0, mig=0, labels=None, taints=None, cordoned=False):
    allocatable = {"cpu": "64", "nvidia.com/gpu": str(gpus)}
    if mig:
        allocatable[MIG] = str(mig)
    return {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
            "spec": {"taints": taints or [], **({"unschedulable": True} if cordoned else {})},
            "status": {"allocatable": allocatable}}


def pod(name, on="", gpus=0, mig=0, phase="Running", selector=None, affinity=None, tolerations=None, init=None):
    limits = {}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    if mig:
        limits[MIG] = str(mig)
    spec = {"containers": [{"name": "main", "resources": {"limits": limits}}]}
    if on:
        spec["nodeName"] = on
    if selector:
        spec["nodeSelector"] = selector
    if affinity:
        spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": affinity}}
    if tolerations:
        spec["tolerations"] = tolerations
    if init:
        spec["initContainers"] = init
    return {"metadata": {"namespace": "ml", "name": name}, "spec": spec, "status": {"phase": phase}}


def test_requests_as_the_scheduler_counts_them():
    assert gpu_requests(pod("a", gpus=2)) == {"nvidia.com/gpu": 2}
    two = pod("b", gpus=1)
    two["spec"]["containers"].append({"name": "side", "resources": {"requests": {MIG: "2"}, "limits": {MIG: "2"}}})
    assert gpu_requests(two) == {"nvidia.com/gpu": 1, MIG: 2}
    # an init container counts if it needs more than the containers together; a sidecar adds up
    init = pod("c", gpus=1, init=[{"name": "warm", "resources": {"limits": {"nvidia.com/gpu": "4"}}},
                                  {"name": "proxy", "restartPolicy": "Always",
                                   "resources": {"limits": {MIG: "1"}}}])
    assert gpu_requests(init) == {"nvidia.com/gpu": 4, MIG: 1}
    assert gpu_requests(pod("cpu")) == {}


@pytest.mark.parametrize(("toleration", "taint", "expected"), [
    ({"key": "mig", "operator": "Equal", "value": "maintenance", "effect": "NoSchedule"},
     {"key": "mig", "value": "maintenance", "effect": "NoSchedule"}, True),
    ({"key": "mig", "value": "other"}, {"key": "mig", "value": "maintenance", "effect": "NoSchedule"}, False),
    ({"key": "mig", "operator": "Exists"}, {"key": "mig", "value": "maintenance", "effect": "NoExecute"}, True),
    ({"operator": "Exists"}, {"key": "anything", "effect": "NoSchedule"}, True),          # tolerates everything
    ({"operator": "Exists", "effect": "NoExecute"}, {"key": "x", "effect": "NoSchedule"}, False),
    ({"key": "mig", "operator": "Exists", "effect": "NoSchedule"}, {"key": "mig", "effect": "NoExecute"}, False),
    ({"key": "other", "operator": "Exists"}, {"key": "mig", "effect": "NoSchedule"}, False),
])
def test_toleration_matching_as_the_api_defines_it(toleration, taint, expected):
    assert toleration_matches(toleration, taint) is expected


def test_only_noschedule_and_noexecute_taints_exclude_and_a_cordon_is_a_taint():
    soft = node("n", taints=[{"key": "soft", "effect": "PreferNoSchedule"}])
    assert untolerated_taint(pod("p"), soft) is None
    assert untolerated_taint(pod("p"), node("n", cordoned=True))["key"] == "node.kubernetes.io/unschedulable"
    everything = pod("p", tolerations=[{"operator": "Exists"}])
    assert untolerated_taint(everything, node("n", cordoned=True)) is None


def term(*expressions, fields=()):
    return {"nodeSelectorTerms": [{"matchExpressions": list(expressions), "matchFields": list(fields)}]}


LABELS = {"gpu-pool": "train", "gpus": "8"}


@pytest.mark.parametrize(("affinity", "fits"), [
    (term({"key": "gpu-pool", "operator": "In", "values": ["train", "serve"]}), True),
    (term({"key": "gpu-pool", "operator": "In", "values": ["serve"]}), False),
    (term({"key": "gpu-pool", "operator": "NotIn", "values": ["serve"]}), True),
    (term({"key": "zone", "operator": "NotIn", "values": ["a"]}), True),               # absent label: NotIn holds
    (term({"key": "gpu-pool", "operator": "Exists"}), True),
    (term({"key": "gpu-pool", "operator": "DoesNotExist"}), False),
    (term({"key": "gpus", "operator": "Gt", "values": ["4"]}), True),
    (term({"key": "gpus", "operator": "Lt", "values": ["4"]}), False),
    (term({"key": "gpu-pool", "operator": "Gt", "values": ["4"]}), False),              # not a number
    (term(fields=[{"key": "metadata.name", "operator": "In", "values": ["n"]}]), True),
    (term(fields=[{"key": "metadata.name", "operator": "NotIn", "values": ["n"]}]), False),
    ({"nodeSelectorTerms": [{}]}, False),                                                # an empty term: no node
    ({"nodeSelectorTerms": [{"matchExpressions": [{"key": "gpu-pool", "operator": "In", "values": ["x"]}]},
                            {"matchExpressions": [{"key": "gpus", "operator": "Exists"}]}]}, True),  # terms ORed
    (term({"key": "gpu-pool", "operator": "Exists"}, {"key": "zone", "operator": "Exists"}), False),  # ANDed
])
def test_required_node_affinity(affinity, fits):
    assert (selector_problem(pod("p", affinity=affinity), node("n", labels=LABELS)) == "") is fits


def test_node_selector():
    assert selector_problem(pod("p", selector={"gpu-pool": "train"}), node("n", labels=LABELS)) == ""
    assert selector_problem(pod("p", selector={"gpu-pool": "serve"}), node("n", labels=LABELS)) != ""


def test_a_pod_goes_where_allocatable_minus_requests_covers_it():
    nodes = [node("leaving", gpus=8), node("full", gpus=8), node("room", gpus=8)]
    pods = [pod("a", on="full", gpus=6), pod("b", on="room", gpus=2), pod("done", on="room", gpus=6, phase="Succeeded")]
    capacity = Capacity.of(nodes, pods)
    placed = capacity.place(pod("mover", on="leaving", gpus=4), leaving="leaving")
    assert placed.node == "room"                     # 8 - 2 (a finished pod holds nothing)
    again = capacity.place(pod("second", on="leaving", gpus=4), leaving="leaving")
    assert again.node == ""                          # the first mover's claim counts
    assert again.reason == ("0/3 nodes are available: 2 Insufficient nvidia.com/gpu, 1 node(s) being emptied")


def test_mig_resources_are_matched_by_name():
    capacity = Capacity.of([node("a", gpus=8), node("b", mig=7)], [])
    assert capacity.place(pod("p", mig=3)).node == "b"
    assert capacity.place(pod("q", mig=5)).reason == "0/2 nodes are available: 2 Insufficient nvidia.com/mig-1g.10gb"


def test_cordoned_tainted_unavailable_and_mismatched_nodes_take_nothing():
    nodes = [node("cordoned", gpus=8, cordoned=True),
             node("tainted", gpus=8, taints=[{"key": "mig", "value": "maintenance", "effect": "NoSchedule"}]),
             node("busy", gpus=8), node("serve", gpus=8, labels={"gpu-pool": "serve"})]
    capacity = Capacity.of(nodes, [], unavailable={"busy": "in maintenance (this rollout)"})
    placed = capacity.place(pod("p", gpus=1, selector={"gpu-pool": "train"}))
    assert not placed.fits
    assert placed.reason == ("0/4 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
                             "1 node(s) had untolerated taint {mig: maintenance}, "
                             "1 node(s) in maintenance (this rollout), 1 node(s) were unschedulable")
    tolerant = pod("t", gpus=1, tolerations=[{"key": "mig", "operator": "Exists"}])
    assert capacity.place(tolerant).node == "tainted"


def test_pending_gpu_pods_claim_capacity_first():
    capacity = Capacity.of([node("a", gpus=4)], [pod("waiting", gpus=3)])
    assert capacity.place(pod("mover", gpus=2)).node == ""


def test_last_resort_nodes_are_tried_after_the_others():
    capacity = Capacity.of([node("todo", gpus=8), node("done", gpus=8)], [], last_resort=["todo"])
    assert capacity.place(pod("p", gpus=1)).node == "done"
    assert capacity.place(pod("q", gpus=8)).node == "todo"


def test_pods_without_gpu_requests_always_fit_and_the_helpers():
    capacity = Capacity.of([], [])
    placements = capacity.place_all([pod("cpu"), pod("gpu", gpus=1)])
    assert placements[0].fits and not placements[1].fits and placements[1].reason == "no other node"
    assert [p.pod for p in nowhere(placements)] == ["ml/gpu"]
    assert placements[1].as_dict()["requests"] == {"nvidia.com/gpu": 1}
    assert movable_first(["a", "b", "c", "d"], {"b"}) == ["a", "c", "d", "b"]


def test_checking_one_node_before_its_maintenance():
    nodes = [node("leaving", gpus=8), node("busy", gpus=8), node("free", gpus=8)]
    moving = [pod("m", on="leaving", gpus=4)]
    placed = check_node("leaving", moving, nodes, moving, unavailable={"free": "in maintenance (this rollout)"})
    assert placed[0].node == "busy"
    placed = check_node("leaving", moving, nodes, [*moving, pod("b", on="busy", gpus=6)],
                        unavailable={"free": "in maintenance (this rollout)"})
    assert not placed[0].fits


def test_the_plan_estimate_carries_claims_from_node_to_node_and_prefers_nodes_done_or_outside():
    nodes = [node("n1", gpus=8), node("n2", gpus=8), node("n3", gpus=8), node("spare", gpus=8)]
    evicting = {"n1": [pod("a", on="n1", gpus=8)], "n2": [pod("b", on="n2", gpus=8)],
                "n3": [pod("c", on="n3", gpus=8)]}
    pods = [p for moving in evicting.values() for p in moving]
    placed = check_rollout(["n1", "n2", "n3"], evicting, nodes, pods)
    assert placed["n1"][0].node == "spare"          # not n2 or n3: still to be reconfigured
    assert placed["n2"][0].node == "n1"             # spare is taken; n1 is back, empty
    assert placed["n3"][0].node == "n2"
    tight = check_rollout(["n1", "n2"], evicting, nodes[:2], pods[:2])
    assert not tight["n1"][0].fits and not tight["n2"][0].fits   # n1 is left alone (refused): still full
