"""mig-parted files parsed exactly as mig-parted parses them: what it refuses and accepts, profile names and
device filters per MIG manager release (migconfig.document)."""

import re

import pytest

from migrollout import catalogue
from migrollout.migconfig.document import (
    DEFAULT_DIALECT,
    Dialect,
    MigConfigError,
    check_document,
    parse_config_text,
    parse_configmap,
    profile_format_error,
)
from migrollout.migconfig.layouts import (
    DISABLED,
    fit_problems,
    resolve,
)

A100_80 = catalogue.find_model("A100-SXM4-80GB")
A100_40 = catalogue.find_model("A100-SXM4-40GB")
LEGACY = Dialect.for_mig_manager("v0.12.2")  # GPU Operator v25.3.2
SIMULATED = Dialect.for_mig_manager("v0.12.3")  # the GPU Operator module the simulated cluster runs


def entry(**fields):
    """A one-config, one-entry file with these entry fields (given as YAML flow text)."""
    body = ", ".join(f"{key.replace('_', '-')}: {value}" for key, value in fields.items())
    return f"version: v1\nmig-configs:\n  custom:\n    - {{{body}}}\n"


# Files mig-parted refuses and the toolkit accepted before (the list), with the reason it must name.
REFUSED_BY_MIG_PARTED = [
    ("enabled without mig-devices", entry(devices="all", mig_enabled="true"),
     "mig-configs.custom[0]: mig-enabled is true but mig-devices is missing or null"),
    ("enabled with null mig-devices", entry(devices="all", mig_enabled="true", mig_devices="null"),
     "mig-configs.custom[0]: mig-enabled is true but mig-devices is missing or null"),
    ("every count 0", entry(devices="all", mig_enabled="true", mig_devices="{1g.10gb: 0, 2g.20gb: 0}"),
     "mig-configs.custom[0]: every count in mig-devices is 0"),
    ("profile key foo", entry(devices="all", mig_enabled="true", mig_devices="{foo: 1}"),
     "mig-configs.custom[0]: mig-devices 'foo' is not a MIG profile name"),
    ("profile key with a leading space", entry(devices="all", mig_enabled="true", mig_devices="{' 1g.10gb': 1}"),
     "mig-configs.custom[0]: mig-devices ' 1g.10gb' is not a MIG profile name (cannot parse fields of ' 1g.10gb': "
     "leading or trailing spaces"),
    ("profile key in resource spelling", entry(devices="all", mig_enabled="true", mig_devices="{1g.10gb.me: 1}"),
     "mig-devices '1g.10gb.me' is not a MIG profile name"),
    ("unknown top-level field", "version: v1\nnotes: x\nmig-configs: {a: [{devices: all, mig-enabled: false}]}\n",
     "unknown top-level field notes"),
    ("unknown entry field", entry(devices="all", mig_enabled="false", extra=1),
     "mig-configs.custom[0]: unknown field(s) extra"),
    ("no version", "mig-configs: {a: [{devices: all, mig-enabled: false}]}\n", "has no 'version' field"),
    ("version v2", "version: v2\nmig-configs: {a: [{devices: all, mig-enabled: false}]}\n",
     "unsupported mig-parted file version 'v2'"),
    ("empty mig-configs", "version: v1\nmig-configs: {}\n", "mig-configs is empty"),
    ("config without entries", "version: v1\nmig-configs: {a: []}\n", "mig-configs.a: has no entries"),
    ("devices some", entry(devices="some", mig_enabled="false"), "devices must be 'all' or a list of GPU indices"),
    ("devices fractional", entry(devices="[1.5]", mig_enabled="false"), "devices must be 'all'"),
    ("devices missing", entry(mig_enabled="false"), "missing required field(s) devices"),
    ("mig-enabled missing", entry(devices="all"), "missing required field(s) mig-enabled"),
    ("mig-enabled a string", entry(devices="all", mig_enabled="'true'"), "mig-enabled must be true or false"),
    ("negative count", entry(devices="all", mig_enabled="true", mig_devices="{1g.10gb: -1}"),
     "mig-devices '1g.10gb': the count -1 is negative"),
    ("fractional count", entry(devices="all", mig_enabled="true", mig_devices="{1g.10gb: 7.5}"),
     "the count must be a whole number"),
    ("devices with MIG disabled", entry(devices="all", mig_enabled="false", mig_devices="{1g.10gb: 1}"),
     "mig-devices given with mig-enabled: false"),
    ("device-filter a number", entry(devices="all", mig_enabled="false", device_filter="0x20B010DE"),
     "device-filter must be a string or a list of strings, not a number"),
    ("a config name YAML cannot turn into JSON", "version: v1\nmig-configs: {~: [{devices: all, "
     "mig-enabled: false}]}\n", "cannot be a JSON object key"),
    ("not a mapping", "[]\n", "must be a mapping with 'version' and 'mig-configs'"),
    ("not YAML", "{{{", "not valid YAML"),
]

@pytest.mark.parametrize("text, reason", [case[1:] for case in REFUSED_BY_MIG_PARTED],
                         ids=[case[0] for case in REFUSED_BY_MIG_PARTED])
def test_files_mig_parted_refuses_are_refused_naming_the_entry_and_reason(text, reason):
    problems = check_document(text)
    assert any(reason in problem for problem in problems), problems
    with pytest.raises(MigConfigError) as raised:
        parse_config_text(text)
    assert reason in str(raised.value)

# Files mig-parted loads, some of which the toolkit refused before (it was stricter).
ACCEPTED_BY_MIG_PARTED = [
    ("MIG on without devices", entry(devices="all", mig_enabled="true", mig_devices="{}")),
    ("some counts 0", entry(devices="all", mig_enabled="true", mig_devices="{1g.10gb: 0, 2g.20gb: 1}")),
    ("negative device index", entry(devices="[-1, 2]", mig_enabled="false")),
    ("no devices listed", entry(devices="[]", mig_enabled="false")),
    ("mig-enabled null is false", entry(devices="all", mig_enabled="null")),
    ("mig-enabled n (go-yaml reads a boolean)", entry(devices="all", mig_enabled="n")),
    ("whole float count", entry(devices="all", mig_enabled="true", mig_devices="{1g.10gb: 7.0}")),
    ("null count is 0", entry(devices="all", mig_enabled="true", mig_devices="{1g.10gb: null, 2g.20gb: 1}")),
    ("null device index is 0", entry(devices="[null]", mig_enabled="false")),
    ("null filter is no filter", entry(devices="all", mig_enabled="false", device_filter="null")),
    ("null filter item", entry(devices="all", mig_enabled="false", device_filter="[null]")),
    ("compute-instance profile", entry(devices="all", mig_enabled="true", mig_devices="{1c.3g.40gb: 2}")),
    ("profile names only need the form", entry(devices="all", mig_enabled="true", mig_devices="{9g.999gb+foo: 1}")),
    ("-me and +me.all profiles", entry(devices="all", mig_enabled="true",
                                       mig_devices="{1g.24gb-me: 1, 1g.24gb+me.all: 1}")),
    ("disabled with empty devices", entry(devices="all", mig_enabled="false", mig_devices="{}")),
    ("version only", "version: v1\n"),
    ("empty file", ""),
    ("later documents are ignored", entry(devices="all", mig_enabled="false") + "---\n{{{\n"),
]

@pytest.mark.parametrize("text", [case[1] for case in ACCEPTED_BY_MIG_PARTED],
                         ids=[case[0] for case in ACCEPTED_BY_MIG_PARTED])
def test_files_mig_parted_loads_are_accepted(text):
    assert check_document(text) == []
    parse_config_text(text)

def test_every_problem_is_reported_not_only_the_first():
    text = ("version: v1\nmig-configs:\n  a: [{devices: all, mig-enabled: true}]\n"
            "  b: [{devices: all, mig-enabled: true, mig-devices: {foo: 1}}]\n")
    problems = check_document(text)
    assert [problem.split(":")[0] for problem in problems] == ["mig-configs.a[0]", "mig-configs.b[0]"]

def test_a_file_without_configs_has_no_names():
    assert parse_config_text("version: v1\n").names() == []
    assert fit_problems(parse_config_text(""), "all-disabled", A100_80, 1) == ["MIG config all-disabled is not defined"]

@pytest.mark.parametrize("name, legacy_error, current_error", [
    ("1g.10gb", "", ""),
    ("1g.10gb+me", "", ""),
    ("1g.24gb+gfx", "", ""),
    ("1c.3g.40gb", "", ""),
    ("1g.24gb-me", "missing 'gb'", ""),
    ("1g.24gb+me.all", "non alpha-numeric", ""),
    ("1g.24gb+me-x", "non alpha-numeric", "contains both '+/-' attributes"),
    ("1g.24gb+.me", "non alpha-numeric", "attribute begins/ends with a dot"),
    ("1g.24gb+me,me", "non unique attribute", "non unique attribute"),
    ("1g.24gb+1me", "attribute begins with a number", "attribute begins with a number"),
    ("1g.24gb+", "empty attribute", "empty attribute"),
    ("1g", "wrong number of fields", "wrong number of fields"),
    ("1x.1g.5gb", "missing 'c'", "missing 'c'"),
    ("g.5gb", "malformed number", "malformed number"),
    ("", "empty string", "empty string"),
])
def test_profile_name_grammar_per_mig_manager_release(name, legacy_error, current_error):
    """go-nvlib 0.7.4 (MIG manager v0.12.3) added "-me" and dotted attributes; before, they do not parse."""
    assert (legacy_error in profile_format_error(name, LEGACY)) and bool(legacy_error) == bool(
        profile_format_error(name, LEGACY))
    assert (current_error in profile_format_error(name, DEFAULT_DIALECT)) and bool(current_error) == bool(
        profile_format_error(name, DEFAULT_DIALECT))

def test_default_configs_of_newer_operators_do_not_load_in_old_mig_managers():
    text = entry(devices="all", mig_enabled="true", mig_devices="{1g.24gb-me: 4}")
    assert check_document(text, SIMULATED) == []
    assert "is not a MIG profile name" in check_document(text, LEGACY)[0]

FILTERS = "version: v1\nmig-configs:\n  c:\n    - {{device-filter: {filter}, devices: all, mig-enabled: false}}\n"

@pytest.mark.parametrize("filter_text, dialect, selected", [
    ('"0x20B010DE"', SIMULATED, True),
    ('"0x20b010de"', SIMULATED, True),
    ('"0x20B210DE"', SIMULATED, False),
    ('"20B010DE"', SIMULATED, False),  # a filter without 0x matches nothing
    ('"548409566"', SIMULATED, True),
    ('""', SIMULATED, True),  # an empty filter is no filter
    ("[]", SIMULATED, True),
    ('[""]', SIMULATED, False),  # but an empty item in a list is a filter that matches nothing
    ('["0x233010DE", "0x20B010DE"]', SIMULATED, True),
    ('"0x20B010DE:0x145F10DE"', SIMULATED, False),  # v0.12: a qualified filter does not parse
    ('"0x20B010DE:0x145F10DE"', DEFAULT_DIALECT, False),  # v0.15: subsystem must match; unknown here
    ('"0x20B010DE:0x145F10DE:1"', DEFAULT_DIALECT, False),
    ('"-0x20B010DE"', SIMULATED, False),
])
def test_device_filter_edges(filter_text, dialect, selected):
    config = parse_config_text(FILTERS.format(filter=filter_text), dialect)
    assert (resolve(config, "c", A100_40, 1) == [DISABLED]) is selected

def test_a_subsystem_qualifier_must_match_exactly():
    config = parse_config_text(FILTERS.format(filter='"0x20B010DE:0x145F10DE"'), DEFAULT_DIALECT)
    assert resolve(config, "c", A100_40, 1, subsystem_id=0x145F10DE) == [DISABLED]
    assert resolve(config, "c", A100_40, 1, subsystem_id=0x147E10DE) == [None]
    assert resolve(config, "c", A100_40, 1) == [None]
    legacy = parse_config_text(FILTERS.format(filter='"0x20B010DE:0x145F10DE"'), SIMULATED)
    assert resolve(legacy, "c", A100_40, 1, subsystem_id=0x145F10DE) == [None]

def test_configmap_errors_name_the_configmap():
    with pytest.raises(MigConfigError, match=re.escape("ConfigMap custom: mig-configs.a[0]: mig-enabled is true")):
        parse_configmap({"metadata": {"name": "custom"},
                         "data": {"config.yaml": "version: v1\nmig-configs: {a: [{devices: all, mig-enabled: true}]}"}})
    with pytest.raises(MigConfigError, match=re.escape("has no key 'config.yaml'")):
        parse_configmap({"metadata": {"name": "custom"}, "data": {}})

@pytest.mark.parametrize("image, version", [
    ("nvcr.io/nvidia/cloud-native/k8s-mig-manager:v0.12.3-ubuntu20.04", (0, 12, 3)),
    ("registry.local:5000/k8s-mig-manager:v0.15.0", (0, 15, 0)),
    ("nvcr.io/nvidia/cloud-native/k8s-mig-manager:v0.13.1@sha256:8e08", (0, 13, 1)),
    ("nvcr.io/nvidia/cloud-native/k8s-mig-manager:latest", None),
    ("registry.local:5000/k8s-mig-manager", None),
])
def test_dialect_of_a_mig_manager_image(image, version):
    dialect = Dialect.for_image(image)
    assert (dialect.mig_manager_version if dialect else None) == version
