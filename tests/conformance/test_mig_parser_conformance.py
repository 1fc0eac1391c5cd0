"""The toolkit's mig-parted parser against mig-parted's own, over one corpus (see fixtures_mig).

For every document both must agree on accept or reject and on the config names; for every config of a
document both accept, on which entry mig-parted's walk applies to each GPU (every match, in order, and the
last one, which stays) for a set of GPUs of different PCI ids, and on that entry's MIG mode and devices.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from fixtures_mig import ORACLE_DIALECT, Case, corpus, mig_parted_dir, selection_gpus  # noqa: F401 (fixtures)

from migrollout.migconfig.document import MigPartedConfig, check_document, parse_config_text
from migrollout.migconfig.layouts import walk
from simcluster import upstream

CATEGORIES = ("upstream", "toolkit", "mismatch", "mutation")
# Configs per document whose selection is compared (all of them for the fixed files).
SELECTION_LIMIT = {"upstream": None, "toolkit": None, "mismatch": None, "mutation": 6}


def _selection_disagreements(oracle: upstream.MigOracle, case: Case, config: MigPartedConfig) -> tuple[int, list[str]]:
    found: list[str] = []
    names = config.names()[: SELECTION_LIMIT[case.category]]
    checked = 0
    for name in names:
        filters = [f for entry in config.entries(name) for f in entry.device_filter]
        gpus = selection_gpus(filters)
        answers = oracle.select(case.document, name, gpus)
        steps = walk(config, name, [int(device_id, 16) for _, device_id in gpus])
        entries = config.entries(name)
        for (index, device_id), answer in zip(gpus, answers, strict=True):
            checked += 1
            mine = [step.entry for step in steps if step.index == index]
            theirs = list(answer["matches"])
            if mine != theirs or (mine[-1] if mine else None) != answer["entry"]:
                found.append(f"{case.name}: config {name!r}, GPU {index} ({device_id}): entries {mine} here, "
                             f"{theirs} in mig-parted")
                continue
            if mine:
                entry = entries[mine[-1]]
                ours = (entry.mig_enabled, dict(entry.mig_devices))
                nvidia = (answer["mig_enabled"], dict(answer["mig_devices"] or {}))
                if ours != nvidia:
                    found.append(f"{case.name}: config {name!r}, GPU {index}: {ours} here, {nvidia} in mig-parted")
    return checked, found


def _compare(oracle: upstream.MigOracle, case: Case) -> tuple[int, list[str]]:
    valid, error, names = oracle.validate(case.document)
    problems = check_document(case.document, ORACLE_DIALECT)
    if valid != (not problems):
        ours = "accepts" if not problems else f"refuses ({problems[0]})"
        return 0, [f"{case.name}: the toolkit {ours}, mig-parted {'accepts' if valid else 'refuses (' + error + ')'}"]
    if not valid:
        return 0, []
    config = parse_config_text(case.document, ORACLE_DIALECT)
    if config.names() != names:
        return 0, [f"{case.name}: configs {config.names()} here, {names} in mig-parted"]
    return _selection_disagreements(oracle, case, config)


@pytest.fixture(scope="module")
def results(oracle: upstream.MigOracle, corpus: list[Case]) -> dict[str, Any]:  # noqa: F811 (fixture)
    by_category: dict[str, dict[str, Any]] = {c: {"documents": 0, "valid": 0, "selections": 0, "disagreements": []}
                                              for c in CATEGORIES}
    for case in corpus:
        summary = by_category[case.category]
        checked, disagreements = _compare(oracle, case)
        summary["documents"] += 1
        summary["valid"] += int(not check_document(case.document, ORACLE_DIALECT))
        summary["selections"] += checked
        summary["disagreements"].extend(disagreements)
    return by_category


def test_corpus_is_large_enough(corpus: list[Case]) -> None:  # noqa: F811 (fixture)
    counts = Counter(case.category for case in corpus)
    assert counts["upstream"] >= 5 and counts["toolkit"] >= 10 and counts["mismatch"] >= 30
    assert counts["mutation"] >= 1000
    # Both verdicts must be well represented, or the comparison proves little.
    valid = sum(1 for case in corpus if case.category == "mutation"
                and not check_document(case.document, ORACLE_DIALECT))
    assert 0.15 * counts["mutation"] < valid < 0.85 * counts["mutation"]


@pytest.mark.parametrize("category", CATEGORIES)
def test_toolkit_and_mig_parted_agree(results: dict[str, Any], category: str) -> None:
    summary = results[category]
    print(f"{category}: {summary['documents']} documents ({summary['valid']} valid), "
          f"{summary['selections']} GPU selections compared, {len(summary['disagreements'])} disagreements")
    assert summary["documents"] > 0
    assert summary["disagreements"] == [], "\n".join(summary["disagreements"][:20])


def test_every_toolkit_written_configmap_loads_in_mig_parted(results: dict[str, Any]) -> None:
    summary = results["toolkit"]
    assert summary["valid"] == summary["documents"]
    assert summary["selections"] > 1000
