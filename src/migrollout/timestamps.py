"""The two time formats of Kubernetes objects (the toolkit's reports and records use them too), and reading them."""

from __future__ import annotations

import datetime


def time_text(moment: datetime.datetime | None = None) -> str:
    """A Kubernetes Time (seconds, UTC): creationTimestamp, taints' timeAdded, conditions."""
    return (moment or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time_text(moment: datetime.datetime | None = None) -> str:
    """A Kubernetes MicroTime (microseconds, UTC): Leases' acquireTime and renewTime."""
    return (moment or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse(text: str | None) -> datetime.datetime | None:
    """A Time or a MicroTime as an aware datetime; None when ``text`` is empty or neither."""
    if not text:
        return None
    for layout in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return datetime.datetime.strptime(text.replace("Z", "+0000"), layout)
        except ValueError:
            continue
    return None
