"""The maintenance window's slots, as the window strategy records them in a small local file at every change:
the nodes active now and when each took its slot, the nodes done, failed, not started, and still to come.

Read by the begin step (a node changes only while it holds a slot) and by the lock renewer, which publishes the
active slots in the rollout's Lease with its next renewal (no request of its own), so they are visible on the
cluster and expire with the Lease. The file sits beside the run's lock state file (rollout.fence); one writer
(the strategy), written whole (write and rename).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from migrollout.rollout.schedule import Progress, Schedule
from migrollout.timestamps import micro_time_text

SUFFIX = ".slots"
# The Lease annotation the renewer publishes the active slots in.
ANNOTATION = "mig-rollout.nvidia-mig-rollout.io/slots"


def path_for(state_file: str) -> str:
    """The slots file of the run whose lock state file is ``state_file``."""
    return state_file + SUFFIX


def write(path: str, state: dict[str, Any]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".slots-")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump(state, out, sort_keys=True)
    os.replace(temporary, path)


def read(path: str) -> dict[str, Any] | None:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def active(path: str) -> dict[str, str] | None:
    """Node -> when it took its slot; None when there is no readable slots file."""
    data = read(path)
    if data is None:
        return None
    found = data.get("active")
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def published(path: str) -> str | None:
    """The Lease annotation's value: the active slots as compact JSON (None without a slots file)."""
    data = read(path)
    if data is None:
        return None
    return json.dumps({"run": data.get("run", ""), "window": data.get("window"),
                       "active": data.get("active") or {}}, sort_keys=True, separators=(",", ":"))


def window_record(run: str, schedule: Schedule, progress: Progress, admitted: Mapping[str, str],
                  not_started: Mapping[str, str]) -> dict[str, Any]:
    """What the strategy writes at every change: the active nodes and when each took its slot (``admitted``),
    the nodes done, failed, never started (with why) and still to come."""
    started = progress.started()
    return {
        "run": run, "mode": schedule.mode, "window": schedule.window,
        "active": {node: admitted[node] for node in sorted(progress.active)},
        "done": sorted(progress.done), "failed": sorted(progress.failed),
        "not_started": dict(not_started),
        "pending": [node for node in schedule.nodes if node not in started and node not in not_started],
        "updated": micro_time_text()}
