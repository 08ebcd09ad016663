"""Charging sessions end to end: what survives a restart, how a card stops a session, and how
faults clear. The real daemon on the simulator against a real Central System on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from csms import CentralSystem, call
from harness import (
    CP_ID,
    booted,
    charge,
    charging_profile,
    resume_config,
    resumed,
    running,
    set_profile,
    sim,
    sim_config,
    status,
    wait_status,
    wait_until,
)

from ocppd import ctl

pytestmark = pytest.mark.asyncio


def card(d: Any, id_tag: str) -> None:
    """Present a card on the charger's reader: no connector is named (the reader path)."""
    readers = d.station.hw.readers
    assert readers, "the simulator has a card reader"
    readers[0].present(id_tag)


def resume_cfg(tmp_path: Path, url: str, **ocpp: Any) -> Any:
    return resume_config(tmp_path, url, ocpp={"StopTransactionOnInvalidId": False, **ocpp})


# --- what decides the contactor comes back from storage (power_loss = "resume") ----------------


@pytest.mark.parametrize("answer", ["Invalid", "Blocked", "Expired"])
async def test_rejected_id_tag_stays_suspended_after_a_restart(
    cs: CentralSystem, tmp_path: Path, answer: str
) -> None:
    cs.behaviour.start_tag_status = {"BAD": answer}  # Authorize says Accepted, the start not
    cfg = resume_cfg(tmp_path, cs.url)
    async with running(cfg) as d:
        await booted(cs)
        sim(d).plug(1)
        await d.station.swipe("BAD", None)
        await wait_status(cs, "SuspendedEVSE")
        assert not sim(d).view(1).contactor_closed
    async with running(cfg, plugged=(1,)) as d:
        c = d.station.connectors[1]
        assert c.tx is not None, "the transaction was resumed"
        assert c.tx.id_tag == "BAD"
        assert not c.contactor_closed and not sim(d).view(1).contactor_closed
        await wait_status(cs, "SuspendedEVSE", count=2)
        assert status(d) == "suspended_evse"
    assert cs.received("StopTransaction") == []


async def test_energy_cap_reached_before_a_restart_stays_reached(
    cs: CentralSystem, tmp_path: Path
) -> None:
    """MaxEnergyOnInvalidId (§9.1.15) used up before the restart is not granted again."""
    cs.behaviour.start_tag_status = {"BAD": "Invalid"}
    cfg = resume_cfg(tmp_path, cs.url, MaxEnergyOnInvalidId=5, MeterValueSampleInterval=1)
    cfg = dataclasses.replace(cfg, sim=dataclasses.replace(cfg.sim, time_factor=100.0))
    async with running(cfg) as d:
        await booted(cs)
        await charge(cs, d, "BAD")  # within the cap: energy flows
        await wait_status(cs, "SuspendedEVSE")  # the cap is used up
        assert d.station.connectors[1].invalid_id
    async with running(cfg, plugged=(1,)) as d:
        c = d.station.connectors[1]
        assert c.tx is not None and c.invalid_id
        assert not sim(d).view(1).contactor_closed


async def test_parent_id_tag_of_a_resumed_session_still_stops_it(
    cs: CentralSystem, tmp_path: Path
) -> None:
    cs.behaviour.parent_of = {"KID1": "FAMILY", "KID2": "FAMILY"}
    async with resumed(cs, resume_cfg(tmp_path, cs.url), "KID1") as d:
        await wait_until(lambda: d.station.connectors[1].contactor_closed, what="resumed")
        await wait_until(lambda: d.cp.online, what="registered again")
        card(d, "KID2")
        stop = (await cs.wait_for("StopTransaction"))[0]
        assert stop["reason"] == "Local" and stop["idTag"] == "KID2"


async def test_a_resumed_session_never_sees_more_than_its_stored_limit(
    cs: CentralSystem, tmp_path: Path
) -> None:
    """The charging profile is a limit like any other: it applies before the contactor closes."""
    from ocppd.hw.sim import build_sim_hardware

    cfg = resume_cfg(tmp_path, cs.url)
    async with running(cfg) as d:
        await booted(cs)
        await set_profile(cs, 0, charging_profile(5, "ChargePointMaxProfile", 10))
        await charge(cs, d)
        assert sim(d).view(1).offer_a == 10
    hw = build_sim_hardware(cfg)
    offers: list[float] = []
    set_offer = hw.board.set_offer

    def recording(connector_id: int, current_a: float | None) -> None:
        if current_a is not None:
            offers.append(current_a)
        set_offer(connector_id, current_a)

    hw.board.set_offer = recording  # type: ignore[method-assign]
    async with running(cfg, plugged=(1,), hardware=hw, check_exit=True) as d:
        await wait_until(lambda: d.station.connectors[1].contactor_closed,
                         what="resumed charging")
        assert offers and max(offers) <= 10


async def test_availability_scheduled_during_a_session_applies_after_a_power_loss(
    cs: CentralSystem, tmp_path: Path
) -> None:
    cfg = sim_config(tmp_path, cs.url)  # power_loss = "stop"
    async with running(cfg) as d:
        await booted(cs)
        await charge(cs, d)
        conf = await cs.call(
            CP_ID, call.ChangeAvailability(connector_id=1, type="Inoperative")
        )
        assert conf.status == "Scheduled"
        d.station.close = _no_stop(d.station.close)  # a power cut: nothing is stopped
    async with running(cfg) as d:
        stop = (await cs.wait_for("StopTransaction"))[0]
        assert stop["reason"] == "PowerLoss"
        await wait_status(cs, "Unavailable")
        assert status(d) == "unavailable"


def _no_stop(close: Any) -> Any:
    async def closing(*, stop_transactions: Any) -> None:
        await close(stop_transactions=None)

    return closing


# --- TC_069: a card on the reader stops the running session -------------------------------------


async def test_tc_069_same_card_on_the_reader_stops_the_session(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url, connectors=2)) as d:
        await booted(cs, 2)
        sim(d).plug(1)
        card(d, "TAG1")
        await wait_status(cs, "Charging")
        card(d, "tag1")  # idTags compare case-insensitively
        stop = (await cs.wait_for("StopTransaction"))[0]
        assert stop["reason"] == "Local"
        assert len(cs.received("StartTransaction")) == 1


async def test_tc_069_card_with_the_same_parent_on_the_reader_stops_the_session(
    cs: CentralSystem, tmp_path: Path
) -> None:
    cs.behaviour.parent_of = {"KID1": "FAMILY", "KID2": "FAMILY"}
    async with running(sim_config(tmp_path, cs.url, connectors=2)) as d:
        await booted(cs, 2)
        sim(d).plug(1)
        sim(d).plug(2)  # a free, plugged connector: the card must not start a session there
        card(d, "KID1")
        await wait_status(cs, "Charging", cid=1)
        card(d, "KID2")
        stop = (await cs.wait_for("StopTransaction"))[0]
        assert stop["reason"] == "Local" and stop["idTag"] == "KID2"
        assert len(cs.received("StartTransaction")) == 1
        assert d.station.connectors[2].tx is None


async def test_a_card_with_another_parent_starts_its_own_session(
    cs: CentralSystem, tmp_path: Path
) -> None:
    cs.behaviour.parent_of = {"KID1": "FAMILY", "GUEST": "OTHER"}
    async with running(sim_config(tmp_path, cs.url, connectors=2)) as d:
        await booted(cs, 2)
        sim(d).plug(1)
        card(d, "KID1")
        await wait_status(cs, "Charging", cid=1)
        sim(d).plug(2)
        card(d, "GUEST")
        await wait_status(cs, "Charging", cid=2)
        assert cs.received("StopTransaction") == []


async def test_ocppctl_swipe_without_connector_stops_by_parent(
    cs: CentralSystem, tmp_path: Path
) -> None:
    cs.behaviour.parent_of = {"KID1": "FAMILY", "KID2": "FAMILY"}
    cfg = sim_config(tmp_path, cs.url)
    async with running(cfg) as d:
        await booted(cs)
        await charge(cs, d, "KID1")
        answer = await asyncio.to_thread(  # what `ocppctl swipe KID2` sends: no connector
            ctl.call, cfg.control.socket, "swipe", {"id_tag": "KID2"}, timeout_s=10.0
        )
        assert "stopped" in answer
        stop = (await cs.wait_for("StopTransaction"))[0]
        assert stop["idTag"] == "KID2"


# --- faults clear when their cause clears --------------------------------------------------------


async def test_failed_unlock_fault_clears_after_a_successful_unlock(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        sim(d).lock_fails.add(1)
        conf = await cs.call(CP_ID, call.UnlockConnector(connector_id=1))
        assert conf.status == "UnlockFailed"
        await wait_status(cs, "Faulted")
        sim(d).lock_fails.discard(1)
        conf = await cs.call(CP_ID, call.UnlockConnector(connector_id=1))
        assert conf.status == "Unlocked"
        await wait_status(cs, "Available", count=2)


async def test_failed_unlock_fault_clears_when_the_cable_is_replugged(
    cs: CentralSystem, tmp_path: Path
) -> None:
    """Without lock feedback nothing reports the lock freed: unplugging ends the fault."""
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        sim(d).plug(1)
        await wait_status(cs, "Preparing")
        sim(d).lock_fails.add(1)
        conf = await cs.call(CP_ID, call.UnlockConnector(connector_id=1))
        assert conf.status == "UnlockFailed"
        await wait_status(cs, "Faulted")
        sim(d).unplug(1)
        await wait_status(cs, "Available", count=2)
        sim(d).plug(1)
        await wait_status(cs, "Preparing", count=2)
