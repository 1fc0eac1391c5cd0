"""mig-parted configuration files: parsing exactly as the MIG manager does, resolution onto a node's GPUs,
and fit checks.

A mig-parted file (``version: v1``, ``mig-configs: {name: [entry, ...]}``) is what the NVIDIA MIG manager
applies when a node is labelled ``nvidia.com/mig.config=<name>``. Each entry selects GPUs by ``devices``
(``all`` or indices) and optionally ``device-filter`` (PCI ids ``0x<device><vendor>``); GPUs no entry
selects are left as they are, exactly as mig-parted does.

Three jobs, one module each:

* ``go_yaml``: YAML and JSON as mig-parted's Go libraries read them (go-yaml v2, sigs.k8s.io/yaml,
  encoding/json, strconv), and YAML written so that go-yaml reads it back as written;
* ``document``: the document model (configs, entries, device filters, MIG manager dialects) and the parser
  that accepts or refuses a file with every reason mig-parted would;
* ``layouts``: what a config makes of a node's GPUs (mig-parted's walk, ``resolve``) and whether it fits them.

The profile-name grammar (go-nvlib's) lives with ``ProfileName`` in ``migrollout.catalogue``. The names
below are re-exported so callers can import the package's public API from one place.
"""

from migrollout.migconfig.document import (
    CONFIG_KEY,
    DEFAULT_DIALECT,
    ENTRY_FIELDS,
    ConfigEntry,
    DeviceFilter,
    Dialect,
    MigConfigError,
    MigPartedConfig,
    check_document,
    mig_parted_yaml,
    parse_config,
    parse_config_text,
    parse_configmap,
    profile_format_error,
    validate,
    version_tuple,
)
from migrollout.migconfig.go_yaml import dump_yaml, go_parse_int, go_yaml_scalar, load_yaml, plain_data
from migrollout.migconfig.layouts import (
    DISABLED,
    GpuLayout,
    WalkStep,
    apply_layouts,
    canonical_layout,
    check_custom_configs,
    describe_layouts,
    devices_per_gpu,
    fit_problems,
    format_devices,
    layout_problems,
    resolve,
    walk,
)

__all__ = [
    "CONFIG_KEY",
    "DEFAULT_DIALECT",
    "DISABLED",
    "ENTRY_FIELDS",
    "ConfigEntry",
    "DeviceFilter",
    "Dialect",
    "GpuLayout",
    "MigConfigError",
    "MigPartedConfig",
    "WalkStep",
    "apply_layouts",
    "canonical_layout",
    "check_custom_configs",
    "check_document",
    "describe_layouts",
    "devices_per_gpu",
    "dump_yaml",
    "fit_problems",
    "format_devices",
    "go_parse_int",
    "go_yaml_scalar",
    "layout_problems",
    "load_yaml",
    "mig_parted_yaml",
    "parse_config",
    "parse_config_text",
    "parse_configmap",
    "plain_data",
    "profile_format_error",
    "resolve",
    "validate",
    "version_tuple",
    "walk",
]
