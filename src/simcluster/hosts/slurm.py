"""Slurm on the test hosts (``simcluster hosts up --slurm``): Debian's slurmctld, slurmd and munged, run
for real, configured here.

One host, ``slurm-controller``, runs slurmctld; every GPU host runs slurmd; all run munged with one key
made for the set. ``slurm.conf`` is the same on every host. Each node's GPUs are declared by hand
(``Gres=gpu:N`` in ``slurm.conf``, ``Name=gpu File=/dev/nvidia[0-N]`` in ``gres.conf``), not with
``AutoDetect=nvml``: Debian's slurmd is not built with NVML (SchedMD's gres documentation: AutoDetect needs
it), and slurmd drops a GPU without ``File=`` ("Removing file-less GPU"). The hosts have the driver's device
files (see ``simcluster.hosts.supervisor``). The bare-metal playbook rewrites both when the MIG layout
changes.
"""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path

CLUSTER = "simcluster"
SLURM_CONF = "/etc/slurm/slurm.conf"
GRES_CONF = "/etc/slurm/gres.conf"
PARTITION = "gpu"


def slurm_conf(controller: tuple[str, str], nodes: list[tuple[str, str, int]]) -> str:
    """slurm.conf for the set: (name, address) of the controller; (name, address, GPU count) per node."""
    lines = [
        "# Written by simcluster hosts up --slurm: the same on every host of the set.",
        f"ClusterName={CLUSTER}",
        f"SlurmctldHost={controller[0]}({controller[1]})",
        "AuthType=auth/munge",
        "SlurmUser=slurm",
        "StateSaveLocation=/var/spool/slurmctld",
        "SlurmdSpoolDir=/var/spool/slurmd",
        "SlurmctldPidFile=/run/slurmctld.pid",
        "SlurmdPidFile=/run/slurmd.pid",
        "SlurmctldLogFile=/var/log/slurm/slurmctld.log",
        "SlurmdLogFile=/var/log/slurm/slurmd.log",
        # No cgroups on the test hosts: job processes are tracked by process group, tasks are not confined.
        "ProctrackType=proctrack/pgid",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "MpiDefault=none",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "ReturnToService=2",
        "SlurmdTimeout=30",
        "GresTypes=gpu",
    ]
    for name, address, count in nodes:
        lines.append(f"NodeName={name} NodeAddr={address} CPUs=2 RealMemory=512 Gres=gpu:{count} State=UNKNOWN")
    lines.append(f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP")
    return "\n".join(lines) + "\n"


def gres_conf(name: str, count: int) -> str:
    files = "/dev/nvidia0" if count == 1 else f"/dev/nvidia[0-{count - 1}]"
    return (f"# Written by simcluster hosts up --slurm: whole GPUs (MIG disabled).\n"
            f"NodeName={name} Name=gpu File={files}\n")


def _own(path: Path, user: str, mode: int) -> None:
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    os.chmod(path, mode)


def layout(root: Path, conf: str, gres: str, munge_key: bytes, units: list[str]) -> None:
    """Write one host's Slurm and MUNGE files into its private /etc and /var, and enable ``units``."""
    etc, var = root / "etc", root / "var"
    (etc / "slurm").mkdir(exist_ok=True)
    (etc / "slurm" / "slurm.conf").write_text(conf)
    (etc / "slurm" / "gres.conf").write_text(gres)
    munge = etc / "munge"
    munge.mkdir(exist_ok=True)
    (munge / "munge.key").write_bytes(munge_key)
    _own(munge / "munge.key", "munge", 0o400)
    _own(munge, "munge", 0o700)
    for path, user, mode in (("lib/munge", "munge", 0o711), ("log/munge", "munge", 0o700),
                             ("spool/slurmd", "root", 0o755), ("spool/slurmctld", "slurm", 0o755),
                             ("log/slurm", "slurm", 0o755)):
        (var / path).mkdir(parents=True, exist_ok=True)
        _own(var / path, user, mode)
    wants = etc / "systemd" / "system" / "multi-user.target.wants"
    for unit in units:
        link = wants / unit
        if not link.is_symlink():
            link.symlink_to(f"/usr/lib/systemd/system/{unit}")


def remove(root: Path) -> None:
    shutil.rmtree(root / "etc" / "slurm", ignore_errors=True)
