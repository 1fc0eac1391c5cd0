"""Slurm's view of a host's GPUs: the GRES that ``slurm.conf`` and ``gres.conf`` declare for a MIG layout.

Pure. Slurm drains a node whose slurmd reports fewer GRES than ``slurm.conf`` declares (SchedMD's gres
documentation, MIG section), so the declared GRES must follow the layout. Without ``AutoDetect=nvml`` (a
slurmd built with NVML), a site declares them by hand, which this module writes:

- a GPU with MIG disabled is one ``gpu:<type>`` with ``File=/dev/nvidia<index>``;
- a MIG device is one ``gpu:<type>_<profile>`` (Slurm names MIG types so: ``a100_3g.20gb``) with
  ``File=`` the MIG capability file of its GPU instance, ``/dev/nvidia-caps/nvidia-cap<minor>``, the minor
  as the driver's ``/proc/driver/nvidia-caps/mig-minors`` numbers ``gpu<G>/gi<I>/access`` (3 + 135 G + 9 I).
  GPU instance ids are taken in the order of the layout's profiles (mig-parted's export gives counts, not
  ids): right for counting and scheduling; a site that confines jobs to their devices (cgroups) wants
  AutoDetect=nvml instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

GPU_INSTANCES_PER_GPU = 15
MINORS_PER_GPU_INSTANCE = 9      # the GPU instance's access file and 8 compute instances'
FIRST_MIG_MINOR = 3              # after config (1) and monitor (2)
DRAIN_REASON_PREFIX = "mig-rollout"


class SlurmError(ValueError):
    pass


@dataclass(frozen=True)
class Gres:
    """A node's GPU GRES: ``Gres=`` of its slurm.conf line and the lines of its gres.conf."""

    field: str
    conf_lines: tuple[str, ...]
    counts: dict[str, int]


def gpu_type(product: str) -> str:
    """Slurm's GPU type for a product name: ``NVIDIA A100-SXM4-80GB`` -> ``a100``, ``NVIDIA H100 80GB HBM3``
    -> ``h100`` (the first word of the model, lower case)."""
    words = re.split(r"[\s_-]+", product.strip())
    words = [w for w in words if w and w.lower() not in ("nvidia", "tesla")]
    if not words:
        raise SlurmError(f"cannot name a Slurm GPU type for the product {product!r}")
    return words[0].lower()


def mig_type(base: str, profile: str) -> str:
    """``a100`` and ``1g.10gb+me`` -> ``a100_1g.10gb_me`` (Slurm type names take letters, digits, ., _ and -)."""
    return f"{base}_{re.sub(r'[^A-Za-z0-9._-]', '_', profile)}"


def mig_minor(gpu: int, gpu_instance: int) -> int:
    return FIRST_MIG_MINOR + gpu * GPU_INSTANCES_PER_GPU * MINORS_PER_GPU_INSTANCE + gpu_instance * MINORS_PER_GPU_INSTANCE


def layout_per_gpu(exported: Mapping[str, Any], gpu_count: int) -> list[tuple[bool, dict[str, int]]]:
    """Per GPU index, (MIG enabled, MIG devices) from ``nvidia-mig-parted export``'s document."""
    configs = exported.get("mig-configs") or {}
    if len(configs) != 1:
        raise SlurmError("mig-parted's export should hold exactly one config")
    result: list[tuple[bool, dict[str, int]] | None] = [None] * gpu_count
    for entry in next(iter(configs.values())) or []:
        devices = entry.get("devices")
        indices = range(gpu_count) if devices == "all" else [int(i) for i in devices or []]
        for index in indices:
            if not 0 <= index < gpu_count:
                raise SlurmError(f"mig-parted's export names GPU {index}; the host has {gpu_count}")
            result[index] = (bool(entry.get("mig-enabled")), {str(k): int(v) for k, v in
                                                              (entry.get("mig-devices") or {}).items()})
    missing = [i for i, item in enumerate(result) if item is None]
    if missing:
        raise SlurmError(f"mig-parted's export does not cover GPU {missing[0]}")
    return [item for item in result if item is not None]


def gres(node: str, base_type: str, layout: Iterable[tuple[bool, Mapping[str, int]]]) -> Gres:
    """The GRES of a node whose GPUs have ``layout`` (per GPU: MIG enabled, MIG devices)."""
    counts: dict[str, int] = {}
    lines: list[str] = []
    for index, (enabled, devices) in enumerate(layout):
        if not enabled:
            counts[base_type] = counts.get(base_type, 0) + 1
            lines.append(f"NodeName={node} Name=gpu Type={base_type} File=/dev/nvidia{index}")
            continue
        instance = 0
        for profile in sorted(devices):
            kind = mig_type(base_type, profile)
            for _ in range(devices[profile]):
                counts[kind] = counts.get(kind, 0) + 1
                lines.append(f"NodeName={node} Name=gpu Type={kind} "
                             f"File=/dev/nvidia-caps/nvidia-cap{mig_minor(index, instance)}")
                instance += 1
    field = ",".join(f"gpu:{kind}:{count}" for kind, count in sorted(counts.items()))
    return Gres(field or "gpu:0", tuple(lines), counts)


def slurm_conf_node_line(line: str, gres_field: str) -> str:
    """A ``NodeName=`` line of slurm.conf with its ``Gres=`` replaced (or added)."""
    if re.search(r"(^|\s)Gres=\S*", line):
        return re.sub(r"(^|\s)Gres=\S*", lambda m: f"{m.group(1)}Gres={gres_field}", line)
    return f"{line.rstrip()} Gres={gres_field}"


def node_fields(text: str) -> dict[str, str]:
    """``scontrol show node NAME --oneliner`` as key -> value (values with spaces, as Reason=, kept whole)."""
    fields: dict[str, str] = {}
    key = ""
    for word in text.strip().split(" "):
        if "=" in word and re.match(r"^[A-Za-z_]+=", word):
            key, _, value = word.partition("=")
            fields[key] = value
        elif key:
            fields[key] += " " + word
    return fields


def reported_gres(fields: Mapping[str, str]) -> dict[str, int]:
    """What ``Gres=`` of scontrol's node record declares: ``gpu:a100_1g.10gb:7(S:0),gpu:a100:1`` -> counts."""
    counts: dict[str, int] = {}
    for item in (fields.get("Gres") or "").split(","):
        parts = re.sub(r"\(.*?\)", "", item).split(":")
        if len(parts) == 3 and parts[0] == "gpu":
            counts[parts[1]] = counts.get(parts[1], 0) + int(parts[2])
        elif len(parts) == 2 and parts[0] == "gpu" and parts[1].isdigit():
            counts[""] = counts.get("", 0) + int(parts[1])
    return counts


def drained_by_admin(fields: Mapping[str, str]) -> bool:
    """A node drained (or draining) before the run, for a reason that is not a MIG rollout's."""
    state = fields.get("State", "")
    return "DRAIN" in state and not (fields.get("Reason") or "").startswith(DRAIN_REASON_PREFIX)
