"""The pool's budget counted again on the cluster before a node is touched: every node of the pool out of service
now counts, whoever took it out (this run, an admin, NVIDIA's driver upgrade)."""

from migrollout.rollout import maintenance
from migrollout.rollout.maintenance import PoolBudget


def gpu_node(name, pool="a100", cordoned=False, taints=None, ready=True):
    return {"metadata": {"name": name, "labels": {"gpu-pool": pool, "nvidia.com/gpu.present": "true",
                                                  "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}},
            "spec": {"taints": taints or [], **({"unschedulable": True} if cordoned else {})},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


class Nodes:
    """Lists nodes as the API server does for a label selector of one label=value; counts the lists."""

    def __init__(self, *nodes):
        self.nodes = list(nodes)
        self.lists = []

    def list(self, path, what="", label_selector=None, **_):
        self.lists.append(label_selector)
        key, value = label_selector.split("=", 1)
        return [n for n in self.nodes if n["metadata"]["labels"].get(key) == value], "1"


BUDGET = PoolBudget("a100", 2)


def test_nodes_out_of_service_in_the_pool_are_counted_whoever_took_them_out():
    api = Nodes(gpu_node("a"), gpu_node("b", cordoned=True),
                gpu_node("c", taints=[{"key": "mig", "value": "maintenance", "effect": "NoSchedule"}]),
                gpu_node("d", ready=False), gpu_node("e", pool="h100", cordoned=True))
    assert maintenance.pool_out_of_service(api, "a", BUDGET) == [
        "b (cordoned)", "c (tainted mig=maintenance:NoSchedule)", "d (not Ready)"]
    assert api.lists == ["gpu-pool=a100"]


def test_room_when_the_node_fits_the_budget_else_refused_or_waited_for():
    api = Nodes(gpu_node("a"), gpu_node("b", cordoned=True))
    assert maintenance.wait_for_pool_room(api, "a", BUDGET, "refuse", 600, lambda: None)[0] == []
    api.nodes.append(gpu_node("c", cordoned=True))
    out, _ = maintenance.wait_for_pool_room(api, "a", BUDGET, "refuse", 600, lambda: None)
    assert out == ["b (cordoned)", "c (cordoned)"]

    clock = {"t": 0.0}

    def sleep(seconds):   # while it waits, NVIDIA's driver upgrade uncordons c
        clock["t"] += seconds
        api.nodes[2]["spec"].pop("unschedulable", None)

    out, waited = maintenance.wait_for_pool_room(api, "a", BUDGET, "wait", 600, lambda: None, sleep=sleep,
                                                 clock=lambda: clock["t"])
    assert out == [] and waited == 5.0


def test_without_a_budget_nothing_is_counted():
    assert PoolBudget.from_params(None) is None
    assert PoolBudget.from_params({"pool": "a100", "budget": 1}) == PoolBudget("a100", 1)
