"""The rollout record: where a node stands in a MIG rollout, kept on the node itself.

It is written in the same conflict-safe write that puts the node into maintenance,
so the cluster never holds a maintenance taint of ours without the record of
what to undo. A run that dies (Ctrl-C, lost control host) leaves the record; the
next run finds it, finishes that node first, and removes exactly what was added.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from migrollout import labels, nodes, taints
from migrollout.rollout.fence import LockLost
from migrollout.taints import Taint
from migrollout.timestamps import time_text

ANNOTATION = labels.ROLLOUT_RECORD


@dataclass
class Record:
    run: str
    from_config: str
    to_config: str
    step: str = "maintenance"          # maintenance (tainted, being reconfigured) or failed
    added_taints: list[dict[str, str]] = field(default_factory=list)
    cordoned: bool = False             # this rollout cordoned the node (an admin's cordon is never undone)
    started: str = field(default_factory=time_text)
    updated: str = field(default_factory=time_text)
    error: str = ""
    runs: list[str] = field(default_factory=list)  # every run that worked on the node, oldest first
    recoveries: list[str] = field(default_factory=list)  # what a run did to unstick the node (a MIG manager restart)

    def encode(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def decode(cls, text: str) -> Record:
        data = json.loads(text)
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


def read(node: dict[str, Any]) -> Record | None:
    raw = nodes.node_annotations(node).get(ANNOTATION)
    if not raw:
        return None
    try:
        return Record.decode(raw)
    except (ValueError, TypeError):
        return None


def begin_patch(node: dict[str, Any], run: str, to_config: str, maintenance: list[Taint],
                cordon: bool) -> tuple[dict[str, Any] | None, Record]:
    """The merge patch that puts ``node`` into maintenance for ``run``, and the record it writes.

    Taints already on the node before any rollout touched it are an admin's: they are neither
    recorded nor ever removed. A record left by an earlier run keeps what that run added."""
    previous = read(node)
    current_taints = nodes.node_taints(node)
    if previous is not None:
        record = read(node)  # a copy: ``previous`` must stay as the node has it, to tell whether anything changed
        assert record is not None
        record.runs = [*record.runs, previous.run][-10:] if previous.run != run else list(record.runs)
        record.run, record.to_config, record.step, record.error = run, to_config, "maintenance", ""
    else:
        record = Record(run=run, from_config=nodes.mig_config(node), to_config=to_config)
    recorded = {Taint.from_dict(t).identity() for t in record.added_taints}
    for taint in maintenance:
        if not taints.present(current_taints, taint) and taint.identity() not in recorded:
            record.added_taints.append(taint.to_dict())
    if cordon and not nodes.is_cordoned(node):
        record.cordoned = True
    record.updated = time_text()
    wanted_taints = taints.add(current_taints, maintenance)
    patch: dict[str, Any] = {"metadata": {"annotations": {ANNOTATION: record.encode()}}}
    spec: dict[str, Any] = {}
    if not taints.same(current_taints, wanted_taints):
        spec["taints"] = wanted_taints
    if cordon and not nodes.is_cordoned(node):
        spec["unschedulable"] = True
    if spec:
        patch["spec"] = spec
    if previous is not None and not spec and _same_except_time(previous, record):
        return None, previous
    return patch, record


def _same_except_time(left: Record, right: Record) -> bool:
    return {**vars(left), "updated": ""} == {**vars(right), "updated": ""}


def _ours(node: dict[str, Any], record: Record, run: str) -> None:
    """A record naming another run means that run has taken the node over: this one must not touch it."""
    if record.run != run:
        raise LockLost(f"node {node['metadata']['name']}: its rollout record now names run {record.run}, not "
                       f"{run}: another run has taken this node over")


def finish_patch(node: dict[str, Any], run: str | None = None) -> tuple[dict[str, Any] | None, Record | None]:
    """The merge patch that returns ``node`` to service: remove only the taints and cordon the record
    says a rollout added, and the record itself. With ``run``, the record must still name that run."""
    record = read(node)
    if record is None:
        return None, None
    if run is not None:
        _ours(node, record, run)
    current_taints = nodes.node_taints(node)
    remaining = taints.remove(current_taints, [Taint.from_dict(t) for t in record.added_taints])
    patch: dict[str, Any] = {"metadata": {"annotations": {ANNOTATION: None}}}
    spec: dict[str, Any] = {}
    if not taints.same(current_taints, remaining):
        spec["taints"] = remaining or None
    if record.cordoned and nodes.is_cordoned(node):
        spec["unschedulable"] = None
    if spec:
        patch["spec"] = spec
    return patch, record


def recovery_patch(node: dict[str, Any], run: str, note: str) -> tuple[dict[str, Any] | None, Record | None]:
    """Add to the record what this run did to recover the node (the record must still name ``run``); no record
    (a MIG apply outside a rollout): nothing to write."""
    record = read(node)
    if record is None:
        return None, None
    _ours(node, record, run)
    record.recoveries = [*record.recoveries, note][-5:]
    record.updated = time_text()
    return {"metadata": {"annotations": {ANNOTATION: record.encode()}}}, record


def failed_patch(node: dict[str, Any], run: str, step: str, error: str) -> tuple[dict[str, Any] | None, Record | None]:
    """Mark the record failed (the node keeps its maintenance taints: no broken GPUs back in service).
    The record must still name ``run``: a failure is never written over another run's record."""
    record = read(node)
    if record is None:
        return None, None
    _ours(node, record, run)
    record.step, record.error, record.run, record.updated = "failed", f"{step}: {error}"[:900], run, time_text()
    return {"metadata": {"annotations": {ANNOTATION: record.encode()}}}, record
