"""A registry mirror on NVIDIA's own chart (the operator module's, NFD subchart included): with the mirror the
role computes, no image the chart renders, and no operand image its ClusterPolicy names, points outside it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from migrollout.chart_images import chart_values, mirror_overrides
from migrollout.operator_values import build_values, deep_merge
from simcluster import binaries, upstream

MIRROR = "mirror.example.com:5000/gpu"


def images(node: Any) -> Iterator[str]:
    """Every container image a rendered manifest names."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "image" and isinstance(value, str):
                yield value
            else:
                yield from images(value)
    elif isinstance(node, list):
        for item in node:
            yield from images(item)


def repositories(node: Any) -> Iterator[str]:
    """Every operand repository a ClusterPolicy spec names (the operator builds images from them)."""
    if isinstance(node, dict):
        if isinstance(node.get("repository"), str) and node["repository"]:
            yield node["repository"]
        for value in node.values():
            yield from repositories(value)
    elif isinstance(node, list):
        for item in node:
            yield from repositories(item)


def render(chart: Path, values: dict[str, Any], tmp_path: Path) -> list[dict[str, Any]]:
    helm = binaries.find()
    assert helm is not None, "control-plane binaries are not built (make binaries)"
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    rendered = subprocess.run([helm.path("helm"), "template", "gpu-operator", str(chart), "--namespace",
                               "gpu-operator", "--values", str(values_file), "--include-crds"],
                              capture_output=True, text=True, check=True)
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


@pytest.mark.parametrize("strategy", ["mixed", "single"])
def test_no_rendered_image_points_outside_the_mirror(built: upstream.Upstream, tmp_path: Path, strategy: str) -> None:
    chart = built.chart
    role_values = build_values(strategy, dcgm=True, mig_configs={"custom": [{"devices": "all", "mig-enabled": False}]})
    docs = render(chart, deep_merge(mirror_overrides(chart_values(chart), MIRROR), role_values), tmp_path)
    # A ClusterPolicy names operand images as repository + image + version; everything else, whole references.
    rendered = [image for doc in docs if doc.get("kind") != "ClusterPolicy" for image in images(doc)]
    policy = next(doc for doc in docs if doc.get("kind") == "ClusterPolicy")
    operand = list(repositories(policy["spec"]))
    # The chart renders the operator, its CRD hook, NFD's master/worker/gc, and a ClusterPolicy naming a dozen
    # operand registries: enough that a table of paths kept by hand would miss one.
    assert len(rendered) >= 4 and len(operand) >= 10
    outside = sorted({name for name in rendered + operand if not name.startswith(MIRROR + "/")})
    assert not outside, f"images outside the mirror: {outside}"


def test_without_a_mirror_the_chart_pulls_from_nvidia_and_kubernetes_registries(built: upstream.Upstream,
                                                                               tmp_path: Path) -> None:
    docs = render(built.chart, build_values("mixed"), tmp_path)
    registries = {name.split("/", 1)[0] for doc in docs for name in (
        repositories(doc["spec"]) if doc.get("kind") == "ClusterPolicy" else images(doc))}
    assert {"nvcr.io", "registry.k8s.io"} <= registries
