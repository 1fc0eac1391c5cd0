"""Does a node advertise what its MIG config should produce? Pure comparison."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from migrollout import labels, nodes
from migrollout.advertised import advertise, verified_label_keys
from migrollout.catalogue import GpuModel
from migrollout.migconfig.document import MigPartedConfig
from migrollout.migconfig.layouts import resolve


@dataclass
class Expectation:
    resources: dict[str, int]
    labels: dict[str, str]


@dataclass
class Comparison:
    expected: dict[str, Any]
    actual: dict[str, Any]
    mismatches: list[str] = field(default_factory=list)


def expect(config: MigPartedConfig, name: str, model: GpuModel, gpu_count: int, strategy: str) -> Expectation:
    layouts = resolve(config, name, model, gpu_count)
    untouched = [str(i) for i, layout in enumerate(layouts) if layout is None]
    if untouched:
        raise ValueError(f"MIG config {name} leaves GPU(s) {','.join(untouched)} of this {model.key} node as they "
                         f"were; what they advertise cannot be predicted")
    advertised = advertise(model, [layout for layout in layouts if layout is not None], strategy)
    return Expectation(dict(advertised.resources), verified_label_keys(advertised.labels))


def observe(node: dict[str, Any]) -> dict[str, Any]:
    allocatable = node.get("status", {}).get("allocatable") or {}
    resources = {k: int(v) for k, v in allocatable.items()
                 if labels.is_gpu_resource(k) and str(v) not in ("0", "")}
    return {"resources": resources, "labels": verified_label_keys(nodes.node_labels(node))}


def compare(node: dict[str, Any], config: str, expectation: Expectation) -> Comparison:
    actual = observe(node)
    found_labels = nodes.node_labels(node)
    mismatches: list[str] = []
    if found_labels.get(labels.MIG_CONFIG) != config:
        mismatches.append(f"{labels.MIG_CONFIG} is {found_labels.get(labels.MIG_CONFIG)!r}, not {config!r}")
    state = found_labels.get(labels.MIG_CONFIG_STATE, "")
    if state != "success":
        mismatches.append(f"{labels.MIG_CONFIG_STATE} is {state or '(unset)'!r}, not 'success'")
    for key in sorted(nodes.paused_operands(node)):
        mismatches.append(f"{key} is still {labels.PAUSED}")
    for resource in sorted(set(expectation.resources) | set(actual["resources"])):
        want, have = expectation.resources.get(resource, 0), actual["resources"].get(resource, 0)
        if want != have:
            mismatches.append(f"allocatable {resource}: expected {want}, found {have}")
    for key in sorted(set(expectation.labels) | set(actual["labels"])):
        want, have = expectation.labels.get(key), actual["labels"].get(key)
        if want != have:
            mismatches.append(f"label {key}: expected {want!r}, found {have!r}")
    expected = {"resources": expectation.resources, "labels": expectation.labels}
    return Comparison(expected, actual, mismatches)
