"""A client-go exec credential plugin for simcluster's least-privileged identity (``kubeconfig-exec``).

    python -m simcluster.credential --state-dir DIR [--lifetime SECONDS]

Prints an ExecCredential whose token the API server accepts for the ServiceAccount ``mig-rollout/mig-rollout``
and whose ``expirationTimestamp`` is ``--lifetime`` seconds after the token was issued. The expiry is real:
each token comes from the TokenRequest API bound to a Secret of its own, and ``REVOKE_GRACE_S`` after it
expires its Secret is deleted, which revokes it (by the simulator, every second; by the plugin's next run if the
simulator is down). A client that does not run the plugin again when its credential expires is refused (401).

The plugin authenticates with a client certificate of its own (``simcluster-credential-issuer``), which may
request tokens for that one ServiceAccount and create or delete Secrets in its namespace, nothing else. It
imports nothing heavy (it runs for every client that loads the kubeconfig, and the official Python client runs
it for every request once a credential is within 5 minutes of expiring): a run that reuses a recent token
takes a Python start-up.

Every run appends a line to ``logs/credential.log`` (the client's pid, the token's Secret and JWT id, whether
it was issued now), and so does every revocation, so tests can see refreshes and revocations.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import fcntl
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

NAMESPACE = "mig-rollout"
SERVICE_ACCOUNT = "mig-rollout"
ISSUER_USER = "simcluster-credential-issuer"
API_VERSION = "client.authentication.k8s.io/v1"
# How long a credential says it is valid, by default. The official Python client runs the plugin again 5
# minutes before a credential expires, so its processes refresh 30 s after each new token; kubectl on expiry.
LIFETIME_S = 330
# A token is revoked this long after its expirationTimestamp: a request sent just before the expiry still
# gets through.
REVOKE_GRACE_S = 10
# Clients that start together (an Ansible run's module processes) share a token issued this recently,
# instead of each making two API requests.
REUSE_S = 5.0
TOKEN_REQUEST_MIN_S = 600  # the API server refuses shorter TokenRequests
SECRET_LABEL = "simcluster.dev/credential"


class CredentialError(RuntimeError):
    pass


def _time_text(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Issuer:
    """Requests to the API server as the plugin's own identity (urllib: the kubernetes client is slow to import)."""

    def __init__(self, state_dir: Path):
        try:
            state = json.loads((state_dir / "state.json").read_text())
        except (OSError, ValueError) as exc:
            raise CredentialError(f"no simcluster cluster in {state_dir} ({exc})") from None
        self.server = f"https://127.0.0.1:{state['api_port']}"
        pki = state_dir / "pki"
        self.context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.context.load_cert_chain(str(pki / f"{ISSUER_USER}.crt"), str(pki / f"{ISSUER_USER}.key"))

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.server + path, data=data, method=method,
                                         headers={"Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.context) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            if method == "DELETE" and exc.code == 404:
                return {}
            detail = exc.read().decode(errors="replace")[:300]
            raise CredentialError(f"{method} {path}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise CredentialError(f"cannot reach the API server at {self.server}: {exc}") from None

    def issue(self, lifetime_s: int) -> dict[str, Any]:
        """A new token bound to a new Secret; its expiry (``expires``) is ``lifetime_s`` from now."""
        now = time.time()
        expires = now + lifetime_s
        namespaced = f"/api/v1/namespaces/{NAMESPACE}"
        secret = self.call("POST", f"{namespaced}/secrets", {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"generateName": f"{SERVICE_ACCOUNT}-exec-", "labels": {SECRET_LABEL: "exec"},
                         "annotations": {"simcluster.dev/expires": _time_text(expires)}}})
        name, uid = secret["metadata"]["name"], secret["metadata"]["uid"]
        review = self.call("POST", f"{namespaced}/serviceaccounts/{SERVICE_ACCOUNT}/token", {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": max(TOKEN_REQUEST_MIN_S, lifetime_s + REVOKE_GRACE_S),
                     "boundObjectRef": {"apiVersion": "v1", "kind": "Secret", "name": name, "uid": uid}}})
        token = review["status"]["token"]
        return {"token": token, "secret": name, "jti": _jwt_id(token), "issued": now, "expires": expires,
                "lifetime": lifetime_s}

    def revoke(self, secret: str) -> None:
        self.call("DELETE", f"/api/v1/namespaces/{NAMESPACE}/secrets/{secret}")


def _jwt_id(token: str) -> str:
    """The token's ``jti`` claim (what a SelfSubjectReview shows as its credential id)."""
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))).get("jti", "")
    except (IndexError, ValueError):
        return ""


class Book:
    """What the plugin has issued (``credential/issued.json``): the latest credential of each lifetime, handed out
    again for REUSE_S, and every token not revoked yet. Opened under a lock: runs of the plugin and the simulator's
    revoker share it."""

    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.directory = state_dir / "credential"
        self.file = self.directory / "issued.json"
        self.current: dict[str, dict[str, Any]] = {}
        self.issued: list[dict[str, Any]] = []

    @contextlib.contextmanager
    def open(self) -> Iterator[Book]:
        self.directory.mkdir(mode=0o700, exist_ok=True)
        with open(self.directory / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data = json.loads(self.file.read_text())
                self.current, self.issued = data["current"], data["issued"]
            except (OSError, ValueError, KeyError):
                self.current, self.issued = {}, []
            yield self
            staging = self.directory / "issued.json.tmp"
            staging.write_text(json.dumps({"current": self.current, "issued": self.issued}))
            staging.chmod(0o600)
            staging.replace(self.file)

    def revoke_expired(self, issuer: Issuer | None, now: float) -> list[str]:
        """Delete the Secrets of tokens that expired more than REVOKE_GRACE_S ago; their names."""
        expired = [entry for entry in self.issued if entry["expires"] + REVOKE_GRACE_S < now]
        if not expired:
            return []
        issuer = issuer or Issuer(self.state_dir)
        for entry in expired:
            issuer.revoke(entry["secret"])
            self.issued.remove(entry)
        return [entry["secret"] for entry in expired]


def credential(state_dir: Path, lifetime_s: int) -> tuple[dict[str, Any], bool, list[str]]:
    """The credential to hand out (a recent one of the same lifetime, else a new one), whether it was issued
    now, and the Secrets revoked on the way (those of tokens expired more than REVOKE_GRACE_S ago)."""
    with Book(state_dir).open() as book:
        now = time.time()
        current = book.current.get(str(lifetime_s))
        if current and now - current["issued"] < min(REUSE_S, lifetime_s / 4) and current["expires"] > now:
            return current, False, []
        issuer = Issuer(state_dir)
        fresh = issuer.issue(lifetime_s)
        book.issued.append({"secret": fresh["secret"], "expires": fresh["expires"]})
        book.current[str(lifetime_s)] = fresh
        return fresh, True, book.revoke_expired(issuer, now)


def revoke_expired(state_dir: Path) -> list[str]:
    """Revoke, on time, the tokens that expired (the simulator calls this every second: revocation must not wait
    for the next run of the plugin, or a client that never refreshes would go unnoticed)."""
    if not (state_dir / "credential" / "issued.json").exists():
        return []
    with Book(state_dir).open() as book:
        revoked = book.revoke_expired(None, time.time())
    if revoked:
        _log(state_dir, {"time": time.time(), "event": "revoked", "secrets": revoked, "by": "simulator"})
    return revoked


def exec_credential(token: str, expires: float, api_version: str = API_VERSION) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": "ExecCredential",
            "status": {"token": token, "expirationTimestamp": _time_text(expires)}}


def _log(state_dir: Path, entry: dict[str, Any]) -> None:
    logs = state_dir / "logs"
    logs.mkdir(exist_ok=True)
    with open(logs / "credential.log", "a") as log:  # one short write: lines of concurrent runs do not mix
        log.write(json.dumps(entry) + "\n")


def read_log(state_dir: Path, event: str | None = None) -> list[dict[str, Any]]:
    """The plugin's log, oldest first: credentials handed out (``event`` "issued" or "reused": client pid, token
    Secret, JWT id, expiry, lifetime) and revocations ("revoked": the Secrets, by the plugin or the simulator);
    only those of ``event`` when given."""
    try:
        text = (state_dir / "logs" / "credential.log").read_text()
    except OSError:
        return []
    entries = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [entry for entry in entries if event is None or entry["event"] == event]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simcluster.credential", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", default=os.environ.get("SIMCLUSTER_DIR"),
                        required="SIMCLUSTER_DIR" not in os.environ, help="the cluster's state directory")
    parser.add_argument("--lifetime", type=int, default=LIFETIME_S,
                        help=f"seconds each credential is valid (default {LIFETIME_S})")
    args = parser.parse_args(argv)
    if args.lifetime < 1:
        parser.error("--lifetime must be at least 1 second")
    state_dir = Path(args.state_dir)
    # The client says which version of ExecCredential it reads (client-go: the kubeconfig's apiVersion).
    try:
        api_version = json.loads(os.environ.get("KUBERNETES_EXEC_INFO") or "{}").get("apiVersion") or API_VERSION
    except ValueError:
        api_version = API_VERSION
    try:
        found, issued, revoked = credential(state_dir, args.lifetime)
    except CredentialError as exc:
        print(f"simcluster credential plugin: {exc}", file=sys.stderr)
        return 1
    now = time.time()
    _log(state_dir, {"time": now, "event": "issued" if issued else "reused", "client_pid": os.getppid(),
                     "secret": found["secret"], "jti": found["jti"], "expires": found["expires"],
                     "lifetime": args.lifetime})
    if revoked:
        _log(state_dir, {"time": now, "event": "revoked", "secrets": revoked, "by": "plugin"})
    json.dump(exec_credential(found["token"], found["expires"], api_version), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
