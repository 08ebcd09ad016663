"""A stop that was asked for survives a crash: the daemon dies after the contactor opened and
before the stop was recorded, and the next start-up finishes that transaction with the stop's
own reason and idTag instead of resuming it (or calling it a power loss).

The crash window is held open by the meter: the stop reads it after the contactor opened, and a
meter that does not answer (a Modbus timeout) keeps the stop there while the daemon dies.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from csms import CentralSystem, call
from harness import (
    CP_ID,
    booted,
    resume_config,
    running,
    sim,
    sim_config,
    transaction_id,
    wait_until,
)

from ocppd.app import Daemon
from ocppd.hw.sim import SimBoard, build_sim_hardware

pytestmark = pytest.mark.asyncio


def _hang_meter(d: Daemon, connector_id: int) -> None:
    """From now on the connector's meter never answers (until the daemon goes away)."""
    never = asyncio.Event()

    async def hanging_read() -> Any:
        await never.wait()

    d.station.hw.meters[connector_id].read = hanging_read  # type: ignore[method-assign]


def _crash(d: Daemon) -> None:
    """Nothing of an orderly shutdown may finish the stop: what a SIGKILL or power cut leaves."""
    close = d.station.close

    async def crashing(*, stop_transactions: Any) -> None:
        await close(stop_transactions=None)

    d.station.close = crashing  # type: ignore[method-assign]


async def _ask_stop(cs: CentralSystem, d: Daemon, how: str) -> tuple[str, str | None]:
    if how == "card":
        d.station.hw.readers[0].present("TAG1")
        return "Local", "TAG1"
    tx_id = int(d.station.connectors[1].tx.remote_id)
    conf = await cs.call(CP_ID, call.RemoteStopTransaction(transaction_id=tx_id))
    assert conf.status == "Accepted"
    return "Remote", None


@pytest.mark.parametrize("power_loss", ["resume", "stop"])
@pytest.mark.parametrize("how", ["card", "remote"])
async def test_a_stop_under_way_when_the_daemon_dies_is_finished_at_start_up(
    cs: CentralSystem, tmp_path: Path, power_loss: str, how: str
) -> None:
    cfg = sim_config(tmp_path, cs.url, system={"power_loss": power_loss})
    async with running(cfg) as d:
        await booted(cs)
        sim(d).plug(1)
        await d.station.swipe("TAG1", None)
        await cs.wait_for("StartTransaction")
        await transaction_id(d)
        await wait_until(lambda: sim(d).view(1).contactor_closed, what="charging")
        _hang_meter(d, 1)
        _crash(d)
        reason, stop_tag = await _ask_stop(cs, d, how)
        await wait_until(lambda: not sim(d).view(1).contactor_closed, what="contactor open")
        assert d.station.connectors[1].tx is not None, "the stop is held in its window"
    assert cs.received("StopTransaction") == []

    hw = build_sim_hardware(cfg)  # the EV is still plugged in after the restart
    board = hw.board
    assert isinstance(board, SimBoard)
    board.plug(1)
    await board.lock(1, True)  # a motor lock stays where it was when the daemon died
    closes: list[bool] = []
    set_contactor = board.set_contactor

    def recording(connector_id: int, closed: bool) -> None:
        closes.append(closed)
        set_contactor(connector_id, closed)

    board.set_contactor = recording  # type: ignore[method-assign]
    d = Daemon(cfg, install_signals=False, hardware=hw)
    task = asyncio.ensure_future(d.run())
    try:
        stop = (await cs.wait_for("StopTransaction"))[0]
        start = cs.received("StartTransaction")[0]
        assert stop["reason"] == reason
        assert stop.get("idTag") == stop_tag
        assert stop["transactionId"] == 1000
        assert stop["meterStop"] >= start["meterStart"]
        assert stop["timestamp"] >= start["timestamp"]
        await cs.wait_for(
            "StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "Finishing"
        )
        assert d.station is not None and d.station.connectors[1].tx is None
        assert True not in closes, "no energy after a stop that was asked for"
        await wait_until(lambda: not board.view(1).locked, what="plug released")
    finally:
        d.stop_event.set()
        await asyncio.wait_for(task, 10)
    assert len(cs.received("StopTransaction")) == 1


async def test_a_remote_stop_is_durable_before_it_is_answered(
    cs: CentralSystem, tmp_path: Path
) -> None:
    """RemoteStopTransaction is answered Accepted right after ``remote_stop`` returns: by then
    the contactor is open and the stop is on disk, before any task had a chance to run."""
    cfg = resume_config(tmp_path, cs.url)
    async with running(cfg) as d:
        await booted(cs)
        sim(d).plug(1)
        await d.station.swipe("TAG1", None)
        await transaction_id(d)
        await wait_until(lambda: sim(d).view(1).contactor_closed, what="charging")
        c = d.station.connectors[1]
        local_id = c.tx.local_id
        _hang_meter(d, 1)
        _crash(d)
        assert d.station.remote_stop(c.tx.remote_id)
        assert not sim(d).view(1).contactor_closed
        tx = d.station.store.transaction(local_id)
        assert tx is not None and tx.stop_requested and tx.stop_reason == "remote"
