"""The simulated EV and pilot: what the station sees when a car is plugged and offered current."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from simkit import Rig

from ocppd.hw.base import Fault, FaultChanged, PilotChanged, PilotState

A, B, C, D, E, F = (PilotState(s) for s in "ABCDEF")


async def test_start_reports_a_for_every_connector(make_rig: Callable[..., Any]) -> None:
    board, rec, _ = await make_rig(start=False)
    await board.start(rec)
    await rec.settle()
    assert rec.events == [
        PilotChanged(connector_id=1, state=A),
        PilotChanged(connector_id=2, state=A),
    ]


async def test_ev_plugged_before_start_is_reported_as_b(make_rig: Callable[..., Any]) -> None:
    board, rec, _ = await make_rig(start=False)
    board.plug(2)
    await rec.settle()
    assert rec.events == []  # nothing is sent before start()
    await board.start(rec)
    await rec.settle()
    assert PilotChanged(connector_id=2, state=B) in rec.events
    assert PilotChanged(connector_id=1, state=A) in rec.events


async def test_events_arrive_on_the_loop_after_the_call_returns(rig: Rig) -> None:
    board, rec, _ = rig
    board.plug(1)
    # Not delivered inside plug(): the core may call the board while handling an event.
    assert rec.events[-1] == PilotChanged(connector_id=2, state=A)
    assert await rec.pilot(1) is B
    assert set(rec.loops) == {asyncio.get_running_loop()}


async def test_plug_reports_b_and_unplug_reports_a(rig: Rig) -> None:
    board, rec, _ = rig
    board.plug(1)
    assert await rec.pilot(1) is B
    board.unplug(1)
    assert await rec.pilot(1) is A
    assert board.view(1).ev_state is A


async def test_ev_asks_for_power_only_when_offered_at_least_six_amps(rig: Rig) -> None:
    board, rec, _ = rig
    board.plug(1)
    assert await rec.pilot(1) is B
    board.set_offer(1, 5.9)  # IEC 61851-1: below 6 A the EV must not charge
    await rec.settle()
    assert board.view(1).ev_state is B and rec.pending() == []
    board.set_offer(1, 6.0)
    assert await rec.pilot(1) is C


@pytest.mark.parametrize("pause", [0.0, None])
async def test_ev_returns_to_b_when_the_offer_is_withdrawn(rig: Rig, pause: float | None) -> None:
    board, rec, _ = rig
    board.plug(1)
    board.set_offer(1, 16.0)
    assert [await rec.pilot(1), await rec.pilot(1)] == [B, C]
    board.set_offer(1, pause)
    assert await rec.pilot(1) is B
    board.set_offer(1, 10.0)
    assert await rec.pilot(1) is C


async def test_plug_while_offered_passes_through_b_to_c(rig: Rig) -> None:
    board, rec, _ = rig
    board.set_offer(2, 16.0)
    board.plug(2)
    assert [await rec.pilot(2), await rec.pilot(2)] == [B, C]


async def test_ev_held_in_b_ignores_the_offer_until_released(rig: Rig) -> None:
    board, rec, _ = rig
    board.plug(1)
    board.set_offer(1, 16.0)
    assert [await rec.pilot(1), await rec.pilot(1)] == [B, C]
    board.set_ev_state(1, B)
    assert await rec.pilot(1) is B
    board.set_offer(1, 20.0)
    await rec.settle()
    assert board.view(1).ev_state is B and rec.pending() == []
    board.set_ev_state(1, C)
    assert await rec.pilot(1) is C


async def test_ev_state_on_an_empty_connector_plugs_first(rig: Rig) -> None:
    board, rec, _ = rig
    board.set_ev_state(1, C)  # IEC 61851-1: A -> C directly is illegal, the EV passes B
    assert [await rec.pilot(1), await rec.pilot(1)] == [B, C]
    board.set_ev_state(1, A)
    assert await rec.pilot(1) is A


async def test_ventilation_request_makes_the_ev_use_d(rig: Rig) -> None:
    board, rec, _ = rig
    board.plug(1)
    board.set_ev_state(1, D)
    assert [await rec.pilot(1), await rec.pilot(1)] == [B, D]
    board.set_offer(1, None)
    assert await rec.pilot(1) is B
    board.set_offer(1, 16.0)
    assert await rec.pilot(1) is D


async def test_pilot_fault_state_sticks_until_changed(rig: Rig) -> None:
    board, rec, _ = rig
    board.plug(1)
    board.set_ev_state(1, F)
    assert [await rec.pilot(1), await rec.pilot(1)] == [B, F]
    board.set_offer(1, 16.0)
    board.set_offer(1, None)
    await rec.settle()
    assert board.view(1).ev_state is F and rec.pending() == []
    board.set_ev_state(1, E)
    assert await rec.pilot(1) is E
    board.unplug(1)
    assert await rec.pilot(1) is A


async def test_pilot_error_withdraws_the_offer_and_the_ev_pauses(rig: Rig) -> None:
    board, rec, _ = rig
    board.plug(1)
    board.set_offer(1, 16.0)
    assert [await rec.pilot(1), await rec.pilot(1)] == [B, C]
    board.set_pilot_error(1)
    assert await rec.pilot(1) is B
    view = board.view(1)
    assert view.pilot_error and view.offer_a is None
    board.set_offer(1, 16.0)  # a new offer replaces the -12 V
    assert await rec.pilot(1) is C
    assert not board.view(1).pilot_error


async def test_connectors_are_independent(rig: Rig) -> None:
    board, rec, _ = rig
    board.plug(2)
    board.set_offer(2, 16.0)
    assert [await rec.pilot(2), await rec.pilot(2)] == [B, C]
    assert board.view(1).ev_state is A


async def test_injected_fault_is_reported_and_cleared(rig: Rig) -> None:
    board, rec, _ = rig
    board.inject_fault(0, Fault.EMERGENCY_STOP, True, "pressed")
    board.inject_fault(1, Fault.GROUND_FAILURE, True)
    board.inject_fault(1, Fault.GROUND_FAILURE, False)
    got = [await rec.next() for _ in range(3)]
    assert got == [
        FaultChanged(connector_id=0, fault=Fault.EMERGENCY_STOP, active=True, detail="pressed"),
        FaultChanged(connector_id=1, fault=Fault.GROUND_FAILURE, active=True),
        FaultChanged(connector_id=1, fault=Fault.GROUND_FAILURE, active=False),
    ]


async def test_socket_lock_moves_unless_told_to_fail(rig: Rig) -> None:
    board, _, _ = rig
    assert board.has_lock(1)
    assert await board.lock(1, True) is True
    assert board.view(1).locked
    board.lock_fails.add(1)
    assert await board.lock(1, False) is False
    assert board.view(1).locked  # the lock did not move
    board.lock_fails.discard(1)
    assert await board.lock(1, False) is True
    assert not board.view(1).locked


async def test_fixed_cable_has_no_lock(make_rig: Callable[..., Any]) -> None:
    board, _, _ = await make_rig(connectors=[{"cable": "fixed"}, {}])
    assert not board.has_lock(1)
    assert board.has_lock(2)
    assert await board.lock(1, True) is False
    assert not board.view(1).locked


async def test_close_opens_contactors_and_stops_events(rig: Rig) -> None:
    board, rec, _ = rig
    board.set_contactor(1, True)
    board.set_contactor(2, True)
    await board.close()
    assert not board.view(1).contactor_closed and not board.view(2).contactor_closed
    board.plug(1)
    await rec.settle()
    assert rec.pending() == []
