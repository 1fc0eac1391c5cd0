"""Registry mirrors computed from a chart's own values (every mapping with a repository, subcharts too)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import yaml

from migrollout.chart_images import ChartError, chart_values, mirror_overrides, mirrored


@pytest.mark.parametrize("repository, expected", [
    ("nvcr.io/nvidia", "mirror.local:5000/nvidia"),
    ("nvcr.io/nvidia/cloud-native", "mirror.local:5000/nvidia/cloud-native"),
    ("registry.k8s.io/nfd/node-feature-discovery", "mirror.local:5000/nfd/node-feature-discovery"),
    ("localhost/x/y", "mirror.local:5000/x/y"),
    ("quay.io:443/a/b", "mirror.local:5000/a/b"),
    ("bitnami/kubectl", "mirror.local:5000/bitnami/kubectl"),  # Docker Hub: no registry in the name
    ("busybox", "mirror.local:5000/library/busybox"),
])
def test_mirrored_keeps_the_path_and_replaces_the_registry(repository: str, expected: str) -> None:
    assert mirrored(repository, "mirror.local:5000/") == expected


def _chart(root: Path, values: dict, dependencies: list | None = None) -> Path:
    root.mkdir(parents=True)
    (root / "Chart.yaml").write_text(yaml.safe_dump({"apiVersion": "v2", "name": root.name, "version": "1.0.0",
                                                     "dependencies": dependencies or []}))
    (root / "values.yaml").write_text(yaml.safe_dump(values))
    return root


def test_every_repository_of_the_chart_and_its_subcharts_is_mirrored(tmp_path: Path) -> None:
    parent = _chart(tmp_path / "parent", {
        "operator": {"repository": "nvcr.io/nvidia", "image": "gpu-operator"},
        "driver": {"repository": "nvcr.io/nvidia", "manager": {"repository": "nvcr.io/nvidia/cloud-native"}},
        "vgpuManager": {"repository": ""},  # unset in the chart: left alone
        "nfd": {"enabled": True},
    }, dependencies=[{"name": "node-feature-discovery", "version": "0.17.3"},
                     {"name": "sidecar", "alias": "extra", "version": "1.0.0"}])
    _chart(parent / "charts" / "node-feature-discovery",
           {"image": {"repository": "registry.k8s.io/nfd/node-feature-discovery", "tag": "v0.17.3"}})
    packed = _chart(tmp_path / "sidecar", {"image": {"repository": "docker.io/acme/sidecar"}})
    with tarfile.open(parent / "charts" / "sidecar-1.0.0.tgz", "w:gz") as archive:
        archive.add(packed, arcname="sidecar")

    found = chart_values(parent)
    assert set(found) == {"", "node-feature-discovery", "extra"}
    assert mirror_overrides(found, "mirror.local") == {
        "operator": {"repository": "mirror.local/nvidia"},
        "driver": {"repository": "mirror.local/nvidia",
                   "manager": {"repository": "mirror.local/nvidia/cloud-native"}},
        "node-feature-discovery": {"image": {"repository": "mirror.local/nfd/node-feature-discovery"}},
        "extra": {"image": {"repository": "mirror.local/acme/sidecar"}},
    }


@pytest.mark.parametrize("mirror", ["", "https://mirror.local", " mirror.local"])
def test_a_mirror_that_is_not_a_registry_name_is_refused(mirror: str) -> None:
    with pytest.raises(ChartError, match="is not a registry"):
        mirror_overrides({"": {"a": {"repository": "nvcr.io/x"}}}, mirror)
