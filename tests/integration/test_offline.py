"""Nothing is lost: offline transactions, the outbox, retries and power cuts (OCPP 1.6 §3.7,
OCTT TC_032, TC_036..TC_039), through a fault-injecting proxy between daemon and Central System."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from csms import CentralSystem
from harness import SteppedClock, running, sim, sim_config, wait_status, wait_until
from link.faultproxy import FaultProxy, Mode

from ocppd.storage import Store

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def proxy(cs: CentralSystem) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(cs.port) as p:
        yield p


def via(proxy: FaultProxy) -> str:
    return f"ws://{proxy.address}/ocpp"


async def go_offline(d: Any, proxy: FaultProxy) -> None:
    await proxy.set_mode(Mode.REFUSE)
    await wait_until(lambda: not d.cp.link.connected, what="link down")


async def go_online(d: Any, proxy: FaultProxy) -> None:
    await proxy.set_mode(Mode.PASS)
    await wait_until(lambda: d.cp.online, what="link up and registered")


def energies(mv: dict[str, Any]) -> list[float]:
    return [
        float(v["value"])
        for v in mv["meterValue"][0]["sampledValue"]
        if v.get("measurand", "Energy.Active.Import.Register") == "Energy.Active.Import.Register"
    ]


async def test_tc_036_connection_loss_during_transaction_queues_meter_values_in_order(
    cs: CentralSystem, proxy: FaultProxy, tmp_path: Path
) -> None:
    cfg = sim_config(
        tmp_path,
        via(proxy),
        ocpp={
            "MeterValueSampleInterval": 1,
            "MeterValuesSampledData": "Energy.Active.Import.Register",
        },
        sim={"time_factor": 100.0},
    )
    async with running(cfg) as d:
        await wait_status(cs, "Available")
        sim(d).plug(1)
        await d.station.swipe("TAG1", None)
        await cs.wait_for("MeterValues")
        await go_offline(d, proxy)
        await wait_until(lambda: d.store.tx_events_count() >= 3, what="queued meter values")
        queued = d.store.tx_events_count()
        await go_online(d, proxy)
        await wait_until(lambda: d.store.tx_events_count() == 0, what="outbox drained")
        mvs, seen = [], {}
        for m in cs.received("MeterValues"):
            stamp = m["meterValue"][0]["timestamp"]
            if stamp in seen:  # a message whose CALLRESULT was lost may be sent again, unchanged
                assert seen[stamp] == m
                continue
            seen[stamp] = m
            mvs.append(m)
        assert len(mvs) >= queued  # the queued ones (one of them may have been in flight)
        stamps = [
            datetime.fromisoformat(m["meterValue"][0]["timestamp"].replace("Z", "+00:00"))
            for m in mvs
        ]
        assert stamps == sorted(stamps)  # chronological, queued ones before new ones
        gaps = [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:], strict=False)]
        assert all(0.5 < g < 2.5 for g in gaps), gaps  # spaced by the interval, none missing
        values = [e for m in mvs for e in energies(m)]
        assert values == sorted(values)
        assert all(m["transactionId"] == mvs[0]["transactionId"] for m in mvs)


async def test_tc_037_1_offline_start_with_cached_id_then_start_sent_on_reconnect(
    cs: CentralSystem, proxy: FaultProxy, tmp_path: Path
) -> None:
    cfg = sim_config(tmp_path, via(proxy), ocpp={"LocalAuthorizeOffline": True})
    async with running(cfg) as d:
        await wait_status(cs, "Available")
        # an online session puts the tag in the authorization cache
        sim(d).plug(1)
        await d.station.swipe("CACHED", None)
        await cs.wait_for("StartTransaction")
        await d.station.swipe("CACHED", None)
        await cs.wait_for("StopTransaction")
        sim(d).unplug(1)
        await go_offline(d, proxy)
        sim(d).plug(1)
        await d.station.swipe("CACHED", None)  # no Central System: the cache decides
        await wait_until(lambda: d.station.connectors[1].contactor_closed, what="offline charging")
        assert d.station.connectors[1].tx.remote_id is None
        await go_online(d, proxy)
        starts = await cs.wait_for("StartTransaction", count=2)
        assert starts[1]["idTag"] == "CACHED"
        assert cs.received("Authorize", lambda p: p["idTag"] == "CACHED") != []
        await wait_until(lambda: d.station.connectors[1].tx.remote_id is not None,
                         what="real tx id")
        conf_ids = [
            m.payload["transactionId"]
            for m in cs.messages
            if m.direction == "out" and m.action == "StartTransaction.conf"
        ]
        assert d.station.connectors[1].tx.remote_id == str(conf_ids[1])
        assert conf_ids[1] != conf_ids[0]


@pytest.mark.parametrize("stop_on_invalid", [True, False])
async def test_tc_037_2_3_offline_start_with_invalid_id(
    cs: CentralSystem, proxy: FaultProxy, tmp_path: Path, stop_on_invalid: bool
) -> None:
    cs.behaviour.start_tag_status = {"STRANGER": "Invalid"}
    cfg = sim_config(
        tmp_path,
        via(proxy),
        ocpp={
            "AllowOfflineTxForUnknownId": True,
            "StopTransactionOnInvalidId": stop_on_invalid,
            "MaxEnergyOnInvalidId": 0,
        },
    )
    async with running(cfg) as d:
        await wait_status(cs, "Available")
        await go_offline(d, proxy)
        sim(d).plug(1)
        await d.station.swipe("STRANGER", None)  # unknown, allowed offline
        await wait_until(lambda: d.station.connectors[1].contactor_closed, what="offline charging")
        await go_online(d, proxy)
        await cs.wait_for("StartTransaction")
        if stop_on_invalid:
            stop = (await cs.wait_for("StopTransaction"))[0]
            assert stop["reason"] == "DeAuthorized"
        else:
            await wait_status(cs, "SuspendedEVSE")
            assert cs.received("StopTransaction") == []
            assert d.station.connectors[1].tx is not None
        assert not d.station.connectors[1].contactor_closed


async def test_tc_038_offline_stop_carries_the_real_transaction_id(
    cs: CentralSystem, proxy: FaultProxy, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, via(proxy))) as d:
        await wait_status(cs, "Available")
        sim(d).plug(1)
        await d.station.swipe("TAG1", None)
        await cs.wait_for("StartTransaction")
        await wait_until(lambda: d.station.connectors[1].tx.remote_id is not None, what="tx id")
        tx_id = int(d.station.connectors[1].tx.remote_id)
        await go_offline(d, proxy)
        await d.station.swipe("TAG1", None)
        assert not d.station.connectors[1].contactor_closed
        await go_online(d, proxy)
        stop = (await cs.wait_for("StopTransaction"))[0]
        assert stop["transactionId"] == tx_id and stop["reason"] == "Local"


async def test_tc_039_offline_transaction_start_then_stop_never_minus_one(
    cs: CentralSystem, proxy: FaultProxy, tmp_path: Path
) -> None:
    cfg = sim_config(
        tmp_path,
        via(proxy),
        ocpp={"AllowOfflineTxForUnknownId": True, "MeterValueSampleInterval": 1},
        sim={"time_factor": 100.0},
    )
    async with running(cfg) as d:
        await wait_status(cs, "Available")
        await go_offline(d, proxy)
        sim(d).plug(1)
        await d.station.swipe("OFFLINE1", None)
        await wait_until(lambda: d.store.tx_events_count() >= 3, what="queued meter values")
        await d.station.swipe("OFFLINE1", None)
        await go_online(d, proxy)
        stop = (await cs.wait_for("StopTransaction"))[0]
        start_conf_ids = [
            m.payload["transactionId"]
            for m in cs.messages
            if m.direction == "out" and m.action == "StartTransaction.conf"
        ]
        order = [
            a for a in cs.actions() if a in ("StartTransaction", "MeterValues", "StopTransaction")
        ]
        assert order[0] == "StartTransaction" and order[-1] == "StopTransaction"
        assert stop["transactionId"] == start_conf_ids[0] != -1
        assert all(m["transactionId"] == start_conf_ids[0] for m in cs.received("MeterValues"))


async def test_transaction_message_retries_wait_interval_times_attempts(
    cs: CentralSystem, tmp_path: Path
) -> None:
    """§3.7.1: TransactionMessageRetryInterval x the number of preceding transmissions, timed
    by the injected clock (exactly 1 s, then 2 s), not by windows on the wall clock."""
    cs.behaviour.fail_actions = {"StartTransaction": 2}
    cfg = sim_config(
        tmp_path,
        cs.url,
        ocpp={"TransactionMessageAttempts": 3, "TransactionMessageRetryInterval": 1},
    )
    clock = SteppedClock()
    async with running(cfg, monotonic=clock.monotonic, sleep=clock.sleep) as d:
        await wait_status(cs, "Available")
        sim(d).plug(1)
        await d.station.swipe("TAG1", None)
        await cs.wait_for("StartTransaction", count=3, timeout=10)
        await wait_until(lambda: d.station.connectors[1].tx.remote_id is not None, what="tx id")
        assert clock.sleeps == [1.0, 2.0]  # 1 s x 1 preceding attempt, 1 s x 2
        assert len(cs.received("StartTransaction")) == 3


async def test_transaction_message_attempts_is_the_exact_number_of_transmissions(
    cs: CentralSystem, tmp_path: Path
) -> None:
    """§3.7.1: TransactionMessageAttempts = 3 means three transmissions, then the message is
    discarded: not two, not four; and the queue goes on with the next message."""
    cs.behaviour.fail_actions = {"StartTransaction": 100}
    cfg = sim_config(
        tmp_path,
        cs.url,
        ocpp={"TransactionMessageAttempts": 3, "TransactionMessageRetryInterval": 5},
    )
    clock = SteppedClock()
    async with running(cfg, monotonic=clock.monotonic, sleep=clock.sleep) as d:
        await wait_status(cs, "Available")
        sim(d).plug(1)
        await d.station.swipe("TAG1", None)
        await wait_until(
            lambda: any(kind == "outbox_discarded" for _, kind, _ in d.store.events()),
            what="the StartTransaction given up",
        )
        assert len(cs.received("StartTransaction")) == 3
        assert clock.sleeps == [5.0, 10.0]
        await d.station.swipe("TAG1", None)  # the stop behind it still goes out
        stop = (await cs.wait_for("StopTransaction"))[0]
        assert stop["transactionId"] == -1  # the start was given up (see _prepared)
        assert len(cs.received("StartTransaction")) == 3


async def test_callerror_exhausting_attempts_discards_the_message(
    cs: CentralSystem, tmp_path: Path
) -> None:
    cs.behaviour.fail_actions = {"MeterValues": 100}
    cfg = sim_config(
        tmp_path,
        cs.url,
        ocpp={
            "TransactionMessageAttempts": 2,
            "TransactionMessageRetryInterval": 1,
            "MeterValueSampleInterval": 1,
        },
    )
    async with running(cfg) as d:
        await wait_status(cs, "Available")
        sim(d).plug(1)
        await d.station.swipe("TAG1", None)
        await cs.wait_for("MeterValues", count=4, timeout=10)
        # the queue keeps moving: each MeterValues is tried twice, then given up
        events = d.store.events()
        assert any(kind == "outbox_discarded" for _, kind, _ in events)


async def test_power_loss_recovery_from_an_open_transaction(
    cs: CentralSystem, tmp_path: Path
) -> None:
    """A database left with a running transaction (as after a power cut) is stopped with
    reason PowerLoss and the last persisted reading at start-up (TC_032_2)."""
    cfg = sim_config(tmp_path, cs.url)
    store = Store.open(cfg.storage.path)
    t0 = datetime.now(UTC) - timedelta(hours=1)
    with store.atomic():
        local = store.begin_transaction(
            connector_id=1, id_tag="TAG9", meter_start_wh=1000, started_at=t0
        )
        store.tx_event_add(local, "started", t0, energy_wh=1000)
    store.update_meter(local, 4321, t0 + timedelta(minutes=30))
    store.close()
    async with running(cfg):
        start = (await cs.wait_for("StartTransaction"))[0]
        stop = (await cs.wait_for("StopTransaction"))[0]
        assert start["meterStart"] == 1000
        assert stop["reason"] == "PowerLoss" and stop["meterStop"] == 4321
        start_id = [
            m.payload["transactionId"]
            for m in cs.messages
            if m.direction == "out" and m.action == "StartTransaction.conf"
        ][0]
        assert stop["transactionId"] == start_id
        order = [a for a in cs.actions() if a in ("StartTransaction", "StopTransaction")]
        assert order == ["StartTransaction", "StopTransaction"]


async def test_power_loss_resume_keeps_the_transaction_when_ev_still_plugged(
    cs: CentralSystem, tmp_path: Path
) -> None:
    cfg = sim_config(tmp_path, cs.url, system={"power_loss": "resume"})
    async with running(cfg) as d:
        await wait_status(cs, "Available")
        sim(d).plug(1)
        await d.station.swipe("TAG1", None)
        await cs.wait_for("StartTransaction")
        local = d.station.connectors[1].tx.local_id
    # stopping with power_loss = "resume" leaves the transaction open
    assert cs.received("StopTransaction") == []
    cs.messages.clear()
    async with running(cfg, plugged=(1,)) as d:  # the EV is still there after the restart
        await wait_until(lambda: d.station.connectors[1].tx is not None, what="recovery")
        assert d.station.connectors[1].tx.local_id == local
        await cs.wait_for(
            "StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "Charging"
        )
        assert cs.received("StopTransaction") == []
    cs.messages.clear()
    async with running(cfg):  # and when it is gone, the transaction is stopped (PowerLoss)
        stop = (await cs.wait_for("StopTransaction"))[0]
        assert stop["reason"] == "PowerLoss"


async def test_many_hours_of_backlog_are_delivered_in_order_with_real_ids(
    cs: CentralSystem, tmp_path: Path
) -> None:
    """An outage of ten hours, sampled every minute: 600 queued MeterValues, Start and Stop, all
    recorded before the daemon starts (as after an outage that outlived the process)."""
    cfg = sim_config(tmp_path, cs.url)
    store = Store.open(cfg.storage.path)
    t0 = datetime.now(UTC) - timedelta(hours=10)

    def iso(t: datetime) -> str:
        return t.strftime("%Y-%m-%dT%H:%M:%S.000Z")

    with store.atomic():
        local = store.begin_transaction(
            connector_id=1, id_tag="LONG", meter_start_wh=0, started_at=t0
        )
        store.tx_event_add(local, "started", t0, energy_wh=0)
        for i in range(1, 601):
            store.tx_event_add(local, "sample", t0 + timedelta(minutes=i), trigger="periodic",
                               energy_wh=i * 100,
                               data={"reading": {"energy_import_wh": float(i * 100)}})
        store.finish_transaction(
            local,
            meter_stop_wh=60000,
            stopped_at=t0 + timedelta(hours=10),
            reason="local",
            stop_id_tag="LONG",
        )
        store.tx_event_add(local, "ended", t0 + timedelta(hours=10), energy_wh=60000)
    store.close()
    async with running(cfg):
        stop = (await cs.wait_for("StopTransaction", timeout=60))[0]
        start_id = [
            m.payload["transactionId"]
            for m in cs.messages
            if m.direction == "out" and m.action == "StartTransaction.conf"
        ][0]
        mvs = cs.received("MeterValues")
        assert len(mvs) == 600 and stop["transactionId"] == start_id
        assert all(m["transactionId"] == start_id for m in mvs)
        values = [float(m["meterValue"][0]["sampledValue"][0]["value"]) for m in mvs]
        assert values == sorted(values) and values[0] == 100 and values[-1] == 60000
