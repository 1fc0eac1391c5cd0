"""Evacuating a node: evict the chosen pods in parallel and wait, by UID, until they are gone.

* Evictions go through the Eviction API so PodDisruptionBudgets are honoured; a 429
  (budget exhausted) is retried with backoff until the deadline, and the budget is
  remembered by name so a timeout can say who blocked it.
* Each eviction carries the pod's UID as a precondition: a same-name replacement
  (StatefulSet) is never evicted by mistake, and counts as the old pod being gone.
* One watch on the node's pods, opened before the first eviction, sees each
  deletion; GPU pods that land on the node meanwhile are judged and evacuated too.
* A pod whose replacement would be let straight back onto the node (it tolerates
  every taint that keeps pods off it) is refused or warned about, before anything
  is evicted.
* ``stop_check`` (the rollout's fence) runs before every eviction and at least once
  a second while waiting: an evacuation stops as soon as its run lost the rollout
  lock or its ansible-playbook process is gone.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from migrollout import kube, selectors
from migrollout.evacuation.selection import (
    DELETE,
    EVICT,
    REFUSE,
    SKIP,
    WAIT,
    Decision,
    Options,
    comes_back,
    plan,
    returning_reason,
    selected,
)
from migrollout.kube import KubeClient, KubeError
from migrollout.taints import Taint
from migrollout.timestamps import time_text

WARN, REFUSE_RETURNING = "warn", "refuse"
NAMESPACE_TERMINATING = "NamespaceTerminating"  # the Status cause kubectl drain checks (corev1.NamespaceTerminatingCause)

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 5.0


@dataclass
class EvacuationResult:
    evicted: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    blocking_pdbs: list[str] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    returning: list[dict[str, Any]] = field(default_factory=list)  # pods whose replacement could come back
    warnings: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            # "skipped" is a reserved word in Ansible results (it marks the task skipped).
            "evicted": self.evicted, "skipped_pods": self.skipped, "pending": self.pending,
            "blocking_pdbs": sorted(set(self.blocking_pdbs)), "returning": self.returning,
            "duration_s": round(self.duration_s, 3),
        }

    def problem(self, node: str, timeout: float) -> str:
        """Why the evacuation of ``node`` did not complete, in one sentence ("" when it did)."""
        if self.refused:
            return (f"node {node}: cannot evacuate {pod_names(self.refused)}: {self.refused[0]['reason']}"
                    + ("" if not self.evicted else f" ({len(self.evicted)} pods already left)"))
        if self.pending:
            blockers = sorted(set(self.blocking_pdbs))
            blocked = f"; blocked by PodDisruptionBudget {', '.join(blockers)}" if blockers else ""
            return f"node {node}: {len(self.pending)} pods still there after {timeout:g} s: {pod_names(self.pending)}{blocked}"
        return ""


def options_problem(options: dict[str, Any]) -> str:
    """The first evacuation option out of range (grace_period, timeout, max_parallel, pod_selector), as a
    phrase naming it; "" when every one is usable."""
    if options["grace_period"] < -1:
        return f"grace_period is {options['grace_period']}; it must be -1 (each pod's own) or 0 or more"
    for option in ("timeout", "max_parallel"):
        if options[option] <= 0:
            return f"{option} is {options[option]}; it must be at least 1"
    try:
        selectors.parse(options.get("pod_selector"))
    except selectors.SelectorError as exc:
        return f"pod_selector: {exc}"
    return ""


def pod_names(entries: list[dict[str, Any]]) -> str:
    shown = ", ".join(f"{e['namespace']}/{e['name']}" for e in entries[:5])
    return shown + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")


def _pdb_from_causes(error: KubeError) -> str | None:
    for message in error.causes("DisruptionBudget"):
        # "The disruption budget <name> needs 3 healthy pods and has 3 currently"
        words = message.split()
        if len(words) > 3 and words[:3] == ["The", "disruption", "budget"]:
            return words[3]
    text = error.message
    marker = "The disruption budget "
    if marker in text:
        return text.split(marker, 1)[1].split()[0]
    return None


class Evacuator:
    def __init__(self, api: KubeClient, node: str, options: Options, pod_selector: str | None = None,
                 timeout: float = 600, max_parallel: int = 10, grace_period: int = -1,
                 disable_eviction: bool = False, keeping_off: list[Taint] | None = None,
                 returning: str = WARN, stop_check: Callable[[], None] | None = None,
                 marks: Callable[[], dict[str, str]] | None = None):
        self.api = api
        self.node = node
        self.options = options
        self.pod_selector = pod_selector or None
        self.timeout = timeout
        self.max_parallel = max(1, max_parallel)
        self.grace_period = grace_period
        self.disable_eviction = disable_eviction
        self._daemonsets: dict[tuple[str, str], bool] = {}
        self._lock = threading.Condition()
        self._gone: dict[str, float] = {}
        self._pdb_of: dict[str, str] = {}
        self.keeping_off = keeping_off      # what keeps new pods off the node (None: not judged)
        self.returning = returning          # WARN or REFUSE_RETURNING pods that would come straight back
        self.stop_check = stop_check or (lambda: None)
        self.marks = marks or dict         # annotations each Eviction carries (the rollout's fence: its run)
        self._fatal: Exception | None = None
        self._stop = threading.Event()  # set when the evacuation ends: retrying workers stop with it

    # -- planning ------------------------------------------------------------------------------------------------

    def list_pods(self) -> tuple[list[dict[str, Any]], str]:
        return self.api.list(kube.pods_path(), what=f"list pods on node {self.node}",
                             field_selector=f"spec.nodeName={self.node}", label_selector=self.pod_selector)

    def _daemonset_exists(self, namespace: str, name: str) -> bool:
        key = (namespace, name)
        if key not in self._daemonsets:
            found = self.api.get_or_none(kube.namespaced_path("apps/v1", "daemonsets", namespace, name),
                                         what=f"read DaemonSet {namespace}/{name}")
            self._daemonsets[key] = found is not None
        return self._daemonsets[key]

    def plan(self, pods: list[dict[str, Any]]) -> list[Decision]:
        decisions = plan(pods, self.options, self._daemonset_exists)
        if self.keeping_off is None or self.returning != REFUSE_RETURNING:
            return decisions
        reason = returning_reason(self.keeping_off)
        return [Decision(d.pod, REFUSE, reason) if d.action == EVICT and comes_back(d.pod, self.keeping_off) else d
                for d in decisions]

    def _note_returning(self, decisions: list[Decision], result: EvacuationResult) -> None:
        if self.keeping_off is None:
            return
        back = [d for d in decisions if d.action == EVICT and comes_back(d.pod, self.keeping_off)]
        if not back:
            return
        result.returning.extend(d.describe() for d in back)
        shown = ", ".join(d.ref for d in back[:5]) + (f" and {len(back) - 5} more" if len(back) > 5 else "")
        result.warnings.append(f"node {self.node}: {shown}: {returning_reason(self.keeping_off)}")

    # -- one pod -------------------------------------------------------------------------------------------------

    def _delete_options(self, uid: str) -> dict[str, Any]:
        options: dict[str, Any] = {"preconditions": {"uid": uid}}
        if self.grace_period >= 0:
            options["gracePeriodSeconds"] = self.grace_period
        return options

    def _remove_once(self, decision: Decision, dry_run: bool) -> None:
        meta = decision.pod["metadata"]
        namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
        dry = "All" if dry_run else None

        def delete() -> None:
            self.api.delete(kube.pod_path(namespace, name), what=f"delete pod {namespace}/{name}",
                            body=self._delete_options(uid), dryRun=dry)

        if decision.action == DELETE or self.disable_eviction:
            delete()
            return
        metadata: dict[str, Any] = {"name": name, "namespace": namespace}
        if annotations := self.marks():
            metadata["annotations"] = annotations
        body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": metadata,
                "deleteOptions": self._delete_options(uid)}
        try:
            self.api.create(kube.pod_path(namespace, name) + "/eviction", body, what=f"evict pod {namespace}/{name}",
                            dryRun=dry)
        except KubeError as exc:
            if exc.status == 403 and exc.has_cause(NAMESPACE_TERMINATING):
                delete()  # the namespace is being deleted: evictions are refused, deleting is what remains (kubectl)
                return
            raise

    def _remove(self, decision: Decision, deadline: float) -> None:
        uid = decision.pod["metadata"]["uid"]
        delay = BACKOFF_FIRST_S
        while not self._stop.is_set():
            with self._lock:
                if uid in self._gone or self._fatal is not None:
                    return
            try:
                self.stop_check()  # right before the eviction: this run must still hold the rollout lock
            except Exception as exc:  # the run lost its lock, or died: no more evictions
                self._fail(exc)
                return
            try:
                self._remove_once(decision, dry_run=False)
                return
            except KubeError as exc:
                if exc.not_found or exc.conflict:  # gone already, or replaced by a pod with another UID
                    self._mark_gone(uid)
                    return
                if not exc.too_many_requests:
                    self._fail(exc)
                    return
                pdb = _pdb_from_causes(exc)
                if pdb:
                    with self._lock:
                        self._pdb_of[uid] = f"{decision.pod['metadata']['namespace']}/{pdb}"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._stop.wait(min(remaining, delay * random.uniform(0.8, 1.2)))
            delay = min(delay * 1.5, BACKOFF_MAX_S)

    def _fail(self, exc: Exception) -> None:
        with self._lock:
            self._fatal = self._fatal or exc
            self._lock.notify_all()

    def _mark_gone(self, uid: str) -> None:
        with self._lock:
            self._gone.setdefault(uid, time.monotonic())
            self._lock.notify_all()

    # -- the whole evacuation ------------------------------------------------------------------------------------

    def check(self) -> EvacuationResult:
        """Check mode: what would leave, and which budgets would block it right now (server dry run)."""
        started = time.monotonic()
        pods, _ = self.list_pods()
        result = EvacuationResult()
        decisions = self.plan(pods)
        self._note_returning(decisions, result)
        for decision in decisions:
            self._record_static(decision, result)
            if decision.action not in (EVICT, DELETE):
                continue
            try:
                self._remove_once(decision, dry_run=True)
                result.evicted.append({**decision.describe(), "method": self._method(decision)})
            except KubeError as exc:
                if exc.not_found:
                    continue
                if not exc.too_many_requests:
                    raise
                pdb = _pdb_from_causes(exc)
                result.pending.append({**decision.describe(), "reason": exc.message})
                if pdb:
                    result.blocking_pdbs.append(f"{decision.pod['metadata']['namespace']}/{pdb}")
        result.duration_s = time.monotonic() - started
        return result

    def _method(self, decision: Decision) -> str:
        return "delete" if decision.action == DELETE or self.disable_eviction else "evict"

    @staticmethod
    def _record_static(decision: Decision, result: EvacuationResult) -> None:
        if decision.action == SKIP:
            result.skipped.append(decision.describe())
        elif decision.action == REFUSE:
            result.refused.append(decision.describe())
        if decision.warning:
            result.warnings.append(decision.warning)

    def run(self, pods: list[dict[str, Any]], version: str) -> EvacuationResult:
        """Evacuate after a successful plan of ``pods`` (listed at ``version``)."""
        started = time.monotonic()
        started_wall = time_text()
        deadline = started + self.timeout
        result = EvacuationResult()
        targets: dict[str, Decision] = {}
        returned: list[str] = []
        decisions = self.plan(pods)
        self._note_returning(decisions, result)
        for decision in decisions:
            self._record_static(decision, result)
            if decision.action in (EVICT, DELETE, WAIT):
                targets[decision.pod["metadata"]["uid"]] = decision
        if result.refused:
            return result  # the caller fails before anything was touched
        if not targets:
            result.duration_s = time.monotonic() - started
            return result  # nothing to evict: no watch needed

        stop = self._stop
        pool = ThreadPoolExecutor(max_workers=self.max_parallel, thread_name_prefix="evict")

        def submit(decision: Decision) -> None:
            if decision.action != WAIT:
                pool.submit(self._remove, decision, deadline)

        def watch() -> None:
            since = version
            while not stop.is_set():
                try:
                    for kind, pod in self.api.watch(kube.pods_path(), resource_version=since,
                                                    what=f"watch pods on node {self.node}",
                                                    field_selector=f"spec.nodeName={self.node}",
                                                    label_selector=self.pod_selector, timeout_seconds=60):
                        if stop.is_set():
                            return
                        since = pod.get("metadata", {}).get("resourceVersion", since)
                        if kind == "DELETED":
                            self._mark_gone(pod["metadata"]["uid"])
                        elif kind == "ADDED" and pod["metadata"]["uid"] not in targets and selected(pod, self.options):
                            if pod["metadata"].get("creationTimestamp", "") >= started_wall:
                                # Created after we began (a replacement): the node still accepts such
                                # pods; chasing them would only churn. Taint or cordon the node first.
                                returned.append(f"{pod['metadata'].get('namespace')}/{pod['metadata']['name']}")
                                continue
                            # A pod bound to the node just after the listing: judge it like the others.
                            late = self.plan([pod])[0]
                            if late.action in (EVICT, DELETE, WAIT):
                                with self._lock:
                                    targets[pod["metadata"]["uid"]] = late
                                submit(late)
                            elif late.action == REFUSE:
                                result.refused.append(late.describe())
                                with self._lock:
                                    self._lock.notify_all()
                except KubeError as exc:
                    if stop.is_set():
                        return
                    if not exc.gone and exc.status != 0:
                        self._fail(exc)
                        return
                    # Expired or broken watch: resynchronise from a fresh listing.
                    try:
                        current, since = self.list_pods()
                    except KubeError as again:
                        self._fail(again)
                        return
                    present = {p["metadata"]["uid"] for p in current}
                    for uid in list(targets):
                        if uid not in present:
                            self._mark_gone(uid)

        watcher = threading.Thread(target=watch, name="evacuation-watch", daemon=True)
        watcher.start()
        for decision in list(targets.values()):
            submit(decision)
        while True:
            with self._lock:
                waiting = [uid for uid in targets if uid not in self._gone]
                if not waiting or self._fatal is not None or result.refused:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(min(remaining, 1.0))
            try:
                self.stop_check()  # the run lost its lock, or died: stop evicting now
            except Exception as exc:
                self._fail(exc)
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)

        for uid, decision in targets.items():
            if uid in self._gone:
                result.evicted.append({**decision.describe(), "method": "wait" if decision.action == WAIT
                                       else self._method(decision),
                                       "seconds": round(self._gone[uid] - started, 3)})
            else:
                entry = decision.describe()
                if uid in self._pdb_of:
                    entry["blocked_by"] = self._pdb_of[uid]
                    result.blocking_pdbs.append(self._pdb_of[uid])
                result.pending.append(entry)
        if self._fatal is not None:
            raise self._fatal
        if returned:
            why = (returning_reason(self.keeping_off) if self.keeping_off is not None
                   else "the node still accepts them")
            result.warnings.append(f"node {self.node}: {len(returned)} new GPU pods landed on it while it was "
                                   f"evacuated ({', '.join(returned[:5])}): {why}")
        result.duration_s = time.monotonic() - started
        return result
