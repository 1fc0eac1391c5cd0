"""The simulated hardware of a node: its GPUs, their MIG layout, and injected faults.

The hardware facts live on the Node object as ``simcluster.dev/*`` annotations
(as kwok keeps its fake-node settings), so they survive a restart of the
simulator and tests can inject a fault into a live node with ``kubectl annotate``.
The toolkit never reads them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from migrollout import catalogue
from migrollout.catalogue import GpuModel
from migrollout.default_config import default_mig_config
from migrollout.migconfig import DISABLED, GpuLayout, resolve

PREFIX = "simcluster.dev/"
GPU_MODEL = PREFIX + "gpu-model"
GPU_COUNT = PREFIX + "gpu-count"
MIG_LAYOUT = PREFIX + "mig-layout"
FAULT_PREFIX = PREFIX + "fault-"
RUN_SECONDS = PREFIX + "run-seconds"  # on a pod: complete (Succeeded) after this long
SIMULATED = PREFIX + "simulated"  # marks the nodes the simulator is the kubelet of


@dataclass(frozen=True)
class NodeFaults:
    apply_delay_s: float | None = None
    apply_fails: bool = False
    reboot_required: bool = False
    reboot_fails: bool = False
    stuck_pending: bool = False

    @classmethod
    def from_annotations(cls, annotations: dict[str, str]) -> NodeFaults:
        values: dict[str, Any] = {}
        for field in cls.__dataclass_fields__:
            raw = annotations.get(FAULT_PREFIX + field.replace("_", "-"))
            if raw is None:
                continue
            if field == "apply_delay_s":
                try:
                    values[field] = float(raw)
                except ValueError:
                    continue
            else:
                values[field] = raw.strip().lower() == "true"
        return cls(**values)

    @staticmethod
    def annotations(faults: Any) -> dict[str, str]:
        result = {}
        for field in NodeFaults.__dataclass_fields__:
            value = getattr(faults, field)
            if value is None or value is False:
                continue
            result[FAULT_PREFIX + field.replace("_", "-")] = str(value).lower()
        return result


def annotations_of(node: dict[str, Any]) -> dict[str, str]:
    return node.get("metadata", {}).get("annotations") or {}


def gpu_model(node: dict[str, Any]) -> GpuModel | None:
    key = annotations_of(node).get(GPU_MODEL)
    return catalogue.find_model(key) if key else None


def gpu_count(node: dict[str, Any]) -> int:
    try:
        return int(annotations_of(node).get(GPU_COUNT, "0"))
    except ValueError:
        return 0


def layouts(node: dict[str, Any]) -> list[GpuLayout]:
    count = gpu_count(node)
    raw = annotations_of(node).get(MIG_LAYOUT)
    if raw:
        try:
            stored = [GpuLayout.from_dict(item) for item in json.loads(raw)]
            if len(stored) == count:
                return stored
        except (ValueError, TypeError, AttributeError):
            pass
    return [DISABLED] * count


def encode_layouts(gpus: list[GpuLayout]) -> str:
    return json.dumps([layout.to_dict() for layout in gpus], separators=(",", ":"))


def initial_layouts(spec: Any) -> list[GpuLayout]:
    """The GPU layout a fleet node boots with: its pool's ``mig_config`` already applied, else MIG off."""
    if spec.gpu is None:
        return []
    if spec.mig_devices:
        return [GpuLayout(True, dict(spec.mig_devices))] * spec.gpu_count
    if not spec.mig_config:
        return [DISABLED] * spec.gpu_count
    resolved = resolve(default_mig_config(), spec.mig_config, spec.gpu, spec.gpu_count)
    return [layout if layout is not None else DISABLED for layout in resolved]
