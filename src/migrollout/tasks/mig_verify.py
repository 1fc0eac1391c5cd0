"""mig_node_verify: check that a node advertises the resources and labels its MIG config should produce."""

from __future__ import annotations

import time
from typing import Any

from migrollout import labels, nodes
from migrollout.advertised import STRATEGIES
from migrollout.ansible_glue import TaskContext, TaskFailed, TaskSpec
from migrollout.kube import KubeError
from migrollout.migsetup import discover
from migrollout.verification import compare, expect

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "name": {"type": "str", "required": True},
    "config": {"type": "str"},
    "strategy": {"type": "str", "choices": list(STRATEGIES)},
    "wait_timeout": {"type": "int", "default": 300},
    "gpu_count": {"type": "int"},
    "operator_namespace": {"type": "str"},
    "config_map": {"type": "str"},
}


def run(ctx: TaskContext) -> dict[str, Any]:
    params = ctx.params
    name = params["name"]
    started = time.monotonic()
    if params["wait_timeout"] < 0:
        raise TaskFailed("wait_timeout must be 0 or more")
    node = nodes.read(ctx.api, name)
    model = nodes.require_mig_node(node)
    config = params.get("config") or nodes.mig_config(node)
    if not config:
        raise TaskFailed(f"node {name} has no {labels.MIG_CONFIG} label and no config was given")
    setup = discover(ctx.api, name, params.get("operator_namespace"), params.get("config_map"),
                     params.get("strategy"))
    if config not in setup.config:
        raise TaskFailed(f"node {name}: MIG config {config} is not in ConfigMap {setup.namespace}/{setup.config_map}")
    count = params.get("gpu_count") or nodes.physical_gpu_count(node, setup.config, model)
    if not count:
        raise TaskFailed(f"node {name}: cannot tell how many GPUs it has from its labels; pass gpu_count")
    expectation = expect(setup.config, config, model, count, setup.strategy)

    deadline = started + params["wait_timeout"]
    comparison = compare(node, config, expectation)
    version = node["metadata"]["resourceVersion"]
    # GPU feature discovery and the device plugin catch up after the MIG manager's success: watch, don't poll.
    while comparison.mismatches and time.monotonic() < deadline:
        try:
            for kind, current in ctx.api.watch("/api/v1/nodes", resource_version=version, what=f"watch node {name}",
                                               field_selector=f"metadata.name={name}",
                                               timeout_seconds=max(1, int(deadline - time.monotonic()))):
                if kind == "BOOKMARK":
                    continue
                version = current["metadata"]["resourceVersion"]
                comparison = compare(current, config, expectation)
                if not comparison.mismatches or time.monotonic() >= deadline:
                    break
        except KubeError as exc:
            if not exc.gone:
                raise
            node = nodes.read(ctx.api, name)
            version = node["metadata"]["resourceVersion"]
            comparison = compare(node, config, expectation)
    result = {
        "changed": False, "name": name, "config": config, "strategy": setup.strategy, "gpu_model": model.key,
        "gpu_count": count, "expected": comparison.expected, "actual": comparison.actual,
        "mismatches": comparison.mismatches, "duration_s": round(time.monotonic() - started, 3),
    }
    if comparison.mismatches:
        raise TaskFailed(f"node {name} does not advertise what {config} should give under the {setup.strategy} "
                         f"strategy after {params['wait_timeout']} s: " + "; ".join(comparison.mismatches[:4])
                         + (f" (and {len(comparison.mismatches) - 4} more)" if len(comparison.mismatches) > 4
                            else ""), **result)
    return result


SPEC = TaskSpec("mig_node_verify", ARGUMENT_SPEC, run)
