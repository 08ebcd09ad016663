"""X.509 certificates and signatures, with python3-cryptography (the one module importing it).

What ocppd needs and nothing more: parse PEM certificates, the identifiers OCPP uses for them
(CertificateHashData: the hashes of the issuer's name and key and the serial number, as in an
OCSP CertID, RFC 6960 §4.1.1), check that a certificate chains up to one of a set of trusted
roots (issuer name, signature, validity period, CA flag of each issuer), and verify a detached
signature over a file. No cryptography is implemented here: every check is a library call.

Written against the cryptography API of Debian 12 (38.0): no ``x509.verification``, no
``verify_directly_issued_by``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa, utils
from cryptography.x509 import ocsp

from ocppd.errors import OcppdError

CHUNK_BYTES = 64 * 1024
MAX_CHAIN_DEPTH = 6

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA256": hashes.SHA256, "SHA384": hashes.SHA384, "SHA512": hashes.SHA512}


class CertificateError(OcppdError, ValueError):
    """Not a certificate, not a CA, expired, or not issued by a trusted root."""


class PrivateKeyError(OcppdError, ValueError):
    """A private key file that cannot be read or does not fit its certificate."""


class SignatureError(OcppdError, ValueError):
    """A signature that does not verify (or cannot be read)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HashData:
    """OCPP CertificateHashDataType (Security Whitepaper): lower-case hex, as OCSP CertID."""

    hash_algorithm: str  # SHA256 | SHA384 | SHA512
    issuer_name_hash: str
    issuer_key_hash: str
    serial_number: str


def load_pem_chain(text: str | bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM text, in order. CertificateError when there is none."""
    data = text.encode() if isinstance(text, str) else text
    try:
        certs = _load_all(data)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"not a PEM certificate: {exc}") from None
    if not certs:
        raise CertificateError("no PEM certificate found")
    return certs


def _load_all(data: bytes) -> list[x509.Certificate]:
    loader = getattr(x509, "load_pem_x509_certificates", None)  # cryptography >= 39
    if loader is not None:
        return list(loader(data))
    marker = b"-----END CERTIFICATE-----"
    out = []
    for part in data.split(marker)[:-1]:
        out.append(x509.load_pem_x509_certificate(part + marker))
    return out


def to_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def hash_data(cert: x509.Certificate, issuer: x509.Certificate | None = None,
              algorithm: str = "SHA256") -> HashData:
    """The CertificateHashData of ``cert``; ``issuer`` None: self-signed (a root)."""
    req = ocsp.OCSPRequestBuilder().add_certificate(
        cert, issuer or cert, _HASHES[algorithm]()).build()
    return HashData(hash_algorithm=algorithm, issuer_name_hash=req.issuer_name_hash.hex(),
                    issuer_key_hash=req.issuer_key_hash.hex(),
                    serial_number=format(req.serial_number, "x"))


def same_hash_data(a: HashData, b: HashData) -> bool:
    """Hex compared case-insensitively; serial numbers without leading zeros."""
    return (a.hash_algorithm == b.hash_algorithm
            and a.issuer_name_hash.lower() == b.issuer_name_hash.lower()
            and a.issuer_key_hash.lower() == b.issuer_key_hash.lower()
            and a.serial_number.lower().lstrip("0") == b.serial_number.lower().lstrip("0"))


def _valid_at(cert: x509.Certificate, now: datetime) -> None:
    before = getattr(cert, "not_valid_before_utc", None) or cert.not_valid_before.replace(
        tzinfo=UTC)
    after = getattr(cert, "not_valid_after_utc", None) or cert.not_valid_after.replace(tzinfo=UTC)
    if now < before:
        raise CertificateError(f"{_cn(cert)}: not valid before {before.isoformat()}")
    if now > after:
        raise CertificateError(f"{_cn(cert)}: expired on {after.isoformat()}")


def _cn(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return bool(bc.ca)


def check_root(cert: x509.Certificate, now: datetime) -> None:
    """A certificate fit to be installed as a trusted root: a CA, self-signed, in its validity
    period. CertificateError otherwise."""
    if not is_ca(cert):
        raise CertificateError(f"{_cn(cert)}: not a CA certificate (basicConstraints)")
    _valid_at(cert, now)
    if cert.issuer != cert.subject:
        return  # an intermediate CA installed as a trust anchor: accepted as given
    _check_signed_by(cert, cert)


def _check_signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    key = issuer.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            algo = cert.signature_hash_algorithm
            assert algo is not None
            pad = (padding.PSS(mgf=padding.MGF1(algo), salt_length=padding.PSS.AUTO)
                   if cert.signature_algorithm_oid == x509.SignatureAlgorithmOID.RSASSA_PSS
                   else padding.PKCS1v15())
            key.verify(cert.signature, cert.tbs_certificate_bytes, pad, algo)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            algo = cert.signature_hash_algorithm
            assert algo is not None
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algo))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes)
        else:
            raise CertificateError(f"{_cn(issuer)}: unsupported key type")
    except (InvalidSignature, UnsupportedAlgorithm, ValueError) as exc:
        raise CertificateError(f"{_cn(cert)}: signature by {_cn(issuer)} does not verify"
                               f" ({type(exc).__name__})") from None


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer`` issued ``cert`` (names match and the signature verifies)."""
    if cert.issuer != issuer.subject:
        return False
    try:
        _check_signed_by(cert, issuer)
    except CertificateError:
        return False
    return True


def verify_chain(chain: list[x509.Certificate], roots: Iterable[x509.Certificate],
                 now: datetime | None = None) -> x509.Certificate:
    """Check that ``chain[0]`` (the leaf, followed by intermediates in any order) chains up to
    one of ``roots``; returns the root. CertificateError otherwise."""
    now = now or datetime.now(UTC)
    trusted = list(roots)
    if not trusted:
        raise CertificateError("no trusted root certificate installed")
    pool = list(chain[1:])
    cert = chain[0]
    _valid_at(cert, now)
    for _ in range(MAX_CHAIN_DEPTH):
        for root in trusted:
            if cert.issuer == root.subject:
                _check_signed_by(cert, root)
                _valid_at(root, now)
                return root
        issuer = next((c for c in pool if c.subject == cert.issuer and is_ca(c)), None)
        if issuer is None:
            raise CertificateError(f"{_cn(cert)}: issuer {cert.issuer.rfc4514_string()} is"
                                   " not a trusted root")
        _check_signed_by(cert, issuer)
        _valid_at(issuer, now)
        pool.remove(issuer)
        cert = issuer
    raise CertificateError("certificate chain too long")


def verify_file_signature(path: Path, signature_b64: str, signer: x509.Certificate) -> None:
    """Check a detached signature over the file at ``path`` with the signer's public key:
    SHA-256 with ECDSA, or RSA (PKCS#1 v1.5, then PSS). SignatureError when it does not verify.
    The file is hashed in chunks: images may be larger than the memory of a small board."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("the signature is not valid base64") from None
    digest = hashes.Hash(hashes.SHA256())
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    value = digest.finalize()
    pre = utils.Prehashed(hashes.SHA256())
    key = signer.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, value, ec.ECDSA(pre))
            return
        if isinstance(key, rsa.RSAPublicKey):
            try:
                key.verify(signature, value, padding.PKCS1v15(), pre)
            except InvalidSignature:
                key.verify(signature, value,
                           padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                       salt_length=padding.PSS.AUTO), pre)
            return
    except (InvalidSignature, ValueError):
        raise SignatureError("the signature over the image does not verify") from None
    raise SignatureError(f"unsupported signing key type {type(key).__name__}")


# --- the charge point's own key and certificate (security profile 3) -----------------------------

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def new_private_key() -> PrivateKey:
    """A fresh key for a CSR: ECDSA on P-256 (secp256r1), one of the curves the whitepaper's
    TLS cipher suites (TLS_ECDHE_ECDSA_*) are used with, small enough for a slow board."""
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: PrivateKey) -> bytes:
    """PEM, PKCS#8, unencrypted: the daemon starts unattended; the file's mode protects it."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_secret_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a file created with mode 0600 from its first byte, replacing ``path``
    atomically (a crash leaves the old file or the new one, never half of either)."""
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)


def load_private_key(path: Path) -> PrivateKey:
    """The (first) private key of a PEM file; PrivateKeyError when there is none."""
    try:
        data = path.read_bytes()
        start = data.index(b"-----BEGIN PRIVATE KEY-----")
        key = serialization.load_pem_private_key(data[start:], password=None)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise PrivateKeyError(f"cannot read private key {path}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PrivateKeyError(f"{path}: unsupported key type {type(key).__name__}")
    return key


def make_csr(key: PrivateKey, *, common_name: str, organization: str | None) -> str:
    """A PKCS#10 certificate signing request in PEM (Security Whitepaper, SignCertificate):
    the subject's commonName is the charge point identity, organizationName the CpoName."""
    attrs = []
    if organization:
        attrs.append(x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, organization))
    attrs.append(x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name))
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name(attrs))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def same_public_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    """Whether ``cert`` certifies ``key`` (its public half)."""
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return bool(cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt))


def common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def not_after(cert: x509.Certificate) -> datetime:
    return getattr(cert, "not_valid_after_utc", None) or cert.not_valid_after.replace(tzinfo=UTC)


def not_before(cert: x509.Certificate) -> datetime:
    return (getattr(cert, "not_valid_before_utc", None)
            or cert.not_valid_before.replace(tzinfo=UTC))
