"""Smart Charging, Local Auth List, Reservation and Remote Trigger, end to end: the real daemon
on the simulator against a real Central System on loopback (OCTT cases of ocpp16-rules.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from csms import CentralSystem, call
from harness import (
    CP_ID,
    booted,
    charge,
    charging_profile,
    remote_start,
    running,
    set_profile,
    sim,
    sim_config,
    transaction_id,
    wait_status,
    wait_until,
)

from ocppd.hw.base import Fault

pytestmark = pytest.mark.asyncio


async def charging(cs: CentralSystem, d: Any, tag: str = "TAG1") -> int:
    await charge(cs, d, tag)
    return int(await transaction_id(d))


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.000Z")


# --- Smart Charging -------------------------------------------------------------------------------


async def test_tc_057_tx_profile_limit_reaches_the_pilot(cs: CentralSystem, tmp_path: Path) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        tx_id = await charging(cs, d)
        assert sim(d).view(1).offer_a == 32
        await set_profile(cs, 1, charging_profile(1, "TxProfile", 16, tx_id=tx_id))
        await wait_until(
            lambda: sim(d).view(1).offer_a == 16, timeout=1.0, what="16 A on the pilot"
        )


async def test_tc_058_tx_profile_without_or_with_wrong_transaction_is_rejected(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        # TC_058_1: no transaction
        await set_profile(cs, 1, charging_profile(1, "TxProfile", 16), expect="Rejected")
        tx_id = await charging(cs, d)
        # TC_058_2: wrong transactionId
        await set_profile(cs, 1, charging_profile(1, "TxProfile", 16, tx_id=tx_id + 1),
                          expect="Rejected")


async def test_below_six_amperes_the_ev_is_paused_as_suspended_evse(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        tx_id = await charging(cs, d)
        await set_profile(cs, 1, charging_profile(1, "TxProfile", 4, tx_id=tx_id))
        await wait_status(cs, "SuspendedEVSE")
        assert not sim(d).view(1).contactor_closed
        assert sim(d).view(1).offer_a in (0, 0.0)


async def test_limit_changes_exactly_at_the_period_boundary(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        tx_id = await charging(cs, d)
        periods = [{"startPeriod": 0, "limit": 20}, {"startPeriod": 2, "limit": 10}]
        start = datetime.now(UTC)
        await set_profile(cs, 1, charging_profile(1, "TxProfile", 0, tx_id=tx_id, periods=periods,
                                                  kind="Absolute"))
        await wait_until(lambda: sim(d).view(1).offer_a == 20, timeout=1.0, what="20 A")
        await wait_until(lambda: sim(d).view(1).offer_a == 10, timeout=4.0, what="10 A")
        assert (datetime.now(UTC) - start).total_seconds() < 3.2  # within a second of the boundary


async def test_tc_056_tx_default_profile_then_tc_066_composite_and_tc_067_clear(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        await set_profile(cs, 0, charging_profile(7, "TxDefaultProfile", 12))
        await charging(cs, d)
        await wait_until(lambda: sim(d).view(1).offer_a == 12, timeout=1.0, what="TxDefault 12 A")
        comp = await cs.call(CP_ID, call.GetCompositeSchedule(connector_id=1, duration=600))
        assert comp.status == "Accepted"
        periods = comp.charging_schedule["charging_schedule_period"]
        assert periods[0]["start_period"] == 0 and periods[0]["limit"] == 12
        conf = await cs.call(CP_ID, call.ClearChargingProfile(id=7))
        assert conf.status == "Accepted"
        await wait_until(lambda: sim(d).view(1).offer_a == 32, timeout=1.0, what="limit lifted")
        assert (await cs.call(CP_ID, call.ClearChargingProfile(id=7))).status == "Unknown"


async def test_tc_072_stacking_higher_stack_level_wins_while_valid(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        await set_profile(cs, 1, charging_profile(1, "TxDefaultProfile", 8, stack=0))
        await set_profile(cs, 1, charging_profile(2, "TxDefaultProfile", 6, stack=1, duration=2))
        await charging(cs, d)
        await wait_until(lambda: sim(d).view(1).offer_a == 6, timeout=1.0, what="stack 1")
        await wait_until(
            lambda: sim(d).view(1).offer_a == 8, timeout=4.0, what="fallback to stack 0"
        )


async def test_tc_059_remote_start_with_charging_profile(cs: CentralSystem, tmp_path: Path) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        sim(d).plug(1)
        await remote_start(cs, "R1", profile=charging_profile(3, "TxProfile", 10))
        await wait_status(cs, "Charging")
        await wait_until(lambda: sim(d).view(1).offer_a == 10, timeout=2.0, what="profile applied")


async def test_charging_profiles_persist_across_restart(cs: CentralSystem, tmp_path: Path) -> None:
    """Smart Charging loads on its first message, and at start-up when profiles are stored."""
    cfg = sim_config(tmp_path, cs.url)
    async with running(cfg) as d:
        await booted(cs)
        assert d.smart is None  # nothing installed yet: the profile is not even imported
        await set_profile(cs, 0, charging_profile(5, "ChargePointMaxProfile", 20))
        assert d.smart is not None
    async with running(cfg) as d:
        assert d.smart is not None  # loaded at start-up: a stored profile must limit at once
        # the first run's StatusNotifications satisfy booted(): wait for this run's boot, else
        # the card is swiped offline and refused
        await cs.wait_for("BootNotification", count=2)
        await wait_until(lambda: d.cp.online, what="registered again")
        await charging(cs, d)
        await wait_until(lambda: sim(d).view(1).offer_a == 20, timeout=5.0, what="persisted max")


# --- Local Auth List ------------------------------------------------------------------------------


async def test_tc_042_043_local_list_versions_full_and_differential(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url)):
        await booted(cs)
        assert (await cs.call(CP_ID, call.GetLocalListVersion())).list_version == 0
        conf = await cs.call(
            CP_ID,
            call.SendLocalList(
                list_version=3,
                update_type="Full",
                local_authorization_list=[
                    {"id_tag": "LISTED", "id_tag_info": {"status": "Accepted"}}
                ],
            ),
        )
        assert conf.status == "Accepted"
        assert (await cs.call(CP_ID, call.GetLocalListVersion())).list_version == 3
        conf = await cs.call(
            CP_ID,
            call.SendLocalList(
                list_version=2,
                update_type="Differential",
                local_authorization_list=[
                    {"id_tag": "OTHER", "id_tag_info": {"status": "Accepted"}}
                ],
            ),
        )
        assert conf.status == "VersionMismatch"
        conf = await cs.call(
            CP_ID,
            call.SendLocalList(
                list_version=4,
                update_type="Differential",
                local_authorization_list=[{"id_tag": "LISTED"}],
            ),
        )  # no idTagInfo: remove
        assert conf.status == "Accepted"
        await cs.call(CP_ID, call.ChangeConfiguration(key="LocalAuthListEnabled", value="false"))
        assert (await cs.call(CP_ID, call.GetLocalListVersion())).list_version == -1
        conf = await cs.call(CP_ID, call.SendLocalList(list_version=5, update_type="Full"))
        assert conf.status == "NotSupported"


async def test_send_local_list_failed_changes_nothing(cs: CentralSystem, tmp_path: Path) -> None:
    """§5.15/§7.48: an update answered Failed leaves the list and its version untouched."""
    cfg = sim_config(tmp_path, cs.url, ocpp={"LocalAuthListMaxLength": 2})
    async with running(cfg) as d:
        await booted(cs)
        full = [{"id_tag": "A", "id_tag_info": {"status": "Accepted"}}]
        conf = await cs.call(
            CP_ID, call.SendLocalList(list_version=1, update_type="Full",
                                      local_authorization_list=full)
        )
        assert conf.status == "Accepted"
        too_many = [
            {"id_tag": t, "id_tag_info": {"status": "Accepted"}} for t in ("B", "C")
        ]  # 3 entries in all, over LocalAuthListMaxLength = 2
        conf = await cs.call(
            CP_ID, call.SendLocalList(list_version=2, update_type="Differential",
                                      local_authorization_list=too_many)
        )
        assert conf.status == "Failed"
        assert (await cs.call(CP_ID, call.GetLocalListVersion())).list_version == 1
        assert d.store.local_list_count() == 1
        assert d.store.local_list_get("B") is None


async def test_tc_008_id_in_local_list_starts_without_authorize(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url, ocpp={"LocalPreAuthorize": True})) as d:
        await booted(cs)
        await cs.call(
            CP_ID,
            call.SendLocalList(
                list_version=1,
                update_type="Full",
                local_authorization_list=[
                    {"id_tag": "LISTED", "id_tag_info": {"status": "Accepted"}}
                ],
            ),
        )
        await charging(cs, d, tag="listed")  # case-insensitive match
        assert cs.received("Authorize") == []


async def test_blocked_id_in_local_list_is_refused_offline(
    cs: CentralSystem, tmp_path: Path
) -> None:
    cfg = sim_config(tmp_path, cs.url, ocpp={"AllowOfflineTxForUnknownId": True})
    async with running(cfg) as d:
        await booted(cs)
        await cs.call(
            CP_ID,
            call.SendLocalList(
                list_version=1,
                update_type="Full",
                local_authorization_list=[{"id_tag": "BAD", "id_tag_info": {"status": "Blocked"}}],
            ),
        )
        await d.cp.link.close()  # offline for good
        from ocppd.station import Refused

        sim(d).plug(1)
        await wait_until(lambda: d.station.connectors[1].pilot.plugged, what="plugged")
        with pytest.raises(Refused):
            await d.station.swipe("BAD", None)
        assert "started" in await d.station.swipe("UNKNOWN", None)


async def test_tc_061_clear_cache(cs: CentralSystem, tmp_path: Path) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        await d.cp.authorize("CACHED1")
        await charging(cs, d, tag="CACHED1")
        assert d.store.cache_get("CACHED1") is not None
        assert (await cs.call(CP_ID, call.ClearCache())).status == "Accepted"
        assert d.store.cache_get("CACHED1") is None


# --- Reservation ----------------------------------------------------------------------------------


async def test_tc_046_reservation_then_start_with_reservation_id(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        expiry = iso(datetime.now(UTC) + timedelta(minutes=5))
        conf = await cs.call(
            CP_ID,
            call.ReserveNow(connector_id=1, expiry_date=expiry, id_tag="RES", reservation_id=77),
        )
        assert conf.status == "Accepted"
        await wait_status(cs, "Reserved")
        from ocppd.station import Refused

        sim(d).plug(1)
        with pytest.raises(Refused):
            await d.station.swipe("SOMEONE-ELSE", 1)
        await d.station.swipe("RES", None)
        start = (await cs.wait_for("StartTransaction"))[0]
        assert start["reservationId"] == 77


async def test_tc_048_reservation_refusals_and_cancel(cs: CentralSystem, tmp_path: Path) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        expiry = iso(datetime.now(UTC) + timedelta(minutes=5))
        sim(d).inject_fault(1, Fault.OVER_TEMPERATURE, True)
        await wait_status(cs, "Faulted")
        faulted = await cs.call(
            CP_ID, call.ReserveNow(connector_id=1, expiry_date=expiry, id_tag="A", reservation_id=1)
        )
        assert faulted.status == "Faulted"
        sim(d).inject_fault(1, Fault.OVER_TEMPERATURE, False)
        await wait_status(cs, "Available", count=2)
        await cs.call(CP_ID, call.ChangeAvailability(connector_id=1, type="Inoperative"))
        unavailable = await cs.call(
            CP_ID, call.ReserveNow(connector_id=1, expiry_date=expiry, id_tag="A", reservation_id=2)
        )
        assert unavailable.status == "Unavailable"
        await cs.call(CP_ID, call.ChangeAvailability(connector_id=1, type="Operative"))
        await charging(cs, d)
        occupied = await cs.call(
            CP_ID, call.ReserveNow(connector_id=1, expiry_date=expiry, id_tag="A", reservation_id=3)
        )
        assert occupied.status == "Occupied"
        assert (
            await cs.call(CP_ID, call.CancelReservation(reservation_id=99))
        ).status == "Rejected"


async def test_tc_051_reservation_expires(cs: CentralSystem, tmp_path: Path) -> None:
    async with running(sim_config(tmp_path, cs.url)):
        await booted(cs)
        expiry = iso(datetime.now(UTC) + timedelta(seconds=1))
        await cs.call(
            CP_ID,
            call.ReserveNow(connector_id=1, expiry_date=expiry, id_tag="RES", reservation_id=5),
        )
        await wait_status(cs, "Reserved")
        await wait_status(cs, "Available", count=2)
        assert (await cs.call(CP_ID, call.CancelReservation(reservation_id=5))).status == "Rejected"


# --- Remote Trigger -------------------------------------------------------------------------------


async def test_tc_054_trigger_message_conf_before_the_message(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url, connectors=2)) as d:
        await booted(cs)
        await cs.wait_for("StatusNotification", lambda p: p["connectorId"] == 2)
        before = len(cs.received("StatusNotification"))
        conf = await cs.call(CP_ID, call.TriggerMessage(requested_message="StatusNotification"))
        assert conf.status == "Accepted"
        triggered = await cs.wait_for("StatusNotification", count=before + 3)
        assert {p["connectorId"] for p in triggered[before:]} == {0, 1, 2}  # no connector: all
        conf_at = next(i for i, m in enumerate(cs.messages) if m.action == "TriggerMessage.conf")
        first_status = next(
            i for i, m in enumerate(cs.messages) if i > conf_at and m.action == "StatusNotification"
        )
        assert first_status > conf_at
        for what in (
            "Heartbeat",
            "BootNotification",
            "FirmwareStatusNotification",
            "DiagnosticsStatusNotification",
        ):
            assert (
                await cs.call(CP_ID, call.TriggerMessage(requested_message=what))
            ).status == "Accepted"
            await cs.wait_for(what, count=2 if what == "BootNotification" else 1)
        assert cs.received("FirmwareStatusNotification")[0]["status"] == "Idle"
        await charging(cs, d)
        await cs.call(CP_ID, call.TriggerMessage(requested_message="MeterValues", connector_id=1))
        mv = (await cs.wait_for("MeterValues"))[0]
        assert mv["meterValue"][0]["sampledValue"][0]["context"] == "Trigger"


async def test_tc_055_trigger_message_for_unknown_connector_is_rejected(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url)):
        await booted(cs)
        conf = await cs.call(
            CP_ID, call.TriggerMessage(requested_message="StatusNotification", connector_id=9)
        )
        assert conf.status == "Rejected"


# --- clock-aligned meter values and faults (Core) -------------------------------------------------


async def test_tc_071_clock_aligned_meter_values_on_the_boundary(
    cs: CentralSystem, tmp_path: Path
) -> None:
    cfg = sim_config(
        tmp_path,
        cs.url,
        ocpp={
            "ClockAlignedDataInterval": 2,
            "MeterValuesAlignedData": "Energy.Active.Import.Register,Voltage",
        },
    )
    async with running(cfg):
        await booted(cs)
        mvs = await cs.wait_for("MeterValues", count=2, timeout=8)
        for mv in mvs:
            stamp = datetime.fromisoformat(mv["meterValue"][0]["timestamp"].replace("Z", "+00:00"))
            assert stamp.microsecond == 0 and stamp.second % 2 == 0
            values = mv["meterValue"][0]["sampledValue"]
            assert {v["context"] for v in values} == {"Sample.Clock"}
            assert {v["measurand"] for v in values} == {"Energy.Active.Import.Register", "Voltage"}


async def test_tc_041_fault_opens_the_contactor_and_reports_the_error_code(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        await charging(cs, d)
        sim(d).inject_fault(1, Fault.GROUND_FAILURE, True, "RCD tripped")
        fault = (await cs.wait_for("StatusNotification", lambda p: p["status"] == "Faulted"))[0]
        assert fault["errorCode"] == "GroundFailure"
        assert not sim(d).view(1).contactor_closed
        stop = (await cs.wait_for("StopTransaction"))[0]  # a ground fault ends the session
        assert stop["reason"] == "Other"
        sim(d).inject_fault(1, Fault.GROUND_FAILURE, False)
        await wait_status(cs, "Finishing")


async def test_meter_failure_reports_power_meter_failure_and_recovers(
    cs: CentralSystem, tmp_path: Path
) -> None:
    cfg = sim_config(tmp_path, cs.url, ocpp={"MeterValueSampleInterval": 1})
    async with running(cfg) as d:
        await booted(cs)
        await charging(cs, d)
        sim(d).meter_fails(1, True)
        bad = (
            await cs.wait_for("StatusNotification", lambda p: p["errorCode"] == "PowerMeterFailure")
        )[0]
        assert bad["status"] == "SuspendedEVSE"
        assert not sim(d).view(1).contactor_closed
        sim(d).meter_fails(1, False)
        await wait_status(cs, "Charging", count=2)
