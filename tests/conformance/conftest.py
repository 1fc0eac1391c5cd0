"""Fixtures for conformance tests: the toolkit checked against NVIDIA's own code.

NVIDIA's components (the mig-oracle helper, nvidia-mig-parted, the operator module's files) are built by
`make binaries` / `simcluster build` from pinned Go modules. When they are missing the tests fail rather
than skip: a conformance suite that quietly skips proves nothing, and every make target that runs tests
builds them first.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml

from simcluster import upstream


@pytest.fixture(scope="session")
def built() -> upstream.Upstream:
    found = upstream.find()
    if found is None:
        pytest.fail(f"NVIDIA's components are not built (expected in {upstream.upstream_dir()}): "
                    f"run 'make binaries' (or 'simcluster build') first", pytrace=False)
    return found


@pytest.fixture(scope="session")
def oracle(built: upstream.Upstream) -> Iterator[upstream.MigOracle]:
    with upstream.MigOracle(built.mig_oracle) as helper:
        yield helper


@pytest.fixture(scope="session")
def default_mig_document(built: upstream.Upstream) -> str:
    """The mig-parted config file inside the operator module's default MIG ConfigMap."""
    configmap = yaml.safe_load(built.default_mig_config.read_text())
    return configmap["data"]["config.yaml"]
