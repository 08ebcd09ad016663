"""SecurityEventNotification and the security log (OCPP 1.6 Security Whitepaper, issue 14 item 3),
end to end: the real daemon against a real Central System on loopback."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from csms import CentralSystem, call
from harness import CP_ID, SteppedClock, booted, running, sim_config, wait_until

from ocppd import security
from ocppd.security import SecurityEventType, security_event
from ocppd.storage import Store

pytestmark = pytest.mark.asyncio


def sent(cs: CentralSystem) -> list[str]:
    return [p["type"] for p in cs.received("SecurityEventNotification")]


async def test_startup_is_a_critical_event_sent_after_the_boot(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        msgs = await cs.wait_for("SecurityEventNotification")
        assert msgs[0]["type"] == "StartupOfTheDevice" and msgs[0]["timestamp"].endswith("Z")
        actions = cs.actions()
        assert actions.index("BootNotification") < actions.index("SecurityEventNotification")
        await wait_until(lambda: d.store.seclog_next_pending() is None, what="delivered")
        assert [e.delivery for e in d.store.seclog_entries()] == ["sent"]


async def test_non_critical_events_are_logged_not_sent(cs: CentralSystem, tmp_path: Path) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        await cs.wait_for("SecurityEventNotification")
        # an unsigned UpdateFirmware is refused: InvalidFirmwareSignature (not critical)
        await cs.call(
            CP_ID,
            call.UpdateFirmware(
                location="https://127.0.0.1:9/fw.bin", retrieve_date="2020-01-01T00:00:00Z"
            ),
        )
        await cs.wait_for("FirmwareStatusNotification")
        kinds = [e.kind for e in d.store.seclog_entries()]
        assert kinds == ["StartupOfTheDevice", "InvalidFirmwareSignature"]
        assert d.store.seclog_entries()[1].delivery == "none"
        security_event(SecurityEventType.TAMPER_DETECTION_ACTIVATED, "lid opened")
        await cs.wait_for("SecurityEventNotification", count=2)
    assert sent(cs) == ["StartupOfTheDevice", "TamperDetectionActivated"]
    assert cs.received("SecurityEventNotification")[1]["techInfo"] == "lid opened"


async def test_events_queued_offline_survive_a_restart_and_go_out_in_order(
    cs: CentralSystem, tmp_path: Path
) -> None:
    nobody = "ws://127.0.0.1:9/ocpp"  # the Central System is unreachable for the first run
    async with running(sim_config(tmp_path, nobody)) as d:
        security_event(SecurityEventType.MEMORY_EXHAUSTION, "while offline")
        await wait_until(lambda: len(d.store.seclog_entries()) == 2, what="both recorded")
    assert cs.received("SecurityEventNotification") == []
    async with running(sim_config(tmp_path, cs.url)):
        await cs.wait_for("SecurityEventNotification", count=3)
    assert sent(cs) == ["StartupOfTheDevice", "MemoryExhaustion", "StartupOfTheDevice"]


async def test_a_refused_notification_is_retried(cs: CentralSystem, tmp_path: Path) -> None:
    cs.behaviour.fail_actions["SecurityEventNotification"] = 1
    cfg = sim_config(tmp_path, cs.url, ocpp={"TransactionMessageRetryInterval": 1})
    async with running(cfg) as d:
        await cs.wait_for("SecurityEventNotification", count=2)  # refused once, then accepted
        await wait_until(lambda: d.store.seclog_next_pending() is None, what="delivered")
        assert d.store.seclog_entries()[0].attempts == 1


async def test_retry_waits_on_the_monotonic_clock_not_the_wall_clock(
    cs: CentralSystem, tmp_path: Path
) -> None:
    """§3.7.1 waits, as for transaction messages: the wall clock stepping back an hour while a
    retry is pending (NTP on a Pi without RTC) does not hold the notification back."""
    cs.behaviour.fail_actions["SecurityEventNotification"] = 1
    cfg = sim_config(tmp_path, cs.url, ocpp={"TransactionMessageRetryInterval": 2})
    clock = SteppedClock(auto=False)
    async with running(cfg, monotonic=clock.monotonic, sleep=clock.sleep) as d:
        await cs.wait_for("SecurityEventNotification")  # refused
        await wait_until(lambda: 2.0 in clock.sleeps, what="the retry wait")
        d.wall.offset -= timedelta(hours=1)
        clock.release()
        await cs.wait_for("SecurityEventNotification", count=2)
        await wait_until(lambda: d.store.seclog_next_pending() is None, what="delivered")


async def test_retry_time_from_a_previous_run_is_bounded_by_the_interval(
    cs: CentralSystem, tmp_path: Path
) -> None:
    """A stored next attempt an hour ahead (written while the wall clock was wrong) waits at
    most TransactionMessageRetryInterval x attempts after a restart."""
    db = tmp_path / "ocppd.db"
    with Store.open(db) as store:
        entry_id = store.seclog_add(at=datetime.now(UTC), kind="MemoryExhaustion",
                                    tech_info=None, deliver=True)
        store.seclog_attempt_failed(entry_id, next_attempt_at=time.time() + 3600)
    cfg = sim_config(tmp_path, cs.url, db=db, ocpp={"TransactionMessageRetryInterval": 3})
    clock = SteppedClock()
    async with running(cfg, monotonic=clock.monotonic, sleep=clock.sleep):
        await cs.wait_for("SecurityEventNotification",
                          lambda p: p["type"] == "MemoryExhaustion", timeout=10)
    assert clock.sleeps and max(clock.sleeps) <= 3.0


async def test_reset_is_recorded_and_reported_after_the_restart(
    cs: CentralSystem, tmp_path: Path
) -> None:
    cfg = sim_config(tmp_path, cs.url)
    async with running(cfg) as d:
        await booted(cs)
        conf = await cs.call(CP_ID, call.Reset(type="Soft"))
        assert conf.status == "Accepted"
        await wait_until(lambda: d.stop_event.is_set(), what="soft reset")
    async with running(cfg):
        await cs.wait_for(
            "SecurityEventNotification", lambda p: p["type"] == "ResetOrReboot", timeout=10
        )
    with Store.open(cfg.storage.path) as store:
        kinds = [e.kind for e in store.seclog_entries()]
    assert kinds == ["StartupOfTheDevice", "ResetOrReboot", "StartupOfTheDevice"]


async def test_events_before_the_daemon_runs_are_kept(cs: CentralSystem, tmp_path: Path) -> None:
    security.clear_pending()
    security_event(SecurityEventType.INVALID_TLS_VERSION, "before start")
    async with running(sim_config(tmp_path, cs.url)) as d:
        kinds = [e.kind for e in d.store.seclog_entries()]
        assert kinds[0] == "InvalidTLSVersion" and "StartupOfTheDevice" in kinds


async def test_clock_taken_from_the_central_system_is_reported(
    cs: CentralSystem, tmp_path: Path
) -> None:
    cs.behaviour.clock_offset_s = 3600.0  # an hour ahead: the charger's time follows it
    async with running(sim_config(tmp_path, cs.url)):
        msgs = await cs.wait_for("SecurityEventNotification",
                                 lambda p: p["type"] == "SettingSystemTime")
    assert "offset +3600" in msgs[0]["techInfo"] or "offset +3599" in msgs[0]["techInfo"]


async def test_new_authorization_key_is_a_security_event(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        key = "00112233445566778899aabbccddeeff00112233"
        conf = await cs.call(CP_ID, call.ChangeConfiguration(key="AuthorizationKey", value=key))
        assert conf.status in ("Accepted", "RebootRequired")
        await wait_until(lambda: any(e.kind == "ReconfigurationOfSecurityParameters"
                                     for e in d.store.seclog_entries()), what="event recorded")
        assert all(key not in (e.tech_info or "") for e in d.store.seclog_entries())
