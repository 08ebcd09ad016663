"""Certificate management and secure firmware update (OCPP 1.6 Security Whitepaper), end to end:
the real daemon against a real Central System, with roots, signing certificates and signed
images made in the test. OCTT security test cases TC_075_1/2, TC_076, TC_080, TC_081.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from csms import CentralSystem, call
from fwpeers import WebPeer
from harness import CP_ID, booted, running, sim_config, wait_until
from pki import CA, Issued

from ocppd.config import Config
from ocppd.storage import Store

pytestmark = pytest.mark.asyncio

IMAGE = b"signed firmware image " * 4000


@pytest.fixture(scope="module")
def maker() -> CA:
    return CA("ocppd test manufacturer root")


@pytest.fixture(scope="module")
def signer(maker: CA) -> Issued:
    return maker.issue("firmware signing", server=False)


@pytest.fixture
async def web() -> AsyncIterator[WebPeer]:
    async with WebPeer() as peer:
        peer.files["image.bin"] = IMAGE
        peer.files["tampered.bin"] = IMAGE[:-1] + b"!"
        yield peer


def config(tmp_path: Path, cs: CentralSystem, **ocpp: Any) -> Config:
    cmd = tmp_path / "install.sh"
    cmd.write_text(f'#!/bin/sh\ncp "$1" "{tmp_path / "installed.bin"}"\n')
    cmd.chmod(cmd.stat().st_mode | stat.S_IXUSR)
    return sim_config(tmp_path, cs.url, ocpp=ocpp or None, system={
        "firmware_install_command": [str(cmd)], "firmware_dir": str(tmp_path / "fw")})


def snake(hash_data: dict[str, str]) -> dict[str, str]:
    """The field names as the test-side library hands them over."""
    names = {"hashAlgorithm": "hash_algorithm", "issuerNameHash": "issuer_name_hash",
             "issuerKeyHash": "issuer_key_hash", "serialNumber": "serial_number"}
    return {names[k]: v for k, v in hash_data.items()}


def expected_hash_data(ca: CA) -> dict[str, str]:
    """Computed here from the DER, independently of ocppd: OCSP CertID style (RFC 6960)."""
    name = hashlib.sha256(ca.cert.issuer.public_bytes()).hexdigest()
    key = ca.cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    point = key.public_bytes(serialization.Encoding.X962,
                             serialization.PublicFormat.UncompressedPoint)
    return {"hashAlgorithm": "SHA256", "issuerNameHash": name,
            "issuerKeyHash": hashlib.sha256(point).hexdigest(),
            "serialNumber": format(ca.cert.serial_number, "x")}


async def install(cs: CentralSystem, kind: str, pem: bytes) -> str:
    conf = await cs.call(CP_ID, call.InstallCertificate(certificate_type=kind,
                                                        certificate=pem.decode()))
    return str(conf.status)


async def ids(cs: CentralSystem, kind: str) -> Any:
    return await cs.call(CP_ID, call.GetInstalledCertificateIds(certificate_type=kind))


def sign(signer: Issued, data: bytes) -> str:
    if isinstance(signer.key, rsa.RSAPrivateKey):
        raw = signer.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    else:
        raw = signer.key.sign(data, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(raw).decode()


async def signed_update(cs: CentralSystem, url: str, signer: Issued, signature: str,
                        request_id: int = 7) -> str:
    conf = await cs.call(CP_ID, call.SignedUpdateFirmware(request_id=request_id, retries=1,
                                                          retry_interval=1, firmware={
        "location": url, "retrieveDateTime": "2020-01-01T00:00:00Z",
        "signingCertificate": signer.cert_pem.decode(), "signature": signature}))
    return str(conf.status)


def signed_statuses(cs: CentralSystem) -> list[str]:
    return [p["status"] for p in cs.received("SignedFirmwareStatusNotification")]


def installed(tmp_path: Path) -> bytes | None:
    p = tmp_path / "installed.bin"
    return p.read_bytes() if p.exists() else None


# --- certificates ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ManufacturerRootCertificate", "CentralSystemRootCertificate"])
async def test_tc_075_install_root_certificate_survives_a_restart(
    cs: CentralSystem, tmp_path: Path, kind: str
) -> None:
    root = CA("installed root")
    cfg = config(tmp_path, cs)
    async with running(cfg):
        await booted(cs)
        assert (await ids(cs, kind)).status == "NotFound"
        assert await install(cs, kind, root.pem) == "Accepted"
        assert await install(cs, kind, root.pem) == "Accepted"  # the same again: no duplicate
    async with running(cfg):
        conf = await ids(cs, kind)
        assert conf.status == "Accepted"
        assert conf.certificate_hash_data == [snake(expected_hash_data(root))]
        other = ("CentralSystemRootCertificate" if kind.startswith("Manufacturer")
                 else "ManufacturerRootCertificate")
        assert (await ids(cs, other)).status == "NotFound"
    with Store.open(cfg.storage.path) as store:
        assert [e.kind for e in store.seclog_entries()].count(
            "ReconfigurationOfSecurityParameters") == 1


async def test_install_rejects_what_is_not_a_ca_and_honours_the_store_size(
    cs: CentralSystem, tmp_path: Path
) -> None:
    leaf = CA("x").issue("not a ca")
    async with running(config(tmp_path, cs, CertificateStoreMaxLength=2)):
        await booted(cs)
        kind = "ManufacturerRootCertificate"
        assert await install(cs, kind, leaf.cert_pem) == "Rejected"
        assert await install(cs, kind, b"-----BEGIN CERTIFICATE-----\nAAAA\n"
                                       b"-----END CERTIFICATE-----\n") == "Rejected"
        assert await install(cs, kind, CA("one").pem) == "Accepted"
        assert await install(cs, "CentralSystemRootCertificate", CA("two").pem) == "Accepted"
        assert await install(cs, kind, CA("three").pem) == "Rejected"  # full
        assert len((await ids(cs, kind)).certificate_hash_data) == 1


async def test_tc_076_delete_certificate(cs: CentralSystem, tmp_path: Path) -> None:
    a, b = CA("a"), CA("b")
    async with running(config(tmp_path, cs)):
        await booted(cs)
        for root in (a, b):
            assert await install(cs, "ManufacturerRootCertificate", root.pem) == "Accepted"
        conf = await cs.call(CP_ID, call.DeleteCertificate(
            certificate_hash_data=expected_hash_data(a)))
        assert conf.status == "Accepted"
        left = (await ids(cs, "ManufacturerRootCertificate")).certificate_hash_data
        assert left == [snake(expected_hash_data(b))]
        conf = await cs.call(CP_ID, call.DeleteCertificate(
            certificate_hash_data=expected_hash_data(a)))
        assert conf.status == "NotFound"


async def test_last_central_system_root_is_not_deleted_under_tls(
    cs: CentralSystem, tmp_path: Path
) -> None:
    root = CA("cs root")
    async with running(config(tmp_path, cs)) as d:
        await booted(cs)
        assert await install(cs, "CentralSystemRootCertificate", root.pem) == "Accepted"
        # as if the link ran at profile 2 (the link itself stays on ws:// in this test)
        central = dataclasses.replace(d.certs.cfg.central_system, security_profile=2)
        d.certs.cfg = dataclasses.replace(d.certs.cfg, central_system=central)
        conf = await cs.call(CP_ID, call.DeleteCertificate(
            certificate_hash_data=expected_hash_data(root)))
        assert conf.status == "Failed"
        assert (await ids(cs, "CentralSystemRootCertificate")).status == "Accepted"


# --- signed firmware ------------------------------------------------------------------------------


async def test_tc_080_secure_firmware_update(
    cs: CentralSystem, tmp_path: Path, web: WebPeer, maker: CA, signer: Issued
) -> None:
    cfg = config(tmp_path, cs)
    async with running(cfg) as d:
        await booted(cs)
        assert await install(cs, "ManufacturerRootCertificate", maker.pem) == "Accepted"
        status = await signed_update(cs, f"{web.url}/fw/image.bin", signer, sign(signer, IMAGE))
        assert status == "Accepted"
        await cs.wait_for("SignedFirmwareStatusNotification",
                          lambda p: p["status"] == "Installing")
        await wait_until(lambda: d.stop_event.is_set(), what="restart into the new firmware")
        assert signed_statuses(cs) == ["Downloading", "Downloaded", "SignatureVerified",
                                       "Installing"]
        assert all(p["requestId"] == 7 for p in cs.received("SignedFirmwareStatusNotification"))
        assert installed(tmp_path) == IMAGE
        assert cs.received("FirmwareStatusNotification") == []
    cs.messages.clear()
    async with running(cfg):
        await cs.wait_for("SignedFirmwareStatusNotification", lambda p: p["status"] == "Installed")
        await cs.wait_for("SecurityEventNotification",
                          lambda p: p["type"] == "FirmwareUpdated")


async def test_tc_081_invalid_signature_is_not_installed(
    cs: CentralSystem, tmp_path: Path, web: WebPeer, maker: CA, signer: Issued
) -> None:
    async with running(config(tmp_path, cs)) as d:
        await booted(cs)
        assert await install(cs, "ManufacturerRootCertificate", maker.pem) == "Accepted"
        # a tampered image under the genuine image's signature
        status = await signed_update(cs, f"{web.url}/fw/tampered.bin", signer,
                                     sign(signer, IMAGE))
        assert status == "Accepted"
        await cs.wait_for("SignedFirmwareStatusNotification",
                          lambda p: p["status"] == "InvalidSignature")
        assert signed_statuses(cs) == ["Downloading", "Downloaded", "InvalidSignature"]
        assert installed(tmp_path) is None and not d.stop_event.is_set()
        assert [e.kind for e in d.store.seclog_entries()][-1] == "InvalidFirmwareSignature"
        await wait_until(lambda: list((tmp_path / "fw").iterdir()) == [],
                         what="the refused image removed")


async def test_signing_certificate_from_an_untrusted_root_is_refused(
    cs: CentralSystem, tmp_path: Path, web: WebPeer, maker: CA
) -> None:
    rogue = CA("rogue root").issue("rogue signer", server=False)
    async with running(config(tmp_path, cs)) as d:
        await booted(cs)
        assert await install(cs, "ManufacturerRootCertificate", maker.pem) == "Accepted"
        status = await signed_update(cs, f"{web.url}/fw/image.bin", rogue, sign(rogue, IMAGE))
        assert status == "InvalidCertificate"
        assert web.count("GET") == 0 and installed(tmp_path) is None
        assert [e.kind for e in d.store.seclog_entries()][-1] == \
            "InvalidFirmwareSigningCertificate"


async def test_signed_update_without_manufacturer_root_is_refused(
    cs: CentralSystem, tmp_path: Path, web: WebPeer, signer: Issued
) -> None:
    async with running(config(tmp_path, cs)):
        await booted(cs)
        status = await signed_update(cs, f"{web.url}/fw/image.bin", signer, sign(signer, IMAGE))
        assert status == "InvalidCertificate"
        assert web.count("GET") == 0


# --- installed Central System roots and the link --------------------------------------------------


async def test_installed_central_system_root_is_trusted_at_the_next_connection(
    tmp_path: Path,
) -> None:
    from csms import CentralSystem as Csms

    first, second = CA("first cs root"), CA("second cs root")
    password = "0123456789abcdef0123"

    def tls_config(url: str) -> Config:
        return sim_config(tmp_path, url, central={
            "security_profile": 2, "password": password,
            "ca_file": str(first.write(tmp_path / "first.pem"))})

    ctx1 = first.issue("cs", ips=("127.0.0.1",)).server_context(tmp_path, "cs1")
    async with Csms(ssl_context=ctx1) as cs1, running(tls_config(cs1.url)):
        await booted(cs1)
        assert await install(cs1, "CentralSystemRootCertificate", second.pem) == "Accepted"
    # the Central System moves to a certificate of the newly installed root
    ctx2 = second.issue("cs", ips=("127.0.0.1",)).server_context(tmp_path, "cs2")
    async with Csms(ssl_context=ctx2) as cs2, running(tls_config(cs2.url)):
        await booted(cs2)  # connected: the installed root is trusted
        assert (await ids(cs2, "CentralSystemRootCertificate")).status == "Accepted"


async def test_without_the_installed_root_the_central_system_is_refused(tmp_path: Path) -> None:
    from csms import CentralSystem as Csms

    first, second = CA("first cs root"), CA("second cs root")
    ctx = second.issue("cs", ips=("127.0.0.1",)).server_context(tmp_path, "cs")
    async with Csms(ssl_context=ctx) as cs:
        cfg = sim_config(tmp_path, cs.url, central={
            "security_profile": 2, "password": "0123456789abcdef0123",
            "ca_file": str(first.write(tmp_path / "first.pem"))})
        async with running(cfg) as d:
            await wait_until(lambda: any(
                e.kind == "InvalidCentralSystemCertificate" for e in d.store.seclog_entries()),
                what="the certificate refused")
            assert cs.connections == 0


async def test_rsa_signed_firmware_is_verified_too(
    cs: CentralSystem, tmp_path: Path, web: WebPeer
) -> None:
    root = CA("rsa manufacturer root", use_rsa=True)
    rsa_signer = root.issue("rsa firmware signing", server=False)
    async with running(config(tmp_path, cs)) as d:
        await booted(cs)
        assert await install(cs, "ManufacturerRootCertificate", root.pem) == "Accepted"
        assert await signed_update(cs, f"{web.url}/fw/tampered.bin", rsa_signer,
                                   sign(rsa_signer, IMAGE), request_id=1) == "Accepted"
        gate = cs.behaviour.hold["SignedFirmwareStatusNotification"] = asyncio.Event()
        await cs.wait_for("SignedFirmwareStatusNotification",
                          lambda p: p["status"] == "InvalidSignature")
        # the first update is over once InvalidSignature is said, even before its answer
        # arrives: the next request cancels nothing (Accepted, not AcceptedCanceled)
        assert await signed_update(cs, f"{web.url}/fw/image.bin", rsa_signer,
                                   sign(rsa_signer, IMAGE), request_id=2) == "Accepted"
        gate.set()
        await cs.wait_for("SignedFirmwareStatusNotification",
                          lambda p: p["status"] == "SignatureVerified" and p["requestId"] == 2)
        await wait_until(lambda: d.stop_event.is_set(), what="installed")
        assert installed(tmp_path) == IMAGE
