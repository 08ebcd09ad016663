"""Security events the link observes (Security Whitepaper): an invalid Central System certificate
and a refused password, once per transition (a reconnect loop must not flood the bounded
security log)."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from linkkit import CentralSystem, Handlers, SteppedSleep, running, settings_for
from pki import CA

from ocppd import security
from ocppd.ocpp.link import Link
from ocppd.security import SecurityEventType

Seen = list[tuple[SecurityEventType, str | None]]


@pytest.fixture
def seen() -> Iterator[Seen]:
    got: Seen = []

    def record(kind: SecurityEventType, info: str | None, at: datetime) -> None:
        got.append((kind, info))

    security.clear_pending()
    security.attach(record)
    try:
        yield got
    finally:
        security.detach()


async def test_untrusted_central_system_certificate_is_a_security_event(
        handlers: Handlers, tmp_path: Path, seen: Seen) -> None:
    ca = CA()
    server = CentralSystem(password="0123456789abcdef",
                           ssl_context=ca.issue("cs", ips=("127.0.0.1",)).server_context(
                               tmp_path, "cs"))
    await server.start()
    sleep = SteppedSleep()
    link = Link(settings_for(server.url, security_profile=2, password="0123456789abcdef",
                             ca_file=CA("another").write(tmp_path / "other.pem")),
                handler=handlers, sleep=sleep)
    try:
        async with running(link):
            for _ in range(3):  # three failed attempts
                await sleep.next()
                sleep.release()
            await sleep.next()
    finally:
        await server.close()
    kinds = [k for k, _ in seen]
    assert kinds == [SecurityEventType.INVALID_CENTRAL_SYSTEM_CERTIFICATE]  # once, not 3 times
    assert "certificate verify failed" in (seen[0][1] or "")


async def test_refused_password_is_a_security_event(handlers: Handlers, seen: Seen) -> None:
    server = CentralSystem(password="the-right-password-16")
    await server.start()
    sleep = SteppedSleep()
    link = Link(settings_for(server.url, security_profile=1, password="a-wrong-password-16b"),
                handler=handlers, sleep=sleep)
    try:
        async with running(link):
            await sleep.next()
            sleep.release()
            await sleep.next()
    finally:
        await server.close()
    assert [k for k, _ in seen] == [SecurityEventType.FAILED_TO_AUTHENTICATE_AT_CENTRAL_SYSTEM]


# --- TLS of the OCPP link (Security Whitepaper §2.1): version, cipher suites, server name ------


class TlsPeer:
    """A TLS server on a real socket that completes or refuses handshakes the way OpenSSL does
    (with an alert, as a production server would), in a thread; it records the server-side
    outcome of each handshake. No WebSocket behind it: the handshake is what is judged."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.outcomes: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"wss://127.0.0.1:{self.sock.getsockname()[1]}/ocpp"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    self.outcomes.append(f"{tls.version()} {tls.cipher()[0]}")
            except (ssl.SSLError, OSError) as exc:
                self.outcomes.append(str(getattr(exc, "reason", None) or exc))
                conn.close()

    def __enter__(self) -> TlsPeer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture(scope="module")
def cs_ca() -> CA:
    return CA("central system root")


def peer_ctx(tmp_path: Path, cs_ca: CA, **names: Any) -> ssl.SSLContext:
    issued = cs_ca.issue("central system", **(names or {"ips": ("127.0.0.1",)}))
    return issued.server_context(tmp_path, "peer")


async def one_failed_attempt(url: str, tmp_path: Path, cs_ca: CA, handlers: Handlers) -> Link:
    sleep = SteppedSleep()
    link = Link(settings_for(url, security_profile=2, password="0123456789abcdef",
                             ca_file=cs_ca.write(tmp_path / "ca.pem")),
                handler=handlers, sleep=sleep)
    async with running(link):
        await sleep.next(10)  # the first attempt failed; the link waits for the next
    return link


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
async def test_tls_older_than_1_2_is_refused_and_is_a_security_event(
        handlers: Handlers, tmp_path: Path, seen: Seen, cs_ca: CA) -> None:
    ctx = peer_ctx(tmp_path, cs_ca)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL refuses TLS 1.1 at its default level
    ctx.minimum_version = ssl.TLSVersion.TLSv1_1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with TlsPeer(ctx) as peer:
        link = await one_failed_attempt(peer.url, tmp_path, cs_ca, handlers)
    assert link.stats.connects == 0
    assert peer.outcomes and "UNSUPPORTED_PROTOCOL" in peer.outcomes[0]
    assert [k for k, _ in seen] == [SecurityEventType.INVALID_TLS_VERSION]


async def test_cipher_suite_outside_the_whitepaper_list_is_refused(
        handlers: Handlers, tmp_path: Path, seen: Seen, cs_ca: CA) -> None:
    """A TLS 1.2 server offering only ChaCha20-Poly1305: sound, but not a whitepaper suite."""
    ctx = peer_ctx(tmp_path, cs_ca)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-ECDSA-CHACHA20-POLY1305")
    with TlsPeer(ctx) as peer:
        link = await one_failed_attempt(peer.url, tmp_path, cs_ca, handlers)
    assert link.stats.connects == 0
    assert peer.outcomes and "NO_SHARED_CIPHER" in peer.outcomes[0]
    assert [k for k, _ in seen] == [SecurityEventType.INVALID_TLS_CIPHER_SUITE]


async def test_tls_1_2_server_gets_a_whitepaper_cipher_suite(
        tmp_path: Path, cs_ca: CA) -> None:
    """Seen from the server: what the link offers a TLS 1.2-only server is negotiated to one of
    the whitepaper's suites (the server would take any)."""
    ctx = peer_ctx(tmp_path, cs_ca)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with TlsPeer(ctx) as peer:
        link = await one_failed_attempt(peer.url, tmp_path, cs_ca, Handlers())
        assert link.stats.last_error is not None  # no WebSocket behind the peer
    assert peer.outcomes[0] in ("TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256",
                                "TLSv1.2 ECDHE-ECDSA-AES256-GCM-SHA384")


async def test_central_system_name_not_in_its_certificate_is_refused(
        handlers: Handlers, tmp_path: Path, seen: Seen, cs_ca: CA) -> None:
    """A certificate from the trusted root, but for another host name (TC_078 / TC_086)."""
    with TlsPeer(peer_ctx(tmp_path, cs_ca, dns=("central.example",))) as peer:
        link = await one_failed_attempt(peer.url, tmp_path, cs_ca, handlers)
    assert link.stats.connects == 0
    assert [k for k, _ in seen] == [SecurityEventType.INVALID_CENTRAL_SYSTEM_CERTIFICATE]
    assert "mismatch" in (seen[0][1] or "").lower()


# --- InvalidMessages (Security Whitepaper security events), rate-limited ------------------------


async def test_invalid_messages_are_a_rate_limited_security_event(
        cs: CentralSystem, handlers: Handlers, seen: Seen) -> None:
    """Frames that fail validation: one InvalidMessages event, not one per frame (a broken or
    hostile peer must not flood the bounded security log); after the quiet period the next
    one is reported with the count of those in between."""
    from ocppd.ocpp.link import INVALID_MESSAGES_EVENT_EVERY_S
    from ocppd.ocpp.validate import Validator

    now = [1000.0]
    handlers.returns("Reset", {"status": "Accepted"})
    link = Link(settings_for(cs.url), handler=handlers, validator=Validator(),
                clock=lambda: now[0])
    async with running(link):
        conn = await cs.connection(1)
        bad_call = await conn.call("Reset", {"type": "Sideways"})  # fails the schema
        assert bad_call[0] == 4
        broken = await conn.request_raw('[2, "b-1", "Reset"]', "b-1")  # not a CALL at all
        assert broken[0] == 4
        await conn.call("Reset", {"type": "Hard"})  # a valid one: no event
        invalid = [i for k, i in seen if k == SecurityEventType.INVALID_MESSAGES]
        assert len(invalid) == 1 and "Reset" in (invalid[0] or "")
        now[0] += INVALID_MESSAGES_EVENT_EVERY_S
        assert (await conn.call("Reset", {}))[0] == 4
        invalid = [i for k, i in seen if k == SecurityEventType.INVALID_MESSAGES]
        assert len(invalid) == 2 and "1 more" in (invalid[1] or "")
