"""Shared by the core's unit tests: ``recording_api``, a stand-in for KubeClient in the unit tests of
orchestration (which requests a step sends, in which order, and what it makes of the answers). It keeps nodes
and pods in dicts, applies JSON merge patches with the resourceVersion precondition, and records every request.
The integration tests run the same steps against the real API server; this one knows only the calls these
unit tests need."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from migrollout.kube import KubeError


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


class RecordingApi:
    def __init__(self, nodes: list[dict[str, Any]] = (), pods: list[dict[str, Any]] = (), conflicts: int = 0):
        self.nodes = {n["metadata"]["name"]: copy.deepcopy(n) for n in nodes}
        self.pods = [copy.deepcopy(p) for p in pods]
        self.requests: list[tuple[str, str]] = []
        self.patches: list[dict[str, Any]] = []
        self.conflicts = conflicts   # this many patches are answered 409, as if someone wrote the node first
        self.requests_count = 0
        self.deletes: list[Any] = []    # the DeleteOptions of each DELETE

    def _node(self, path: str, what: str) -> dict[str, Any]:
        name = path.rsplit("/", 1)[1]
        if name not in self.nodes:
            raise KubeError(404, "NotFound", f'nodes "{name}" not found', what)
        return self.nodes[name]

    def get(self, path: str, what: str = "", **query: Any) -> dict[str, Any]:
        self.requests.append(("GET", path))
        return copy.deepcopy(self._node(path, what))

    def patch(self, path: str, body: dict[str, Any], what: str = "", **query: Any) -> dict[str, Any]:
        self.requests.append(("PATCH", path))
        node = self._node(path, what)
        if self.conflicts:
            self.conflicts -= 1
            raise KubeError(409, "Conflict", "the object has been modified", what)
        wanted = body.get("metadata", {}).get("resourceVersion")
        if wanted is not None and wanted != node["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", "the object has been modified", what)
        self.patches.append(body)
        after = merge(node, body)
        if query.get("dryRun") != "All":
            after["metadata"]["resourceVersion"] = str(int(node["metadata"]["resourceVersion"]) + 1)
            self.nodes[node["metadata"]["name"]] = after
        return copy.deepcopy(after)

    def list(self, path: str, what: str = "", **query: Any) -> tuple[list[dict[str, Any]], str]:
        self.requests.append(("LIST", path))
        return copy.deepcopy(self.pods), "1"

    def delete(self, path: str, what: str = "", body: Any = None, **query: Any) -> dict[str, Any]:
        self.requests.append(("DELETE", path))
        self.deletes.append(body)
        return {}

    def create(self, path: str, body: dict[str, Any], what: str = "", **query: Any) -> dict[str, Any]:
        self.requests.append(("POST", path))
        return body

    def fenced(self, guard: Any) -> Any:
        """As KubeClient.fenced: the same objects, every write preceded by ``guard()`` (None: no guard)."""
        return self if guard is None else FencedView(self, guard)


class FencedView:
    def __init__(self, api: RecordingApi, guard: Any):
        self.api, self.guard = api, guard
        self.get, self.list = api.get, api.list

    def _guarded(self, method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.guard()
            return method(*args, **kwargs)
        return call

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.api, name)
        return self._guarded(method) if name in ("patch", "delete", "create") else method


@pytest.fixture
def recording_api() -> type[RecordingApi]:
    """``recording_api(nodes=[...], pods=[...], conflicts=0)``: a RecordingApi over those objects."""
    return RecordingApi
