"""The charge point's client certificate (OCPP 1.6 Security Whitepaper, security profile 3), end
to end over TLS on loopback: ExtendedTriggerMessage(SignChargePointCertificate), SignCertificate
with a CSR made on the charge point, CertificateSigned checked against the Central System roots,
the new certificate used from the next connection, the fallback to the old one, the expiry
watch. OCTT TC_074 (update the charge point certificate) and TC_077 (invalid charge point
certificate security event).
"""

from __future__ import annotations

import ssl
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from csms import CentralSystem, call
from harness import CP_ID, booted, running, sim_config, wait_until
from pki import CA, Issued

from ocppd.config import Config

pytestmark = pytest.mark.asyncio

CPO = "Example CPO"


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA("central system root")


@pytest.fixture(scope="module")
def server(ca: CA) -> Issued:
    return ca.issue("central system", ips=("127.0.0.1",))


def server_ctx(tmp_path: Path, server: Issued, client_ca: CA, *, required: bool) -> ssl.SSLContext:
    """TLS 1.2+ server; client certificates verified against ``client_ca``: asked for (profile 2
    gets through) or required (a refused certificate fails the handshake)."""
    ctx = server.server_context(tmp_path, "server")
    ctx.load_verify_locations(cadata=client_ca.pem.decode())
    ctx.verify_mode = ssl.CERT_REQUIRED if required else ssl.CERT_OPTIONAL
    return ctx


def tls_config(tmp_path: Path, cs: CentralSystem, ca: CA, profile: int,
               client: Issued | None = None, **ocpp: Any) -> Config:
    central: dict[str, Any] = {"security_profile": profile, "password": "0123456789abcdef",
                               "ca_file": str(ca.write(tmp_path / "cs-root.pem"))}
    if client is not None:
        cert, key = client.write(tmp_path, "factory-client")
        central.update(client_cert_file=str(cert), client_key_file=str(key))
    return sim_config(tmp_path, cs.url, central=central, ocpp={"CpoName": CPO, **ocpp})


def serial_of(handshake: dict[str, Any]) -> int | None:
    peer = handshake["peercert"]
    return int(peer["serialNumber"], 16) if peer else None


def seclog(d: Any, kind: str) -> list[str]:
    return [e.tech_info or "" for e in d.store.seclog_entries() if e.kind == kind]


async def trigger_csr(cs: CentralSystem, count: int = 1) -> str:
    conf = await cs.call(CP_ID, call.ExtendedTriggerMessage(
        requested_message="SignChargePointCertificate"))
    assert conf.status == "Accepted"
    return str((await cs.wait_for("SignCertificate", count=count))[-1]["csr"])


async def certificate_signed(cs: CentralSystem, chain: str) -> str:
    conf = await cs.call(CP_ID, call.CertificateSigned(certificate_chain=chain))
    return str(conf.status)


def pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


async def test_tc_074_csr_round_trip_ends_in_profile_3_with_the_new_certificate(
    tmp_path: Path, ca: CA, server: Issued
) -> None:
    async with CentralSystem(ssl_context=server_ctx(tmp_path, server, ca, required=False)) as cs:
        cfg = tls_config(tmp_path, cs, ca, 2)
        async with running(cfg) as d:
            await booted(cs)
            csr_pem = await trigger_csr(cs)
            csr = x509.load_pem_x509_csr(csr_pem.encode())
            assert csr.is_signature_valid
            subject = {a.oid: a.value for a in csr.subject}
            assert subject == {x509.NameOID.COMMON_NAME: CP_ID,
                               x509.NameOID.ORGANIZATION_NAME: CPO}
            # the private key stays on the charge point, readable by the daemon alone
            state = cfg.storage.path.parent / "client-certificate"
            key_file = state / "csr.key"
            assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
            assert stat.S_IMODE(state.stat().st_mode) == 0o700
            key = serialization.load_pem_private_key(key_file.read_bytes(), None)
            assert key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ) == csr.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            assert "PRIVATE KEY" not in str(cs.messages)

            first = ca.sign_csr(csr_pem)
            assert await certificate_signed(cs, pem(first)) == "Accepted"
            assert stat.S_IMODE((state / "client.pem").stat().st_mode) == 0o600
            # stored for profile 3, which now has what it needs
            conf = await cs.call(CP_ID, call.ChangeConfiguration(key="SecurityProfile",
                                                                 value="3"))
            assert conf.status == "Accepted"
            await wait_until(lambda: cs.connections == 2 and d.cp.online, what="profile 3")
            assert d.cp.link.settings.security_profile == 3
            assert serial_of(cs.handshakes[1]) == first.serial_number
            await wait_until(lambda: "SecurityProfile 3 in use (was 2)" in seclog(
                d, "ReconfigurationOfSecurityParameters"), what="the switch in the security log")

            # renewed at profile 3: the next connection presents the new certificate
            second = ca.sign_csr(await trigger_csr(cs, count=2))
            assert await certificate_signed(cs, pem(second, ca.cert)) == "Accepted"
            await wait_until(lambda: cs.connections == 3 and d.cp.online, what="reconnected")
            assert serial_of(cs.handshakes[2]) == second.serial_number
            await wait_until(lambda: d.store.get_setting("link.client_certificate_trial")
                             is None, what="the trial confirmed")
            assert not (state / "trial.pem").exists()
            assert any("new client certificate in use" in t
                       for t in seclog(d, "ReconfigurationOfSecurityParameters"))
        async with running(cfg) as d:  # kept across a restart
            await wait_until(lambda: cs.connections == 4 and d.cp.online, what="restarted")
            assert serial_of(cs.handshakes[3]) == second.serial_number


async def test_new_certificate_that_cannot_connect_falls_back_to_the_old_one(
    tmp_path: Path, ca: CA, server: Issued
) -> None:
    """The new certificate chains to an installed Central System root, so the charge point
    accepts it, but the Central System does not take it: after the trial attempts the charge
    point connects with its previous certificate again, and says so in the security log."""
    other = CA("another root the central system does not trust for clients")
    factory = ca.issue(CP_ID, server=False)
    async with CentralSystem(ssl_context=server_ctx(tmp_path, server, ca, required=True)) as cs:
        cfg = tls_config(tmp_path, cs, ca, 3, client=factory)
        async with running(cfg) as d:
            await booted(cs)
            assert serial_of(cs.handshakes[0]) == factory.cert.serial_number
            conf = await cs.call(CP_ID, call.InstallCertificate(
                certificate_type="CentralSystemRootCertificate", certificate=other.pem.decode()))
            assert conf.status == "Accepted"
            new = other.sign_csr(await trigger_csr(cs))
            assert await certificate_signed(cs, pem(new)) == "Accepted"
            await wait_until(lambda: cs.connections == 2 and d.cp.online, timeout=30,
                             what="back online with the previous certificate")
            assert serial_of(cs.handshakes[1]) == factory.cert.serial_number
            assert d.store.get_setting("link.client_certificate_trial") is None
            state = cfg.storage.path.parent / "client-certificate"
            assert not (state / "trial.pem").exists() and not (state / "client.pem").exists()
            assert any("did not connect" in t
                       for t in seclog(d, "ReconfigurationOfSecurityParameters"))


async def test_tc_077_invalid_charge_point_certificate_is_rejected(
    tmp_path: Path, ca: CA, server: Issued
) -> None:
    stranger = CA("not a central system root")
    async with CentralSystem(ssl_context=server_ctx(tmp_path, server, ca, required=False)) as cs:
        cfg = tls_config(tmp_path, cs, ca, 2, CertificateSignedMaxChainSize=3000)
        async with running(cfg) as d:
            await booted(cs)
            csr = await trigger_csr(cs)
            untrusted = stranger.sign_csr(csr)
            for_another_key = ca.issue(CP_ID, server=False).cert
            assert await certificate_signed(cs, pem(untrusted)) == "Rejected"
            assert await certificate_signed(cs, pem(for_another_key)) == "Rejected"
            assert await certificate_signed(cs, "not a certificate") == "Rejected"
            good = ca.sign_csr(csr)
            too_long = pem(good) + pem(ca.cert) * 6
            assert len(too_long) > 3000
            assert await certificate_signed(cs, too_long) == "Rejected"
            assert len(seclog(d, "InvalidChargePointCertificate")) == 4
            assert not (cfg.storage.path.parent / "client-certificate" / "client.pem").exists()
            assert await certificate_signed(cs, pem(good)) == "Accepted"


async def test_certificate_near_its_end_is_renewed_and_reported(
    tmp_path: Path, ca: CA, server: Issued
) -> None:
    """A client certificate a day from its end: a new CSR goes out by itself, and a security
    event says the certificate is about to expire."""
    ending = ca.issue(CP_ID, server=False, valid_days=1, age_days=300)
    async with CentralSystem(ssl_context=server_ctx(tmp_path, server, ca, required=True)) as cs:
        async with running(tls_config(tmp_path, cs, ca, 3, client=ending)) as d:
            await booted(cs)
            csr = x509.load_pem_x509_csr((await cs.wait_for("SignCertificate"))[0]["csr"]
                                         .encode())
            assert csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == CP_ID
            await wait_until(lambda: bool(seclog(d, "InvalidChargePointCertificate")),
                             what="the expiry event")
            assert "expires" in seclog(d, "InvalidChargePointCertificate")[0]
