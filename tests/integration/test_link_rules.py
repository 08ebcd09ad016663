"""The OCPP-J link rules end to end: the real daemon on the simulator against the real Central
System on loopback (one outstanding CALL, ignored frames, the SecurityProfile key, retries that
do not depend on the wall clock, offline reporting in the journal)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import timedelta
from pathlib import Path

import pytest
from csms import CentralSystem, call
from harness import (
    CP_ID,
    SteppedClock,
    booted,
    running,
    sim,
    sim_config,
    wait_status,
    wait_until,
)

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
        sim(d).plug(1)
        await d.station.swipe("TAG1", None)
        await wait_status(cs, "Charging")
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
        await wait_until(lambda: d.station.connectors[1].tx.tx_id is not None, what="tx id")


async def test_retry_time_from_a_previous_run_is_bounded_by_the_interval(
    cs: CentralSystem, tmp_path: Path
) -> None:
    """A queued message whose stored next attempt lies an hour ahead (written while the wall
    clock was wrong, before a restart) waits at most TransactionMessageRetryInterval x attempts.
    """
    db = tmp_path / "ocppd.db"
    store = Store.open(db)
    try:
        seq = store.outbox_put(action="MeterValues", local_tx_id=None, kind="meter", payload={
            "connectorId": 1, "meterValue": [{"timestamp": "2024-01-01T00:00:00Z",
                                              "sampledValue": [{"value": "10"}]}]})
        store.outbox_record_attempt(seq, next_attempt_at=time.time() + 3600)
    finally:
        store.close()
    cfg = sim_config(tmp_path, cs.url, db=db, ocpp={"TransactionMessageRetryInterval": 3})
    clock = SteppedClock()
    async with running(cfg, monotonic=clock.monotonic, sleep=clock.sleep):
        await cs.wait_for("MeterValues")
    assert len(clock.sleeps) == 1 and 0 < clock.sleeps[0] <= 3.0
