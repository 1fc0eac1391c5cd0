"""Every kubeconfig form the official client supports sends its credential (no API server needed: the
headers a request would carry are checked, and an exec plugin's runs are counted)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from migrollout.kube import Connection, KubeClient, KubeError


def _kubeconfig(tmp_path: Path, user: dict) -> str:
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "test", "context": {"cluster": "c", "user": "u"}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _exec_plugin(tmp_path: Path, token: str, expires_in_s: float) -> tuple[dict, Path]:
    """A credential plugin that prints an ExecCredential and counts its runs."""
    runs = tmp_path / "runs"
    script = tmp_path / "plugin.py"
    script.write_text(
        "import datetime, json, pathlib, sys\n"
        f"runs = pathlib.Path({str(runs)!r})\n"
        "count = int(runs.read_text()) + 1 if runs.exists() else 1\n"
        "runs.write_text(str(count))\n"
        f"expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds={expires_in_s})\n"
        "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1', 'kind': 'ExecCredential',\n"
        f"                  'status': {{'token': {token!r} + '-' + str(count),\n"
        "                             'expirationTimestamp': expiry.strftime('%Y-%m-%dT%H:%M:%SZ')}}))\n")
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable,
                     "args": [str(script)], "interactiveMode": "Never"}}
    return user, runs


def _authorization(client: KubeClient) -> str | None:
    return client._headers().get("Authorization")


def test_static_token_is_sent(tmp_path: Path) -> None:
    client = KubeClient.connect(Connection(kubeconfig=_kubeconfig(tmp_path, {"token": "abc.def"})))
    assert _authorization(client) == "Bearer abc.def"


def test_token_file_is_sent(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-a-file")
    client = KubeClient.connect(Connection(kubeconfig=_kubeconfig(tmp_path, {"tokenFile": str(tmp_path / "token")})))
    assert _authorization(client) == "Bearer from-a-file"


def test_basic_auth_is_sent(tmp_path: Path) -> None:
    client = KubeClient.connect(Connection(kubeconfig=_kubeconfig(tmp_path, {"username": "a", "password": "b"})))
    assert _authorization(client) == "Basic YTpi"


def test_client_certificate_sends_no_header(tmp_path: Path) -> None:
    (tmp_path / "crt").write_text("x")
    (tmp_path / "key").write_text("y")
    config = _kubeconfig(tmp_path, {"client-certificate": str(tmp_path / "crt"), "client-key": str(tmp_path / "key")})
    configuration = KubeClient.connect(Connection(kubeconfig=config)).configuration
    assert configuration.cert_file == str(tmp_path / "crt")
    assert configuration.auth_settings() == {}


def test_exec_plugin_token_is_sent_and_refreshed_when_expired(tmp_path: Path) -> None:
    user, runs = _exec_plugin(tmp_path, "exec-token", expires_in_s=-1)
    client = KubeClient.connect(Connection(kubeconfig=_kubeconfig(tmp_path, user)))
    first = _authorization(client)
    second = _authorization(client)
    assert first is not None and first.startswith("Bearer exec-token-")
    # Already expired: the client's refresh hook runs the plugin again for each request.
    assert second != first
    assert int(runs.read_text()) >= 3


def test_exec_plugin_token_is_reused_while_valid(tmp_path: Path) -> None:
    user, runs = _exec_plugin(tmp_path, "exec-token", expires_in_s=3600)
    client = KubeClient.connect(Connection(kubeconfig=_kubeconfig(tmp_path, user)))
    assert _authorization(client) == _authorization(client) == "Bearer exec-token-1"
    assert runs.read_text() == "1"


def test_explicit_api_key_replaces_the_kubeconfig_token(tmp_path: Path) -> None:
    config = _kubeconfig(tmp_path, {"token": "from-kubeconfig"})
    client = KubeClient.connect(Connection(kubeconfig=config, api_key="explicit"))
    assert _authorization(client) == "Bearer explicit"


def test_in_cluster_service_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes.config import incluster_config

    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "ca.crt").write_text("ca")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(tmp_path / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(tmp_path / "ca.crt"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.setenv("HOME", str(tmp_path))
    client = KubeClient.connect(Connection())
    assert client.host == "https://10.96.0.1:443"
    assert (_authorization(client) or "").lower() == "bearer sa-token"  # the in-cluster loader writes "bearer"


def test_missing_kubeconfig_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubeError, match="does not exist"):
        KubeClient.connect(Connection(kubeconfig=str(tmp_path / "nope")))

