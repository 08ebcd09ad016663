"""A certificate authority made in the test, with python3-cryptography: server certificates for
the TLS peers, and later firmware signing certificates. Nothing is read from the machine."""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ocppd tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _new_key(use_rsa: bool) -> PrivateKey:
    return rsa.generate_private_key(65537, 2048) if use_rsa else ec.generate_private_key(
        ec.SECP256R1())


@dataclass
class Issued:
    cert: x509.Certificate
    key: PrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        cert, key = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        key.chmod(0o600)
        return cert, key

    def server_context(self, directory: Path, stem: str) -> ssl.SSLContext:
        cert, key = self.write(directory, stem)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        return ctx


class CA:
    def __init__(self, name: str = "ocppd test root", *, use_rsa: bool = False) -> None:
        self.use_rsa = use_rsa
        self.key = _new_key(use_rsa)
        now = datetime.now(UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()),
                           critical=False)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, path: Path) -> Path:
        path.write_bytes(self.pem)
        return path

    def issue(self, cn: str, *, ips: tuple[str, ...] = (), dns: tuple[str, ...] = (),
              server: bool = True, valid_days: float = 7, age_days: float = 1 / 24) -> Issued:
        key = _new_key(self.use_rsa)
        return Issued(self.certify(key.public_key(), _name(cn), ips=ips, dns=dns, server=server,
                                   valid_days=valid_days, age_days=age_days), key)

    def cross_sign(self, other: CA) -> x509.Certificate:
        """``other``'s root (its name and key) issued by this CA: a new root signed by the one
        it replaces."""
        return self.certify(other.key.public_key(), other.cert.subject, server=False, ca=True,
                            valid_days=30)

    def sign_csr(self, csr_pem: str, *, valid_days: float = 7) -> x509.Certificate:
        """A client certificate for a CSR, as a Central System's CA would issue it."""
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        assert csr.is_signature_valid
        return self.certify(csr.public_key(), csr.subject, server=False, valid_days=valid_days)

    def certify(self, public_key: object, subject: x509.Name, *, ips: tuple[str, ...] = (),
                dns: tuple[str, ...] = (), server: bool = True, valid_days: float = 7,
                age_days: float = 1 / 24, ca: bool = False) -> x509.Certificate:
        now = datetime.now(UTC)
        b = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(self.cert.subject)
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=age_days))
            .not_valid_after(now + timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
        )
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if names:
            b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
        if ca:  # RFC 5280 §4.2.1.3, §4.2.1.2: what a conforming CA certificate carries
            b = b.add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(
                public_key), critical=False)  # type: ignore[arg-type]
        if server:
            b = b.add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                                critical=False)
        return b.sign(self.key, hashes.SHA256())
