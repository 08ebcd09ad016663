"""The session core's rules, one by one, without an event loop (ocppd/core/session)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from session_world import START, World, reserve_hold, v16

from ocppd.core.evse import Fault, PilotState
from ocppd.core.model import AuthStatus, Status, StopReason
from ocppd.core.session import derive, machine
from ocppd.core.session.restore import rebuild
from ocppd.core.session.state import (
    ArmTimer,
    Authorized,
    AvailabilitySet,
    BeginTransaction,
    CancelTimer,
    ConnectorSpec,
    EndPoint,
    EndTransaction,
    EnergyRead,
    FaultSeen,
    ForgetReservation,
    IdTagJudged,
    IllegalEvent,
    LockMoved,
    MoveLock,
    Offer,
    PilotSeen,
    RecordStopRequest,
    Reserved,
    Rules,
    SetContactor,
    Started,
    StopRequested,
    TimerFired,
    TimerId,
    TimerKind,
    Tx,
    TxEnded,
    TxPoint,
    TxPoints,
    TxStarted,
    WaitCancelled,
    initial,
    when_all,
)

RULES = Rules(tx=v16(stop_on_invalid_id=False))


def step(w: World, event: object) -> tuple[object, ...]:
    """Step the core alone (no shell), returning its effects."""
    w.state, effects = machine.step(w.state, event, w.now, w.rules)  # type: ignore[arg-type]
    return effects


def charging(rules: Rules = RULES) -> World:
    w = World(1, rules)
    w.step(PilotSeen(connector_id=1, pilot=PilotState.C))
    w.step(Authorized(connector_id=1, id_tag="A", parent_id_tag=None, reservation_id=None))
    assert w.state.connector(1).contactor_closed
    return w


def test_plugged_ev_and_accepted_card_lock_then_record_a_start_then_energise() -> None:
    w = World(1, RULES)  # connector 1 is a socket with a lock
    w.step(PilotSeen(connector_id=1, pilot=PilotState.C))
    effects = step(w, Authorized(connector_id=1, id_tag="A", parent_id_tag="P",
                                 reservation_id=None))
    assert effects == (MoveLock(connector_id=1, locked=True),)  # IEC 61851-1 case B first
    effects = step(w, LockMoved(connector_id=1, locked=True, ok=True))
    assert effects == (BeginTransaction(connector_id=1, id_tag="A", parent_id_tag="P",
                                        reservation_id=None),)
    assert not w.state.connector(1).contactor_closed  # nothing before the start is recorded
    tx = Tx(tx_key="t1", id_tag="A", parent_id_tag="P", meter_start_wh=0, started_at=START)
    effects = step(w, TxStarted(connector_id=1, tx=tx))
    assert effects[:2] == (Offer(connector_id=1, current_a=32.0),
                           SetContactor(connector_id=1, closed=True))  # offer, then close


def test_card_first_waits_for_the_ev_and_times_out() -> None:
    w = World(1, Rules(connection_timeout_s=30))
    effects = step(w, Authorized(connector_id=1, id_tag="A", parent_id_tag=None,
                                 reservation_id=None))
    timer = TimerId(kind=TimerKind.CONNECTION, key=1)
    assert ArmTimer(timer=timer, at=START + timedelta(seconds=30)) in effects
    assert w.state.connector(1).status is Status.PREPARING
    w.now += timedelta(seconds=10)  # fired early (clock set back): armed again, still waiting
    assert step(w, TimerFired(timer=timer)) == (
        ArmTimer(timer=timer, at=START + timedelta(seconds=30)),)
    w.now += timedelta(seconds=20)
    effects = step(w, TimerFired(timer=timer))
    assert w.state.connector(1).waiting is None
    assert w.state.connector(1).status is Status.AVAILABLE


def test_plugging_in_within_the_timeout_starts_and_cancels_the_timer() -> None:
    w = World(2, RULES)  # connector 2: no lock to move first
    step(w, Authorized(connector_id=2, id_tag="A", parent_id_tag=None, reservation_id=None))
    effects = step(w, PilotSeen(connector_id=2, pilot=PilotState.B))
    assert CancelTimer(timer=TimerId(kind=TimerKind.CONNECTION, key=2)) in effects
    assert effects[-1] == BeginTransaction(connector_id=2, id_tag="A", parent_id_tag=None,
                                           reservation_id=None)


def test_illegal_events_raise_at_once() -> None:
    w = World(1, RULES)
    with pytest.raises(IllegalEvent):
        step(w, TxEnded(connector_id=1))
    with pytest.raises(IllegalEvent):
        step(w, WaitCancelled(connector_id=1))
    with pytest.raises(IllegalEvent):
        step(w, StopRequested(connector_id=1, reason=StopReason.LOCAL))
    with pytest.raises(IllegalEvent):
        step(w, PilotSeen(connector_id=9, pilot=PilotState.B))
    w = charging()
    with pytest.raises(IllegalEvent):  # busy
        step(w, Authorized(connector_id=1, id_tag="B", parent_id_tag=None, reservation_id=None))


def test_unplugging_opens_first_then_records_the_stop_and_unlocks() -> None:
    w = charging(Rules(tx=v16(stop_on_ev_disconnect=True)))
    effects = step(w, PilotSeen(connector_id=1, pilot=PilotState.A))
    assert effects[0] == SetContactor(connector_id=1, closed=False)
    tx_key = w.state.connector(1).tx.tx_key  # type: ignore[union-attr]
    assert effects[-1] == EndTransaction(connector_id=1, tx_key=tx_key,
                                         reason=StopReason.EV_DISCONNECTED, stop_id_tag=None)
    assert MoveLock(connector_id=1, locked=False) in step(w, TxEnded(connector_id=1))


def test_ev_disconnect_without_stop_keeps_the_transaction_suspended() -> None:
    w = charging(Rules(tx=v16(stop_on_ev_disconnect=False)))
    step(w, PilotSeen(connector_id=1, pilot=PilotState.A))
    c = w.state.connector(1)
    assert c.tx is not None and c.status is Status.SUSPENDED_EV and not c.contactor_closed


@pytest.mark.parametrize("fault", [Fault.EMERGENCY_STOP, Fault.GROUND_FAILURE])
def test_a_stopping_fault_ends_the_transaction(fault: Fault) -> None:
    w = charging()
    effects = step(w, FaultSeen(connector_id=0, fault=fault, active=True))
    assert effects[0] == SetContactor(connector_id=1, closed=False)
    ends = [e for e in effects if isinstance(e, EndTransaction)]
    assert [e.reason for e in ends] == [
        StopReason.EMERGENCY_STOP if fault is Fault.EMERGENCY_STOP else StopReason.OTHER]


def test_a_refused_id_tag_stops_suspends_or_allows_up_to_the_cap() -> None:
    w = charging(Rules(tx=v16(stop_on_invalid_id=True)))
    effects = step(w, IdTagJudged(connector_id=1, status=AuthStatus.INVALID))
    assert any(isinstance(e, EndTransaction) and e.reason is StopReason.DEAUTHORIZED
               for e in effects)
    w = charging(Rules(tx=v16(stop_on_invalid_id=False)))
    step(w, IdTagJudged(connector_id=1, status=AuthStatus.BLOCKED))
    c = w.state.connector(1)
    assert c.invalid_id and c.offer_a == 0 and c.status is Status.SUSPENDED_EVSE
    w = charging(Rules(tx=v16(stop_on_invalid_id=False), max_energy_on_invalid_id_wh=500))
    w.step(IdTagJudged(connector_id=1, status=AuthStatus.INVALID))
    assert w.state.connector(1).contactor_closed  # below MaxEnergyOnInvalidId
    w.step(EnergyRead(connector_id=1, energy_wh=1000.0 + 499))
    assert w.state.connector(1).contactor_closed
    w.step(EnergyRead(connector_id=1, energy_wh=1000.0 + 500))
    assert not w.state.connector(1).contactor_closed and w.state.connector(1).invalid_id


def test_a_reservation_holds_the_connector_until_it_expires() -> None:
    w = World(1, RULES)
    hold = reserve_hold(7, "A", START, 60)
    effects = step(w, Reserved(connector_id=1, hold=hold))
    timer = TimerId(kind=TimerKind.RESERVATION, key=7)
    assert ArmTimer(timer=timer, at=hold.expiry) in effects
    assert w.state.connector(1).status is Status.RESERVED
    assert not derive.reserved_for(w.state.connector(1), "B", None)
    assert derive.pick_free(w.state, "B", None) is None
    assert derive.pick_free(w.state, "a", None) == 1  # idTags compare case-insensitively
    w.now = hold.expiry
    effects = step(w, TimerFired(timer=timer))
    assert ForgetReservation(reservation_id=7, expired=True) in effects
    assert w.state.connector(1).status is Status.AVAILABLE


def test_the_same_reservation_id_replaces_and_re_times() -> None:
    w = World(2, RULES)
    step(w, Reserved(connector_id=1, hold=reserve_hold(7, "A", START, 60)))
    later = reserve_hold(7, "A", START, 600)
    effects = step(w, Reserved(connector_id=2, hold=later))
    assert w.state.connector(1).hold is None and w.state.connector(2).hold == later
    assert effects.count(ArmTimer(timer=TimerId(kind=TimerKind.RESERVATION, key=7),
                                  at=later.expiry)) == 1


def test_unavailable_during_a_transaction_is_scheduled_until_it_ends() -> None:
    w = charging()
    w.step(AvailabilitySet(connector_id=1, operative=False))
    assert w.state.connector(1).scheduled_operative is False
    assert w.state.connector(1).contactor_closed  # the running session goes on
    w.step(StopRequested(connector_id=1, reason=StopReason.LOCAL))
    c = w.state.connector(1)
    assert not c.operative and c.scheduled_operative is None
    assert w.storage.availability[1] == (False, None)


def test_nothing_is_energised_before_start_up_is_over() -> None:
    specs = [ConnectorSpec(connector_id=1, evse_id=1, max_current_a=16.0)]
    state = initial(specs)
    tx = Tx(tx_key="9", id_tag="A", parent_id_tag=None, meter_start_wh=0, started_at=START)
    for event in (PilotSeen(connector_id=1, pilot=PilotState.C), TxStarted(connector_id=1, tx=tx)):
        state, effects = machine.step(state, event, START, RULES)
        assert not any(isinstance(e, SetContactor | Offer) for e in effects)
    state, effects = machine.step(state, Started(), START, Rules(resume_after_power_loss=True))
    assert SetContactor(connector_id=1, closed=True) in effects


def test_a_transaction_left_open_without_resume_ends_at_its_last_record() -> None:
    w = charging()
    restarted = w.restarted()  # resume_after_power_loss is False in RULES
    assert restarted.state.connector(1).tx is None
    assert restarted.storage.txs == {}
    assert restarted.state.connector(1).status is Status.FINISHING  # EV still plugged


def test_an_evse_groups_its_connectors() -> None:
    specs = [ConnectorSpec(connector_id=1, evse_id=1, max_current_a=32.0),
             ConnectorSpec(connector_id=2, evse_id=1, max_current_a=32.0),
             ConnectorSpec(connector_id=3, evse_id=2, max_current_a=32.0)]
    state = initial(specs)
    assert [c.connector_id for c in state.evse_connectors(1)] == [1, 2]
    assert [c.connector_id for c in state.evse_connectors(2)] == [3]


def test_a_socket_outlet_closes_only_on_a_plug_confirmed_locked() -> None:
    """IEC 61851-1 case B; a failed lock is ConnectorLockFailure (Faulted), cleared by the cable
    leaving; the EV coming back asks for the lock again."""
    w = charging(Rules(tx=v16(stop_on_ev_disconnect=False)))  # connector 1 has a lock
    effects = step(w, LockMoved(connector_id=1, locked=True, ok=False))
    assert effects[0] == SetContactor(connector_id=1, closed=False)
    c = w.state.connector(1)
    assert not c.locked and c.status is Status.FAULTED and c.tx is not None  # kept, no energy
    step(w, PilotSeen(connector_id=1, pilot=PilotState.A))
    assert Fault.LOCK_FAILURE not in w.state.connector(1).faults
    effects = step(w, PilotSeen(connector_id=1, pilot=PilotState.C))
    assert effects[-1] == MoveLock(connector_id=1, locked=True)
    step(w, LockMoved(connector_id=1, locked=True, ok=True))
    assert w.state.connector(1).contactor_closed


def test_a_resumed_session_is_locked_again_before_any_energy() -> None:
    w = charging(Rules(resume_after_power_loss=True))
    specs, stored = w.specs, w.storage.stored()
    state, _ = rebuild(specs, stored, w.now, w.rules)
    state, _ = machine.step(state, PilotSeen(connector_id=1, pilot=PilotState.C), w.now, w.rules)
    state, effects = machine.step(state, Started(), w.now, w.rules)
    assert MoveLock(connector_id=1, locked=True) in effects
    assert not state.connector(1).contactor_closed and state.connector(1).tx is not None
    state, effects = machine.step(state, LockMoved(connector_id=1, locked=True, ok=True), w.now,
                                  w.rules)
    assert SetContactor(connector_id=1, closed=True) in effects


def test_a_stop_asked_before_a_crash_is_finished_as_asked_not_resumed() -> None:
    w = charging(Rules(resume_after_power_loss=True))
    effects = step(w, StopRequested(connector_id=1, reason=StopReason.REMOTE, stop_id_tag="X"))
    tx_key = w.state.connector(1).tx.tx_key  # type: ignore[union-attr]
    request = RecordStopRequest(connector_id=1, tx_key=tx_key, reason=StopReason.REMOTE,
                                stop_id_tag="X")
    assert effects.index(SetContactor(connector_id=1, closed=False)) < effects.index(request)
    assert effects.index(request) < len(effects) - 1  # durable before the end is recorded
    w.execute([request])  # the crash comes before the end is recorded
    state, _ = rebuild(w.specs, w.storage.stored(), w.now, w.rules)
    state, _ = machine.step(state, PilotSeen(connector_id=1, pilot=PilotState.C), w.now, w.rules)
    state, effects = machine.step(state, Started(), w.now, w.rules)
    assert not any(isinstance(e, SetContactor) and e.closed for e in effects)
    assert EndTransaction(connector_id=1, tx_key=tx_key, reason=StopReason.REMOTE,
                          stop_id_tag="X", end=EndPoint.AS_ASKED) in effects


def test_a_later_accepted_verdict_lifts_the_suspension_as_a_restart_would() -> None:
    """Found by the restart property: the stored verdict is the latest, so the running charger
    must follow the latest verdict too, or a restart would change the decision."""
    w = charging()
    w.step(IdTagJudged(connector_id=1, status=AuthStatus.INVALID))
    assert not w.state.connector(1).contactor_closed
    w.step(IdTagJudged(connector_id=1, status=AuthStatus.ACCEPTED))
    assert w.state.connector(1).contactor_closed and not w.state.connector(1).invalid_id


@pytest.mark.parametrize("unlock", [True, False])
def test_ev_side_disconnect_unlocks_the_socket_only_if_configured(unlock: bool) -> None:
    """§9.1.35 UnlockConnectorOnEVSideDisconnect."""
    w = charging(Rules(tx=v16(stop_on_ev_disconnect=True), unlock_on_ev_disconnect=unlock))
    step(w, PilotSeen(connector_id=1, pilot=PilotState.A))
    effects = step(w, TxEnded(connector_id=1))
    assert (MoveLock(connector_id=1, locked=False) in effects) is unlock


# --- the plug lock before a transaction begins (IEC 61851-1 case B, OCTT TC_024) -------------


def card(cid: int = 1) -> Authorized:
    return Authorized(connector_id=cid, id_tag="A", parent_id_tag=None, reservation_id=None)


def test_a_failed_lock_begins_no_transaction_and_faults_until_the_cable_leaves() -> None:
    """TC_024: ConnectorLockFailure (Faulted), no transaction, the authorization used up."""
    w = World(1, RULES)
    step(w, PilotSeen(connector_id=1, pilot=PilotState.B))
    assert step(w, card()) == (MoveLock(connector_id=1, locked=True),)
    effects = step(w, LockMoved(connector_id=1, locked=True, ok=False))
    assert not any(isinstance(e, BeginTransaction) for e in effects)
    c = w.state.connector(1)
    assert c.status is Status.FAULTED and Fault.LOCK_FAILURE in c.faults
    assert c.waiting is None and c.tx is None and not c.locking
    assert not derive.usable(w.state, 1)
    step(w, PilotSeen(connector_id=1, pilot=PilotState.C))  # still in the socket: no retry
    assert w.state.connector(1).tx is None
    step(w, PilotSeen(connector_id=1, pilot=PilotState.A))  # the cable leaves: fault gone
    assert w.state.connector(1).status is Status.AVAILABLE
    step(w, PilotSeen(connector_id=1, pilot=PilotState.B))
    assert step(w, card()) == (MoveLock(connector_id=1, locked=True),)  # a fresh try


def test_the_lock_is_asked_once_until_its_move_is_reported() -> None:
    w = World(1, Rules(tx=TxPoints(begin=frozenset({when_all(TxPoint.AUTHORIZED,
                                                              TxPoint.EV_CONNECTED)}))))
    step(w, PilotSeen(connector_id=1, pilot=PilotState.B))
    assert step(w, card()) == (MoveLock(connector_id=1, locked=True),)
    assert w.state.connector(1).locking
    assert MoveLock(connector_id=1, locked=True) not in step(
        w, PilotSeen(connector_id=1, pilot=PilotState.C))


def test_a_lock_nobody_needs_any_more_is_released() -> None:
    """The EV left (or the card was withdrawn) while the lock moved: no begin, plug freed."""
    w = World(1, RULES)
    step(w, PilotSeen(connector_id=1, pilot=PilotState.B))
    step(w, card())
    step(w, PilotSeen(connector_id=1, pilot=PilotState.A))
    effects = step(w, LockMoved(connector_id=1, locked=True, ok=True))
    assert MoveLock(connector_id=1, locked=False) in effects
    assert not any(isinstance(e, BeginTransaction) for e in effects)
    assert w.state.connector(1).waiting is not None  # the card still waits for an EV


def test_a_connector_without_a_lock_begins_at_once() -> None:
    w = World(2, RULES)  # connector 2 has no lock actuator
    step(w, PilotSeen(connector_id=2, pilot=PilotState.B))
    assert step(w, card(2)) == (BeginTransaction(connector_id=2, id_tag="A", parent_id_tag=None,
                                                 reservation_id=None),)


def test_a_transaction_begun_before_its_ev_locks_when_the_ev_comes() -> None:
    w = World(1, Rules(tx=TxPoints(begin=frozenset({when_all(TxPoint.AUTHORIZED)}))))
    effects = step(w, card())
    assert effects[-1] == BeginTransaction(connector_id=1, id_tag="A", parent_id_tag=None,
                                           reservation_id=None)
    assert MoveLock(connector_id=1, locked=True) not in effects  # no plug to lock yet
    w.execute(effects)  # recorded
    assert MoveLock(connector_id=1, locked=True) in step(
        w, PilotSeen(connector_id=1, pilot=PilotState.C))
    assert not w.state.connector(1).contactor_closed
    step(w, LockMoved(connector_id=1, locked=True, ok=True))
    assert w.state.connector(1).contactor_closed


def test_a_lock_report_that_never_came_does_not_block_the_next_connection() -> None:
    """The lock is asked once per move; if its report is lost (the shell's move raised), the
    cable leaving and coming back asks again rather than waiting for ever."""
    w = World(1, RULES)
    step(w, PilotSeen(connector_id=1, pilot=PilotState.B))
    assert step(w, card()) == (MoveLock(connector_id=1, locked=True),)
    step(w, PilotSeen(connector_id=1, pilot=PilotState.A))  # no LockMoved came
    assert w.state.connector(1).waiting is not None  # the card waits for an EV again
    assert MoveLock(connector_id=1, locked=True) in step(
        w, PilotSeen(connector_id=1, pilot=PilotState.B))
