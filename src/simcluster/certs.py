"""Credentials for a local control plane: a CA, the API server's serving certificate,
client certificates per identity, and the service-account signing key.

Every certificate carries what RFC 5280 asks of it (basic constraints, key usage, subject and authority key
identifiers, SANs for servers), so strict verifiers accept them: Python 3.13's default ``VERIFY_X509_STRICT``,
``openssl verify -x509_strict``, Go's crypto/x509 (kubectl). A state directory made before these extensions
existed keeps its old certificates: ``simcluster up --fresh`` issues new ones."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=3650)


def _key() -> ec.EllipticCurvePrivateKey:
    # P-256 keys: generated in milliseconds, unlike RSA-2048.
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    # EC keys sign (TLS handshakes, certificates); they never encipher keys.
    return x509.KeyUsage(digital_signature=True, key_cert_sign=signs_certificates, crl_sign=signs_certificates,
                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                         key_agreement=False, encipher_only=False, decipher_only=False)


def _builder(subject: x509.Name, issuer: x509.Name, public_key, issuer_public_key) -> x509.CertificateBuilder:
    """A certificate with the extensions every one here needs: its key identifier and its issuer's."""
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public_key), critical=False)
    )


def _leaf(subject: x509.Name, ca: CertificateAuthority, public_key) -> x509.CertificateBuilder:
    return (
        _builder(subject, ca.cert.subject, public_key, ca.key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
    )


class CertificateAuthority:
    def __init__(self, directory: Path):
        self.directory = directory
        self.cert_path = directory / "ca.crt"
        self.key_path = directory / "ca.key"
        if self.cert_path.exists():
            self.key = serialization.load_pem_private_key(self.key_path.read_bytes(), None)
            self.cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
            return
        self.key = _key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "simcluster-ca")])
        self.cert = (
            _builder(name, name, self.key.public_key(), self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(signs_certificates=True), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        _write_key(self.key_path, self.key)
        _write_cert(self.cert_path, self.cert)

    def issue_server(self, name: str, hosts: list[str]) -> tuple[Path, Path]:
        key = _key()
        sans: list[x509.GeneralName] = []
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        cert = (
            _leaf(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), self, key.public_key())
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return self._store(name, key, cert)

    def issue_client(self, user: str, groups: list[str]) -> tuple[Path, Path]:
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in groups]
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, user))
        key = _key()
        cert = (
            _leaf(x509.Name(attributes), self, key.public_key())
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return self._store(user.replace(":", "-"), key, cert)

    def _store(self, stem: str, key, cert) -> tuple[Path, Path]:
        cert_path = self.directory / f"{stem}.crt"
        key_path = self.directory / f"{stem}.key"
        _write_key(key_path, key)
        _write_cert(cert_path, cert)
        return cert_path, key_path


def predates_strict_tls(directory: Path) -> bool:
    """Whether the CA in ``directory`` was made before the certificates carried key identifiers (strict
    verifiers, Python 3.13's included, refuse everything it issued)."""
    cert_path = directory / "ca.crt"
    if not cert_path.exists():
        return False
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        return True
    return False


def write_signing_key(path: Path) -> Path:
    """The service-account token signing key, in the SEC1 form the API server parses."""
    if not path.exists():
        path.write_bytes(_key().private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.TraditionalOpenSSL,
                                              serialization.NoEncryption()))
        path.chmod(0o600)
    return path
