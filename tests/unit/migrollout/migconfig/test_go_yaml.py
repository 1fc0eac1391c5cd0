"""YAML, JSON and integers as mig-parted's Go libraries read them (migconfig.go_yaml)."""


import pytest

from migrollout.migconfig.document import (
    mig_parted_yaml,
)
from migrollout.migconfig.go_yaml import dump_yaml, go_parse_int, load_yaml


@pytest.mark.parametrize("text, signed, expected", [
    ("0x20B010DE", True, 0x20B010DE),
    ("0X20b010de", True, 0x20B010DE),
    ("548409566", True, 0x20B010DE),  # no 0x: decimal, as Go reads it
    ("20B010DE", True, None),  # no 0x and not decimal: matches nothing
    ("0x20B0_10DE", True, 0x20B010DE),
    ("0x_20B010DE", True, 0x20B010DE),
    ("0x20B0__10DE", True, None),
    ("+0x20B010DE", True, 0x20B010DE),
    ("+0x20B010DE", False, None),  # ParseUint takes no sign
    ("0x80000000", True, None),  # past int32
    ("0x80000000", False, 0x80000000),
    ("-0x1", True, -1),
    ("017", True, 15),
    ("0o17", True, 15),
    ("0b101", True, 5),
    ("0x", True, None),
    ("0", True, 0),
    ("", True, None),
    ("0x20B010DE:0x145F10DE", True, None),
])
def test_filters_are_read_as_go_reads_integers(text, signed, expected):
    assert go_parse_int(text, signed=signed) == expected

def test_yaml_is_read_with_go_yaml_scalars():
    assert load_yaml("[y, n, 1e3, 0o17, 09, 1_000, 2001-01-01, '1', 1:30, .5]") == [
        True, False, 1000.0, 15, 9.0, 1000, "2001-01-01", "1", "1:30", 0.5]

def test_written_files_read_back_the_same_in_go_yaml():
    data = {"version": "v1", "mig-configs": {"y": [{"devices": "all", "mig-enabled": False}],
                                             "1e3": [{"devices": "all", "mig-enabled": False}]}}
    assert load_yaml(dump_yaml(data)) == data
    assert load_yaml(mig_parted_yaml(data["mig-configs"]))["mig-configs"] == data["mig-configs"]
