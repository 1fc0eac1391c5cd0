"""The simulator's view of the cluster: watch-fed caches and a keyed work queue.

Like a controller built on client-go informers: each resource is listed once,
then watched; every change enqueues the key of the node (or cluster-wide
component) it concerns; workers reconcile one key at a time.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from migrollout.kube import KubeClient, KubeError

log = logging.getLogger("simcluster")

Obj = dict[str, Any]
ChangeHandler = Callable[[Obj | None, Obj | None], None]


def object_key(obj: Obj) -> str:
    meta = obj.get("metadata", {})
    namespace = meta.get("namespace")
    return f"{namespace}/{meta['name']}" if namespace else meta["name"]


def resource_version(obj: Obj | None) -> int:
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion", 0))
    except ValueError:
        return 0


class Informer:
    """List-then-watch one resource into ``cache``, calling ``on_change(old, new)`` for each change."""

    def __init__(self, api: KubeClient, path: str, name: str, on_change: ChangeHandler,
                 label_selector: str | None = None, field_selector: str | None = None):
        self.api = api
        self.path = path
        self.name = name
        self.on_change = on_change
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.cache: dict[str, Obj] = {}
        self.lock = threading.RLock()
        self.synced = threading.Event()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"informer-{name}", daemon=True)

    def start(self) -> Informer:
        self.thread.start()
        return self

    def get(self, key: str) -> Obj | None:
        with self.lock:
            return self.cache.get(key)

    def items(self) -> list[Obj]:
        with self.lock:
            return list(self.cache.values())

    def observe(self, obj: Obj) -> None:
        """Record an object a write returned, so the next reconcile sees it before the watch event."""
        self._apply(object_key(obj), obj)

    def forget(self, key: str) -> None:
        self._apply(key, None)

    def _apply(self, key: str, new: Obj | None) -> None:
        with self.lock:
            old = self.cache.get(key)
            if new is not None and old is not None and resource_version(new) < resource_version(old):
                return
            if new is None:
                self.cache.pop(key, None)
            else:
                self.cache[key] = new
        if old is not new:
            self.on_change(old, new)

    def _relist(self) -> str:
        items, version = self.api.list(self.path, what=f"list {self.name}", label_selector=self.label_selector,
                                       field_selector=self.field_selector)
        fresh = {object_key(item): item for item in items}
        with self.lock:
            gone = [key for key in self.cache if key not in fresh]
        for key in gone:
            self._apply(key, None)
        for key, item in fresh.items():
            self._apply(key, item)
        self.synced.set()
        return version

    def _run(self) -> None:
        version = ""
        while not self.stopped.is_set():
            try:
                if not version:
                    version = self._relist()
                for kind, obj in self.api.watch(self.path, resource_version=version, what=f"watch {self.name}",
                                                label_selector=self.label_selector,
                                                field_selector=self.field_selector, timeout_seconds=300):
                    if self.stopped.is_set():
                        return
                    if kind == "BOOKMARK":
                        version = obj.get("metadata", {}).get("resourceVersion", version)
                        continue
                    version = obj.get("metadata", {}).get("resourceVersion", version)
                    if kind == "DELETED":
                        self._apply(object_key(obj), None)
                    else:
                        self._apply(object_key(obj), obj)
            except KubeError as exc:
                if exc.gone:
                    version = ""
                    continue
                if exc.not_found:
                    # The resource type is not served yet (e.g. the ClusterPolicy CRD is not installed).
                    self.synced.set()
                else:
                    log.warning("%s: %s", self.name, exc.one_line())
                version = ""
                self.stopped.wait(1.0)
            except Exception:  # keep the simulator alive; the next relist repairs the cache
                log.exception("%s: watch failed", self.name)
                version = ""
                self.stopped.wait(1.0)


class WorkQueue:
    """A set of keys to reconcile; a key is never processed by two workers at once."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._ready: list[str] = []
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._timers: list[tuple[float, int, str]] = []
        self._counter = 0
        self.shutting_down = False

    def add(self, key: str) -> None:
        with self._cond:
            if key in self._dirty:
                return
            self._dirty.add(key)
            if key not in self._processing:
                self._ready.append(key)
                self._cond.notify()

    def add_after(self, key: str, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            self._counter += 1
            heapq.heappush(self._timers, (time.monotonic() + delay, self._counter, key))
            self._cond.notify()

    def get(self) -> str | None:
        with self._cond:
            while True:
                if self.shutting_down:
                    return None
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    _, _, key = heapq.heappop(self._timers)
                    if key not in self._dirty:
                        self._dirty.add(key)
                        if key not in self._processing:
                            self._ready.append(key)
                if self._ready:
                    key = self._ready.pop(0)
                    self._dirty.discard(key)
                    self._processing.add(key)
                    return key
                timeout = self._timers[0][0] - now if self._timers else None
                self._cond.wait(timeout)

    def done(self, key: str) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._ready.append(key)
                self._cond.notify()

    def idle(self) -> bool:
        with self._cond:
            return not self._ready and not self._processing and not self._dirty

    def shutdown(self) -> None:
        with self._cond:
            self.shutting_down = True
            self._cond.notify_all()
