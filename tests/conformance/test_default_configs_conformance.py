"""The toolkit's recorded default MIG configs against the GPU Operator module's own ConfigMap.

The simulated cluster runs the operator module pinned in simcluster.upstream (its versions.mk says
v25.3.4, and its chart deploys MIG manager v0.12.3); the toolkit's defaults for that release must be that
module's ``assets/state-mig-manager/0400_configmap.yaml``, config by config and entry by entry, and select
the same entries as mig-parted on every GPU model.
"""

from __future__ import annotations

import pytest
import yaml
from fixtures_mig import ORACLE_DIALECT

from migrollout import catalogue, default_config
from migrollout.migconfig.document import ConfigEntry, MigPartedConfig, parse_config_text
from migrollout.migconfig.layouts import walk
from simcluster import upstream

MODULE_RELEASE = "v25.3.4"


def _entry_facts(entry: ConfigEntry) -> tuple:
    filters = tuple(sorted(f.device_id if f.device_id is not None else f.text for f in entry.filters))
    return entry.devices, entry.mig_enabled, dict(sorted(entry.mig_devices.items())), filters


def _facts(config: MigPartedConfig) -> dict[str, list[tuple]]:
    return {name: [_entry_facts(entry) for entry in config.entries(name)] for name in config.names()}


@pytest.fixture(scope="module")
def module_defaults(default_mig_document: str) -> MigPartedConfig:
    return parse_config_text(default_mig_document, ORACLE_DIALECT)


def test_module_release_is_the_recorded_one(built: upstream.Upstream) -> None:
    values = yaml.safe_load((built.chart / "values.yaml").read_text())
    tag = values["migManager"]["version"]
    assert tag.split("-")[0] == default_config.mig_manager_version(MODULE_RELEASE) == "v0.12.3"
    assert default_config.defaults_version(MODULE_RELEASE) == MODULE_RELEASE


def test_recorded_defaults_are_the_modules_configmap(module_defaults: MigPartedConfig) -> None:
    recorded = default_config.default_mig_config(MODULE_RELEASE)
    theirs, ours = _facts(module_defaults), _facts(recorded)
    assert sorted(ours) == sorted(theirs)
    different = {name: (ours[name], theirs[name]) for name in theirs if ours[name] != theirs[name]}
    assert different == {}


def test_recorded_defaults_select_what_mig_parted_selects(oracle: upstream.MigOracle,
                                                          default_mig_document: str) -> None:
    recorded = default_config.default_mig_config(MODULE_RELEASE)
    gpus = [(index, model.device_filter) for index, model in enumerate(m for m in catalogue.MODELS)]
    ids = [int(device_id, 16) for _, device_id in gpus]
    compared = 0
    for name in recorded.names():
        answers = oracle.select(default_mig_document, name, gpus)
        steps = walk(recorded, name, ids)
        for (index, _), answer in zip(gpus, answers, strict=True):
            assert [s.entry for s in steps if s.index == index] == answer["matches"], (name, index)
            compared += 1
    assert compared == len(recorded.names()) * len(catalogue.MODELS)
