"""AdditionalRootCertificateCheck (OCPP 1.6 Security Whitepaper), end to end over TLS: a new
Central System root must be issued by the installed one, and replaces it only after a
connection verified with it; when that fails, the old root is trusted again."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from csms import CentralSystem, call
from harness import CP_ID, booted, running, sim_config, wait_until
from pki import CA

from ocppd import pki as ocppd_pki
from ocppd.config import Config
from ocppd.storage import Store

pytestmark = pytest.mark.asyncio

KIND = "CentralSystemRootCertificate"


def server_ctx(tmp_path: Path, ca: CA) -> ssl.SSLContext:
    return ca.issue("central system", ips=("127.0.0.1",)).server_context(tmp_path, "server")


def serve_with(ctx: ssl.SSLContext, tmp_path: Path, ca: CA) -> None:
    """From the next handshake on, the server presents a certificate issued by ``ca``."""
    cert, key = ca.issue("central system", ips=("127.0.0.1",)).write(tmp_path, "server2")
    ctx.load_cert_chain(cert, key)


def config(tmp_path: Path, cs: CentralSystem, old: CA, check: bool = True) -> Config:
    """Profile 2, trusting only the installed root ``old`` (no ca_file)."""
    cfg = sim_config(tmp_path, cs.url, central={"security_profile": 2,
                                                "password": "0123456789abcdef"},
                     ocpp={"AdditionalRootCertificateCheck": check})
    cert = old.cert
    with Store.open(cfg.storage.path) as store:
        store.certificate_put(use="central_system_root", fingerprint=ocppd_pki.fingerprint(cert),
                              pem=ocppd_pki.to_pem(cert), at=ocppd_pki.not_before(cert))
    return cfg


def pem(cert: Any) -> str:
    return str(cert.public_bytes(serialization.Encoding.PEM).decode())


async def installed_subjects(cs: CentralSystem, d: Any) -> list[str]:
    conf = await cs.call(CP_ID, call.GetInstalledCertificateIds(certificate_type=KIND))
    assert conf.status == "Accepted"
    return [c.subject.rfc4514_string() for c in
            (ocppd_pki.load_pem_chain(r.pem)[0] for r in d.store.certificates(
                "central_system_root"))]


def seclog(d: Any) -> list[str]:
    return [e.tech_info or "" for e in d.store.seclog_entries()
            if e.kind == "ReconfigurationOfSecurityParameters"]


async def test_new_root_replaces_the_old_one_after_a_connection_with_it(tmp_path: Path) -> None:
    old, new = CA("old root"), CA("new root")
    ctx = server_ctx(tmp_path, old)
    async with CentralSystem(ssl_context=ctx) as cs:
        async with running(config(tmp_path, cs, old)) as d:
            await booted(cs)
            serve_with(ctx, tmp_path, new)  # the Central System moves to the new root
            conf = await cs.call(CP_ID, call.InstallCertificate(
                certificate_type=KIND, certificate=pem(old.cross_sign(new))))
            assert conf.status == "Accepted"
            await wait_until(lambda: cs.connections == 2 and d.cp.online, what="reconnected")
            await wait_until(lambda: d.store.get_setting("link.central_system_root_trial")
                             is None, what="the new root confirmed")
            assert await installed_subjects(cs, d) == [new.cert.subject.rfc4514_string()]
            assert any("new CentralSystemRootCertificate in use" in t for t in seclog(d))


async def test_new_root_that_cannot_connect_gives_way_to_the_old_one(tmp_path: Path) -> None:
    """The Central System still presents a certificate of the old root: the new root alone
    cannot verify it, so after the trial attempts the old root is trusted again."""
    old, new = CA("old root"), CA("new root")
    async with CentralSystem(ssl_context=server_ctx(tmp_path, old)) as cs:
        async with running(config(tmp_path, cs, old)) as d:
            await booted(cs)
            conf = await cs.call(CP_ID, call.InstallCertificate(
                certificate_type=KIND, certificate=pem(old.cross_sign(new))))
            assert conf.status == "Accepted"
            await wait_until(lambda: cs.connections == 2 and d.cp.online, timeout=30,
                             what="back online with the old root")
            assert d.store.get_setting("link.central_system_root_trial") is None
            assert await installed_subjects(cs, d) == [old.cert.subject.rfc4514_string()]
            assert any("did not connect" in t for t in seclog(d))


async def test_new_root_not_issued_by_the_installed_one_is_rejected(tmp_path: Path) -> None:
    old = CA("old root")
    async with CentralSystem(ssl_context=server_ctx(tmp_path, old)) as cs:
        async with running(config(tmp_path, cs, old)) as d:
            await booted(cs)
            conf = await cs.call(CP_ID, call.InstallCertificate(
                certificate_type=KIND, certificate=CA("unrelated root").pem.decode()))
            assert conf.status == "Rejected"
            assert await installed_subjects(cs, d) == [old.cert.subject.rfc4514_string()]
            assert cs.connections == 1


async def test_without_the_check_a_new_root_is_added_at_once(tmp_path: Path) -> None:
    old, other = CA("old root"), CA("unrelated root")
    async with CentralSystem(ssl_context=server_ctx(tmp_path, old)) as cs:
        async with running(config(tmp_path, cs, old, check=False)) as d:
            await booted(cs)
            conf = await cs.call(CP_ID, call.InstallCertificate(certificate_type=KIND,
                                                                certificate=other.pem.decode()))
            assert conf.status == "Accepted"
            assert len(await installed_subjects(cs, d)) == 2
            assert cs.connections == 1
