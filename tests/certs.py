"""Certificates made in the test run: a CA, a server certificate, client certificates.

Built with the ``cryptography`` package (the ``dev`` extra): EC P-256 keys, valid from an
hour ago for a day, written as PEM files.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class Authority:
    """A certificate authority that writes what it issues into ``folder``."""

    def __init__(self, folder: Path, name: str = "RunGuard test CA") -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._now = datetime.datetime.now(datetime.UTC)
        self._cert = (
            self._builder(_name(name), self._key.public_key())
            .issuer_name(_name(name))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.cert = folder / "ca.pem"
        self.cert.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def _builder(
        self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now - datetime.timedelta(hours=1))
            .not_valid_after(self._now + datetime.timedelta(days=1))
        )

    def issue(
        self,
        stem: str,
        common_name: str,
        *,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        server: bool = False,
    ) -> Issued:
        """A certificate for a server (``server``) or a client, with optional SANs."""
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            self._builder(_name(common_name), key.public_key())
            .issuer_name(self._cert.subject)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        issued = Issued(self.folder / f"{stem}.pem", self.folder / f"{stem}-key.pem")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(_pem_key(key))
        issued.key.chmod(0o600)
        return issued

    def server(self) -> Issued:
        """The server's certificate: valid for localhost and 127.0.0.1."""
        return self.issue("server", "runguard", dns=("localhost",), ips=("127.0.0.1",), server=True)


@dataclass(frozen=True)
class Pki:
    """A CA, the server's certificate, client certificates, and one from a stranger CA."""

    ca: Path
    server: Issued
    alice: Issued
    """Client certificate with only a common name: ``alice``."""
    bob: Issued
    """Client certificate with CN ``bob-cn`` and SANs ``bob.example``, ``bob2.example``."""
    stranger: Issued
    """Client certificate, CN ``alice``, signed by another CA."""


def make_pki(folder: Path) -> Pki:
    """Every certificate the tests use, written under ``folder``."""
    authority = Authority(folder / "ca")
    other = Authority(folder / "other", name="Some other CA")
    return Pki(
        ca=authority.cert,
        server=authority.server(),
        alice=authority.issue("alice", "alice"),
        bob=authority.issue("bob", "bob-cn", dns=("bob.example", "bob2.example")),
        stranger=other.issue("stranger", "alice"),
    )
