"""A thin JSON client for the Kubernetes API, built on the official Python client.

The official client does authentication (kubeconfig, exec plugins, tokens,
in-cluster service accounts) and TLS. This layer keeps objects as plain dicts
(no model classes: modules and the simulator read a few fields of many
objects), turns every API failure into a :class:`KubeError` with status and
reason, and offers watches as iterators.

Requests that are safe to repeat are retried with jittered backoff for a bounded time
(``retry_budget_s``, default 30 s or ``MIGROLLOUT_API_RETRY_S``), so an API server that
restarts (seconds) does not fail a rollout step: any request whose connection could
not be established (nothing was sent), and reads (GET, LIST, the start of a WATCH) on
429/500/502/503/504 and read timeouts. A write whose request may have reached the
server is never repeated here; callers that can, decide (a node write re-reads the node).
"""

from __future__ import annotations

import copy
import json
import os
import random
import signal
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client import rest
from kubernetes.config.config_exception import ConfigException

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
FIELD_MANAGER = "nvidia-mig-rollout"

RETRY_BUDGET_VARIABLE = "MIGROLLOUT_API_RETRY_S"
RETRY_BUDGET_S = 30.0
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 3.0
RETRY_STATUSES = (429, 500, 502, 503, 504)
SAFE_METHODS = ("GET", "HEAD")
CONNECT_TIMEOUT_S = 10.0
# A guarded write (see KubeClient.fenced) is not sent with less time than this left before its fence's deadline:
# the API server's own timeout (``?timeout=``) is whole milliseconds and must leave it time to answer.
GUARDED_WRITE_MIN_S = 0.5


class KubeError(Exception):
    """An API call that failed: HTTP status (0 when the server was not reached), reason and message."""

    def __init__(self, status: int, reason: str, message: str, what: str = "",
                 details: dict[str, Any] | None = None, nothing_sent: bool = False, timed_out: bool = False,
                 broken: bool = False, retry_after: float | None = None):
        self.status = status
        self.reason = reason
        self.message = message
        self.what = what
        self.details = details or {}
        self.nothing_sent = nothing_sent    # the connection was never established: the request did not leave
        self.timed_out = timed_out          # no response in time (the request may have been processed)
        self.broken = broken                # the connection broke before a response (idem)
        self.retry_after = retry_after      # the server's Retry-After, in seconds
        self.attempts = 1
        self.retried_s = 0.0
        super().__init__(self.one_line())

    def causes(self, kind: str) -> list[str]:
        """Messages of the Status causes of one type (e.g. "DisruptionBudget")."""
        return [c.get("message", "") for c in self.details.get("causes") or []
                if kind in (c.get("reason"), c.get("type"))]

    def has_cause(self, kind: str) -> bool:
        """Whether the server's Status names a cause of this type (e.g. "NamespaceTerminating")."""
        return any(kind in (c.get("reason"), c.get("type")) for c in self.details.get("causes") or [])

    def one_line(self) -> str:
        where = f"{self.what}: " if self.what else ""
        status = f"HTTP {self.status} {self.reason}" if self.status else self.reason
        message = " ".join(self.message.split())
        retried = f" (after {self.attempts} attempts over {self.retried_s:.0f} s)" if self.attempts > 1 else ""
        return (f"{where}{status}: {message}" if message else f"{where}{status}") + retried

    def __str__(self) -> str:
        return self.one_line()

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def too_many_requests(self) -> bool:
        return self.status == 429

    @property
    def gone(self) -> bool:
        return self.status == 410


# A test hook for the fault suite: freeze this process between a guarded write's fence check and its send, as a
# control host suspended at that instant would be (only the API server's admission policy can refuse what it
# sends when it wakes). Inert unless MIGROLLOUT_TEST_FREEZE_BEFORE_SEND names a file that exists: the first
# guarded node write or eviction to find it renames it to <file>.frozen, writes its pid there and stops itself.
FREEZE_HOOK_VARIABLE = "MIGROLLOUT_TEST_FREEZE_BEFORE_SEND"


def _freeze_before_send(path: str) -> None:
    trigger = os.environ.get(FREEZE_HOOK_VARIABLE)
    if not trigger or not (path.startswith("/api/v1/nodes/") or path.endswith("/eviction")):
        return
    claimed = trigger + ".frozen"
    try:
        os.rename(trigger, claimed)   # atomic: one write of one process freezes, once
    except OSError:
        return
    with open(claimed, "w") as handle:
        handle.write(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGSTOP)


class FenceDeadline(KubeError):
    """A guarded write not sent: too little of the lock's freshness was left to send it and hear back."""

    def __init__(self, what: str, left: float):
        super().__init__(0, "not sent", f"the rollout lock's freshness ends in {max(left, 0.0):.1f} s, too soon "
                                        f"for a write to be sure to land before it", what, nothing_sent=True)


def retryable(method: str, error: KubeError) -> bool:
    """Whether a failed request may be sent again: any verb when nothing was sent, reads (a LIST, a GET, the
    start of a WATCH) on overload or server errors and timeouts; never a write the server may have received."""
    if error.nothing_sent:
        return True
    if method.upper() not in SAFE_METHODS:
        return False
    return error.status in RETRY_STATUSES or error.timed_out or error.broken


def _retry_after(response: Any) -> float | None:
    try:
        return float(response.headers.get("Retry-After", ""))
    except (TypeError, ValueError):
        return None


def _error_from_response(response: Any, what: str) -> KubeError:
    """A failed API response as a KubeError, with the server's Status reason and message when it sent one."""
    reason = response.reason or ""
    raw = response.data or b""
    details: dict[str, Any] = {}
    try:
        body = json.loads(raw)
        message = body.get("message", "")
        reason = body.get("reason") or reason
        details = body.get("details") or {}
    except (ValueError, TypeError, AttributeError):
        message = raw.decode(errors="replace")[:300]
    return KubeError(response.status, reason, message, what, details, retry_after=_retry_after(response))


def _error_from_exception(exc: urllib3.exceptions.HTTPError, host: str, what: str) -> KubeError:
    """A request that got no HTTP response, with whether it can have reached the server."""
    cause = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason else exc
    nothing_sent = isinstance(cause, urllib3.exceptions.ConnectTimeoutError)  # includes NewConnectionError
    timed_out = isinstance(cause, urllib3.exceptions.ReadTimeoutError)
    broken = isinstance(cause, urllib3.exceptions.ProtocolError)
    detail = str(getattr(cause, "reason", "") or cause)
    return KubeError(0, f"cannot reach the API server at {host} ({type(cause).__name__})", detail, what,
                     nothing_sent=nothing_sent, timed_out=timed_out, broken=broken)


@dataclass(frozen=True)
class Connection:
    """How to reach the API server; mirrors the modules' connection options."""

    kubeconfig: str | None = None
    context: str | None = None
    host: str | None = None
    api_key: str | None = None
    validate_certs: bool | None = None
    ca_cert: str | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Connection:
        return cls(**{name: params.get(name) for name in cls.__dataclass_fields__})


def load_configuration(conn: Connection) -> k8s_client.Configuration:
    """Build a client configuration the way the official client's ``config.load_config`` chooses: a named
    kubeconfig or context, else ``KUBECONFIG`` or ``~/.kube/config`` when present, else the in-cluster service
    account. ``host`` (with ``api_key`` or a CA) without a named kubeconfig reads no kubeconfig at all."""
    configuration = k8s_client.Configuration()
    path = os.path.expanduser((conn.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config")
                              .split(os.pathsep)[0])
    explicit = bool(conn.kubeconfig or conn.context)
    try:
        if explicit or (not conn.host and os.path.exists(path)):
            if not os.path.exists(path):
                raise KubeError(0, "ConfigError", f"kubeconfig {path} does not exist")
            k8s_config.load_kube_config(config_file=path, context=conn.context, client_configuration=configuration,
                                        persist_config=False)
        elif not conn.host:
            if not os.environ.get("KUBERNETES_SERVICE_HOST"):
                raise KubeError(0, "ConfigError", f"no kubeconfig ({path} does not exist) and not running in a "
                                                  "cluster (KUBERNETES_SERVICE_HOST is not set)")
            k8s_config.load_incluster_config(client_configuration=configuration)
    except ConfigException as exc:
        raise KubeError(0, "ConfigError", str(exc)) from None
    if conn.host:
        configuration.host = conn.host
    if conn.api_key:
        # An explicit token replaces whatever the kubeconfig said (and its refresh hook).
        configuration.api_key = {"BearerToken": conn.api_key}
        configuration.api_key_prefix = {"BearerToken": "Bearer"}
        configuration.refresh_api_key_hook = None
    if conn.ca_cert:
        configuration.ssl_ca_cert = conn.ca_cert
    if conn.validate_certs is not None:
        configuration.verify_ssl = conn.validate_certs
    return configuration


def _path(template: str, **parts: str) -> str:
    return template.format(**{key: quote(value, safe="") for key, value in parts.items()})


def _one_tls_context(pool_manager: urllib3.PoolManager, configuration: k8s_client.Configuration) -> None:
    """Give every connection of the pool one TLS context, the CA bundle and the client certificate loaded once:
    urllib3 otherwise reads and parses them again for each new connection (a step opens two or three: its
    requests, a watch, its Events). Hostnames are still checked by urllib3, as before. Not behind a proxy,
    whose own TLS settings stay urllib3's."""
    settings = pool_manager.connection_pool_kw
    if configuration.proxy or not configuration.host.startswith("https") or "ssl_context" in settings:
        return
    context = urllib3.util.ssl_.create_urllib3_context(cert_reqs=settings.get("cert_reqs"))
    try:
        if settings.get("cert_reqs") == ssl.CERT_REQUIRED:
            if settings.get("ca_certs") or settings.get("ca_cert_data"):
                context.load_verify_locations(cafile=settings.get("ca_certs"), cadata=settings.get("ca_cert_data"))
            else:
                context.load_default_certs()
        if settings.get("cert_file"):
            context.load_cert_chain(settings["cert_file"], settings.get("key_file"))
    except (OSError, ValueError):  # ssl.SSLError included: left to urllib3, whose request reports it as before
        return
    for key in ("ca_certs", "ca_cert_data", "cert_file", "key_file"):
        settings.pop(key, None)
    settings["ssl_context"] = context


class KubeClient:
    """Plain-dict access to the API server. Thread-safe (urllib3 pool)."""

    def __init__(self, configuration: k8s_client.Configuration, pool_size: int = 4,
                 request_timeout: float = 60.0, retry_budget_s: float | None = None):
        configuration.connection_pool_maxsize = pool_size
        self.configuration = configuration
        self.host = configuration.host.rstrip("/")
        self.request_timeout = request_timeout
        if retry_budget_s is None:
            try:
                retry_budget_s = float(os.environ.get(RETRY_BUDGET_VARIABLE, RETRY_BUDGET_S))
            except ValueError:
                retry_budget_s = RETRY_BUDGET_S
        self.retry_budget_s = retry_budget_s
        self._sent = [0]       # requests sent (attempts included), shared with the fenced views of this client
        # For a fenced view (see fenced): called before every attempt of a write, returns the seconds left
        # before the fence's deadline, or raises when the write must not be sent at all.
        self.write_guard: Callable[[], float | None] | None = None
        self._rest = rest.RESTClientObject(configuration)
        _one_tls_context(self._rest.pool_manager, configuration)
        if not configuration.verify_ssl:
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

    @classmethod
    def connect(cls, conn: Connection | None = None, **kwargs: Any) -> KubeClient:
        return cls(load_configuration(conn or Connection()), **kwargs)

    @property
    def requests(self) -> int:
        """Requests sent (attempts included) by this client and its fenced views, for the steps' request counts."""
        return self._sent[0]

    def fenced(self, guard: Callable[[], float | None] | None) -> KubeClient:
        """A view of this client (same connections, same credentials) whose writes are guarded: before every
        attempt of a POST, PUT, PATCH or DELETE, first try or retry, ``guard()`` runs; it raises to stop the
        write (the run lost its lock), or returns the seconds left before the lock's freshness ends (None: no
        limit). No attempt is sent with less than GUARDED_WRITE_MIN_S left, and each attempt's connect and read
        timeouts, its retries and the API server's own ``?timeout=`` end by that deadline, so a guarded write is
        never sent, nor processed by the server, after it. What remains is a process frozen between the guard
        and the send, which only the API server can judge (the admission policy, rbac/mig-rollout-fence.yaml)."""
        view = copy.copy(self)
        view.write_guard = guard
        return view

    # -- plumbing -------------------------------------------------------------------------------------------

    def _headers(self, content_type: str = JSON) -> dict[str, str]:
        headers = {"Accept": JSON, "Content-Type": content_type, "User-Agent": FIELD_MANAGER}
        # The official client's own auth settings: the key its kubeconfig and in-cluster loaders write
        # (a token, a token file, basic auth, an exec plugin's token), and its refresh hook, which runs the
        # exec plugin again once its credential expires. Client certificates are set on the TLS pool.
        for setting in self.configuration.auth_settings().values():
            if setting["in"] == "header" and setting["value"]:
                headers[setting["key"].title()] = setting["value"]
        return headers

    def request(self, method: str, path: str, query: Mapping[str, Any] | None = None, body: Any = None,
                content_type: str = JSON, what: str = "", timeout: float | None = None,
                stream: bool = False) -> Any:
        """One API call; what :func:`retryable` allows is retried with backoff for ``retry_budget_s``. On a
        fenced view (see :meth:`fenced`), a write's every attempt is guarded and bounded by the fence."""
        started = time.monotonic()
        delay = RETRY_FIRST_S
        attempts = 0
        guarded = self.write_guard is not None and method.upper() not in SAFE_METHODS
        while True:
            attempts += 1
            connect, read, attempt_query = CONNECT_TIMEOUT_S, timeout, query
            deadline = None
            if guarded:
                left = self.write_guard()  # type: ignore[misc]  # raises when this run may not write any more
                if left is not None:
                    if left < GUARDED_WRITE_MIN_S:
                        raise FenceDeadline(what, left)
                    deadline = time.monotonic() + left
                    connect, read = min(connect, left), min(read or self.request_timeout, left)
                    attempt_query = {**(query or {}), "timeout": f"{int(left * 1000)}ms"}
                _freeze_before_send(path)
            try:
                return self._request_once(method, path, attempt_query, body, content_type, what, read, stream,
                                          connect)
            except KubeError as exc:
                if not retryable(method, exc):
                    raise
                elapsed = time.monotonic() - started
                wait = exc.retry_after if exc.retry_after is not None else delay * random.uniform(0.8, 1.2)
                if elapsed + wait > self.retry_budget_s or (deadline is not None and
                                                            time.monotonic() + wait >= deadline):
                    exc.attempts, exc.retried_s = attempts, elapsed
                    exc.args = (exc.one_line(),)
                    raise
                time.sleep(wait)
                delay = min(delay * 2, RETRY_MAX_S)

    def _request_once(self, method: str, path: str, query: Mapping[str, Any] | None, body: Any,
                      content_type: str, what: str, timeout: float | None, stream: bool,
                      connect: float = CONNECT_TIMEOUT_S) -> Any:
        self._sent[0] += 1
        url = self.host + path
        params = {key: value for key, value in (query or {}).items() if value is not None}
        if params:
            url += "?" + urlencode(params)
        data = body if isinstance(body, str | bytes) or body is None else json.dumps(body)
        try:
            # retries=False: urllib3 would repeat some writes on its own; what is repeated is decided above.
            response = self._rest.pool_manager.request(
                method, url, body=data, headers=self._headers(content_type), preload_content=not stream,
                timeout=urllib3.Timeout(connect=connect, read=timeout or self.request_timeout) if not stream
                else urllib3.Timeout(connect=connect, read=timeout), retries=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise _error_from_exception(exc, self.host, what) from None
        if not 200 <= response.status <= 299:
            if stream:
                response.read()
            raise _error_from_response(response, what)
        if stream:
            return response
        if not response.data:
            return {}
        if not response.headers.get("Content-Type", "").startswith(JSON):
            return response.data.decode(errors="replace")
        return json.loads(response.data)

    # -- verbs ----------------------------------------------------------------------------------------------

    def get(self, path: str, what: str = "", **query: Any) -> dict[str, Any]:
        return self.request("GET", path, query, what=what)

    def get_or_none(self, path: str, what: str = "") -> dict[str, Any] | None:
        try:
            return self.get(path, what=what)
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    def list(self, path: str, what: str = "", label_selector: str | None = None,
             field_selector: str | None = None, limit: int = 500) -> tuple[list[dict[str, Any]], str]:
        """All items (following ``continue``), and the list's resourceVersion to watch from."""
        items: list[dict[str, Any]] = []
        token = None
        while True:
            page = self.get(path, what=what, labelSelector=label_selector, fieldSelector=field_selector,
                            limit=limit, **{"continue": token})
            items.extend(page.get("items") or [])
            token = page.get("metadata", {}).get("continue")
            if not token:
                return items, page.get("metadata", {}).get("resourceVersion", "")

    def create(self, path: str, body: Mapping[str, Any], what: str = "", **query: Any) -> dict[str, Any]:
        return self.request("POST", path, query, body, what=what)

    def replace(self, path: str, body: Mapping[str, Any], what: str = "", **query: Any) -> dict[str, Any]:
        return self.request("PUT", path, query, body, what=what)

    def patch(self, path: str, body: Any, what: str = "", content_type: str = MERGE_PATCH,
              **query: Any) -> dict[str, Any]:
        return self.request("PATCH", path, query, body, content_type=content_type, what=what)

    def apply(self, path: str, body: Mapping[str, Any], field_manager: str = FIELD_MANAGER, force: bool = True,
              what: str = "", **query: Any) -> dict[str, Any]:
        return self.patch(path, body, what=what, content_type=APPLY_PATCH, fieldManager=field_manager,
                          force=str(force).lower(), **query)

    def delete(self, path: str, what: str = "", body: Mapping[str, Any] | None = None,
               **query: Any) -> dict[str, Any]:
        return self.request("DELETE", path, query, body, what=what)

    def watch(self, path: str, resource_version: str | None = None, what: str = "",
              label_selector: str | None = None, field_selector: str | None = None,
              timeout_seconds: int | None = None,
              allow_bookmarks: bool = True) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield ``(type, object)`` events until the server ends the watch.

        Without ``resource_version`` the server first sends the current objects as
        ``ADDED`` events, which saves a separate GET. A 410 (expired resourceVersion)
        raises :class:`KubeError` with ``gone``; ``ERROR`` events are raised too.
        """
        query = {
            "watch": "true", "resourceVersion": resource_version, "labelSelector": label_selector,
            "fieldSelector": field_selector, "timeoutSeconds": timeout_seconds,
            "allowWatchBookmarks": "true" if allow_bookmarks else None,
        }
        read_timeout = (timeout_seconds + 30) if timeout_seconds else None
        response = self.request("GET", path, query, what=what, stream=True, timeout=read_timeout)
        buffer = b""
        try:
            for chunk in response.stream(64 * 1024, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind, obj = event.get("type", ""), event.get("object") or {}
                    if kind == "ERROR":
                        raise KubeError(obj.get("code", 0), obj.get("reason", "Error"), obj.get("message", ""), what)
                    yield kind, obj
        except (urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError) as exc:
            if not timeout_seconds:
                raise KubeError(0, "watch interrupted", str(exc), what) from None
        finally:
            response.release_conn()


# -- paths ----------------------------------------------------------------------------------------------------

def node_path(name: str) -> str:
    return _path("/api/v1/nodes/{name}", name=name)


def node_status_path(name: str) -> str:
    return node_path(name) + "/status"


def pods_path(namespace: str | None = None) -> str:
    return _path("/api/v1/namespaces/{ns}/pods", ns=namespace) if namespace else "/api/v1/pods"


def pod_path(namespace: str, name: str) -> str:
    return _path("/api/v1/namespaces/{ns}/pods/{name}", ns=namespace, name=name)


def configmap_path(namespace: str, name: str | None = None) -> str:
    base = _path("/api/v1/namespaces/{ns}/configmaps", ns=namespace)
    return base + ("/" + quote(name, safe="") if name else "")


def namespaced_path(group_version: str, plural: str, namespace: str | None, name: str | None = None) -> str:
    root = f"/api/{group_version}" if group_version == "v1" else f"/apis/{group_version}"
    base = root + (_path("/namespaces/{ns}", ns=namespace) if namespace else "") + "/" + plural
    return base + ("/" + quote(name, safe="") if name else "")


def retry_on_conflict(action: Callable[[], Any], budget_s: float = 20.0) -> Any:
    """Run a read-modify-write ``action`` again when the server reports a 409 conflict (someone else wrote
    the object in between), with jittered backoff, for up to ``budget_s`` seconds."""
    deadline = time.monotonic() + budget_s
    delay = 0.01
    while True:
        try:
            return action()
        except KubeError as exc:
            if not exc.conflict or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay * random.uniform(0.5, 1.5))
        delay = min(delay * 2, 0.5)
