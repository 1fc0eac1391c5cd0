"""Image registry mirrors for a Helm chart, from the chart's own values.

A chart names its images in its values (and its subcharts' values): a mapping with a ``repository`` key
(``{repository: nvcr.io/nvidia/cloud-native, image: k8s-mig-manager, version: v0.12.3}``, or NFD's
``{repository: registry.k8s.io/nfd/node-feature-discovery, tag: v0.17.3}``). A mirror keeps each image's
path and replaces only its registry, so the overrides are computed from the chart being installed, never
from a table that goes stale when a chart release moves an image (v26.x moved the validator from
``nvcr.io/nvidia/cloud-native/gpu-operator-validator`` to ``nvcr.io/nvidia/gpu-operator``).
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

Values = dict[str, Any]


class ChartError(ValueError):
    pass


def _load_yaml(text: str, where: str) -> Values:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ChartError(f"{where} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ChartError(f"{where} is not a mapping")
    return data


def _subchart_key(chart_yaml: Values, name: str) -> str:
    """The key a subchart's values live under in the parent's values: its alias, else its name."""
    for dependency in chart_yaml.get("dependencies") or []:
        if isinstance(dependency, dict) and dependency.get("name") == name:
            return str(dependency.get("alias") or name)
    return name


def chart_values(chart_dir: str | Path) -> dict[str, Values]:
    """The default values of a chart on disk and of each subchart it vendors (``charts/<dir>`` or
    ``charts/<name>-<version>.tgz``), keyed by where they sit in the parent's values ("" for the parent)."""
    root = Path(chart_dir)
    chart_yaml = _load_yaml((root / "Chart.yaml").read_text(), f"{root}/Chart.yaml")
    values_file = root / "values.yaml"
    found = {"": _load_yaml(values_file.read_text(), str(values_file)) if values_file.exists() else {}}
    charts = root / "charts"
    if not charts.is_dir():
        return found
    for entry in sorted(charts.iterdir()):
        if entry.is_dir() and (entry / "Chart.yaml").exists():
            sub_chart = _load_yaml((entry / "Chart.yaml").read_text(), f"{entry}/Chart.yaml")
            sub_values = entry / "values.yaml"
            key = _subchart_key(chart_yaml, str(sub_chart.get("name", entry.name)))
            found[key] = _load_yaml(sub_values.read_text(), str(sub_values)) if sub_values.exists() else {}
        elif entry.name.endswith(".tgz"):
            with tarfile.open(entry) as archive:
                members = {m.name.split("/", 1)[-1]: m for m in archive.getmembers() if m.name.count("/") == 1}
                meta = archive.extractfile(members["Chart.yaml"]) if "Chart.yaml" in members else None
                if meta is None:
                    continue
                sub_chart = _load_yaml(io.TextIOWrapper(meta).read(), f"{entry}:Chart.yaml")
                values = archive.extractfile(members["values.yaml"]) if "values.yaml" in members else None
                key = _subchart_key(chart_yaml, str(sub_chart.get("name", "")))
                found[key] = _load_yaml(io.TextIOWrapper(values).read(), f"{entry}:values.yaml") if values else {}
    return found


def _repositories(values: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """(path to the mapping, repository) for every mapping with a non-empty string ``repository``."""
    if isinstance(values, Mapping):
        repository = values.get("repository")
        if isinstance(repository, str) and repository.strip():
            yield path, repository.strip()
        for key, value in values.items():
            if isinstance(value, Mapping):
                yield from _repositories(value, (*path, str(key)))


def _has_registry(first: str) -> bool:
    # As the container runtimes decide: a first path component with a dot or a port, or localhost.
    return "." in first or ":" in first or first == "localhost"


def mirrored(repository: str, mirror: str) -> str:
    """``repository`` pulled from ``mirror``: the registry replaced, the path kept (Docker Hub's implicit
    ``docker.io`` and ``library/`` made explicit as a mirror of it would hold them)."""
    first, _, rest = repository.partition("/")
    if not rest:
        path = f"library/{repository}"
    elif _has_registry(first):
        path = rest
    else:
        path = repository
    return f"{mirror.rstrip('/')}/{path}"


def mirror_overrides(values_by_chart: Mapping[str, Values], mirror: str) -> Values:
    """Values that pull every image of the chart and its subcharts from ``mirror``."""
    if not mirror.strip() or "://" in mirror or mirror.strip() != mirror:
        raise ChartError(f"registry mirror {mirror!r} is not a registry host[:port][/path] (no scheme, no spaces)")
    overrides: Values = {}
    for chart_key, values in values_by_chart.items():
        for path, repository in _repositories(values):
            full = ((chart_key,) if chart_key else ()) + path
            target = overrides
            for key in full:
                target = target.setdefault(key, {})
            target["repository"] = mirrored(repository, mirror)
    return overrides
