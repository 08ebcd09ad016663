"""TLS peers are verified the same way on every Python Debian ships. Python 3.13 (Debian 13)
turns on OpenSSL's X.509 strict mode in ssl.create_default_context, 3.11 (Debian 12) does not:
without ocppd asking for it, a Central System or file server whose CA certificate breaks RFC 5280
(no keyUsage, §4.2.1.3) was trusted on Debian 12 and refused on Debian 13. Real handshakes on
loopback, both for the OCPP link and for file transfers."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from pki import CA

from ocppd.ocpp.settings import LinkSettings
from ocppd.ocpp.transport import _ssl_context
from ocppd.ocpp.v16.transfers import tls_context

pytestmark = pytest.mark.asyncio


def ca_without_key_usage(tmp_path: Path) -> tuple[CA, Path]:
    """A CA whose certificate lacks keyUsage, as some home-made CAs do."""
    ca = CA("no key usage")
    name = ca.cert.subject
    now = datetime.now(UTC)
    ca.cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(ca.key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca.key.public_key()),
                       critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return ca, ca.write(tmp_path / "ca.pem")


async def handshake(tmp_path: Path, ca: CA, client: ssl.SSLContext) -> None:
    leaf = ca.issue("127.0.0.1", ips=("127.0.0.1",))
    (tmp_path / "srv.pem").write_bytes(leaf.cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "srv.key").write_bytes(leaf.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "srv.pem", tmp_path / "srv.key")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server)
    port = srv.sockets[0].getsockname()[1]
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=client), 10)
        writer.close()
    finally:
        srv.close()


def link_ctx(ca_file: Path) -> ssl.SSLContext:
    return _ssl_context(LinkSettings(url="wss://127.0.0.1/ocpp", charge_point_id="CP",
                                     security_profile=2, ca_file=ca_file))


def transfer_ctx(ca_file: Path) -> ssl.SSLContext:
    # the two keys tls_context reads ([security] transfer_ca_file unset: the link's CA)
    cfg = SimpleNamespace(security=SimpleNamespace(transfer_ca_file=None),
                          central_system=SimpleNamespace(ca_file=ca_file))
    return tls_context(cast(Any, cfg))


@pytest.mark.parametrize("make_ctx", [link_ctx, transfer_ctx], ids=["ocpp-link", "transfers"])
async def test_a_ca_without_key_usage_is_refused(
    tmp_path: Path, make_ctx: Callable[[Path], ssl.SSLContext]
) -> None:
    ca, ca_file = ca_without_key_usage(tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(tmp_path, ca, make_ctx(ca_file))


@pytest.mark.parametrize("make_ctx", [link_ctx, transfer_ctx], ids=["ocpp-link", "transfers"])
async def test_a_conforming_ca_is_trusted(
    tmp_path: Path, make_ctx: Callable[[Path], ssl.SSLContext]
) -> None:
    ca = CA("conforming")
    await handshake(tmp_path, ca, make_ctx(ca.write(tmp_path / "ca.pem")))
