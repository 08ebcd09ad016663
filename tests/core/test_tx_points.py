"""Where a transaction begins and ends is policy (TxPoints in core/session/state.py): OCPP 1.6
fixes the points, a 2.0.1 adapter configures them from TxStartPoint/TxStopPoint. The session
core honours each, and the energy rule holds whatever they are: no energy without an idTag."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from session_world import START, World, reserve_hold, v16

from ocppd.core.evse import Fault, PilotState
from ocppd.core.model import AuthStatus, Status, StopReason
from ocppd.core.session import derive, machine
from ocppd.core.session.state import (
    ArmTimer,
    Authorized,
    BeginTransaction,
    CancelTimer,
    EndTransaction,
    Event,
    FaultSeen,
    IdTagJudged,
    LimitSet,
    PilotSeen,
    RecordAuthorization,
    Reserved,
    Rules,
    StopRequested,
    TimerFired,
    TimerId,
    TimerKind,
    Tx,
    TxPoint,
    TxPoints,
    TxStarted,
    when_all,
)
from ocppd.ocpp.v16.keys import Keys, V16Policy, standard_keys
from ocppd.storage import Store

A, E = TxPoint.AUTHORIZED, TxPoint.EV_CONNECTED
P, T = TxPoint.POWER_PATH_CLOSED, TxPoint.ENERGY_TRANSFER
V16_END = frozenset({A, E})


def rules(*begin: frozenset[TxPoint], end: frozenset[TxPoint] = V16_END) -> Rules:
    return Rules(connection_timeout_s=30, tx=TxPoints(begin=frozenset(begin), end=end))


def world(r: Rules) -> World:
    """Connector 2 has no lock actuator (the lock is a rule of its own, test_session.py)."""
    return World(2, r)


def effects_of(w: World, event: Event) -> list[object]:
    """Step with the world's shell (it records starts at once) and return the core's effects
    of this event alone."""
    _, effects = machine.step(w.state, event, w.now, w.rules)
    w.step(event)
    return list(effects)


def card(cid: int = 2, tag: str = "A") -> Authorized:
    return Authorized(connector_id=cid, id_tag=tag, parent_id_tag=None, reservation_id=None)


def pilot(state: PilotState, cid: int = 2) -> PilotSeen:
    return PilotSeen(connector_id=cid, pilot=state)


def begins(effects: list[object]) -> list[BeginTransaction]:
    return [e for e in effects if isinstance(e, BeginTransaction)]


def ends(effects: list[object]) -> list[StopReason]:
    return [e.reason for e in effects if isinstance(e, EndTransaction)]


# --- begin -----------------------------------------------------------------------------------


@pytest.mark.parametrize("card_first", [True, False])
def test_v16_begins_at_idtag_and_cable_whichever_comes_second(card_first: bool) -> None:
    w = world(Rules(tx=v16()))
    first, second = (card(), pilot(PilotState.B)) if card_first else (pilot(PilotState.B), card())
    assert begins(effects_of(w, first)) == []
    assert begins(effects_of(w, second)) == [
        BeginTransaction(connector_id=2, id_tag="A", parent_id_tag=None, reservation_id=None)]


def test_begin_at_ev_connected_starts_at_plug_in_and_gives_energy_only_after_an_idtag() -> None:
    """2.0.1 TxStartPoint=EVConnected: the transaction begins at plug-in, without an idTag;
    the EV asking for power gets nothing until one is authorized (safety)."""
    w = world(rules(when_all(E)))
    assert begins(effects_of(w, pilot(PilotState.B))) == [
        BeginTransaction(connector_id=2, id_tag=None, parent_id_tag=None, reservation_id=None)]
    w.step(pilot(PilotState.C))
    c = w.state.connector(2)
    assert c.tx is not None and c.tx.id_tag is None
    assert not c.contactor_closed and c.offer_a is None
    assert c.status is Status.SUSPENDED_EVSE
    effects = effects_of(w, card())
    assert RecordAuthorization(connector_id=2, tx_key=c.tx.tx_key, id_tag="A",
                               parent_id_tag=None) in effects
    c = w.state.connector(2)
    assert c.tx is not None and c.tx.id_tag == "A"
    assert c.contactor_closed and c.offer_a == 32.0
    assert w.storage.txs[2].tx.id_tag == "A"  # the shell recorded it


def test_begin_at_ev_connected_once_per_connection() -> None:
    """A transaction that ended with the EV still plugged does not begin again by itself, nor
    does a start the shell could not record (no TxStarted): a new plug-in is a new chance."""
    w = world(rules(when_all(E)))
    w.step(pilot(PilotState.B))
    w.step(card())
    w.step(StopRequested(connector_id=2, reason=StopReason.LOCAL))
    assert w.state.connector(2).tx is None and w.state.connector(2).finishing
    assert begins(effects_of(w, LimitSet(connector_id=2, limit_a=16.0))) == []
    w.step(pilot(PilotState.A))
    # the shell fails to record the next start: the core asked once and waits for a new plug
    state, effects = machine.step(w.state, pilot(PilotState.B), w.now, w.rules)
    assert len(begins(list(effects))) == 1
    state, effects = machine.step(state, pilot(PilotState.C), w.now, w.rules)
    assert begins(list(effects)) == []


def test_begin_at_ev_connected_leaves_a_reserved_connector_to_its_idtag() -> None:
    w = world(rules(when_all(E)))
    w.step(Reserved(connector_id=2, hold=reserve_hold(5, "A", START, 600)))
    assert begins(effects_of(w, pilot(PilotState.B))) == []
    effects = effects_of(w, Authorized(connector_id=2, id_tag="A", parent_id_tag=None,
                                       reservation_id=5))
    assert begins(effects) == [
        BeginTransaction(connector_id=2, id_tag="A", parent_id_tag=None, reservation_id=5)]


def test_begin_at_authorized_starts_at_the_card_before_the_ev() -> None:
    """2.0.1 TxStartPoint=Authorized: the transaction begins at the swipe; the EV must come
    within ConnectionTimeOut (2.0.1 EVConnectionTimeOut), else the transaction ends."""
    w = world(rules(when_all(A)))
    effects = effects_of(w, card())
    assert begins(effects) == [
        BeginTransaction(connector_id=2, id_tag="A", parent_id_tag=None, reservation_id=None)]
    c = w.state.connector(2)
    assert c.tx is not None and c.stop is None, "begun before the EV is not an EV that left"
    timer = TimerId(kind=TimerKind.CONNECTION, key=2)
    assert w.state.connector(2).connect_by == START + timedelta(seconds=30)
    effects = effects_of(w, pilot(PilotState.C))
    assert CancelTimer(timer=timer) in effects
    assert w.state.connector(2).contactor_closed


def test_begin_at_authorized_ends_when_the_ev_does_not_come() -> None:
    w = world(rules(when_all(A)))
    state, effects = machine.step(w.state, card(), w.now, w.rules)
    assert begins(list(effects)) != []
    state, effects = machine.step(state, TxStarted(connector_id=2, tx=tx("t1")), w.now,
                                  w.rules)
    timer = TimerId(kind=TimerKind.CONNECTION, key=2)
    assert ArmTimer(timer=timer, at=START + timedelta(seconds=30)) in effects  # once recorded
    w.step(card())
    w.now += timedelta(seconds=30)
    effects = effects_of(w, TimerFired(timer=timer))
    assert ends(effects) == [StopReason.TIMEOUT]
    assert w.state.connector(2).tx is None


def tx(key: str) -> Tx:
    return Tx(tx_key=key, id_tag="A", parent_id_tag=None, meter_start_wh=0, started_at=START)


def _wanted(w: World) -> dict[TimerId, object]:
    return dict(derive.wanted_timers(w.state))


def test_begin_at_power_path_closed_waits_for_the_ev_to_ask_for_power() -> None:
    """2.0.1 TxStartPoint=PowerPathClosed: idTag and cable are not enough; the transaction
    begins when everything the contactor needs holds, and is recorded before it closes."""
    w = world(rules(when_all(P)))
    w.step(pilot(PilotState.B))
    assert begins(effects_of(w, card())) == []
    c = w.state.connector(2)
    assert c.waiting is not None and c.status is Status.PREPARING
    assert TimerId(kind=TimerKind.CONNECTION, key=2) not in _wanted(w), "the EV is here"
    w.step(FaultSeen(connector_id=2, fault=Fault.OVER_TEMPERATURE, active=True))
    assert begins(effects_of(w, pilot(PilotState.C))) == [], "no begin while faulted"
    _, effects = machine.step(w.state, FaultSeen(connector_id=2, fault=Fault.OVER_TEMPERATURE,
                                                 active=False), w.now, w.rules)
    assert begins(list(effects)) != []
    assert not w.state.connector(2).contactor_closed
    w.step(FaultSeen(connector_id=2, fault=Fault.OVER_TEMPERATURE, active=False))
    assert w.state.connector(2).tx is not None and w.state.connector(2).contactor_closed


def test_either_of_two_begin_sets_begins_at_the_first() -> None:
    """2.0.1 TxStartPoint=EVConnected,Authorized: whichever comes first."""
    w = world(rules(when_all(E), when_all(A)))
    assert begins(effects_of(w, card())) != []
    w = world(rules(when_all(E), when_all(A)))
    assert begins(effects_of(w, pilot(PilotState.B))) != []


# --- end -------------------------------------------------------------------------------------


def charging(r: Rules) -> World:
    w = world(r)
    w.step(pilot(PilotState.C))
    w.step(card())
    assert w.state.connector(2).contactor_closed
    return w


@pytest.mark.parametrize("ev_connected", [True, False])
def test_end_at_ev_disconnected_only_if_configured(ev_connected: bool) -> None:
    end = frozenset({A, E}) if ev_connected else frozenset({A})
    w = charging(rules(when_all(A, E), end=end))
    effects = effects_of(w, pilot(PilotState.A))
    assert ends(effects) == ([StopReason.EV_DISCONNECTED] if ev_connected else [])


@pytest.mark.parametrize("authorized", [True, False])
def test_end_at_deauthorized_only_if_configured(authorized: bool) -> None:
    """A refused idTag ends the transaction if AUTHORIZED is an end point; otherwise the
    transaction stays, without energy."""
    end = frozenset({A, E}) if authorized else frozenset({E})
    w = charging(rules(when_all(A, E), end=end))
    effects = effects_of(w, IdTagJudged(connector_id=2, status=AuthStatus.INVALID))
    assert ends(effects) == ([StopReason.DEAUTHORIZED] if authorized else [])
    c = w.state.connector(2)
    assert not c.contactor_closed
    if not authorized:
        assert c.tx is not None and c.status is Status.SUSPENDED_EVSE


@pytest.mark.parametrize("end", [frozenset({E}), frozenset({P}), frozenset({T})])
def test_end_when_the_ev_stops_taking_energy_if_configured(end: frozenset[TxPoint]) -> None:
    """The EV goes from C to B (battery full): the contactor opens. With POWER_PATH_CLOSED or
    ENERGY_TRANSFER an end point, that ends the transaction; otherwise it is SuspendedEV."""
    w = charging(rules(when_all(A, E), end=end))
    effects = effects_of(w, pilot(PilotState.B))
    assert ends(effects) == ([] if end == {E} else [StopReason.EV_STOPPED])
    assert not w.state.connector(2).contactor_closed


def test_end_at_power_path_opened_also_when_the_charger_opens_it() -> None:
    """A limit below 6 A opens the contactor while the EV still asks: the power path opened
    (POWER_PATH_CLOSED ends), energy transfer stopped by the charger, not by the EV
    (ENERGY_TRANSFER does not end)."""
    w = charging(rules(when_all(A, E), end=frozenset({P})))
    assert ends(effects_of(w, LimitSet(connector_id=2, limit_a=0.0))) == [StopReason.OTHER]
    w = charging(rules(when_all(A, E), end=frozenset({T})))
    assert ends(effects_of(w, LimitSet(connector_id=2, limit_a=0.0))) == []
    assert w.state.connector(2).tx is not None


def test_power_path_end_needs_the_path_closed_first() -> None:
    """A transaction whose EV never asked for power has not reached the point: it does not
    end at it."""
    w = world(rules(when_all(A, E), end=frozenset({P, T})))
    w.step(pilot(PilotState.B))
    w.step(card())
    w.step(LimitSet(connector_id=2, limit_a=0.0))
    w.step(pilot(PilotState.C))
    assert w.state.connector(2).tx is not None and w.state.connector(2).stop is None


# --- the 1.6 adapter supplies the fixed points ---------------------------------------------


@pytest.mark.parametrize("on_unplug", [True, False])
@pytest.mark.parametrize("on_invalid", [True, False])
def test_the_v16_policy_fixes_begin_and_maps_its_stop_keys(
    tmp_path: Path, on_unplug: bool, on_invalid: bool
) -> None:
    store = Store.open(tmp_path / "k.db")
    try:
        keys = Keys(store, standard_keys(connectors=1), {
            "StopTransactionOnEVSideDisconnect": on_unplug,
            "StopTransactionOnInvalidId": on_invalid})
        assert V16Policy(keys).tx_points == v16(stop_on_ev_disconnect=on_unplug,
                                                stop_on_invalid_id=on_invalid)
        assert V16Policy(keys).tx_points.begin == {when_all(A, E)}
    finally:
        store.close()
