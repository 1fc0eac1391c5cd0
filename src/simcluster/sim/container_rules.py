"""The kubelet's rules for one container of a pod that runs for real: restart by the pod's ``restartPolicy``,
the crash-loop back-off, the reason of an exit, and startup, readiness and liveness probes (httpGet and
tcpSocket, into the pod's network namespace). Used by ``pod_sandbox``; see ``containers`` for the whole."""

from __future__ import annotations

import http.client
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from simcluster.sim.netns import PodNetwork
from simcluster.sim.sandbox import EXIT_CANNOT_CREATE, EXIT_CANNOT_EXEC, EXIT_NOT_FOUND


@dataclass
class Backoff:
    """The kubelet's crash-loop back-off for one container: the first restart at once, then
    ``initial`` doubling up to ``maximum``; forgotten once the container ran for 2 x maximum."""

    initial: float
    maximum: float
    delay: float | None = None

    def wait_after_exit(self, ran_for: float) -> float:
        if self.delay is None or ran_for >= 2 * self.maximum:
            self.delay = self.initial
            return 0.0
        wait = self.delay
        self.delay = min(self.delay * 2, self.maximum)
        return wait


def restarts(policy: str, exit_code: int) -> bool:
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


def exit_reason(exit_code: int) -> str:
    if exit_code == 0:
        return "Completed"
    if exit_code in (EXIT_CANNOT_CREATE, EXIT_CANNOT_EXEC, EXIT_NOT_FOUND):
        return "StartError"
    return "Error"


@dataclass
class ProbeState:
    """Consecutive results of one probe, by the kubelet's thresholds."""

    kind: str                 # startup, readiness, liveness
    spec: dict[str, Any]
    next_at: float
    passing: bool
    successes: int = 0
    failures: int = 0
    last_error: str = ""

    @classmethod
    def start(cls, kind: str, spec: dict[str, Any], now: float) -> ProbeState:
        # Readiness and startup begin failing (not ready, not started); liveness begins passing.
        return cls(kind, spec, now + float(spec.get("initialDelaySeconds", 0)), passing=kind == "liveness")

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds", 10))

    def record(self, ok: bool, now: float, error: str = "") -> bool:
        """Count one result; True when the probe's verdict changed."""
        self.next_at = now + self.period
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            flips = not self.passing and self.successes >= int(self.spec.get("successThreshold", 1))
        else:
            self.successes, self.failures, self.last_error = 0, self.failures + 1, error
            flips = self.passing and self.failures >= int(self.spec.get("failureThreshold", 3))
            if self.kind == "startup" and self.failures >= int(self.spec.get("failureThreshold", 3)):
                flips = True  # a startup probe that never passed still ends in a kill
        if flips:
            self.passing = ok
        return flips


def _port(value: Any, container: dict[str, Any]) -> int:
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    for port in container.get("ports") or []:
        if port.get("name") == value:
            return int(port["containerPort"])
    raise ValueError(f"no port named {value!r}")


def run_probe(network: PodNetwork, pod_ip: str, spec: dict[str, Any], container: dict[str, Any]) -> tuple[bool, str]:
    """One probe, from inside the pod's network namespace; (passed, why not)."""
    timeout = float(spec.get("timeoutSeconds", 1))
    try:
        if "httpGet" in spec:
            get = spec["httpGet"]
            host, port, path = get.get("host") or pod_ip, _port(get.get("port"), container), get.get("path", "/")
            headers = {"User-Agent": "kube-probe/1.34", "Accept": "*/*"}
            headers.update({h["name"]: h["value"] for h in get.get("httpHeaders") or []})

            def http_get() -> tuple[bool, str]:
                if get.get("scheme", "HTTP").upper() == "HTTPS":
                    connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                        host, port, timeout=timeout, context=ssl._create_unverified_context())
                else:
                    connection = http.client.HTTPConnection(host, port, timeout=timeout)
                try:
                    connection.request("GET", path, headers=headers)
                    response = connection.getresponse()
                    response.read(10240)
                finally:
                    connection.close()
                ok = 200 <= response.status < 400
                return ok, "" if ok else f"HTTP probe failed with statuscode: {response.status}"

            return network.call(http_get)
        if "tcpSocket" in spec:
            tcp = spec["tcpSocket"]
            host, port = tcp.get("host") or pod_ip, _port(tcp.get("port"), container)

            def connect() -> tuple[bool, str]:
                with socket.create_connection((host, port), timeout=timeout):
                    return True, ""

            return network.call(connect)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return False, f"probe failed: {exc}"
    # exec and grpc probes would need to enter the container; they count as passing (see docs/simcluster.md).
    return True, ""


