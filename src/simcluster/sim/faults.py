"""The faults a simulated node can be given: one definition for the fleet file, the node annotations and the
components that act on them.

A fleet pool (and a node of it) sets them under ``faults:``; the kubelet writes them on the Node as
``simcluster.dev/fault-<knob>`` annotations (``apply_fails`` -> ``fault-apply-fails``), so a test can
also inject one into a live node; the MIG manager reads them back from the node it works on.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

ANNOTATION_PREFIX = "simcluster.dev/fault-"


@dataclass(frozen=True)
class NodeFaults:
    # Seconds a MIG apply takes on this node (None: the fleet's simulation.apply_delay_s).
    apply_delay_s: float | None = None
    # nvidia-mig-parted apply fails after the MIG mode change (the GPUs are left MIG-enabled and empty).
    apply_fails: bool = False
    # A MIG mode change does not take effect on a GPU reset, only on a reboot (cloud VMs, passthrough). Only where
    # a change waits for a reset (A100, A30): from H100 on it takes effect at once, reset or not.
    reboot_required: bool = False
    # The mode change does not take effect on the reboot either.
    reboot_fails: bool = False
    # mig-parted v0.15.0's pod-wait bug: the run returns without a state, leaving pending and paused operands.
    stuck_pending: bool = False
    # The same, once: the next run gets stuck, and the knob is gone (a GPU client that was slow to stop once);
    # a later run (a new label value, a restarted MIG manager pod) applies normally.
    stuck_pending_once: bool = False

    @classmethod
    def knobs(cls) -> dict[str, type]:
        """Each knob and the type of its value (float for durations, bool for the rest)."""
        return {f.name: float if f.name.endswith("_s") else bool for f in fields(cls)}

    def merged(self, override: dict[str, Any]) -> NodeFaults:
        return replace(self, **override)

    @staticmethod
    def annotation(knob: str) -> str:
        return ANNOTATION_PREFIX + knob.replace("_", "-")

    @classmethod
    def from_annotations(cls, annotations: dict[str, str]) -> NodeFaults:
        values: dict[str, Any] = {}
        for knob, kind in cls.knobs().items():
            raw = annotations.get(cls.annotation(knob))
            if raw is None:
                continue
            if kind is float:
                try:
                    values[knob] = float(raw)
                except ValueError:
                    continue  # a typo in a hand-written annotation leaves the default
            else:
                values[knob] = raw.strip().lower() == "true"
        return cls(**values)

    def annotations(self) -> dict[str, str]:
        """The annotations that describe these faults (knobs at their default are left out)."""
        result = {}
        for knob in self.knobs():
            value = getattr(self, knob)
            if value is None or value is False:
                continue
            result[self.annotation(knob)] = str(value).lower()
        return result
