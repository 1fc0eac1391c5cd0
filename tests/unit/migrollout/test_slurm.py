"""Slurm's GPU GRES for a MIG layout, and what scontrol's node record says."""

import pytest

from migrollout import slurm

EXPORT = {"version": "v1", "mig-configs": {"current": [
    {"devices": [0], "mig-enabled": True, "mig-devices": {"1g.10gb": 2, "3g.40gb": 1}},
    {"devices": [1], "mig-enabled": False, "mig-devices": {}}]}}


@pytest.mark.parametrize(("product", "expected"), [
    ("NVIDIA A100-SXM4-80GB", "a100"), ("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA A30", "a30"),
])
def test_gpu_type(product, expected):
    assert slurm.gpu_type(product) == expected


def test_gres_of_a_mixed_layout():
    layout = slurm.layout_per_gpu(EXPORT, 2)
    found = slurm.gres("gpu-1", "a100", layout)
    assert found.counts == {"a100_1g.10gb": 2, "a100_3g.40gb": 1, "a100": 1}
    assert found.field == "gpu:a100:1,gpu:a100_1g.10gb:2,gpu:a100_3g.40gb:1"
    # GPU 0's instances take the capability files of GPU instances 0, 1, 2; GPU 1 is whole.
    assert [line.split("File=")[1] for line in found.conf_lines] == [
        "/dev/nvidia-caps/nvidia-cap3", "/dev/nvidia-caps/nvidia-cap12", "/dev/nvidia-caps/nvidia-cap21",
        "/dev/nvidia1"]


def test_mig_minor_follows_the_drivers_numbering():
    assert slurm.mig_minor(0, 0) == 3
    assert slurm.mig_minor(1, 0) == 138


def test_export_must_cover_every_gpu():
    with pytest.raises(slurm.SlurmError, match="GPU 2"):
        slurm.layout_per_gpu(EXPORT, 3)


def test_profile_with_media_extensions_is_a_valid_type_name():
    assert slurm.mig_type("a100", "1g.10gb+me") == "a100_1g.10gb_me"


def test_slurm_conf_line_gets_the_new_gres():
    line = "NodeName=gpu-1 NodeAddr=10.0.0.1 CPUs=2 Gres=gpu:2 State=UNKNOWN"
    assert slurm.slurm_conf_node_line(line, "gpu:a100_1g.10gb:14") == (
        "NodeName=gpu-1 NodeAddr=10.0.0.1 CPUs=2 Gres=gpu:a100_1g.10gb:14 State=UNKNOWN")


def test_node_record_and_admin_drain():
    text = ("NodeName=gpu-1 Arch=x86_64 Gres=gpu:a100_1g.10gb:14(S:0) State=IDLE+DRAIN "
            "Reason=broken fan [admin@2026-12-07T10:00:00]")
    fields = slurm.node_fields(text)
    assert fields["Reason"] == "broken fan [admin@2026-12-07T10:00:00]"
    assert slurm.reported_gres(fields) == {"a100_1g.10gb": 14}
    assert slurm.drained_by_admin(fields)
    ours = slurm.node_fields("NodeName=gpu-1 State=IDLE+DRAIN Reason=mig-rollout run-1 [root@now]")
    assert not slurm.drained_by_admin(ours)
    assert not slurm.drained_by_admin(slurm.node_fields("NodeName=gpu-1 State=IDLE Reason=(null)"))
