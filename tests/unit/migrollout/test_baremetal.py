"""The bare-metal plan: what each host gets, refusals before anything is touched, the shared schedule."""

import json

import pytest

from migrollout import baremetal
from migrollout.rollout.record import Record

SETTINGS = {"mig_rollout_max_unavailable": 2, "mig_rollout_max_fail_percentage": 0}
A100 = "0, 00000000:10:00.0, NVIDIA A100-SXM4-80GB, Disabled, Disabled\n1, 00000000:11:00.0, NVIDIA A100-SXM4-80GB, Disabled, Disabled"


def host(**facts):
    return {"pool": "a100", "mig_config": "all-1g.10gb", "installed": True, "asserted": False, "persisted": "",
            "record": "", **facts}


def test_parse_gpus():
    gpus = baremetal.parse_gpus(A100)
    assert [gpu["product"] for gpu in gpus] == ["NVIDIA A100-SXM4-80GB"] * 2
    assert gpus[1]["bus_id"] == "00000000:11:00.0"


def test_actions_and_order():
    record = Record(run="old", from_config="all-disabled", to_config="all-1g.10gb").encode()
    result = baremetal.plan({
        "a": host(),
        "b": host(asserted=True, persisted="all-1g.10gb"),
        "c": host(record=record),
        "d": host(unreachable="ssh: connect to host d port 22: Connection refused"),
        "e": host(mig_config=""),
    }, SETTINGS)
    actions = {item["node"]: item["action"] for item in result["plan"]}
    assert actions == {"a": "change", "b": "skip", "c": "resume", "d": "unreachable", "e": "skip"}
    assert [item["node"] for item in result["plan"]][:2] == ["c", "a"]  # resumed first
    assert result["schedule"]["window"] == 2
    assert next(i for i in result["plan"] if i["node"] == "c")["from_config"] == "all-disabled"


def test_a_config_that_does_not_fit_refuses_the_whole_run():
    with pytest.raises(baremetal.PlanError, match=r"no host was touched: a: all-1g\.10gb: broken"):
        baremetal.plan({"a": host(problems=["broken"]), "b": host()}, SETTINGS)


def test_admin_drained_node_counts_as_out_of_service_in_its_pool():
    result = baremetal.plan({"a": host(slurm_admin_drained=True), "b": host()},
                            {**SETTINGS, "mig_rollout_max_unavailable_per_pool": 1})
    assert result["schedule"]["already_out"] == {"a100": ["a"]}


def test_fit_problems_by_mig_parteds_rules():
    gpus = baremetal.parse_gpus(A100)
    config = "version: v1\nmig-configs:\n  ok:\n    - devices: all\n      mig-enabled: true\n      mig-devices: {1g.10gb: 7}\n" \
             "  too-many:\n    - devices: all\n      mig-enabled: true\n      mig-devices: {3g.40gb: 3}\n"
    assert baremetal.fit_problems(config, "ok", gpus, "v0.10.0") == []
    assert baremetal.fit_problems(config, "too-many", gpus, "v0.10.0")
    assert baremetal.fit_problems(config, "missing", gpus, "v0.10.0") == ["MIG config missing is not defined"]


def test_report_rows_in_the_kubernetes_format():
    plan = baremetal.plan({"a": host(), "b": host(asserted=True, persisted="all-1g.10gb")}, SETTINGS)["plan"]
    rows = baremetal.report_rows(plan, {"a": {"failed": False, "marks": {
        "started": 0, "drained": 1, "jobs_done": 3, "applied": 10, "verified": 12, "finished": 13}}}, {}, {})
    assert rows[0]["result"] == "done" and rows[0]["steps"]["label"] == 7
    assert rows[1]["result"] == "skipped"
    text = baremetal.report_text(rows)
    assert text[0].split()[:3] == ["NODE", "FROM", "->"]
    assert json.dumps(rows)


ON_HOST = {"binary_sha256": "b1", "version": "v0.10.0", "config_sha256": "c1", "unit": True, "service": True}


@pytest.mark.parametrize("source", ["files", "package", "url"])
def test_a_host_with_this_runs_files_is_installed(source):
    wanted = {"source": source, "mig_parted_version": "v0.10.0", "binary_sha256": "b1" if source == "files" else "",
              "config_sha256": "c1"}
    assert baremetal.installed(ON_HOST, wanted)
    assert not baremetal.installed({**ON_HOST, "config_sha256": "c2"}, wanted)  # another config file
    assert not baremetal.installed({**ON_HOST, "unit": False}, wanted)
    assert not baremetal.installed({**ON_HOST, "service": False}, wanted)
    assert not baremetal.installed({}, wanted)  # nothing there (or the host could not be read)


def test_files_compares_the_binary_and_package_or_url_the_release():
    files = {"source": "files", "mig_parted_version": "v0.10.0", "binary_sha256": "b1", "config_sha256": "c1"}
    assert not baremetal.installed({**ON_HOST, "binary_sha256": "b2"}, files)  # same release, another build
    assert baremetal.installed({**ON_HOST, "version": "v0.9.0"}, files)  # the very binary, whatever it says
    for source in ("package", "url"):
        wanted = {"source": source, "mig_parted_version": "v0.10.0", "binary_sha256": "", "config_sha256": "c1"}
        assert baremetal.installed({**ON_HOST, "binary_sha256": "b2"}, wanted)  # the package's own build
        assert not baremetal.installed({**ON_HOST, "version": "v0.9.0"}, wanted)
        assert not baremetal.installed({**ON_HOST, "version": ""}, {**wanted, "mig_parted_version": ""})


def test_an_unknown_install_source_is_refused():
    with pytest.raises(baremetal.PlanError, match="unknown install source 'tarball'"):
        baremetal.installed(ON_HOST, {"source": "tarball"})
