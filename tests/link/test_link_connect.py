"""Connecting: URL, subprotocol, Basic auth, TLS (profiles 2 and 3), backoff, dead links."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from faultproxy import FaultProxy, Mode
from linkkit import (
    CentralSystem,
    Handlers,
    ManualClock,
    SteppedSleep,
    running,
    settings_for,
)

from ocppd.ocpp.link import Link, LinkSettings, backoff_delay_s, build_url

LOG = "ocppd.link"


def _messages(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name == LOG)


async def _started(**kw: Any) -> CentralSystem:
    server = CentralSystem(**kw)
    await server.start()
    return server


# --- URL and handshake --------------------------------------------------------------------------


def test_url_appends_percent_encoded_id_without_double_slash() -> None:
    assert build_url("ws://h/ocpp/", "CP 1/ä#?") == "ws://h/ocpp/CP%201%2F%C3%A4%23%3F"
    assert build_url("ws://h/ocpp", "CP-1") == "ws://h/ocpp/CP-1"


async def test_id_needing_percent_encoding_reaches_the_server_intact(
        cs: CentralSystem, handlers: Handlers) -> None:
    cp_id = "CP 01/ä#?"
    link = Link(settings_for(cs.url + "/", charge_point_id=cp_id), handler=handlers)
    async with running(link):
        conn = await cs.connection(1)
    assert conn.raw_path == "/ocpp/CP%2001%2F%C3%A4%23%3F"
    assert conn.cp_id == cp_id
    assert conn.ws.ws_protocol == "ocpp1.6"


async def test_server_without_ocpp16_subprotocol_is_left_and_retried(
        handlers: Handlers, caplog: pytest.LogCaptureFixture) -> None:
    server = await _started(protocols=("ocpp2.0.1",))
    sleep = SteppedSleep()
    link = Link(settings_for(server.url), handler=handlers, sleep=sleep)
    try:
        with caplog.at_level(logging.WARNING, logger=LOG):
            async with running(link):
                await sleep.next()
                assert not link.connected
                conn = await server.connection(1)
                await asyncio.wait_for(conn.closed.wait(), 5)  # we closed it
                sleep.release()
                await sleep.next()  # and try again after a backoff
                assert len(server.attempts) == 2
    finally:
        await server.close()
    assert "did not agree to subprotocol ocpp1.6" in _messages(caplog)


@pytest.mark.parametrize(("status_setup", "expected"), [
    ("password", "HTTP 401 Unauthorized"),
    ("unknown_id", "HTTP 404 Not Found"),
])
async def test_refused_handshake_is_explained_and_retried(
        handlers: Handlers, caplog: pytest.LogCaptureFixture, status_setup: str,
        expected: str) -> None:
    if status_setup == "password":
        server = await _started(password="right")
        settings = dict(security_profile=1, password="wrong")
        meaning = "wrong password"
    else:
        server = await _started(known_ids={"someone-else"})
        settings = {}
        meaning = "unknown charge point id or wrong URL"
    sleep = SteppedSleep()
    link = Link(settings_for(server.url, **settings), handler=handlers, sleep=sleep)
    try:
        with caplog.at_level(logging.DEBUG, logger=LOG):
            async with running(link):
                await sleep.next()
                sleep.release()
                await sleep.next()
                assert not link.connected
    finally:
        await server.close()
    text = _messages(caplog)
    assert expected in text and meaning in text
    assert len(server.attempts) == 2  # retried
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and expected in
                r.getMessage()]
    # while the backoff is short every attempt is a warning, with its number and next delay
    # (tests/link/test_link_offline_log.py: the quiet phase after that)
    assert [w.getMessage().split(":")[0] for w in warnings] == [
        "connection attempt 1 failed", "connection attempt 2 failed"]
    assert expected in str(link.stats.last_error)


async def test_basic_auth_is_accepted_and_password_never_logged(
        handlers: Handlers, caplog: pytest.LogCaptureFixture) -> None:
    secret = "0123456789abcdef0123"
    server = await _started(password=secret)
    link = Link(settings_for(server.url, security_profile=1, password=lambda: secret,
                             log_frames=True), handler=handlers)
    try:
        with caplog.at_level(logging.DEBUG):
            async with running(link):
                conn = await server.connection(1)
                await asyncio.wait_for(link.wait_connected(), 5)
                # a ChangeConfiguration of the key must not leak into the frame log either
                handlers.returns("ChangeConfiguration", {"status": "Accepted"})
                await conn.call("ChangeConfiguration", {"key": "AuthorizationKey",
                                                        "value": "fedcba9876543210"})
    finally:
        await server.close()
    assert conn.request.headers["Authorization"].startswith("Basic ")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert secret not in logged and "fedcba9876543210" not in logged
    assert "AuthorizationKey" in logged  # the frame was logged, redacted
    assert secret not in repr(link.settings)


# --- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("pki")
    ca, other_ca = trustme.CA(), trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1")
    client_cert = ca.issue_cert("CP-1")
    paths = {"ca": d / "ca.pem", "other_ca": d / "other.pem", "client": d / "client.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    other_ca.cert_pem.write_to_path(str(paths["other_ca"]))
    client_cert.private_key_and_cert_chain_pem.write_to_path(str(paths["client"]))
    return {"ca_obj": ca, "server_cert": server_cert, **paths}


def _server_ctx(pki: dict[str, Any], *, require_client_cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    pki["server_cert"].configure_cert(ctx)
    if require_client_cert:
        pki["ca_obj"].configure_trust(ctx)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


@pytest.fixture
async def tls_cs(pki: dict[str, Any]) -> AsyncIterator[CentralSystem]:
    server = await _started(ssl_context=_server_ctx(pki), password="pw")
    try:
        yield server
    finally:
        await server.close()


async def test_profile2_verifies_server_against_ca_file(
        tls_cs: CentralSystem, handlers: Handlers, pki: dict[str, Any]) -> None:
    link = Link(settings_for(tls_cs.url, security_profile=2, password="pw", ca_file=pki["ca"]),
                handler=handlers)
    async with running(link):
        conn = await tls_cs.connection(1)
        await asyncio.wait_for(link.wait_connected(), 5)
        handlers.returns("ClearCache", {"status": "Accepted"})
        assert (await conn.call("ClearCache", {}))[2] == {"status": "Accepted"}


async def test_wrong_ca_is_refused_logged_and_retried(
        tls_cs: CentralSystem, handlers: Handlers, pki: dict[str, Any],
        caplog: pytest.LogCaptureFixture) -> None:
    sleep = SteppedSleep()
    link = Link(settings_for(tls_cs.url, security_profile=2, password="pw",
                             ca_file=pki["other_ca"]), handler=handlers, sleep=sleep)
    with caplog.at_level(logging.WARNING, logger=LOG):
        async with running(link):
            for _ in range(3):
                await sleep.next()
                assert not link.connected
                sleep.release()
            await sleep.next()
    text = _messages(caplog)
    assert "certificate verify failed" in text and str(pki["other_ca"]) in text
    assert tls_cs.conns == []
    assert link.stats.connects == 0 and "certificate verify failed" in str(link.stats.last_error)


async def test_insecure_skip_verify_connects_with_a_warning_each_time(
        tls_cs: CentralSystem, handlers: Handlers, pki: dict[str, Any],
        caplog: pytest.LogCaptureFixture) -> None:
    link = Link(settings_for(tls_cs.url, security_profile=2, password="pw",
                             ca_file=pki["other_ca"], insecure_skip_tls_verify=True),
                handler=handlers)
    with caplog.at_level(logging.WARNING, logger=LOG):
        async with running(link):
            await tls_cs.connection(1)
            link.reconnect_now("test")
            await tls_cs.connection(2)
    assert _messages(caplog).count("verification is OFF") == 2


async def test_profile2_refuses_plain_ws(cs: CentralSystem, handlers: Handlers,
                                         caplog: pytest.LogCaptureFixture) -> None:
    sleep = SteppedSleep()
    link = Link(settings_for(cs.url, security_profile=2, password="pw"), handler=handlers,
                sleep=sleep)
    with caplog.at_level(logging.WARNING, logger=LOG):
        async with running(link):
            await sleep.next()
    assert "needs a wss:// URL" in _messages(caplog)
    assert cs.attempts == []


async def test_profile3_client_certificate_is_accepted(
        pki: dict[str, Any], handlers: Handlers) -> None:
    server = await _started(ssl_context=_server_ctx(pki, require_client_cert=True))
    link = Link(settings_for(server.url, security_profile=3, ca_file=pki["ca"],
                             client_cert_file=pki["client"]), handler=handlers)
    try:
        async with running(link):
            conn = await server.connection(1)
            await asyncio.wait_for(link.wait_connected(), 5)
            peer = conn.request.transport.get_extra_info("peercert")  # type: ignore[union-attr]
    finally:
        await server.close()
    subject = dict(item for rdn in peer["subject"] for item in rdn)
    assert "Authorization" not in conn.request.headers  # profile 3: the certificate is the login
    assert subject or peer["subjectAltName"]


async def test_profile3_without_client_certificate_is_not_connected(
        pki: dict[str, Any], handlers: Handlers, caplog: pytest.LogCaptureFixture) -> None:
    server = await _started(ssl_context=_server_ctx(pki, require_client_cert=True))
    sleep = SteppedSleep()
    link = Link(settings_for(server.url, security_profile=3, ca_file=pki["ca"]),
                handler=handlers, sleep=sleep)
    try:
        with caplog.at_level(logging.WARNING, logger=LOG):
            async with running(link):
                await sleep.next()
    finally:
        await server.close()
    assert "needs client_cert_file" in _messages(caplog)
    assert server.conns == []


# --- backoff ------------------------------------------------------------------------------------


def test_backoff_grows_exponentially_is_capped_and_jittered() -> None:
    s = LinkSettings(url="ws://x", charge_point_id="c", reconnect_min_s=1, reconnect_max_s=60)
    top = [backoff_delay_s(n, s, lambda: 1.0) for n in range(10)]
    assert top == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
    low = [backoff_delay_s(n, s, lambda: 0.0) for n in range(10)]
    assert low == [1, 1, 2, 4, 8, 16, 30, 30, 30, 30]
    assert backoff_delay_s(3, s, lambda: 0.5) == 6  # halfway between 4 and 8


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_backoff_recorded_from_the_link_and_reset_after_stable_connection(
        cs: CentralSystem, handlers: Handlers) -> None:
    sleep, clock = SteppedSleep(), FakeClock()
    async with FaultProxy(cs.port) as proxy:
        await proxy.set_mode(Mode.REFUSE)
        link = Link(settings_for(f"ws://127.0.0.1:{proxy.port}/ocpp", reconnect_min_s=1,
                                 reconnect_max_s=10, stable_after_s=30),
                    handler=handlers, sleep=sleep, rand=lambda: 1.0, clock=clock)
        async with running(link):
            delays = []
            for _ in range(5):
                delays.append(await sleep.next())
                sleep.release()
            assert delays == [1, 2, 4, 8, 10]  # doubling, capped at max
            assert await sleep.next() == 10
            await proxy.set_mode(Mode.PASS)
            sleep.release()
            conn = await cs.connection(1)
            await asyncio.wait_for(link.wait_connected(), 5)
            clock.now += 31  # the connection lasted longer than stable_after_s
            await conn.ws.close()
            assert await sleep.next() == 1  # backoff starts afresh
            sleep.release()
            conn = await cs.connection(2)
            await asyncio.wait_for(link.wait_connected(), 5)
            await conn.ws.close()  # a short-lived connection does not reset it
            assert await sleep.next() == 2
    assert link.stats.reconnects == 1


async def test_jitter_spreads_delays(cs: CentralSystem, handlers: Handlers) -> None:
    sleep = SteppedSleep()
    rolls = iter([0.0, 1.0, 0.5, 0.25, 0.0])
    async with FaultProxy(cs.port) as proxy:
        await proxy.set_mode(Mode.REFUSE)
        link = Link(settings_for(f"ws://127.0.0.1:{proxy.port}/ocpp", reconnect_min_s=1,
                                 reconnect_max_s=100), handler=handlers, sleep=sleep,
                    rand=lambda: next(rolls))
        async with running(link):
            got = []
            for _ in range(4):
                got.append(await sleep.next())
                sleep.release()
            await sleep.next()
    # attempt n has cap 2**n: delay = cap/2 + roll * cap/2, never below min
    assert got == [1, 2, 3, 5]


# --- dead links ---------------------------------------------------------------------------------


async def _until(cond: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    """Wait (bounded) for something the event loop brings about."""
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.005)
    try:
        await asyncio.wait_for(poll(), timeout_s)
    except TimeoutError:
        raise AssertionError(f"not within {timeout_s} s: {what}") from None


# The keepalive runs on the link's injected clock: these tests step through the intervals of
# WebSocketPingInterval (OCPP-J §5.3) exactly instead of measuring wall-clock windows.


async def test_half_open_link_is_detected_and_replaced(cs: CentralSystem,
                                                       handlers: Handlers) -> None:
    ping_s, clock = 60.0, ManualClock()
    async with FaultProxy(cs.port) as proxy:
        down_at: list[float] = []
        link = Link(settings_for(f"ws://127.0.0.1:{proxy.port}/ocpp", ping_interval_s=ping_s,
                                 reconnect_min_s=0.05, reconnect_max_s=0.1),
                    handler=handlers, on_disconnected=lambda _r: down_at.append(clock.now),
                    clock=clock, call_later=clock.call_later)
        async with running(link):
            await cs.connection(1)
            await asyncio.wait_for(link.wait_connected(), 5)
            await proxy.set_mode(Mode.BLACKHOLE)  # the established connection goes half-open
            await proxy.set_mode(Mode.PASS)  # new connections work again; the old one is dead
            t0 = clock.now
            clock.advance(ping_s)  # an interval of silence: a ping (into the void)
            clock.advance(ping_s / 2)  # no pong within half an interval: dead
            await _until(lambda: bool(down_at), "the half-open connection dropped")
            conn2 = await cs.connection(2)
            await asyncio.wait_for(link.wait_connected(), 5)
            handlers.returns("ClearCache", {"status": "Accepted"})
            assert (await conn2.call("ClearCache", {}))[2] == {"status": "Accepted"}
    assert down_at[0] == t0 + 1.5 * ping_s  # (the second: closing at the end)


async def test_pings_keep_an_idle_link_to_a_live_peer(cs: CentralSystem,
                                                      handlers: Handlers) -> None:
    ping_s, clock = 60.0, ManualClock()
    link = Link(settings_for(cs.url, ping_interval_s=ping_s), handler=handlers,
                clock=clock, call_later=clock.call_later)
    async with running(link):
        conn = await cs.connection(1)
        await asyncio.wait_for(link.wait_connected(), 5)
        clock.advance(ping_s - 1)
        assert conn.pings == 0 and clock.armed == 1  # not before an interval of silence
        clock.advance(1)
        for n in range(1, 5):  # idle: nothing but pings and pongs, one per interval
            await _until(lambda: conn.pings == n, f"ping {n}")  # noqa: B023
            await _until(lambda: link.last_received == clock.now, f"pong {n}")  # noqa: B023
            clock.advance(ping_s)
        await _until(lambda: conn.pings == 5, "ping 5")
        assert link.connected and len(cs.conns) == 1 and not conn.closed.is_set()
        assert conn.pings == 5


async def test_a_new_ping_interval_applies_without_reconnecting(cs: CentralSystem,
                                                               handlers: Handlers) -> None:
    clock = ManualClock()
    link = Link(settings_for(cs.url, ping_interval_s=0), handler=handlers,
                clock=clock, call_later=clock.call_later)
    async with running(link):
        conn = await cs.connection(1)
        await asyncio.wait_for(link.wait_connected(), 5)
        assert clock.armed == 0  # WebSocketPingInterval 0: no pings
        link.update(settings_for(cs.url, ping_interval_s=30))
        assert clock.armed == 1
        clock.advance(30)
        await _until(lambda: conn.pings == 1, "a ping on the new interval")
        assert len(cs.conns) == 1
        link.update(settings_for(cs.url, ping_interval_s=0))
        assert clock.armed == 0  # off at once: nothing left to fire
        clock.advance(3600)
        assert conn.pings == 1 and link.connected


async def test_traffic_makes_pings_unnecessary(cs: CentralSystem, handlers: Handlers) -> None:
    ping_s, clock = 60.0, ManualClock()
    link = Link(settings_for(cs.url, ping_interval_s=ping_s), handler=handlers,
                clock=clock, call_later=clock.call_later)
    handlers.returns("ClearCache", {"status": "Accepted"})
    async with running(link):
        conn = await cs.connection(1)
        await asyncio.wait_for(link.wait_connected(), 5)
        for _ in range(12):  # a frame every 20 s: never an interval of silence
            clock.advance(20)
            await conn.call("ClearCache", {})
        assert conn.pings == 0 and link.connected
        clock.advance(ping_s)  # then silence: a ping after one interval
        await _until(lambda: conn.pings == 1, "a ping after an interval of silence")


async def test_peer_that_never_pongs_is_dropped_and_reconnected(handlers: Handlers) -> None:
    ping_s, clock = 60.0, ManualClock()
    async with CentralSystem(answer_pings=False) as silent:
        reasons: list[tuple[float, str]] = []
        link = Link(settings_for(silent.url, ping_interval_s=ping_s, reconnect_min_s=0.05,
                                 reconnect_max_s=0.1),
                    handler=handlers, on_disconnected=lambda r: reasons.append((clock.now, r)),
                    clock=clock, call_later=clock.call_later)
        async with running(link):
            conn = await silent.connection(1)
            await asyncio.wait_for(link.wait_connected(), 5)
            t0 = clock.now
            clock.advance(ping_s)
            await _until(lambda: conn.pings == 1, "the ping reached the peer")
            assert not reasons and link.connected  # a ping out is no reason to drop
            clock.advance(ping_s / 2)
            await silent.connection(2, timeout_s=5)  # dropped, and connected again
    assert reasons[0][0] == t0 + 1.5 * ping_s
    assert "no answer to a WebSocket ping within 30 s" in reasons[0][1]


async def test_pings_from_the_central_system_are_answered(handlers: Handlers) -> None:
    # the server's heartbeat drops a client whose pong does not come within half a period
    async with CentralSystem(heartbeat_s=0.1) as pinging:
        link = Link(settings_for(pinging.url, ping_interval_s=0), handler=handlers)
        async with running(link):
            conn = await pinging.connection(1)
            await asyncio.wait_for(link.wait_connected(), 5)
            await asyncio.sleep(0.8)
            assert link.connected and len(pinging.conns) == 1 and not conn.closed.is_set()


async def test_connection_reset_is_followed_by_reconnect(cs: CentralSystem,
                                                         handlers: Handlers) -> None:
    async with FaultProxy(cs.port) as proxy:
        link = Link(settings_for(f"ws://127.0.0.1:{proxy.port}/ocpp"), handler=handlers)
        async with running(link):
            await cs.connection(1)
            # The server side accepts before our side has read the 101: a reset in between is a
            # failed handshake, not a lost connection, so wait until the link is connected.
            await asyncio.wait_for(link.wait_connected(), 5)
            await proxy.set_mode(Mode.RESET)
            await proxy.wait_accepted(2)  # it retried, and was reset again
            await proxy.set_mode(Mode.PASS)
            await cs.connection(2)
            await asyncio.wait_for(link.wait_connected(), 5)
    assert (link.stats.connects, link.stats.reconnects) == (2, 1)


async def test_oversize_frame_is_refused_and_link_recovers(
        cs: CentralSystem, handlers: Handlers, caplog: pytest.LogCaptureFixture) -> None:
    link = Link(settings_for(cs.url, max_frame_bytes=4096), handler=handlers)
    handlers.returns("ClearCache", {"status": "Accepted"})
    with caplog.at_level(logging.WARNING, logger=LOG):
        async with running(link):
            conn = await cs.connection(1)
            await conn.send(json.dumps([2, "big", "DataTransfer",
                                        {"vendorId": "v", "data": "x" * 100_000}]))
            await asyncio.wait_for(conn.closed.wait(), 5)
            conn2 = await cs.connection(2)
            assert (await conn2.call("ClearCache", {}))[2] == {"status": "Accepted"}
    assert "max_frame_bytes" in _messages(caplog)
    assert handlers.seen == [("ClearCache", {})]  # the big one never reached a handler


async def test_reconnect_now_uses_updated_settings(cs: CentralSystem,
                                                   handlers: Handlers) -> None:
    link = Link(settings_for(cs.url, charge_point_id="A"), handler=handlers)
    async with running(link):
        await cs.connection(1)
        await asyncio.wait_for(link.wait_connected(), 5)
        link.update(settings_for(cs.url, charge_point_id="B"))
        assert (await cs.connection(1)).cp_id == "A"  # not applied before the next connect
        link.reconnect_now("SecurityProfile changed")
        conn2 = await cs.connection(2)
    assert conn2.cp_id == "B"


async def test_on_connected_may_call_and_last_activity_moves(
        cs: CentralSystem, handlers: Handlers) -> None:
    cs.answers["BootNotification"] = {"status": "Accepted", "interval": 10,
                                      "currentTime": "2024-01-01T00:00:00Z"}
    booted = asyncio.Event()
    link: Link

    async def on_connected() -> None:
        await link.call("BootNotification", {"chargePointVendor": "v", "chargePointModel": "m"})
        booted.set()

    link = Link(settings_for(cs.url), handler=handlers, on_connected=on_connected)
    before = link.last_activity
    async with running(link):
        await asyncio.wait_for(booted.wait(), 5)
        assert link.last_activity > before
        assert link.stats.frames_out == 1 and link.stats.frames_in == 1
        assert link.stats.connected_since is not None


async def test_close_before_connect_finishes_leaves_nothing(handlers: Handlers) -> None:
    # a TCP listener that never answers the HTTP upgrade
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    link = Link(settings_for(f"ws://127.0.0.1:{port}/ocpp"), handler=handlers)
    task = asyncio.ensure_future(link.run())
    await asyncio.sleep(0.05)  # let it start connecting
    await link.close()
    await asyncio.wait_for(task, 2)
    server.close()
    await server.wait_closed()
    assert not link.connected


def test_ca_file_path_in_settings_can_be_a_path(pki: dict[str, Any]) -> None:
    s = settings_for("wss://x/ocpp", ca_file=Path(pki["ca"]))
    assert s.endpoint() == "wss://x/ocpp/CP-1"
