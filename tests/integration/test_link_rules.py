"""The OCPP-J link rules end to end: the real daemon on the simulator against the real Central
System on loopback (one outstanding CALL, ignored frames, the SecurityProfile key, retries that
do not depend on the wall clock, offline reporting in the journal)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from csms import CentralSystem, call
from harness import CP_ID, booted, running, sim, sim_config, wait_status, wait_until

from ocppd.hw.base import PilotState

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
