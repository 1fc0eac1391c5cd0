"""The corpus of mig-parted files the toolkit's parser and NVIDIA's are both run over.

Plain functions (the fixtures at the end wrap them), so the corpus can also be built outside pytest:

- upstream: mig-parted's own example files (``examples/``, the systemd default config, the example MIG
  manager manifests' ConfigMaps) from the pinned mig-parted module, and the operator module's default
  ConfigMap;
- toolkit: the defaults the toolkit records per operator release, and the ConfigMaps the gpu_operator role
  generates (``operator_values``) for the project's example custom configs, per chart release;
- mismatches: every case where the toolkit and mig-parted disagreed, and the edges around them;
- mutations: deterministic random changes of the valid files above (a fixed seed; same corpus every run).
"""

from __future__ import annotations

import copy
import json
import os
import random
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from migrollout import catalogue, default_config, operator_values
from migrollout.migconfig.document import Dialect, mig_parted_yaml
from simcluster import upstream

REPO = Path(__file__).resolve().parents[2]
SEED = 20260917
MUTATIONS = 1000
# The oracle links mig-parted v0.10.0's spec with go-nvlib v0.12.0's profile names: the dialect of MIG
# manager v0.12.3 (extended profile names, device filters without subsystem qualifiers).
ORACLE_DIALECT = Dialect.for_mig_manager("v0.12.3")
# GPUs a selection is asked for: one of each common model, so device filters and indices both matter.
SELECTION_MODELS = ("A100-SXM4-40GB", "A100-SXM4-80GB", "H100-SXM5-80GB", "A30", "H200-141GB", "H200-NVL",
                    "GB300", "RTX-PRO-6000")


@dataclass(frozen=True)
class Case:
    category: str
    name: str
    document: str


# -- upstream files ------------------------------------------------------------------------------------------

def mig_parted_module_dir() -> Path:
    """The pinned mig-parted module in the Go module cache (the oracle was built from it)."""
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    result = subprocess.run(
        ["go", "mod", "download", "-json", f"{upstream.MIG_PARTED_MODULE}@{upstream.MIG_PARTED_VERSION}"],
        cwd=upstream.NVIDIA_GOBUILD_DIR, env=env, capture_output=True, text=True, check=False)
    info = json.loads(result.stdout or "{}")
    if result.returncode != 0 or "Dir" not in info:
        raise RuntimeError(f"cannot find {upstream.MIG_PARTED_MODULE}@{upstream.MIG_PARTED_VERSION}: "
                           f"{info.get('Error') or result.stderr.strip()}")
    return Path(info["Dir"])


def upstream_cases(module_dir: Path, default_mig_document: str) -> list[Case]:
    cases = [Case("upstream", "gpu-operator module default-mig-parted-config", default_mig_document)]
    for path in sorted((module_dir / "examples").glob("*.yaml")):
        cases.append(Case("upstream", f"mig-parted examples/{path.name}", path.read_text()))
    systemd = module_dir / "deployments" / "systemd" / "config-default.yaml"
    cases.append(Case("upstream", "mig-parted deployments/systemd/config-default.yaml", systemd.read_text()))
    for path in sorted((module_dir / "deployments" / "container").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and document.get("kind") == "ConfigMap":
                for key, text in (document.get("data") or {}).items():
                    if key == "config.yaml":
                        cases.append(Case("upstream", f"mig-parted {path.name} ConfigMap "
                                                      f"{document['metadata']['name']}", text))
    return cases


# -- what the toolkit writes ---------------------------------------------------------------------------------

def role_example_configs() -> dict[str, dict[str, Any]]:
    """The custom MIG configs the project documents and tests the role with."""
    found: dict[str, dict[str, Any]] = {}
    lines = (REPO / "config" / "group_vars" / "k8s-cluster.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# gpu_operator_mig_configs:"))
    block = []
    for line in lines[start:]:
        if not line.startswith("# "):
            break
        block.append(line[2:])
    found["config/group_vars/k8s-cluster.yml example"] = yaml.safe_load("\n".join(block))["gpu_operator_mig_configs"]
    molecule = yaml.safe_load((REPO / "molecule" / "rolling" / "inventory" / "group_vars" / "all.yml").read_text())
    found["molecule rolling scenario"] = molecule["scenario_mig_configs"]
    found["integration test half-3g"] = {
        "half-3g": [{"devices": [0, 1, 2, 3], "mig-enabled": True, "mig-devices": {"3g.40gb": 2}},
                    {"devices": [4, 5, 6, 7], "mig-enabled": False}]}
    return found


ROLE_CHARTS = ("v25.3.2", "v25.3.4", "v26.7.0")


def toolkit_cases() -> list[Case]:
    cases = [Case("toolkit", f"recorded defaults {version}", default_config.default_config_yaml(version))
             for version in default_config.recorded_versions()]
    for name, configs in role_example_configs().items():
        cases.append(Case("toolkit", f"role ConfigMap, custom only: {name}", mig_parted_yaml(configs)))
        for chart in ROLE_CHARTS:
            values = operator_values.build_values("mixed", mig_configs=configs, chart_version=chart)
            text = values["migManager"]["config"]["data"]["config.yaml"]
            cases.append(Case("toolkit", f"role ConfigMap with defaults, chart {chart}: {name}", text))
    return cases


# -- the mismatches, and the edges around them ---------------------------------------------------------------

HEADER = "version: v1\nmig-configs:\n  c:\n"


def _entry(text: str) -> str:
    return f"{HEADER}    - {text}\n"


MISMATCH_DOCUMENTS: dict[str, str] = {
    # 1. accepted by the toolkit, refused by mig-parted
    "mig-enabled without mig-devices": _entry("{devices: all, mig-enabled: true}"),
    "mig-enabled with null mig-devices": _entry("{devices: all, mig-enabled: true, mig-devices: null}"),
    "all counts 0": _entry("{devices: all, mig-enabled: true, mig-devices: {1g.10gb: 0}}"),
    "all of several counts 0": _entry("{devices: all, mig-enabled: true, mig-devices: {1g.10gb: 0, 2g.20gb: 0}}"),
    "profile key foo": _entry("{devices: all, mig-enabled: true, mig-devices: {foo: 1}}"),
    "profile key with leading space": _entry("{devices: all, mig-enabled: true, mig-devices: {' 1g.10gb': 1}}"),
    "profile key in resource spelling": _entry("{devices: all, mig-enabled: true, mig-devices: {1g.10gb.me: 1}}"),
    "profile key with both attribute kinds": _entry("{devices: all, mig-enabled: true, mig-devices: {1g.24gb+me-x: 1}}"),
    "unknown top-level field": "version: v1\nnotes: hello\nmig-configs:\n  c: [{devices: all, mig-enabled: false}]\n",
    # 1. refused by the toolkit, accepted by mig-parted (the toolkit was stricter)
    "negative device index": _entry("{devices: [-1, 0], mig-enabled: false}"),
    "empty document": "",
    "comment-only document": "# nothing here\n",
    "version only": "version: v1\n",
    "mig-enabled null": _entry("{devices: all, mig-enabled: null}"),
    "whole float count": _entry("{devices: all, mig-enabled: true, mig-devices: {1g.10gb: 7.0}}"),
    "null count next to a real one": _entry("{devices: all, mig-enabled: true, mig-devices: {1g.10gb: null, "
                                            "2g.20gb: 1}}"),
    "null device index": _entry("{devices: [null], mig-enabled: false}"),
    "null device-filter": _entry("{devices: all, mig-enabled: false, device-filter: null}"),
    "null device-filter item": _entry("{devices: all, mig-enabled: false, device-filter: [null]}"),
    "compute-instance profile": _entry("{devices: all, mig-enabled: true, mig-devices: {1c.3g.40gb: 2}}"),
    "-me and +me.all profiles": _entry("{devices: all, mig-enabled: true, mig-devices: {1g.24gb-me: 4}}"),
    "later YAML documents": _entry("{devices: all, mig-enabled: false}") + "---\n{{{ not yaml\n",
    "mig-enabled y": _entry("{devices: all, mig-enabled: n}"),
    "count 1e1": _entry("{devices: all, mig-enabled: true, mig-devices: {1g.10gb: 1e1}}"),
    # 4. device-filter edges (selection)
    "filter with subsystem": _entry("{devices: all, mig-enabled: false, device-filter: '0x20B010DE:0x145F10DE'}"),
    "filter without 0x": _entry("{devices: all, mig-enabled: false, device-filter: '20B010DE'}"),
    "filter in decimal": _entry("{devices: all, mig-enabled: false, device-filter: '548409566'}"),
    "filter lowercase": _entry("{devices: all, mig-enabled: false, device-filter: '0x20b210de'}"),
    "empty filter": _entry("{devices: all, mig-enabled: false, device-filter: ''}"),
    "empty filter list": _entry("{devices: all, mig-enabled: false, device-filter: []}"),
    "empty filter in a list": _entry("{devices: all, mig-enabled: false, device-filter: ['', '0x20B210DE']}"),
    "filter with sign": _entry("{devices: all, mig-enabled: false, device-filter: '+0x20B010DE'}"),
    "filter with underscore": _entry("{devices: all, mig-enabled: false, device-filter: '0x20B0_10DE'}"),
    "filter as a number": _entry("{devices: all, mig-enabled: false, device-filter: 0x20B010DE}"),
    "overlapping entries": HEADER + "    - {devices: all, mig-enabled: true, mig-devices: {1g.10gb: 7}}\n"
                                    "    - {devices: [1, 3], device-filter: ['0x20B210DE'], mig-enabled: false}\n",
}


def mismatch_cases() -> list[Case]:
    return [Case("mismatch", name, text) for name, text in MISMATCH_DOCUMENTS.items()]


# -- mutations ---------------------------------------------------------------------------------------------

FILTER_POOL: list[Any] = [
    None, "", [], [None], [""], 0x20B010DE, ["0x20B010DE", 5],
    "0x20B010DE", "0x20b210de", "20B010DE", "548409566", "0x20B010DE:0x145F10DE", "+0x20B010DE", "0x20B0_10DE",
    "0x233B10DE", "0x233510DE", "0x20B710DE", ["0x233010DE", "0x20B210DE"], "0X20B010DE", "-0x1", "0x",
]
DEVICES_POOL: list[Any] = ["all", "ALL", "some", [0], [0, 1], [1, 3, 5], [-1], [], [1.5], [None], None, 0, "0",
                           [True], [2.0], {"a": 1}]
ENABLED_POOL: list[Any] = [True, False, None, "true", 1, 0, "yes", [True]]
MIG_DEVICES_POOL: list[Any] = [None, {}, [], "1g.10gb", {"1g.10gb": 0}, {"3g.40gb": 2}, {"1c.3g.40gb": 1}]
COUNT_POOL: list[Any] = [0, -1, 7.5, 7.0, "7", None, 2**63, 10**20, True, 3, 1]


def _key_variants(key: str) -> list[Any]:
    return [key.upper(), " " + key, key + " ", key.replace("gb", ""), key + "+me", key + "-me", key + "+me.all",
            key + "+me-x", key + "+me,me", key + "+", "1c." + key, key.replace(".", ".."), "", "foo", key + ".me",
            "0g.0gb", 5, True, None, key + "+gfx", key + "+me,gfx", "+" + key, key + "+.me", key + "+1me",
            "1c.1g.5gb", "7c.7g.80gb", key + "+ME", "99999999999999999999g.1gb"]


def _entries(data: Any) -> list[dict[str, Any]]:
    if not isinstance(data, dict) or not isinstance(data.get("mig-configs"), dict):
        return []
    return [entry for entries in data["mig-configs"].values() if isinstance(entries, list)
            for entry in entries if isinstance(entry, dict)]


Mutator = Callable[[random.Random, Any, str], tuple[str, str] | None]


_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _load(text: str) -> Any:
    return yaml.load(text, Loader=_LOADER)


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_DUMPER, sort_keys=False, default_flow_style=False)


def _small(rng: random.Random, data: Any) -> Any:
    """A few configs of a large file: mutations of small files touch what they change, and run fast."""
    if isinstance(data, dict) and isinstance(data.get("mig-configs"), dict) and len(data["mig-configs"]) > 4:
        names = sorted(data["mig-configs"], key=str)
        keep = set(rng.sample(names, rng.randint(1, 4)))
        data["mig-configs"] = {name: entries for name, entries in data["mig-configs"].items() if name in keep}
    return data


def _drop_field(rng: random.Random, data: Any, _text: str) -> tuple[str, str] | None:
    entries = _entries(data)
    if not entries:
        return None
    entry = rng.choice(entries)
    field = rng.choice(["devices", "mig-enabled", "mig-devices", "device-filter"])
    entry.pop(field, None)
    return _dump(data), f"drop {field}"


def _set_field(rng: random.Random, data: Any, _text: str) -> tuple[str, str] | None:
    entries = _entries(data)
    if not entries:
        return None
    entry = rng.choice(entries)
    field, pool = rng.choice([("devices", DEVICES_POOL), ("mig-enabled", ENABLED_POOL),
                              ("mig-devices", MIG_DEVICES_POOL), ("device-filter", FILTER_POOL)])
    entry[field] = copy.deepcopy(rng.choice(pool))
    return _dump(data), f"set {field} to {entry[field]!r}"


def _profile_key(rng: random.Random, data: Any, _text: str) -> tuple[str, str] | None:
    entries = [e for e in _entries(data) if isinstance(e.get("mig-devices"), dict) and e["mig-devices"]]
    if not entries:
        return None
    devices = rng.choice(entries)["mig-devices"]
    key = rng.choice(list(devices))
    new_key = rng.choice(_key_variants(str(key)))
    devices[new_key] = devices.pop(key)
    return _dump(data), f"profile {key!r} -> {new_key!r}"


def _count(rng: random.Random, data: Any, _text: str) -> tuple[str, str] | None:
    entries = [e for e in _entries(data) if isinstance(e.get("mig-devices"), dict) and e["mig-devices"]]
    if not entries:
        return None
    devices = rng.choice(entries)["mig-devices"]
    if rng.random() < 0.2:
        for key in devices:
            devices[key] = 0
        return _dump(data), "every count 0"
    key = rng.choice(list(devices))
    devices[key] = rng.choice(COUNT_POOL)
    return _dump(data), f"count of {key!r} -> {devices[key]!r}"


def _extra_field(rng: random.Random, data: Any, _text: str) -> tuple[str, str] | None:
    if not isinstance(data, dict):
        return None
    entries = _entries(data)
    if entries and rng.random() < 0.6:
        field = rng.choice(["extra", "Devices", "mig_enabled", "devicefilter", "mig-devices "])
        rng.choice(entries)[field] = 1
        return _dump(data), f"entry field {field!r}"
    field = rng.choice(["extra", "Version", "mig_configs"])
    data[field] = rng.choice([1, None, "x"])
    return _dump(data), f"top-level field {field!r}"


def _top_level(rng: random.Random, data: Any, _text: str) -> tuple[str, str] | None:
    if not isinstance(data, dict):
        return None
    choice = rng.randrange(7)
    if choice == 0:
        data["version"] = rng.choice(["v2", None, 1, "V1", ""])
        return _dump(data), f"version {data['version']!r}"
    if choice == 1:
        data.pop("version", None)
        return _dump(data), "no version"
    if choice == 2:
        data["mig-configs"] = rng.choice([{}, None, [], "x"])
        return _dump(data), f"mig-configs {data['mig-configs']!r}"
    if choice == 3:
        data.pop("mig-configs", None)
        return _dump(data), "no mig-configs"
    configs = data.get("mig-configs")
    if not isinstance(configs, dict) or not configs:
        return None
    name = rng.choice(list(configs))
    if choice == 4:
        configs[name] = rng.choice([[], None, {"devices": "all"}, [None], [[]], "all"])
        return _dump(data), f"config {name} -> {configs[name]!r}"
    if choice == 5 and isinstance(configs[name], list) and configs[name]:
        configs[name] = configs[name] + [copy.deepcopy(rng.choice(configs[name]))]
        return _dump(data), f"config {name}: an entry twice"
    new_name = rng.choice([1, True, None, 1.5, "", "y", "all-disabled"])
    configs[new_name] = configs.pop(name)
    return _dump(data), f"config name {name!r} -> {new_name!r}"


def _text_edit(rng: random.Random, _data: Any, text: str) -> tuple[str, str] | None:
    lines = text.splitlines(keepends=True)
    choice = rng.randrange(4)
    if choice == 0 and len(lines) > 2:
        cut = rng.randrange(1, len(lines))
        return "".join(lines[:cut]), f"truncated after line {cut}"
    replacements = [("mig-enabled: true", rng.choice(["mig-enabled: y", "mig-enabled: yes", "mig-enabled: on",
                                                      "mig-enabled: True", "mig-enabled: 1", "mig-enabled: 'true'"])),
                    ("mig-enabled: false", rng.choice(["mig-enabled: n", "mig-enabled: no", "mig-enabled: off",
                                                       "mig-enabled: ~", "mig-enabled: 0"])),
                    ("devices: all", rng.choice(["devices: [0, 1]", "devices: 'all'", "devices: All",
                                                 "devices: [0x1, 0o2, 0b11]", "devices: [1_0]"])),
                    ("version: v1", rng.choice(["version: 'v1'", "version: v1.0", "version:  v1 "]))]
    old, new = rng.choice(replacements)
    if old not in text:
        return None
    return text.replace(old, new, 1), f"text {old!r} -> {new!r}"


MUTATORS: list[Mutator] = [_drop_field, _set_field, _set_field, _profile_key, _profile_key, _count, _extra_field,
                           _top_level, _text_edit, _text_edit]


def mutation_cases(seeds: list[Case], count: int = MUTATIONS, seed: int = SEED) -> list[Case]:
    """``count`` mutations of the valid ``seeds`` (one or two changes each), the same every run."""
    rng = random.Random(seed)
    parsed = [_load(base.document) for base in seeds]
    cases: list[Case] = []
    attempts = 0
    while len(cases) < count and attempts < count * 20:
        attempts += 1
        base = seeds[attempts % len(seeds)]
        data = _small(rng, copy.deepcopy(parsed[attempts % len(seeds)]))
        text, labels = _dump(data), []
        original = text
        for _ in range(1 if rng.random() < 0.7 else 2):
            mutated = rng.choice(MUTATORS)(rng, data, text)
            if mutated is None:
                continue
            text, label = mutated
            labels.append(label)
            try:
                data = _load(text)
            except yaml.YAMLError:
                break  # a second change needs a document to change
        if labels and text != original:
            cases.append(Case("mutation", f"#{len(cases)} {base.name}: {'; '.join(labels)}", text))
    return cases


def selection_gpus(document_filters: list[str]) -> list[tuple[int, str]]:
    """The GPUs a selection is asked for: the common models, then any PCI id the document's filters name."""
    ids = [catalogue.find_model(key).device_filter for key in SELECTION_MODELS]
    for text in document_filters:
        if text.upper().startswith("0X") and len(text) == 10 and text.upper() not in (i.upper() for i in ids):
            ids.append("0x" + text[2:].upper())
    return list(enumerate(ids[:12]))


def all_cases(module_dir: Path, default_mig_document: str) -> list[Case]:
    fixed = upstream_cases(module_dir, default_mig_document) + toolkit_cases() + mismatch_cases()
    seeds = upstream_cases(module_dir, default_mig_document) + toolkit_cases()
    return fixed + mutation_cases(seeds)


@pytest.fixture(scope="session")
def mig_parted_dir() -> Path:
    try:
        return mig_parted_module_dir()
    except (OSError, RuntimeError) as exc:
        pytest.fail(f"the pinned mig-parted module is not available: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def corpus(mig_parted_dir: Path, default_mig_document: str) -> list[Case]:
    return all_cases(mig_parted_dir, default_mig_document)
