"""OCTT security test cases about the connection itself (OCPP 1.6 Security Whitepaper), each a
named scenario against the real daemon and a real Central System over TLS on loopback:
TC_073 (update the Basic auth password), TC_078 (invalid Central System certificate), TC_085
(Basic auth, valid credentials), TC_086 (TLS with the server certificate), TC_087 (TLS with a
client certificate). The other security cases live with their features: TC_074/TC_077
test_security_client_cert.py, TC_075/076/080/081 test_security_certificates.py, TC_079
test_get_log.py, TC_083/084 test_link_rules.py."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path
from typing import Any

import pytest
from csms import CentralSystem, call
from harness import CP_ID, booted, running, sim_config, wait_until
from pki import CA, Issued

pytestmark = pytest.mark.asyncio

PASSWORD = "0123456789abcdef"
WHITEPAPER_TLS12 = {"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                    "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
                    "AES128-GCM-SHA256", "AES256-GCM-SHA384"}


def basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"{CP_ID}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA("central system root")


def server_ctx(tmp_path: Path, ca: CA, *, client_ca: CA | None = None,
               tls12: bool = False) -> ssl.SSLContext:
    ctx = ca.issue("central system", ips=("127.0.0.1",)).server_context(tmp_path, "server")
    if client_ca is not None:
        ctx.load_verify_locations(cadata=client_ca.pem.decode())
        ctx.verify_mode = ssl.CERT_REQUIRED
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def tls_central(tmp_path: Path, ca: CA, profile: int, client: Issued | None = None
                ) -> dict[str, Any]:
    central: dict[str, Any] = {"security_profile": profile,
                               "ca_file": str(ca.write(tmp_path / "root.pem"))}
    if profile < 3:
        central["password"] = PASSWORD
    if client is not None:
        cert, key = client.write(tmp_path, "client")
        central.update(client_cert_file=str(cert), client_key_file=str(key))
    return central


def seclog(d: Any, kind: str) -> list[str]:
    return [e.tech_info or "" for e in d.store.seclog_entries() if e.kind == kind]


async def test_tc_085_basic_authentication_with_valid_credentials(
    cs: CentralSystem, tmp_path: Path
) -> None:
    cfg = sim_config(tmp_path, cs.url, central={"security_profile": 1, "password": PASSWORD})
    async with running(cfg):
        await booted(cs)
        assert cs.handshakes[0]["authorization"] == basic(PASSWORD)


async def test_tc_073_update_the_basic_authentication_password(
    cs: CentralSystem, tmp_path: Path
) -> None:
    new = "fedcba9876543210fedc"
    cfg = sim_config(tmp_path, cs.url, central={"security_profile": 1, "password": PASSWORD})
    async with running(cfg) as d:
        await booted(cs)
        conf = await cs.call(CP_ID, call.ChangeConfiguration(key="AuthorizationKey", value=new))
        assert conf.status == "Accepted"
        await wait_until(lambda: cs.connections == 2 and d.cp.online, what="reconnected")
        assert cs.handshakes[1]["authorization"] == basic(new)
        assert seclog(d, "ReconfigurationOfSecurityParameters")


async def test_tc_086_tls_with_the_central_system_certificate(tmp_path: Path, ca: CA) -> None:
    """Profile 2 against a TLS 1.2 server: verified, one of the whitepaper's suites, Basic
    auth inside the TLS connection."""
    async with CentralSystem(ssl_context=server_ctx(tmp_path, ca, tls12=True)) as cs:
        async with running(sim_config(tmp_path, cs.url, central=tls_central(tmp_path, ca, 2))):
            await booted(cs)
            cipher, version, _ = cs.handshakes[0]["tls"]
            assert version == "TLSv1.2" and cipher in WHITEPAPER_TLS12
            assert cs.handshakes[0]["authorization"] == basic(PASSWORD)


async def test_tc_087_tls_with_a_client_certificate(tmp_path: Path, ca: CA) -> None:
    """Profile 3: the Central System requires a client certificate; the charge point presents
    its own (commonName its identity) and sends no password."""
    client = ca.issue(CP_ID, server=False)
    ctx = server_ctx(tmp_path, ca, client_ca=ca)
    async with CentralSystem(ssl_context=ctx) as cs:
        cfg = sim_config(tmp_path, cs.url, central=tls_central(tmp_path, ca, 3, client))
        async with running(cfg):
            await booted(cs)
            peer = cs.handshakes[0]["peercert"]
            assert int(peer["serialNumber"], 16) == client.cert.serial_number
            assert ((("commonName", CP_ID),) in peer["subject"])
            assert cs.handshakes[0]["authorization"] is None


async def test_tc_078_invalid_central_system_certificate(
    tmp_path: Path, ca: CA, caplog: pytest.LogCaptureFixture
) -> None:
    """A server certificate from a root the charge point does not trust: no connection, and an
    InvalidCentralSystemCertificate security event (once, not per attempt)."""
    stranger = CA("not the central system's root")
    async with CentralSystem(ssl_context=server_ctx(tmp_path, stranger)) as cs:
        cfg = sim_config(tmp_path, cs.url, central=tls_central(tmp_path, ca, 2))
        async with running(cfg) as d:
            await wait_until(lambda: any("connection attempt 3 failed" in r.getMessage()
                                         for r in caplog.records), what="three attempts")
            assert cs.connections == 0 and d.cp.link.stats.connects == 0
            assert len(seclog(d, "InvalidCentralSystemCertificate")) == 1
            assert "certificate verify failed" in seclog(d, "InvalidCentralSystemCertificate")[0]
