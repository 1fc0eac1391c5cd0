"""The two time formats of Kubernetes objects."""

from __future__ import annotations

import datetime


def time_text(moment: datetime.datetime | None = None) -> str:
    """A Kubernetes Time (seconds, UTC): creationTimestamp, taints' timeAdded, conditions."""
    return (moment or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time_text(moment: datetime.datetime | None = None) -> str:
    """A Kubernetes MicroTime (microseconds, UTC): Leases' acquireTime and renewTime."""
    return (moment or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
