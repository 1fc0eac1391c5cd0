"""The mig-oracle helper and nvidia-mig-parted answer with NVIDIA's own code.

Facts checked here were read in the pinned sources (mig-parted v0.10.0 api/spec/v1 and pkg/types,
go-nvlib v0.12.0 pkg/nvlib/device, go-nvml v0.13.3-1 pkg/nvml/mock/gpus) and in the GPU Operator module's
default MIG ConfigMap; the helper must reproduce them.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from simcluster import upstream

# What mig-parted's ParseConfigFile puts before an error raised while decoding the spec.
DECODE = "unmarshal error: error unmarshaling JSON: while decoding JSON: "
HEADER = "version: v1\nmig-configs:\n  c:\n"


def entry(text: str) -> str:
    """A document whose only config `c` has one entry given in YAML flow style."""
    return f"{HEADER}    - {text}\n"


def test_helper_links_the_pinned_modules(oracle: upstream.MigOracle) -> None:
    modules = oracle.versions()
    assert modules[upstream.MIG_PARTED_MODULE] == upstream.MIG_PARTED_VERSION == "v0.10.0"
    # mig-parted v0.10.0 asks for go-nvlib v0.7.0, which cannot parse "+me"/"-me" profile names.
    assert modules[upstream.GO_NVLIB_MODULE] == upstream.GO_NVLIB_VERSION == "v0.12.0"
    assert modules[upstream.GO_NVML_MODULE] == upstream.GO_NVML_VERSION == "v0.13.3-1"


def test_default_configmap_is_valid(oracle: upstream.MigOracle, default_mig_document: str) -> None:
    valid, error, configs = oracle.validate(default_mig_document)
    assert (valid, error) == (True, "")
    assert len(configs) == 68  # the 2025-09 module; v26.7.0's ConfigMap has 81
    assert {"all-disabled", "all-enabled", "all-1g.10gb", "all-1g.5gb.me", "all-balanced"} <= set(configs)


def test_bad_profile_key_is_rejected_with_mig_parteds_message(oracle: upstream.MigOracle,
                                                               default_mig_document: str) -> None:
    broken = default_mig_document.replace('"1g.10gb": 7', '"1g.10gbx": 7', 1)
    assert broken != default_mig_document
    valid, error, configs = oracle.validate(broken)
    assert (valid, configs) == (False, [])
    assert error == (DECODE + "error validating values in 'mig-devices' field: invalid format for '1g.10gbx': "
                     "cannot parse fields of '1g.10gbx': missing 'gb' from '%dgb'")


# (document, valid, error) as mig-parted v0.10.0 with go-nvlib v0.12.0 decides them.
VALIDATION_CASES = {
    "empty document": ("", True, ""),
    "version only, no configs": ("version: v1\n", True, ""),
    "no version": ("mig-configs: {c: [{devices: all, mig-enabled: false}]}\n", False,
                   DECODE + "unable to parse with missing 'version' field"),
    "unknown version": ("version: v2\nmig-configs: {c: [{devices: all, mig-enabled: false}]}\n", False,
                        DECODE + "unknown version: v2"),
    "no configs": ("version: v1\nmig-configs: {}\n", False,
                   DECODE + "at least one entry in 'mig-configs' is required"),
    "config without entries": ("version: v1\nmig-configs: {c: []}\n", False,
                               DECODE + "at least one entry in 'c' is required"),
    "unknown top-level field": ("version: v1\nfoo: 1\nmig-configs: {c: [{devices: all, mig-enabled: false}]}\n",
                                False, DECODE + "unexpected field: foo"),
    "unknown entry field": (entry("{devices: all, mig-enabled: false, foo: 1}"), False,
                            DECODE + "unexpected field: foo"),
    "devices missing": (entry("{mig-enabled: false}"), False, DECODE + "missing required field: devices"),
    "mig-enabled missing": (entry("{devices: all}"), False, DECODE + "missing required field: mig-enabled"),
    "enabled without mig-devices": (entry("{devices: all, mig-enabled: true}"), False,
                                    DECODE + "missing required field 'mig-devices' when 'mig-enabled' is true"),
    "enabled with empty mig-devices": (entry("{devices: all, mig-enabled: true, mig-devices: {}}"), True, ""),
    "disabled with mig-devices": (entry("{devices: all, mig-enabled: false, mig-devices: {1g.5gb: 1}}"), False,
                                  DECODE + "MIG devices included when 'mig-enabled' is false"),
    "all counts 0": (entry("{devices: all, mig-enabled: true, mig-devices: {1g.5gb: 0, 2g.10gb: 0}}"), False,
                     DECODE + "error validating values in 'mig-devices' field: all counts for all MigProfiles are 0"),
    "one count 0": (entry("{devices: all, mig-enabled: true, mig-devices: {1g.5gb: 0, 2g.10gb: 1}}"), True, ""),
    "negative count": (entry("{devices: all, mig-enabled: true, mig-devices: {1g.5gb: -1}}"), False,
                       DECODE + "error validating values in 'mig-devices' field: invalid count for '-1': <nil>"),
    "profile foo": (entry("{devices: all, mig-enabled: true, mig-devices: {foo: 1}}"), False,
                    DECODE + "error validating values in 'mig-devices' field: invalid format for 'foo': "
                    "cannot parse fields of 'foo': parsed wrong number of fields, expected 2 or 3"),
    "profile with a leading space": (entry("{devices: all, mig-enabled: true, mig-devices: {' 1g.10gb': 1}}"), False,
                                     DECODE + "error validating values in 'mig-devices' field: invalid format for "
                                     "' 1g.10gb': cannot parse fields of ' 1g.10gb': leading or trailing spaces "
                                     "on '%dg'"),
    "profile +me": (entry("{devices: all, mig-enabled: true, mig-devices: {1g.10gb+me: 1}}"), True, ""),
    "profile -me": (entry("{devices: all, mig-enabled: true, mig-devices: {1g.10gb-me: 1}}"), True, ""),
    "profile with an unknown attribute": (entry("{devices: all, mig-enabled: true, mig-devices: {1g.10gb+foo: 1}}"),
                                          True, ""),
    "devices All": (entry("{devices: All, mig-enabled: false}"), False,
                    DECODE + "invalid string input for 'devices': All"),
    "negative device index": (entry("{devices: [-1], mig-enabled: false}"), True, ""),
    "mig-enabled yes (YAML 1.1)": (entry("{devices: all, mig-enabled: yes, mig-devices: {1g.5gb: 1}}"), True, ""),
    "device-filter as an unquoted number": (
        entry("{device-filter: 0x20B010DE, devices: all, mig-enabled: false}"), False,
        DECODE + "(json: cannot unmarshal number into Go value of type string, "
        "json: cannot unmarshal number into Go value of type []string)"),
    "device-filter that is no number": (entry("{device-filter: nonsense, devices: all, mig-enabled: false}"),
                                        True, ""),
}


@pytest.mark.parametrize("case", sorted(VALIDATION_CASES))
def test_validation_semantics(oracle: upstream.MigOracle, case: str) -> None:
    document, valid, error = VALIDATION_CASES[case]
    assert oracle.validate(document)[:2] == (valid, error)


def test_selection_by_device_filter(oracle: upstream.MigOracle, default_mig_document: str) -> None:
    devices = [(0, "0x20B010DE"), (1, "0x20B210DE"), (2, "0x20B710DE"), (3, "0x27B810DE")]
    selected = oracle.select(default_mig_document, "all-balanced", devices)
    assert [(d["index"], d["entry"]) for d in selected] == [(0, 7), (1, 6), (2, 8), (3, None)]
    assert selected[0]["mig_devices"] == {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}
    assert selected[1]["mig_devices"] == {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}
    assert selected[2]["mig_enabled"] is True
    assert (selected[3]["entry"], selected[3]["matches"], selected[3]["mig_enabled"], selected[3]["mig_devices"]) \
        == (None, [], None, None)  # an L4: no entry of all-balanced filters for it


SELECTION = """\
version: v1
mig-configs:
  mixed:
    - device-filter: ["0x20b010de", "0x20B210DE"]
      devices: all
      mig-enabled: true
      mig-devices: {"1g.5gb": 7}
    - device-filter: "0x20B710DE"
      devices: [1, 3]
      mig-enabled: true
      mig-devices: {"1g.6gb": 4}
    - devices: [0]
      mig-enabled: false
    - device-filter: "0x20B210DE:0x147E10DE"
      devices: all
      mig-enabled: false
"""


def test_selection_semantics(oracle: upstream.MigOracle) -> None:
    devices = [(0, "0x20B010DE"), (1, "0x20B710DE"), (2, "0x20B210DE"), (3, "0x20B710DE"), (4, "0x20B710DE")]
    selected = {d["index"]: d for d in oracle.select(SELECTION, "mixed", devices)}
    # Filters are numbers (strconv base 0), so hex case does not matter; two matching entries: the last wins.
    assert selected[0]["matches"] == [0, 2] and selected[0]["entry"] == 2 and selected[0]["mig_enabled"] is False
    assert (selected[1]["entry"], selected[1]["mig_devices"]) == (1, {"1g.6gb": 4})
    # v0.10.0 has no subsystem ids: "device:subsystem" does not parse, and such a filter matches nothing.
    assert selected[2]["matches"] == [0]
    assert selected[3]["entry"] == 1
    assert selected[4]["entry"] is None  # an A30 at index 4: its filter matches, its indices do not


def test_selection_errors_are_mig_parteds(oracle: upstream.MigOracle, default_mig_document: str) -> None:
    with pytest.raises(upstream.MigOracleError, match=r"^selected mig-config not present: nope$"):
        oracle.select(default_mig_document, "nope", [(0, "0x20B010DE")])
    with pytest.raises(upstream.MigOracleError, match="when more than one config available"):
        oracle.select(default_mig_document, "", [(0, "0x20B010DE")])


def profile(tables: dict, model: str, name: str) -> dict:
    matching = [p for p in tables[model]["profiles"] if p["name"] == name]
    assert len(matching) == 1, f"{model} has {len(matching)} profiles named {name}"
    return matching[0]


def test_recorded_tables(oracle: upstream.MigOracle) -> None:
    tables = oracle.tables()
    a100_40 = tables["A100-SXM4-40GB"]
    assert (a100_40["pci_device_id"], a100_40["memory_mib"], a100_40["recorded"]) == ("0x20B010DE", 40960, True)
    small = profile(tables, "A100-SXM4-40GB", "1g.5gb")
    assert (small["id"], small["memory_mib"], small["instance_count"]) == (0, 4864, 7)
    assert [(p["start"], p["size"]) for p in small["placements"]] == [(n, 1) for n in range(7)]
    media = profile(tables, "A100-SXM4-40GB", "1g.5gb+me")
    assert (media["id"], media["instance_count"], media["decoders"], media["jpegs"], media["ofas"]) == (7, 1, 1, 1, 1)

    sms = {name: profile(tables, "A100-SXM4-80GB", name)["multiprocessor_count"]
           for name in ("1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb")}
    assert sms == {"1g.10gb": 14, "2g.20gb": 28, "3g.40gb": 42, "4g.40gb": 56, "7g.80gb": 98}
    three = profile(tables, "A100-SXM4-80GB", "3g.40gb")
    assert [(p["start"], p["size"]) for p in three["placements"]] == [(0, 4), (4, 4)]
    assert tables["A100-SXM4-80GB"]["pci_device_id"] == "0x20B210DE"

    assert {name for name, table in tables.items() if table["recorded"]} == {
        "A100-SXM4-40GB", "A100-PCIE-40GB", "A100-SXM4-80GB", "A100-PCIE-80GB", "A30-PCIE-24GB"}
    assert {p["name"] for p in tables["A30-PCIE-24GB"]["profiles"]} == {
        "1g.6gb", "1g.6gb+me", "2g.12gb", "2g.12gb+me", "4g.24gb"}


def test_requests_stay_fast(oracle: upstream.MigOracle, default_mig_document: str) -> None:
    started = time.perf_counter()
    for _ in range(500):
        assert oracle.validate(default_mig_document)[0]
    per_request = (time.perf_counter() - started) / 500
    assert per_request < 0.02, f"{per_request * 1000:.2f} ms per request"


def test_bad_requests_do_not_stop_the_helper(built: upstream.Upstream) -> None:
    lines = "not json\n" + json.dumps({"op": "nope"}) + "\n" + json.dumps({"op": "validate", "document": ""}) + "\n"
    result = subprocess.run([str(built.mig_oracle)], input=lines, capture_output=True, text=True, timeout=30)
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 0 and len(answers) == 3
    assert answers[0]["error"].startswith("bad request")
    assert answers[1]["error"].startswith('unknown op "nope"')
    assert answers[2] == {"valid": True}


def mig_parted_assert(built: upstream.Upstream, config_file: Path, config: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(built.mig_parted), "assert", "--valid-config", "-f", str(config_file), "-c", config],
                          capture_output=True, text=True, timeout=60)


def test_nvidia_mig_parted_assert_valid_config(built: upstream.Upstream, default_mig_document: str,
                                               tmp_path: Path) -> None:
    good = tmp_path / "config.yaml"
    good.write_text(default_mig_document)
    result = mig_parted_assert(built, good, "all-1g.10gb")
    assert (result.returncode, result.stdout) == (0, "Selected MIG configuration is valid\n")

    missing = mig_parted_assert(built, good, "nope")
    assert missing.returncode == 1
    assert "Error selecting MIG config: selected mig-config not present: nope" in missing.stderr

    broken = tmp_path / "broken.yaml"
    broken.write_text(default_mig_document.replace('"1g.10gb": 7', '"1g.10gbx": 7', 1))
    rejected = mig_parted_assert(built, broken, "all-disabled")
    assert (rejected.returncode, rejected.stdout) == (1, "")
    assert ("Error parsing config file: unmarshal error: error unmarshaling JSON: while decoding JSON: "
            "error validating values in 'mig-devices' field: invalid format for '1g.10gbx'") in rejected.stderr


def test_operator_module_files(built: upstream.Upstream) -> None:
    assert "name: gpu-operator" in (built.chart / "Chart.yaml").read_text()
    assert (built.chart / "crds" / "nvidia.com_clusterpolicies.yaml").is_file()
    assert (built.chart / "charts" / "node-feature-discovery" / "Chart.yaml").is_file()
    assert (built.assets / "state-mig-manager").is_dir() and any(built.manifests.iterdir())
    assert built.operator.stat().st_size > 10_000_000
