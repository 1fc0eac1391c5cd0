"""The identities a simulated cluster offers, besides the admin's client certificate (``kubeconfig``).

- ``kubeconfig-operator``: the least-privileged identity, the ServiceAccount ``mig-rollout/mig-rollout``,
  authenticated by the bearer token of a long-lived ServiceAccount token Secret (the token controller of the
  controller-manager fills it, as on any cluster). RBAC grants it nothing until ``rbac/bind-example.yaml``
  binds it to the rollout's roles.
- ``kubeconfig-exec``: the same ServiceAccount through a client-go exec credential plugin
  (``python -m simcluster.credential``), whose tokens come from the TokenRequest API and expire soon, so
  clients must run the plugin again (see :mod:`simcluster.credential`).

Both are made (idempotently) by every ``simcluster up``, so a restarted cluster keeps them.
"""

from __future__ import annotations

import base64
import sys
import time
from pathlib import Path
from typing import Any

from migrollout.kube import KubeClient, KubeError
from simcluster.controlplane import CREDENTIAL_ISSUER_USER, ClusterError, ClusterState, write_kubeconfig
from simcluster.credential import LIFETIME_S, NAMESPACE, SERVICE_ACCOUNT

USERNAME = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
TOKEN_SECRET = "mig-rollout-token"
ISSUER_ROLE = "simcluster-credential-issuer"

_LABELS = {"app.kubernetes.io/managed-by": "simcluster"}


def _create(api: KubeClient, path: str, manifest: dict[str, Any]) -> None:
    try:
        api.create(path, manifest, what=f"create {manifest['kind']} {manifest['metadata']['name']}")
    except KubeError as exc:
        if exc.status != 409:
            raise


def ensure(api: KubeClient, state: ClusterState, timeout: float = 60) -> None:
    """Create the ServiceAccount, its token Secret and the plugin's right to request its tokens (what exists is
    kept), then write ``kubeconfig-operator`` and ``kubeconfig-exec``."""
    namespaced = f"/api/v1/namespaces/{NAMESPACE}"
    _create(api, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                        "metadata": {"name": NAMESPACE, "labels": _LABELS}})
    _create(api, f"{namespaced}/serviceaccounts", {"apiVersion": "v1", "kind": "ServiceAccount",
                                                   "metadata": {"name": SERVICE_ACCOUNT, "labels": _LABELS}})
    _create(api, f"{namespaced}/secrets", {
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": TOKEN_SECRET, "labels": _LABELS,
                     "annotations": {"kubernetes.io/service-account.name": SERVICE_ACCOUNT}}})
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NAMESPACE}"
    _create(api, f"{rbac}/roles", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": ISSUER_ROLE, "labels": _LABELS},
        "rules": [
            {"apiGroups": [""], "resources": ["serviceaccounts/token"], "resourceNames": [SERVICE_ACCOUNT],
             "verbs": ["create"]},
            # Each token is bound to a Secret of its own; deleting the Secret revokes the token.
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "delete"]},
        ]})
    _create(api, f"{rbac}/rolebindings", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": ISSUER_ROLE, "labels": _LABELS},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ISSUER_ROLE},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": CREDENTIAL_ISSUER_USER}]})
    token = _wait_token(api, timeout)
    write_kubeconfig(Path(state.operator_kubeconfig), state.server, state.ca_file, SERVICE_ACCOUNT, {"token": token})
    write_exec_kubeconfig(state, Path(state.exec_kubeconfig))


def _wait_token(api: KubeClient, timeout: float) -> str:
    """The token the controller-manager's token controller writes into the Secret (within a second or so)."""
    path = f"/api/v1/namespaces/{NAMESPACE}/secrets/{TOKEN_SECRET}"
    deadline = time.monotonic() + timeout
    while True:
        secret = api.get(path, what=f"read Secret {NAMESPACE}/{TOKEN_SECRET}")
        token = (secret.get("data") or {}).get("token")
        if token:
            return base64.b64decode(token).decode()
        if time.monotonic() > deadline:
            raise ClusterError(f"the controller-manager's token controller did not fill Secret "
                               f"{NAMESPACE}/{TOKEN_SECRET} within {timeout:.0f} s (see logs/kube-controller-manager.log)")
        time.sleep(0.2)


def exec_credentials(state: ClusterState, lifetime_s: int = LIFETIME_S) -> dict[str, Any]:
    """The kubeconfig ``user`` entry that runs the credential plugin of this cluster."""
    return {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1",
        # The interpreter that runs simcluster: its packages include simcluster.credential.
        "command": sys.executable,
        "args": ["-m", "simcluster.credential", "--state-dir", state.directory, "--lifetime", str(lifetime_s)],
        "interactiveMode": "Never",
        "provideClusterInfo": False,
    }}


def write_exec_kubeconfig(state: ClusterState, path: Path, lifetime_s: int = LIFETIME_S) -> Path:
    write_kubeconfig(path, state.server, state.ca_file, f"{SERVICE_ACCOUNT}-exec", exec_credentials(state, lifetime_s))
    return path
