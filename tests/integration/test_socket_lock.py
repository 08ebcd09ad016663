"""The socket outlet's cable lock (IEC 61851-1 case B connection): the plug is locked before
the contactor closes and stays locked while the session runs; a lock that fails starts no
transaction (OCTT TC_024) and reports ConnectorLockFailure. The real daemon on the simulator
against a real Central System on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from csms import CentralSystem, call
from harness import (
    CP_ID,
    booted,
    charge,
    resume_config,
    resumed,
    running,
    sim,
    sim_config,
    status,
    wait_status,
    wait_until,
)

from ocppd.app import Daemon
from ocppd.config import Config
from ocppd.hw.base import Hardware
from ocppd.hw.sim import SimBoard, build_sim_hardware
from ocppd.ports import Refused

pytestmark = pytest.mark.asyncio


class ContactorWatch:
    """Wraps the simulated board: every contactor closing is noted with the lock's state then."""

    def __init__(self, board: SimBoard) -> None:
        self.board = board
        self.closes: list[tuple[int, bool]] = []  # (connector, plug locked when it closed)
        self.lock_moves: list[tuple[int, bool]] = []
        set_contactor, lock = board.set_contactor, board.lock

        def recording_contactor(connector_id: int, closed: bool) -> None:
            if closed and not board.view(connector_id).contactor_closed:
                self.closes.append((connector_id, board.view(connector_id).locked))
            set_contactor(connector_id, closed)

        async def recording_lock(connector_id: int, locked: bool) -> bool:
            self.lock_moves.append((connector_id, locked))
            return await lock(connector_id, locked)

        board.set_contactor = recording_contactor  # type: ignore[method-assign]
        board.lock = recording_lock  # type: ignore[method-assign]

    @property
    def closed_unlocked(self) -> list[int]:
        return [cid for cid, locked in self.closes if not locked]


def watch(d: Daemon) -> ContactorWatch:
    return ContactorWatch(sim(d))


async def watched_hardware(
    cfg: Config, *, lock_fails: tuple[int, ...] = (), locked: tuple[int, ...] = ()
) -> tuple[Hardware, ContactorWatch]:
    """A simulator watched from before start-up (a restart that resumes); run it with
    ``running(cfg, hardware=..., check_exit=True)``."""
    hw = build_sim_hardware(cfg)
    board = hw.board
    assert isinstance(board, SimBoard)
    board.lock_fails.update(lock_fails)
    for cid in locked:
        await board.lock(cid, True)  # a motor lock stays where it was when the daemon died
    return hw, ContactorWatch(board)


def resume_cfg(tmp_path: Path, url: str, **ocpp: Any) -> Config:
    return resume_config(tmp_path, url, ocpp=ocpp or None)


def seen(cs: CentralSystem, value: str) -> int:
    return len(
        cs.received("StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == value)
    )


# --- locked before energy, released after -----------------------------------------------------


async def test_plug_is_locked_before_the_contactor_closes_and_released_after(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        w = watch(d)
        await charge(cs, d)
        assert sim(d).view(1).locked, "a running session holds the plug"
        assert w.closes and w.closed_unlocked == []
        await d.station.swipe("TAG1", None)
        await cs.wait_for("StopTransaction")
        await wait_until(lambda: not sim(d).view(1).locked, what="plug released")
        assert w.closed_unlocked == []


@pytest.mark.parametrize("unlock", [True, False])
async def test_ev_side_disconnect_releases_the_plug_only_if_configured(
    cs: CentralSystem, tmp_path: Path, unlock: bool
) -> None:
    """§9.1.35 UnlockConnectorOnEVSideDisconnect: the cable is unplugged at the EV, the
    transaction stops (StopTransactionOnEVSideDisconnect); the socket's lock opens only if the
    key says so."""
    cfg = sim_config(tmp_path, cs.url, ocpp={"UnlockConnectorOnEVSideDisconnect": unlock})
    async with running(cfg) as d:
        await booted(cs)
        await charge(cs, d)
        sim(d).unplug(1)
        await cs.wait_for("StopTransaction")
        await wait_until(lambda: d.station.connectors[1].tx is None, what="stop recorded")
        if unlock:
            await wait_until(lambda: not sim(d).view(1).locked, what="plug released")
        else:
            await wait_status(cs, "Available")
            assert sim(d).view(1).locked, "UnlockConnectorOnEVSideDisconnect=false keeps it"


async def test_waiting_authorization_locks_when_the_ev_is_plugged(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        w = watch(d)
        await d.station.swipe("TAG1", None)  # identification first (TC_004_1)
        await wait_status(cs, "Preparing")
        assert not sim(d).view(1).locked and w.lock_moves == []
        sim(d).plug(1)
        await wait_status(cs, "Charging")
        assert sim(d).view(1).locked
        assert (1, True) in w.lock_moves and w.closed_unlocked == []


async def test_a_fixed_cable_charges_without_any_lock(cs: CentralSystem, tmp_path: Path) -> None:
    async with running(sim_config(tmp_path, cs.url, cable="fixed")) as d:
        await booted(cs)
        w = watch(d)
        await charge(cs, d)
        assert w.closes and not sim(d).view(1).locked


# --- TC_024: a lock that fails starts no transaction -------------------------------------------


async def _remote_start_then_plug(cs: CentralSystem, d: Daemon) -> None:
    conf = await cs.call(CP_ID, call.RemoteStartTransaction(id_tag="TAG1", connector_id=1))
    assert conf.status == "Accepted"
    await wait_until(lambda: d.station.connectors[1].waiting is not None, what="authorized")
    sim(d).plug(1)


async def _plug_then_card(cs: CentralSystem, d: Daemon) -> None:
    sim(d).plug(1)
    await wait_status(cs, "Preparing")
    d.station.hw.readers[0].present("TAG1")


@pytest.mark.parametrize("begin", [_remote_start_then_plug, _plug_then_card])
async def test_lock_failure_faults_and_starts_no_transaction(
    cs: CentralSystem, tmp_path: Path, begin: Any
) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        w = watch(d)
        sim(d).lock_fails.add(1)
        await begin(cs, d)
        faulted = await cs.wait_for(
            "StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "Faulted"
        )
        assert faulted[0]["errorCode"] == "ConnectorLockFailure"
        assert w.closes == [] and not sim(d).view(1).contactor_closed
        assert d.station.connectors[1].tx is None
        sim(d).lock_fails.discard(1)
        sim(d).unplug(1)  # the cable leaves the socket: the fault's cause is gone
        await wait_status(cs, "Available", count=2)
        assert cs.received("StartTransaction") == []
        assert w.closes == []


async def test_a_lock_actuator_error_is_a_lock_failure_not_a_stuck_connector(
    cs: CentralSystem, tmp_path: Path
) -> None:
    """A driver whose lock move raises (HardwareError, e.g. its bus is gone) fails the move
    like one that reports failure: ConnectorLockFailure, no transaction; and once the cable
    has left and the actuator works again, the next session locks and charges."""
    from ocppd.errors import HardwareError

    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        board = sim(d)
        works = board.lock

        async def broken(connector_id: int, locked: bool) -> bool:
            raise HardwareError("lock actuator: no answer on the bus")

        board.lock = broken  # type: ignore[method-assign]
        board.plug(1)
        await wait_status(cs, "Preparing")
        with pytest.raises(Refused, match="could not be locked"):
            await d.station.swipe("TAG1", 1)
        faulted = await cs.wait_for(
            "StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "Faulted")
        assert faulted[0]["errorCode"] == "ConnectorLockFailure"
        assert d.station.connectors[1].tx is None and not board.view(1).contactor_closed
        board.lock = works  # type: ignore[method-assign]
        board.unplug(1)
        await wait_status(cs, "Available", count=2)
        await charge(cs, d, "TAG1")
        assert board.view(1).locked


# --- a resumed session (power_loss = "resume") locks again before its first ampere -------------


async def test_resumed_session_locks_the_plug_before_the_contactor_closes(
    cs: CentralSystem, tmp_path: Path
) -> None:
    cfg = resume_cfg(tmp_path, cs.url)
    hw, w = await watched_hardware(cfg)
    async with resumed(cs, cfg, hardware=hw, check_exit=True) as d:
        await wait_until(lambda: d.station.connectors[1].contactor_closed, what="resumed")
        assert sim(d).view(1).locked
        assert w.closes and w.closed_unlocked == []


async def test_resumed_session_whose_lock_fails_stays_suspended_until_it_locks(
    cs: CentralSystem, tmp_path: Path
) -> None:
    # The transaction is kept when the EV leaves, so the replug is what retries the lock.
    cfg = resume_cfg(tmp_path, cs.url, StopTransactionOnEVSideDisconnect=False)
    hw, w = await watched_hardware(cfg, lock_fails=(1,))
    async with resumed(cs, cfg, hardware=hw, check_exit=True) as d:
        await wait_status(cs, "Faulted")
        faulted = cs.received(
            "StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "Faulted"
        )
        assert faulted[-1]["errorCode"] == "ConnectorLockFailure"
        c = d.station.connectors[1]
        assert c.tx is not None, "the transaction is kept, suspended"
        assert w.closes == [] and status(d) == "faulted"
        sim(d).lock_fails.discard(1)
        sim(d).unplug(1)
        await wait_status(cs, "SuspendedEV", count=seen(cs, "SuspendedEV") + 1)
        charging = seen(cs, "Charging")
        sim(d).plug(1)
        await wait_status(cs, "Charging", count=charging + 1)
        assert w.closes and w.closed_unlocked == []
    assert cs.received("StopTransaction") == []


async def test_a_session_ended_by_a_power_cut_releases_the_plug_at_start_up(
    cs: CentralSystem, tmp_path: Path
) -> None:
    cfg = sim_config(tmp_path, cs.url)  # power_loss = "stop"
    async with running(cfg) as d:
        await booted(cs)
        await charge(cs, d)
        close = d.station.close

        async def power_cut(*, stop_transactions: Any) -> None:
            await close(stop_transactions=None)  # nothing is stopped

        d.station.close = power_cut
    hw, w = await watched_hardware(cfg, locked=(1,))
    async with running(cfg, plugged=(1,), hardware=hw, check_exit=True) as d:
        stop = (await cs.wait_for("StopTransaction"))[0]
        assert stop["reason"] == "PowerLoss"
        await wait_until(lambda: not sim(d).view(1).locked, what="plug released")
        assert w.closes == []
