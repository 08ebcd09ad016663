"""OCPP 1.6 Core profile, end to end: the OCTT charge-point test cases reproduced with the real
daemon on the simulator against a real Central System on loopback. Each test is named after the
test case (ocpp16-rules.md §2.2) and checks the message sequence and payloads the tool checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from csms import CentralSystem, call
from harness import CP_ID, booted, charge, running, sim, sim_config, wait_status, wait_until

pytestmark = pytest.mark.asyncio


def statuses(cs: CentralSystem, cid: int = 1) -> list[str]:
    return cs.status_sequence(cid)


async def start_session(cs: CentralSystem, d: Any, tag: str = "TAG1") -> dict[str, Any]:
    sim(d).plug(1)
    await wait_status(cs, "Preparing")
    assert d.station is not None
    await d.station.swipe(tag, None)
    await wait_status(cs, "Charging")
    return (await cs.wait_for("StartTransaction"))[0]


# --- boot -----------------------------------------------------------------------------------------


async def test_tc_001_cold_boot(cs: CentralSystem, tmp_path: Path) -> None:
    async with running(sim_config(tmp_path, cs.url, connectors=2)):
        await booted(cs, 2)
        first = [m for m in cs.messages if m.direction == "in"][0]
        assert first.action == "BootNotification"
        assert first.payload["chargePointVendor"] == "ocppd"
        for cid in (0, 1, 2):
            assert statuses(cs, cid)[0] == "Available"
        assert all(p["errorCode"] == "NoError" for p in cs.received("StatusNotification"))


async def test_tc_001_rejected_waits_for_interval_and_sends_nothing_else(
    cs: CentralSystem, tmp_path: Path
) -> None:
    cs.behaviour.boot_status, cs.behaviour.boot_interval = "Rejected", 1
    async with running(sim_config(tmp_path, cs.url)):
        await cs.wait_for("BootNotification", count=2, timeout=5)
        cs.behaviour.boot_status = "Accepted"
        await booted(cs)
        # nothing but BootNotification until the accepted (last) one; after it, statuses and
        # the critical security event StartupOfTheDevice, in any order
        actions = cs.actions()
        last_boot = max(i for i, a in enumerate(actions) if a == "BootNotification")
        before_accept = actions[: last_boot + 1]
        assert set(before_accept) == {"BootNotification"} and len(before_accept) >= 2
        boots = [
            m.at for m in cs.messages if m.direction == "in" and m.action == "BootNotification"
        ]
        assert all(b - a >= 0.95 for a, b in zip(boots, boots[1:], strict=False))  # the interval


async def test_tc_002_pending_answers_configuration_calls(
    cs: CentralSystem, tmp_path: Path
) -> None:
    cs.behaviour.boot_status, cs.behaviour.boot_interval = "Pending", 2
    async with running(sim_config(tmp_path, cs.url)):
        await cs.wait_for("BootNotification")
        conf = await cs.call(CP_ID, call.GetConfiguration(key=["HeartbeatInterval"]))
        assert conf.configuration_key[0]["key"] == "HeartbeatInterval"
        conf = await cs.call(
            CP_ID, call.ChangeConfiguration(key="MeterValueSampleInterval", value="30")
        )
        assert conf.status == "Accepted"
        assert cs.received("StatusNotification") == []
        cs.behaviour.boot_status = "Accepted"
        await cs.wait_for("BootNotification", count=2, timeout=5)
        await booted(cs)


# --- sessions -------------------------------------------------------------------------------------


async def test_tc_003_regular_charging_session_plugin_first(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        start = await start_session(cs, d)
        assert start["connectorId"] == 1 and start["idTag"] == "TAG1"
        seq = cs.actions()
        assert seq.index("Authorize") < seq.index("StartTransaction")
        assert statuses(cs)[-3:] == ["Available", "Preparing", "Charging"][
            -3:
        ] or "Charging" in statuses(cs)
        assert sim(d).view(1).contactor_closed


async def test_tc_004_1_identification_first(cs: CentralSystem, tmp_path: Path) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        await d.station.swipe("TAG1", None)
        await wait_status(cs, "Preparing")
        assert cs.received("StartTransaction") == []
        sim(d).plug(1)
        await cs.wait_for("StartTransaction")
        await wait_status(cs, "Charging")


async def test_tc_004_2_connection_timeout_returns_to_available(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url, ocpp={"ConnectionTimeOut": 1})) as d:
        await booted(cs)
        await d.station.swipe("TAG1", None)
        await wait_status(cs, "Preparing")
        await wait_status(cs, "Available", count=2, timeout=5)
        assert cs.received("StartTransaction") == []


async def test_tc_005_1_ev_side_disconnect_stops_the_transaction(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        await start_session(cs, d)
        sim(d).unplug(1)
        stop = (await cs.wait_for("StopTransaction"))[0]
        assert stop["reason"] == "EVDisconnected"
        await wait_status(cs, "Available", count=2)
        assert not sim(d).view(1).contactor_closed


async def test_tc_005_3_ev_side_disconnect_keeps_transaction_when_configured(
    cs: CentralSystem, tmp_path: Path
) -> None:
    cfg = sim_config(tmp_path, cs.url, ocpp={"StopTransactionOnEVSideDisconnect": False})
    async with running(cfg) as d:
        await booted(cs)
        await start_session(cs, d)
        sim(d).unplug(1)
        await wait_status(cs, "SuspendedEV")
        assert cs.received("StopTransaction") == []
        assert d.station.connectors[1].tx is not None
        assert not sim(d).view(1).contactor_closed


async def test_tc_068_stop_with_same_id_tag_needs_no_authorize(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        await start_session(cs, d, tag="abc123")
        authorizes = len(cs.received("Authorize"))
        await d.station.swipe("ABC123", None)  # idTags compare case-insensitively
        stop = (await cs.wait_for("StopTransaction"))[0]
        assert stop["reason"] == "Local" and stop["idTag"] == "ABC123"
        assert len(cs.received("Authorize")) == authorizes
        await wait_status(cs, "Finishing")


async def test_tc_069_stop_with_same_parent_id_tag(cs: CentralSystem, tmp_path: Path) -> None:
    cs.behaviour.parent_of = {"CARD-A": "FLEET", "CARD-B": "FLEET"}
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        await start_session(cs, d, tag="CARD-A")
        await d.station.swipe("CARD-B", 1)
        stop = (await cs.wait_for("StopTransaction"))[0]
        assert stop["idTag"] == "CARD-B"


# --- remote actions -------------------------------------------------------------------------------


async def test_tc_010_remote_start_cable_plugged_first(cs: CentralSystem, tmp_path: Path) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        conf = await cs.call(CP_ID, call.GetConfiguration(key=["AuthorizeRemoteTxRequests"]))
        assert conf.configuration_key[0]["value"] == "true"
        sim(d).plug(1)
        await wait_status(cs, "Preparing")
        conf = await cs.call(CP_ID, call.RemoteStartTransaction(id_tag="REMOTE1", connector_id=1))
        assert conf.status == "Accepted"
        await cs.wait_for("Authorize", lambda p: p["idTag"] == "REMOTE1")
        await cs.wait_for("StartTransaction")
        await wait_status(cs, "Charging")


async def test_tc_011_1_remote_start_first(cs: CentralSystem, tmp_path: Path) -> None:
    async with running(
        sim_config(tmp_path, cs.url, ocpp={"AuthorizeRemoteTxRequests": False})
    ) as d:
        await booted(cs)
        conf = await cs.call(CP_ID, call.RemoteStartTransaction(id_tag="REMOTE1"))
        assert conf.status == "Accepted"
        await wait_status(cs, "Preparing")
        sim(d).plug(1)
        await cs.wait_for("StartTransaction")
        assert cs.received("Authorize") == []  # AuthorizeRemoteTxRequests=false: no Authorize


async def test_tc_012_remote_stop(cs: CentralSystem, tmp_path: Path) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        await start_session(cs, d)
        await wait_until(lambda: d.station.connectors[1].tx.remote_id is not None)
        tx_id = int(d.station.connectors[1].tx.remote_id)
        conf = await cs.call(CP_ID, call.RemoteStopTransaction(transaction_id=tx_id))
        assert conf.status == "Accepted"
        stop = (await cs.wait_for("StopTransaction"))[0]
        assert stop["reason"] == "Remote" and stop["transactionId"] == tx_id
        await wait_status(cs, "Finishing")
        sim(d).unplug(1)
        await wait_status(cs, "Available", count=2)


async def test_tc_027_remote_start_on_connector_zero_is_rejected(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url)):
        await booted(cs)
        conf = await cs.call(CP_ID, call.RemoteStartTransaction(id_tag="X", connector_id=0))
        assert conf.status == "Rejected"


async def test_tc_028_remote_stop_unknown_transaction_is_rejected(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url)):
        await booted(cs)
        conf = await cs.call(CP_ID, call.RemoteStopTransaction(transaction_id=424242))
        assert conf.status == "Rejected"


async def test_tc_023_4_local_start_with_invalid_id_tag(cs: CentralSystem, tmp_path: Path) -> None:
    cs.behaviour.accepted_tags = {"GOOD"}
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        sim(d).plug(1)
        await wait_status(cs, "Preparing")
        from ocppd.station import Refused

        with pytest.raises(Refused):
            await d.station.swipe("BAD", None)
        assert cs.received("StartTransaction") == []
        assert not sim(d).view(1).contactor_closed


# --- reset, availability, unlock ------------------------------------------------------------------


async def test_tc_013_unavailable_survives_hard_reset(cs: CentralSystem, tmp_path: Path) -> None:
    cfg = sim_config(tmp_path, cs.url)
    async with running(cfg) as d:
        await booted(cs)
        conf = await cs.call(CP_ID, call.ChangeAvailability(connector_id=1, type="Inoperative"))
        assert conf.status == "Accepted"
        await wait_status(cs, "Unavailable")
        conf = await cs.call(CP_ID, call.Reset(type="Hard"))
        assert conf.status == "Accepted"
        await wait_until(lambda: d.stop_event.is_set(), what="daemon stopping for the reset")
    cs.messages.clear()
    async with running(cfg):
        await booted(cs)
        assert statuses(cs)[0] == "Unavailable"
        conf = await cs.call(CP_ID, call.ChangeAvailability(connector_id=1, type="Operative"))
        assert conf.status == "Accepted"
        await wait_status(cs, "Available")


async def test_tc_016_soft_reset_with_transaction(cs: CentralSystem, tmp_path: Path) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        await start_session(cs, d)
        conf = await cs.call(CP_ID, call.Reset(type="Soft"))
        assert conf.status == "Accepted"
        stop = (await cs.wait_for("StopTransaction"))[0]
        assert stop["reason"] == "SoftReset"
        await wait_until(lambda: d.stop_event.is_set(), what="soft reset exit")
        assert d.exit_code == 75
        assert not sim(d).view(1).contactor_closed


async def test_change_availability_during_transaction_is_scheduled(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        await start_session(cs, d)
        conf = await cs.call(CP_ID, call.ChangeAvailability(connector_id=1, type="Inoperative"))
        assert conf.status == "Scheduled"
        await d.station.swipe("TAG1", None)
        await cs.wait_for("StopTransaction")
        await wait_status(cs, "Unavailable")


async def test_tc_034_connector_zero_makes_all_unavailable(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url, connectors=2)):
        await booted(cs, 2)
        conf = await cs.call(CP_ID, call.ChangeAvailability(connector_id=0, type="Inoperative"))
        assert conf.status == "Accepted"
        for cid in (0, 1, 2):
            await wait_status(cs, "Unavailable", cid=cid)


async def test_tc_018_1_unlock_with_session_stops_it_first(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        await start_session(cs, d)
        conf = await cs.call(CP_ID, call.UnlockConnector(connector_id=1))
        assert conf.status == "Unlocked"
        stop = (await cs.wait_for("StopTransaction"))[0]
        assert stop["reason"] == "UnlockCommand"
        await wait_status(cs, "Finishing")


async def test_tc_017_2_unlock_fixed_cable_not_supported(cs: CentralSystem, tmp_path: Path) -> None:
    async with running(sim_config(tmp_path, cs.url, cable="fixed")):
        await booted(cs)
        conf = await cs.call(CP_ID, call.UnlockConnector(connector_id=1))
        assert conf.status == "NotSupported"


async def test_tc_030_unlock_failure(cs: CentralSystem, tmp_path: Path) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        sim(d).lock_fails.add(1)
        conf = await cs.call(CP_ID, call.UnlockConnector(connector_id=1))
        assert conf.status == "UnlockFailed"


async def test_tc_031_unlock_unknown_connector(cs: CentralSystem, tmp_path: Path) -> None:
    async with running(sim_config(tmp_path, cs.url)):
        await booted(cs)
        conf = await cs.call(CP_ID, call.UnlockConnector(connector_id=7))
        assert conf.status == "NotSupported"


# --- configuration --------------------------------------------------------------------------------


async def test_tc_019_get_all_configuration_keys(cs: CentralSystem, tmp_path: Path) -> None:
    async with running(sim_config(tmp_path, cs.url)):
        await booted(cs)
        conf = await cs.call(CP_ID, call.GetConfiguration())
        names = {k["key"] for k in conf.configuration_key}
        core = {
            "AllowOfflineTxForUnknownId",
            "AuthorizationCacheEnabled",
            "AuthorizeRemoteTxRequests",
            "BlinkRepeat",
            "ClockAlignedDataInterval",
            "ConnectionTimeOut",
            "ConnectorPhaseRotation",
            "ConnectorPhaseRotationMaxLength",
            "GetConfigurationMaxKeys",
            "HeartbeatInterval",
            "LightIntensity",
            "LocalAuthorizeOffline",
            "LocalPreAuthorize",
            "MaxEnergyOnInvalidId",
            "MeterValuesAlignedData",
            "MeterValuesAlignedDataMaxLength",
            "MeterValuesSampledData",
            "MeterValuesSampledDataMaxLength",
            "MeterValueSampleInterval",
            "MinimumStatusDuration",
            "NumberOfConnectors",
            "ResetRetries",
            "StopTransactionOnEVSideDisconnect",
            "StopTransactionOnInvalidId",
            "StopTxnAlignedData",
            "StopTxnAlignedDataMaxLength",
            "StopTxnSampledData",
            "StopTxnSampledDataMaxLength",
            "SupportedFeatureProfiles",
            "SupportedFeatureProfilesMaxLength",
            "TransactionMessageAttempts",
            "TransactionMessageRetryInterval",
            "UnlockConnectorOnEVSideDisconnect",
            "WebSocketPingInterval",
        }
        assert len(core) == 34 and core <= names
        assert "AuthorizationKey" not in names  # write-only: never returned
        readonly = {k["key"] for k in conf.configuration_key if k["readonly"]}
        assert {
            "NumberOfConnectors",
            "GetConfigurationMaxKeys",
            "SupportedFeatureProfiles",
        } <= readonly


async def test_tc_021_change_configuration_then_get(cs: CentralSystem, tmp_path: Path) -> None:
    async with running(sim_config(tmp_path, cs.url)):
        await booted(cs)
        conf = await cs.call(
            CP_ID, call.ChangeConfiguration(key="MeterValueSampleInterval", value="15")
        )
        assert conf.status == "Accepted"
        conf = await cs.call(CP_ID, call.GetConfiguration(key=["MeterValueSampleInterval", "Nope"]))
        assert conf.configuration_key == [
            {"key": "MeterValueSampleInterval", "readonly": False, "value": "15"}
        ]
        assert conf.unknown_key == ["Nope"]


async def test_websocket_ping_interval_applies_without_a_reboot(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        change = call.ChangeConfiguration(key="WebSocketPingInterval", value="7")
        conf = await cs.call(CP_ID, change)
        assert conf.status == "Accepted"  # not RebootRequired: the link takes it at once
        assert d.cp.link.settings.ping_interval_s == 7.0
        assert d.cp.link.connected


async def test_tc_040_unknown_key_not_supported_invalid_value_rejected(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url)):
        await booted(cs)
        assert (
            await cs.call(CP_ID, call.ChangeConfiguration(key="Testing", value="1"))
        ).status == "NotSupported"
        assert (
            await cs.call(CP_ID, call.ChangeConfiguration(key="HeartbeatInterval", value="-5"))
        ).status == "Rejected"
        assert (
            await cs.call(CP_ID, call.ChangeConfiguration(key="NumberOfConnectors", value="3"))
        ).status == "Rejected"
        bad = call.ChangeConfiguration(
            key="MeterValuesSampledData", value="Energy.Active.Import.Register,Bogus"
        )
        assert (await cs.call(CP_ID, bad)).status == "Rejected"


async def test_configuration_survives_restart(cs: CentralSystem, tmp_path: Path) -> None:
    cfg = sim_config(tmp_path, cs.url)
    async with running(cfg):
        await booted(cs)
        await cs.call(CP_ID, call.ChangeConfiguration(key="ConnectionTimeOut", value="42"))
    async with running(cfg):
        conf = await cs.call(CP_ID, call.GetConfiguration(key=["ConnectionTimeOut"]))
        assert conf.configuration_key[0]["value"] == "42"


# --- meter values ---------------------------------------------------------------------------------


async def test_tc_070_sampled_meter_values(cs: CentralSystem, tmp_path: Path) -> None:
    cfg = sim_config(
        tmp_path, cs.url, ocpp={"MeterValueSampleInterval": 1}, sim={"time_factor": 100.0}
    )
    async with running(cfg) as d:
        await booted(cs)
        await start_session(cs, d)
        mvs = await cs.wait_for("MeterValues", count=3, timeout=8)
        for mv in mvs:
            assert mv["connectorId"] == 1 and "transactionId" in mv
            values = mv["meterValue"][0]["sampledValue"]
            assert all(v["context"] == "Sample.Periodic" for v in values)
            assert all(v.get("location") != "EV" for v in values)
            measurands = {v["measurand"] for v in values}
            assert {
                "Energy.Active.Import.Register",
                "Power.Active.Import",
                "Current.Import",
                "Voltage",
            } <= measurands
            assert {v["phase"] for v in values if v["measurand"] == "Voltage"} == {
                "L1-N",
                "L2-N",
                "L3-N",
            }
        energies = [
            float(v["value"])
            for mv in mvs
            for v in mv["meterValue"][0]["sampledValue"]
            if v["measurand"] == "Energy.Active.Import.Register"
        ]
        assert energies == sorted(energies) and energies[-1] > energies[0]


async def test_stop_transaction_carries_transaction_data(cs: CentralSystem, tmp_path: Path) -> None:
    cfg = sim_config(tmp_path, cs.url, ocpp={"StopTxnSampledData": "Energy.Active.Import.Register"})
    async with running(cfg) as d:
        await booted(cs)
        await start_session(cs, d)
        await d.station.swipe("TAG1", None)
        stop = (await cs.wait_for("StopTransaction"))[0]
        contexts = [mv["sampledValue"][0]["context"] for mv in stop["transactionData"]]
        assert contexts[0] == "Transaction.Begin" and contexts[-1] == "Transaction.End"


# --- data transfer --------------------------------------------------------------------------------


async def test_tc_062_data_transfer_unknown_vendor(cs: CentralSystem, tmp_path: Path) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        conf = await cs.call(CP_ID, call.DataTransfer(vendor_id="com.example", message_id="x"))
        assert conf.status == "UnknownVendorId"

        async def echo(message_id: str | None, data: str | None) -> tuple[str, str | None]:
            return "Accepted", (data or "").upper()

        d.cp.data_transfer["org.ocppd"] = {"echo": echo}
        conf = await cs.call(
            CP_ID, call.DataTransfer(vendor_id="org.ocppd", message_id="echo", data="hi")
        )
        assert (conf.status, conf.data) == ("Accepted", "HI")
        conf = await cs.call(CP_ID, call.DataTransfer(vendor_id="org.ocppd", message_id="other"))
        assert conf.status == "UnknownMessageId"


async def test_clock_taken_from_boot_notification_current_time(
    cs: CentralSystem, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    cs.behaviour.clock_offset_s = 3600.0  # the charger's clock is an hour behind
    async with running(sim_config(tmp_path, cs.url)):
        await booted(cs)
        stamp = cs.received("StatusNotification")[0]["timestamp"]
        ahead = datetime.fromisoformat(stamp.replace("Z", "+00:00")) - datetime.now(UTC)
        assert 3590 < ahead.total_seconds() < 3610


async def test_minimum_status_duration_skips_short_lived_statuses(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url, ocpp={"MinimumStatusDuration": 1})) as d:
        await booted(cs)
        await charge(cs, d)  # Preparing lasts far less than a second
        assert "Preparing" not in statuses(cs)
        # a triggered StatusNotification is not delayed (§5.17)
        n = len(cs.received("StatusNotification"))
        await cs.call(
            CP_ID, call.TriggerMessage(requested_message="StatusNotification", connector_id=1)
        )
        await cs.wait_for("StatusNotification", count=n + 1, timeout=0.5)


async def test_minimum_status_duration_holds_back_a_status_on_an_idle_link(
    cs: CentralSystem, tmp_path: Path
) -> None:
    """§9.1.21: a status is reported only once it has lasted MinimumStatusDuration.

    The link is idle, so nothing else delays the report: without the feature, Preparing would
    go out before the Heartbeat triggered afterwards.
    """
    cfg = sim_config(tmp_path, cs.url, ocpp={"MinimumStatusDuration": 3600})
    async with running(cfg) as d:
        await booted(cs)
        sim(d).plug(1)
        await wait_until(lambda: d.station.connectors[1].status.value == "preparing")
        await cs.call(CP_ID, call.TriggerMessage(requested_message="Heartbeat"))
        await cs.wait_for("Heartbeat")
        assert "Preparing" not in statuses(cs)
        conf = await cs.call(
            CP_ID, call.ChangeConfiguration(key="MinimumStatusDuration", value="0")
        )
        assert conf.status == "Accepted"
        await d.station.swipe("TAG1", None)  # with 0, a change is reported at once again
        await wait_status(cs, "Charging")
        assert statuses(cs) == ["Available", "Charging"]


async def test_stop_sequence_is_stop_then_finishing_with_nothing_between(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        await start_session(cs, d)
        await d.station.swipe("TAG1", None)
        await wait_status(cs, "Finishing")
        tail = statuses(cs)[-2:]
        assert tail == ["Charging", "Finishing"], statuses(cs)


async def test_data_transfer_plugin_from_an_installed_package(
    cs: CentralSystem, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A package installed beside ocppd adds DataTransfer handlers through an entry point."""
    import sys

    site = tmp_path / "site"
    (site / "acme_dt").mkdir(parents=True)
    (site / "acme_dt" / "__init__.py").write_text(
        "async def price(message_id, data):\n"
        "    return 'Accepted', '0.42 EUR/kWh'\n"
        "def register(add):\n"
        "    add('com.acme', 'price', price)\n"
    )
    dist = site / "acme_dt-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-dt\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[ocppd.data_transfer]\nacme = acme_dt:register\n")
    monkeypatch.syspath_prepend(str(site))
    try:
        async with running(sim_config(tmp_path, cs.url)):
            await booted(cs)
            conf = await cs.call(CP_ID, call.DataTransfer(vendor_id="com.acme", message_id="price"))
            assert (conf.status, conf.data) == ("Accepted", "0.42 EUR/kWh")
            conf = await cs.call(CP_ID, call.DataTransfer(vendor_id="com.acme", message_id="x"))
            assert conf.status == "UnknownMessageId"
    finally:
        sys.modules.pop("acme_dt", None)


async def test_malformed_frames_get_the_right_callerror_and_the_daemon_carries_on(
    cs: CentralSystem, tmp_path: Path
) -> None:
    import json

    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        ws = (await cs.wait_connected(CP_ID))._connection
        frames = {
            "m1": '[2,"m1","Reset",{"type":"Bogus"}]',  # enum value
            "m2": '[2,"m2","FlyToTheMoon",{}]',  # unknown action
            "m3": '[2,"m3","ChangeAvailability",{"connectorId":1}]',  # missing field
            "m4": '[2,"m4","ChangeAvailability",{"connectorId":"one","type":"Operative"}]',
            "m5": '[2,"m5","GetConfiguration",{"key":["A"],"extra":1}]',  # unknown property
            "m6": '[2,"m6","Reset",{"type":"Soft"',  # truncated JSON
        }
        expected = {
            "m1": "PropertyConstraintViolation",
            "m2": "NotImplemented",
            "m3": "OccurenceConstraintViolation",
            "m4": "TypeConstraintViolation",
            "m5": "FormationViolation",
            "m6": "FormationViolation",
        }
        answers: dict[str, list[object]] = {}
        original = cs._record_raw

        def capture(direction: str, raw: str) -> None:
            try:
                frame = json.loads(raw)
            except ValueError:
                frame = None
            if direction == "in" and isinstance(frame, list) and frame[1] in frames:
                answers[frame[1]] = frame
            original(direction, raw)

        cs._record_raw = capture  # type: ignore[method-assign]
        for text in frames.values():
            await ws.send(text)
        await ws.send("this is not JSON at all")
        await ws.send(b"\x00\x01 binary")
        await wait_until(lambda: len(answers) == len(frames), what="answers to every frame")
        for mid, code in expected.items():
            assert answers[mid][0] == 4 and answers[mid][2] == code, (mid, answers[mid])
        # the daemon carries on: same connection, normal calls still answered
        conf = await cs.call(CP_ID, call.GetConfiguration(key=["HeartbeatInterval"]))
        assert conf.configuration_key[0]["key"] == "HeartbeatInterval"
        assert d.cp.link.stats.connects == 1
