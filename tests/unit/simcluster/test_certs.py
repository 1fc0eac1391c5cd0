"""simcluster's certificates under strict verification: a TLS handshake on loopback in which both sides verify
with ``VERIFY_X509_STRICT`` (the default of Python 3.13's ``ssl.create_default_context``, set here on any Python),
and ``openssl verify -x509_strict`` for each certificate with the purpose it serves."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509

from simcluster.certs import CertificateAuthority, predates_strict_tls

SERVER_HOSTS = ["127.0.0.1", "localhost", "kubernetes.default.svc"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(directory)
    ca.issue_server("kube-apiserver", SERVER_HOSTS)
    ca.issue_client("admin", ["system:masters"])
    ca.issue_client("system:kube-scheduler", [])
    return directory


def _strict(purpose: ssl.Purpose, ca: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(purpose, cafile=str(ca))
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


def _handshake(pki: Path, client_stem: str, server_hostname: str) -> str:
    """One TLS handshake on loopback, both sides strict; returns the client identity the server saw."""
    server_context = _strict(ssl.Purpose.CLIENT_AUTH, pki / "ca.crt")
    server_context.verify_mode = ssl.CERT_REQUIRED
    server_context.load_cert_chain(pki / "kube-apiserver.crt", pki / "kube-apiserver.key")
    client_context = _strict(ssl.Purpose.SERVER_AUTH, pki / "ca.crt")
    client_context.load_cert_chain(pki / f"{client_stem}.crt", pki / f"{client_stem}.key")
    seen: dict[str, object] = {}

    with socket.create_server(("127.0.0.1", 0)) as listener:
        def serve() -> None:
            connection, _ = listener.accept()
            try:
                with server_context.wrap_socket(connection, server_side=True) as tls:
                    seen["peer"] = tls.getpeercert()
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError) as error:
                seen["error"] = error

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with (socket.create_connection(listener.getsockname(), timeout=10) as raw,
              client_context.wrap_socket(raw, server_hostname=server_hostname) as tls):
            assert tls.recv(2) == b"ok"
        thread.join(10)
    assert "error" not in seen, seen.get("error")
    subject = dict(item for rdn in seen["peer"]["subject"] for item in rdn)
    return subject["commonName"]


@pytest.mark.parametrize("client_stem, user", [("admin", "admin"),
                                                ("system-kube-scheduler", "system:kube-scheduler")])
@pytest.mark.parametrize("server_hostname", SERVER_HOSTS)
def test_both_sides_accept_each_other_under_strict_verification(pki: Path, client_stem: str, user: str,
                                                                 server_hostname: str) -> None:
    assert _handshake(pki, client_stem, server_hostname) == user


def test_a_name_the_server_certificate_does_not_carry_is_refused(pki: Path) -> None:
    # The strict context still checks names: the handshake above is not passing for want of checks.
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(pki, "admin", "example.invalid")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command on this machine")
@pytest.mark.parametrize("stem, purpose", [("ca", "any"), ("kube-apiserver", "sslserver"),
                                           ("admin", "sslclient"), ("system-kube-scheduler", "sslclient")])
def test_openssl_strict_verification_accepts_each_certificate(pki: Path, stem: str, purpose: str) -> None:
    result = subprocess.run(["openssl", "verify", "-x509_strict", "-purpose", purpose, "-CAfile",
                             str(pki / "ca.crt"), str(pki / f"{stem}.crt")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": OK")


def test_each_certificate_carries_the_rfc_5280_extensions(pki: Path) -> None:
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    ca_key_id = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    for path in sorted(pki.glob("*.crt")):
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        extensions = cert.extensions
        assert extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier == ca_key_id
        assert extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        basic = extensions.get_extension_for_class(x509.BasicConstraints)
        assert basic.critical and basic.value.ca == (path.name == "ca.crt"), path.name
        usage = extensions.get_extension_for_class(x509.KeyUsage)
        assert usage.critical and usage.value.digital_signature, path.name
        assert usage.value.key_cert_sign == (path.name == "ca.crt"), path.name
    server = x509.load_pem_x509_certificate((pki / "kube-apiserver.crt").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(n.value) for n in names} == set(SERVER_HOSTS)


def test_a_ca_made_before_key_identifiers_is_recognised(tmp_path: Path, pki: Path) -> None:
    assert not predates_strict_tls(pki)
    old = tmp_path / "old"
    old.mkdir()
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    key = CertificateAuthority(pki).key
    from cryptography.hazmat.primitives import hashes, serialization
    builder = (x509.CertificateBuilder().subject_name(ca.subject).issuer_name(ca.subject)
               .public_key(key.public_key()).serial_number(1)
               .not_valid_before(ca.not_valid_before_utc).not_valid_after(ca.not_valid_after_utc)
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True))
    (old / "ca.crt").write_bytes(builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    assert predates_strict_tls(old)
