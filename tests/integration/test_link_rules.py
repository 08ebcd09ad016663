"""The OCPP-J link rules end to end: the real daemon on the simulator against the real Central
System on loopback (one outstanding CALL, ignored frames, the SecurityProfile key, retries that
do not depend on the wall clock, offline reporting in the journal)."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import ssl
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from csms import CentralSystem, call
from harness import (
    CP_ID,
    DaemonProcess,
    SteppedClock,
    booted,
    charge,
    running,
    sim,
    sim_config,
    sim_config_text,
    wait_status,
    wait_until,
)
from txseed import seed_samples

from ocppd.hw.base import PilotState
from ocppd.storage import Store

pytestmark = pytest.mark.asyncio


async def test_status_abandoned_in_flight_is_never_overtaken(
    cs: CentralSystem, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """OCPP-J §4.1.1 (issue: TC_005_1 with a slow Central System): the SuspendedEV
    StatusNotification is still unanswered when the EV is unplugged; the newer status abandons
    it, yet neither the next StatusNotification nor the StopTransaction may go out before its
    answer. The late answer is not an unknown message id."""
    caplog.set_level(logging.INFO, logger="ocppd.link")
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        await charge(cs, d)
        await cs.wait_for("StartTransaction")
        await wait_until(lambda: not cs.in_flight, what="every CALL answered")
        gate = cs.behaviour.hold["StatusNotification"] = asyncio.Event()
        sim(d).set_ev_state(1, PilotState.B)  # the EV pauses: SuspendedEV, answer held
        await wait_status(cs, "SuspendedEV")
        sim(d).unplug(1)  # a new status abandons the SuspendedEV one; StopTransaction queued
        await wait_until(lambda: d.cp.link.calls_waiting >= 1, what="a CALL waiting its turn")
        assert cs.received("StopTransaction") == []
        assert len(cs.in_flight) == 1
        gate.set()
        stop = (await cs.wait_for("StopTransaction"))[0]
        assert stop["reason"] == "EVDisconnected"
        await wait_status(cs, "Available", count=2)
        await wait_until(lambda: not cs.in_flight, what="every CALL answered")
    assert cs.max_in_flight == 1
    assert not [r for r in caplog.records if "unknown message id" in r.getMessage()]


async def test_unknown_message_type_is_ignored_by_the_daemon(
    cs: CentralSystem, tmp_path: Path
) -> None:
    """OCPP-J §4.1.3: [5, ...] and [1.5, ...] get no answer at all; the link stays up."""
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        ws = (await cs.wait_connected(CP_ID))._connection
        out: list[str] = []
        original = cs._record_raw

        def capture(direction: str, raw: str) -> str | None:
            if direction == "in":
                out.append(raw)
            return original(direction, raw)

        cs._record_raw = capture  # type: ignore[method-assign]
        await ws.send('[5,"odd-1","Reset",{"type":"Hard"}]')
        await ws.send('[1.5,"odd-2","Reset",{"type":"Hard"}]')
        conf = await cs.call(CP_ID, call.GetConfiguration(key=["HeartbeatInterval"]))
        assert conf.configuration_key[0]["key"] == "HeartbeatInterval"
        assert not [f for f in out if json.loads(f)[1].startswith("odd-")]
        assert d.cp.link.stats.connects == 1 and d.cp.link.connected
        assert d.reset_hard is None


async def test_outbox_retry_survives_the_wall_clock_stepping_back(
    cs: CentralSystem, tmp_path: Path
) -> None:
    """§3.7.1 waits are timed on the monotonic clock: the wall clock stepping back an hour
    (NTP on a Pi without RTC) while a retry is pending does not stall the queue."""
    cs.behaviour.fail_actions = {"StartTransaction": 1}
    cfg = sim_config(
        tmp_path, cs.url,
        ocpp={"TransactionMessageAttempts": 3, "TransactionMessageRetryInterval": 2},
    )
    clock = SteppedClock(auto=False)
    async with running(cfg, monotonic=clock.monotonic, sleep=clock.sleep) as d:
        await booted(cs)
        sim(d).plug(1)
        await d.station.swipe("TAG1", None)
        await cs.wait_for("StartTransaction")  # answered CALLERROR
        await wait_until(lambda: len(clock.sleeps) == 1, what="the retry wait")
        d.wall.offset -= timedelta(hours=1)  # the wall clock steps back meanwhile
        clock.release()
        await wait_until(lambda: len(clock.sleeps) == 2 or len(
            cs.received("StartTransaction")) == 2, what="the retry or another wait")
        assert clock.sleeps == [2.0]  # no second wait: the retry went out
        await cs.wait_for("StartTransaction", count=2)
        await wait_until(lambda: d.station.connectors[1].tx.remote_id is not None, what="tx id")


async def test_retry_time_from_a_previous_run_is_bounded_by_the_interval(
    cs: CentralSystem, tmp_path: Path
) -> None:
    """A queued message whose stored next attempt lies an hour ahead (written while the wall
    clock was wrong, before a restart) waits at most TransactionMessageRetryInterval x attempts.
    """
    db = tmp_path / "ocppd.db"
    (seq,) = seed_samples(db, [datetime(2024, 1, 1, tzinfo=UTC)])
    store = Store.open(db)
    try:
        store.tx_event_attempt(seq, next_attempt_at=time.time() + 3600)
    finally:
        store.close()
    cfg = sim_config(tmp_path, cs.url, db=db, ocpp={"TransactionMessageRetryInterval": 3})
    clock = SteppedClock()
    async with running(cfg, monotonic=clock.monotonic, sleep=clock.sleep):
        await cs.wait_for("MeterValues")
    assert len(clock.sleeps) == 1 and 0 < clock.sleeps[0] <= 3.0


# --- SecurityProfile (Security Whitepaper §2, TC_083, TC_084) -----------------------------------

PASSWORD = "0123456789abcdef"  # 16 bytes: the shortest AuthorizationKey


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import trustme

    d = tmp_path_factory.mktemp("pki")
    ca, stranger = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    client = ca.issue_cert(CP_ID)
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    client.cert_chain_pems[0].write_to_path(str(d / "client.pem"))
    client.private_key_pem.write_to_path(str(d / "client.key"))
    return {"ca": ca, "stranger": stranger, "server": server, "ca_file": d / "ca.pem",
            "client_cert": d / "client.pem", "client_key": d / "client.key"}


def server_ctx(pki: dict[str, Any], *, trust: str = "ca") -> ssl.SSLContext:
    """A TLS server that asks for a client certificate without requiring one (so profiles 2
    and 3 both reach it) and verifies one presented against ``trust``."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    pki["server"].configure_cert(ctx)
    pki[trust].configure_trust(ctx)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def tls_central(pki: dict[str, Any], profile: int, **extra: Any) -> dict[str, Any]:
    return {"security_profile": profile, "password": PASSWORD, "ca_file": str(pki["ca_file"]),
            "client_cert_file": str(pki["client_cert"]),
            "client_key_file": str(pki["client_key"]), **extra}


async def change_profile(cs: CentralSystem, value: int) -> str:
    conf = await cs.call(CP_ID, call.ChangeConfiguration(key="SecurityProfile", value=str(value)))
    return str(conf.status)


def security_events(d: Any) -> list[str]:
    return [detail for _, kind, detail in d.store.events() if kind == "security_event"]


async def test_security_profile_without_prerequisites_is_rejected(
    cs: CentralSystem, tmp_path: Path
) -> None:
    """Profile 1 needs a password, profile 2 a wss:// URL and a CA, profile 3 a client
    certificate too: without them Rejected, nothing changes, the link stays up."""
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        for value in (1, 2, 3):
            assert await change_profile(cs, value) == "Rejected"
        assert d.cp.keys.get_int("SecurityProfile") == 0
        assert d.cp.link.stats.connects == 1 and cs.connections == 1
        assert d.store.get_setting("link.security_profile_fallback") is None


async def test_tc_084_security_profile_is_never_lowered(
    cs: CentralSystem, tmp_path: Path
) -> None:
    cfg = sim_config(tmp_path, cs.url, central={"security_profile": 1, "password": PASSWORD})
    async with running(cfg) as d:
        await booted(cs)
        assert cs.handshakes[0]["authorization"] is not None
        assert await change_profile(cs, 0) == "Rejected"
        assert d.cp.link.settings.security_profile == 1 and cs.connections == 1


async def test_tc_083_security_profile_raised_reconnects_with_it(
    cs: CentralSystem, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """0 -> 1 with a password configured: Accepted (answered on the old connection), then a
    new connection with Basic authentication; kept across a restart; a security event."""
    cfg = sim_config(tmp_path, cs.url, central={"password": PASSWORD})
    async with running(cfg) as d:
        await booted(cs)
        assert cs.handshakes[0]["authorization"] is None  # profile 0: no credentials
        with caplog.at_level(logging.WARNING):
            assert await change_profile(cs, 1) == "Accepted"
            await wait_until(lambda: cs.connections == 2, what="the reconnect")
            await wait_until(lambda: d.cp.online, what="registered again")
        assert cs.handshakes[1]["authorization"] is not None
        assert d.cp.keys.get_int("SecurityProfile") == 1
        assert d.store.get_setting("link.security_profile_fallback") is None
        assert security_events(d) == [
            "ReconfigurationOfSecurityParameters: SecurityProfile 1 in use (was 0)"]
        assert any("security event" in r.getMessage() and r.levelno == logging.WARNING
                   for r in caplog.records)
    async with running(cfg) as d:
        await wait_until(lambda: cs.connections == 3, what="connected after the restart")
        assert cs.handshakes[2]["authorization"] is not None
        assert d.cp.link.settings.security_profile == 1


async def test_security_profile_3_with_a_client_certificate(
    pki: dict[str, Any], tmp_path: Path
) -> None:
    """2 -> 3 over TLS: the new connection presents the client certificate."""
    async with CentralSystem(ssl_context=server_ctx(pki)) as cs:
        cfg = sim_config(tmp_path, cs.url, central=tls_central(pki, 2))
        async with running(cfg) as d:
            await booted(cs)
            assert cs.handshakes[0]["peercert"] is None  # profile 2: no client certificate
            assert await change_profile(cs, 3) == "Accepted"
            await wait_until(lambda: cs.connections == 2 and d.cp.online, what="reconnected")
            assert cs.handshakes[1]["peercert"]
            assert d.cp.link.settings.security_profile == 3
            assert d.store.get_setting("link.security_profile_fallback") is None


async def test_security_profile_that_cannot_connect_falls_back(
    pki: dict[str, Any], tmp_path: Path
) -> None:
    """2 -> 3 where the Central System refuses our certificate: after the trial attempts the
    charge point goes back to profile 2, stored (a restart keeps 2), and reports it."""
    async with CentralSystem(ssl_context=server_ctx(pki, trust="stranger")) as cs:
        cfg = sim_config(tmp_path, cs.url, central=tls_central(pki, 2))
        async with running(cfg) as d:
            await booted(cs)
            assert await change_profile(cs, 3) == "Accepted"
            await wait_until(lambda: cs.connections == 2 and d.cp.online, timeout=20,
                             what="back online with the previous profile")
            assert d.cp.link.settings.security_profile == 2
            assert cs.handshakes[1]["peercert"] is None
            assert d.cp.keys.get_int("SecurityProfile") == 2
            assert d.store.get_setting("link.security_profile_fallback") is None
            events = security_events(d)
            assert len(events) == 1 and "SecurityProfile 3 did not connect" in events[0]
            assert events[0].endswith("back to 2")
        async with running(cfg) as d:
            await wait_until(lambda: cs.connections == 3, what="connected after the restart")
            assert d.cp.link.settings.security_profile == 2


async def test_restart_during_a_security_profile_trial_still_falls_back(
    pki: dict[str, Any], tmp_path: Path
) -> None:
    """The daemon stopped after accepting profile 3 and before it connected: the next run
    resumes the trial, and the failing profile still gives way to the previous one."""
    db = tmp_path / "ocppd.db"
    store = Store.open(db)
    try:
        store.set_setting("link.security_profile_fallback", "2")
        store.set_setting("ocpp.SecurityProfile", "3")
    finally:
        store.close()
    async with CentralSystem(ssl_context=server_ctx(pki, trust="stranger")) as cs:
        cfg = sim_config(tmp_path, cs.url, db=db, central=tls_central(pki, 2))
        async with running(cfg) as d:
            await wait_until(lambda: d.cp.online, timeout=20, what="online with profile 2")
            assert d.cp.link.settings.security_profile == 2
            assert d.cp.keys.get_int("SecurityProfile") == 2
            assert d.store.get_setting("link.security_profile_fallback") is None


# --- tests that could not fail before (issue: mutation run) --------------------------------------


def _seed_meter_values(db: Path, count: int) -> list[str]:
    """Queue MeterValues as an earlier run would have left them; returns their timestamps."""
    stamps = [datetime(2024, 1, 1, 0, 0, i, tzinfo=UTC) for i in range(count)]
    seed_samples(db, stamps)
    return [f"2024-01-01T00:00:{i:02d}.000Z" for i in range(count)]


async def test_nothing_but_boot_notification_while_pending(
    cs: CentralSystem, tmp_path: Path
) -> None:
    """§4.2 / TC_002: while Pending only BootNotification goes out (answers to the Central
    System's own calls aside): no StatusNotification for an EV plugged in, no queued
    transaction message. Once Accepted, the statuses and then the queue follow."""
    db = tmp_path / "ocppd.db"
    stamps = _seed_meter_values(db, 2)
    cs.behaviour.boot_status, cs.behaviour.boot_interval = "Pending", 1
    async with running(sim_config(tmp_path, cs.url, db=db)) as d:
        await cs.wait_for("BootNotification")
        sim(d).plug(1)  # a status change while Pending
        await wait_until(lambda: d.station.connectors[1].status.value == "preparing",
                         what="Preparing")
        await cs.wait_for("BootNotification", count=3, timeout=10)  # two Pending intervals
        assert set(cs.actions()) == {"BootNotification"}
        assert d.store.tx_events_count() == 2
        cs.behaviour.boot_status = "Accepted"
        await wait_until(lambda: d.store.tx_events_count() == 0, what="the queue delivered")
        sent = [m["meterValue"][0]["timestamp"] for m in cs.received("MeterValues")]
        assert sent == stamps
        boots = [i for i, a in enumerate(cs.actions()) if a == "BootNotification"]
        first_other = next(i for i, a in enumerate(cs.actions()) if a != "BootNotification")
        assert first_other > boots[-1]  # nothing else before the Accepted one


async def test_authorization_key_asked_for_by_name_is_unknown(
    cs: CentralSystem, tmp_path: Path
) -> None:
    """Security Whitepaper §7 / OCPP-J §6.2.2: AuthorizationKey is write-only; GetConfiguration
    naming it reports it as unknown and its value never leaves the charge point."""
    secret = "f00dfeedcafebabe0123"
    async with running(sim_config(tmp_path, cs.url)):
        await booted(cs)
        conf = await cs.call(CP_ID, call.ChangeConfiguration(key="AuthorizationKey",
                                                             value=secret))
        assert conf.status == "Accepted"
        await wait_until(lambda: cs.connections == 2, what="reconnected with the new key")
        conf = await cs.call(CP_ID, call.GetConfiguration(
            key=["AuthorizationKey", "HeartbeatInterval"]))
        assert [k["key"] for k in conf.configuration_key] == ["HeartbeatInterval"]
        assert conf.unknown_key == ["AuthorizationKey"]
        conf = await cs.call(CP_ID, call.GetConfiguration(key=["authorizationkey"]))
        assert not conf.configuration_key and conf.unknown_key == ["authorizationkey"]
        conf = await cs.call(CP_ID, call.GetConfiguration())
        assert "AuthorizationKey" not in {k["key"] for k in conf.configuration_key}
    from_cp = json.dumps([m.payload for m in cs.messages if m.direction == "in"])
    assert secret not in from_cp


async def test_confirmed_meter_values_are_not_sent_again_after_sigkill(
    cs: CentralSystem, tmp_path: Path
) -> None:
    """The delivery watermark end to end: a backlog is being replayed, the Central System has
    confirmed the first 40 and holds the answer to the 41st, and the daemon is killed
    (SIGKILL). A confirmed sample writes nothing to the database, so only the mark file says
    those 40 were confirmed. After the restart none of
    them is sent again; the 41st (never confirmed) is."""
    db = tmp_path / "ocppd.db"
    stamps = [f"2024-01-01T00:{i // 60:02d}:{i % 60:02d}.000Z" for i in range(100)]
    seed_samples(db, [datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=i)
                      for i in range(100)])
    confirmed_n = 40

    def hold_after(msg: Any) -> None:
        if msg.direction == "in" and msg.action == "MeterValues" and len(
                cs.received("MeterValues")) == confirmed_n + 1:
            cs.behaviour.hold["MeterValues"] = asyncio.Event()  # this one stays unanswered

    cs.on_message = hold_after
    cfg_path = tmp_path / "ocppd.toml"
    cfg_path.write_text(sim_config_text(tmp_path, cs.url, db=db))
    d = DaemonProcess(cfg_path).start()
    try:
        # one CALL outstanding: the 41st went out only after the 40th was confirmed
        await cs.wait_for("MeterValues", count=confirmed_n + 1, timeout=30)
        d.signal(signal.SIGKILL)
        d.wait()
    finally:
        d.stop()
    cs.on_message = None
    cs.behaviour.hold.clear()
    before = len(cs.received("MeterValues"))
    d = DaemonProcess(cfg_path).start()
    try:
        await wait_until(lambda: len(cs.received("MeterValues")) >= before + 100 - confirmed_n,
                         timeout=30, what="the rest of the backlog")
    finally:
        d.stop()
    again = [m["meterValue"][0]["timestamp"] for m in cs.received("MeterValues")[before:]]
    assert again == stamps[confirmed_n:]  # the unconfirmed ones, in order; no confirmed one
