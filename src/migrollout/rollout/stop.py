"""Why a rollout starts no more nodes: an operator's stop file, or the run lost its rollout lock. The window
strategy asks before it starts any node; nodes already running finish (their steps stop at the fence)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from migrollout.rollout import fence


def stop_reason(settings: Mapping[str, Any]) -> str:
    """Why no node may start any more ("" while nodes may): the stop file (``stop_file``; its text is the
    reason), or the lost rollout lock (``rollout_lock``: the fence the node steps check)."""
    path = settings.get("stop_file")
    if path and os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read().strip()
        except OSError:
            text = ""
        return text or f"the stop file {path} exists"
    lock = settings.get("rollout_lock")
    if lock:
        try:
            fence.from_params(lock).check()
        except fence.LockLost as exc:
            return f"this run lost its rollout lock: {exc}"
    return ""
