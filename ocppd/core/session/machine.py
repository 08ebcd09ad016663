"""Every rule that changes a charging session, in one place: ``step(state, event, now, rules)``.

(Above 400 lines on purpose: every transition in one file, so the rule table reads whole; the
questions it asks of a state, where a transaction begins among them, are in derive.py.)

No I/O and no clock: ``now`` is an argument, storage writes, timers and hardware outputs come
back as effects (state.py) for the shell to carry out. An event that cannot happen in the
current state raises ``IllegalEvent`` instead of corrupting the state.

A step has two halves:

1. **Transition** (``_RULES``, one function per event type): what the event changes, plus the
   effects only it can cause (record a start or an end, store availability, move the lock).
2. **Settle** (derive.py), the same after every event: the charger-wide limit is re-shared,
   pilot offers and contactors follow from the facts through the safety rules (core/safety.py),
   statuses are derived (core/model.py) and reported when they change, and the timers the state
   needs are compared with those it needed before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from ocppd.core.evse import Fault, PilotState
from ocppd.core.model import (
    STOPPING_FAULTS,
    AuthStatus,
    StopReason,
)
from ocppd.core.session.derive import begin_due, resumes, settle, usable, wanted_timers
from ocppd.core.session.state import (
    ArmTimer,
    Authorized,
    AvailabilitySet,
    BeginTransaction,
    CableRated,
    ChargerState,
    ConnectorState,
    CurrentDrawn,
    Effect,
    EndPoint,
    EndTransaction,
    EnergyRead,
    Event,
    FaultSeen,
    ForgetReservation,
    IdTagJudged,
    IllegalEvent,
    LimitSet,
    LocalLimitSet,
    LockMoved,
    MoveLock,
    PilotSeen,
    RecordAuthorization,
    RecordStopRequest,
    ReservationCancelled,
    Reserved,
    Rules,
    ShuttingDown,
    Started,
    Stop,
    StopRequested,
    StoreAvailability,
    StoreReservation,
    TimerFired,
    TimerKind,
    TxEnded,
    TxPoint,
    TxStarted,
    WaitCancelled,
    Waiting,
)
from ocppd.core.sharing import DrawWatch

Effects = list[Effect]


class _Step:
    """The state being built by one transition, with the effects it asked for."""

    def __init__(self, state: ChargerState, now: datetime, rules: Rules) -> None:
        self.state, self.now, self.rules = state, now, rules
        self.effects: Effects = []

    def c(self, connector_id: int) -> ConnectorState:
        return self.state.connector(connector_id)

    def put(self, c: ConnectorState, **changes: Any) -> ConnectorState:
        new = replace(c, **changes)
        self.state = replace(
            self.state, connectors={**self.state.connectors, c.connector_id: new}
        )
        return new

    # --- rules shared by several events ----------------------------------------------------------

    def stop(self, c: ConnectorState, reason: StopReason, stop_id_tag: str | None = None,
             *, unlock: bool = True, end: EndPoint = EndPoint.NOW) -> None:
        """Ask for a transaction's end; a second request while one is under way changes nothing.

        The contactor opens in this very step (settle), the request is made durable next, and
        only then may the shell wait on the meter and the disk to record the end."""
        if c.tx is None or c.stop is not None:
            return
        c = self.put(c, stop=Stop(reason=reason, stop_id_tag=stop_id_tag,
                                  unlock=unlock and c.spec.lockable))
        assert c.tx is not None
        if end is EndPoint.NOW:
            self.effects.append(RecordStopRequest(connector_id=c.connector_id,
                                                  tx_key=c.tx.tx_key, reason=reason,
                                                  stop_id_tag=stop_id_tag))
        self.effects.append(EndTransaction(connector_id=c.connector_id, tx_key=c.tx.tx_key,
                                           reason=reason, stop_id_tag=stop_id_tag, end=end))

    def judge(self, c: ConnectorState) -> None:
        """What a refused idTag (§3.5.4) means for its session: stop, suspend, or allow up to
        MaxEnergyOnInvalidId (§9.1.15). The one rule for a verdict just received and for a
        session resumed after a restart, so a suspended session never comes back with energy."""
        if c.tx is None:
            return
        if c.tx.id_tag_status in (None, AuthStatus.ACCEPTED):
            # The latest verdict counts: the same rule a restart applies to the stored one.
            self.put(c, invalid_id=False)
            return
        cap_wh = self.rules.max_energy_on_invalid_id_wh
        if TxPoint.AUTHORIZED in self.rules.tx.end:  # the authorization ends, so does the tx
            self.stop(c, StopReason.DEAUTHORIZED)
        elif cap_wh is None:
            self.put(c, invalid_id=True)
        else:
            # without a fresh reading (dead meter at start-up) the last stored register counts
            energy_wh = c.energy_wh if c.energy_wh is not None else c.tx.meter_start_wh
            if energy_wh - c.tx.meter_start_wh >= cap_wh:
                self.put(c, invalid_id=True)

    def set_operative(self, c: ConnectorState, operative: bool) -> None:
        self.put(c, operative=operative, scheduled_operative=None,
                 waiting=c.waiting if operative else None)
        self.effects.append(StoreAvailability(connector_id=c.connector_id, operative=operative,
                                              scheduled=None))

    def lock(self, c: ConnectorState) -> None:
        """Ask for the plug to be locked (once: until the move is reported, LockMoved)."""
        if not c.locking:
            self.put(c, locking=True)
            self.effects.append(MoveLock(connector_id=c.connector_id, locked=True))

    def begin(self, c: ConnectorState, w: Waiting | None) -> None:
        """Ask for a transaction's start, with the waiting idTag if there is one. Begun before
        its EV, it must be plugged in by the idTag's ConnectionTimeOut."""
        connect_by = w.deadline if w is not None and not c.pilot.plugged else None
        self.put(c, waiting=None, begin_asked=True, connect_by=connect_by)
        self.effects.append(BeginTransaction(
            connector_id=c.connector_id, id_tag=w.id_tag if w is not None else None,
            parent_id_tag=w.parent_id_tag if w is not None else None,
            reservation_id=w.reservation_id if w is not None else None))

    def begin_where_due(self) -> None:
        """The one rule for where a transaction begins (TxPoints, derive.begin_due), whatever
        event made its points hold: a card, a cable, an EV asking, a lock, a fault gone."""
        for c in list(self.state.connectors.values()):
            if not begin_due(self.state, c, self.rules.tx):
                continue
            if c.spec.lockable and c.pilot.plugged and not c.locked:
                # IEC 61851-1 case B: the plug is locked before a session may begin (OCTT
                # TC_024: if the lock fails, none begins, _lock_moved). Begun before the EV,
                # the plug is locked when it comes (_pilot).
                self.lock(c)
            else:
                self.begin(c, c.waiting)

    def end_where_due(self, before: ChargerState) -> None:
        """Ends at the power path's points, which only the settled outputs show: the contactor
        opened (POWER_PATH_CLOSED), or the EV stopped asking with it closed (ENERGY_TRANSFER)."""
        end = self.rules.tx.end
        if TxPoint.POWER_PATH_CLOSED not in end and TxPoint.ENERGY_TRANSFER not in end:
            return  # (OCPP 1.6: never; the outputs are settled once, in step)
        after, _ = settle(before, self.state, self.rules)
        for cid, c in after.connectors.items():
            was = before.connectors[cid]
            if c.tx is None or c.stop is not None or not was.contactor_closed:
                continue
            if was.tx is None or was.tx.tx_key != c.tx.tx_key:
                continue
            ev_stopped = not c.pilot.wants_power
            if ev_stopped and TxPoint.ENERGY_TRANSFER in end:
                self.stop(self.c(cid), StopReason.EV_STOPPED)
            elif not c.contactor_closed and TxPoint.POWER_PATH_CLOSED in end:
                self.stop(self.c(cid), StopReason.EV_STOPPED if ev_stopped else StopReason.OTHER)


# --- transitions, one per event type ------------------------------------------------------------


def _pilot(s: _Step, e: PilotSeen) -> None:
    c = s.c(e.connector_id)
    old = c.pilot
    if e.pilot is old:
        return
    faults: tuple[Fault, ...] = tuple(f for f in c.faults if f is not Fault.PILOT_FAULT)
    if e.pilot in (PilotState.E, PilotState.F):
        faults += (Fault.PILOT_FAULT,)
    if (e.pilot is PilotState.A) != (old is PilotState.A):
        # A cable left or entered the socket: whatever a failed lock move left behind is gone.
        # Without lock feedback nothing else would ever tell.
        faults = tuple(f for f in faults if f is not Fault.LOCK_FAILURE)
    c = s.put(c, pilot=e.pilot, faults=faults)
    if e.pilot.wants_power and not old.wants_power:  # an EV that starts asking gets its share
        c = s.put(c, draw=DrawWatch())
    if e.pilot.plugged and not old.plugged:
        # a new EV connection: a new chance to begin, and the EV a transaction waited for
        c = s.put(c, begin_asked=False, connect_by=None)
    if not s.state.running:
        return
    if e.pilot.plugged and not old.plugged:
        c = s.put(c, finishing=False)
        if c.tx is not None and c.stop is None and c.spec.lockable and not c.locked:
            # the EV is back for a session whose lock failed (or was released), or it came
            # for a session begun before it: lock
            s.lock(c)
    elif e.pilot is PilotState.A:
        # the plug is out: a lock move asked for it is moot (and its report may never come)
        c = s.put(c, finishing=False, locking=False)
        if TxPoint.EV_CONNECTED in s.rules.tx.end:  # §9.1.30; otherwise SuspendedEV, tx kept
            # §9.1.35: the socket side is unlocked only if UnlockConnectorOnEVSideDisconnect
            s.stop(c, StopReason.EV_DISCONNECTED, unlock=s.rules.unlock_on_ev_disconnect)


def _fault(s: _Step, e: FaultSeen) -> None:
    def toggle(faults: tuple[Fault, ...]) -> tuple[Fault, ...]:
        kept = tuple(f for f in faults if f is not e.fault)
        return kept + (e.fault,) if e.active else kept

    if e.connector_id == 0:
        s.state = replace(s.state, faults=toggle(s.state.faults))
        targets = list(s.state.connectors.values())
    else:
        c = s.c(e.connector_id)
        targets = [s.put(c, faults=toggle(c.faults))]
    if e.active and e.fault in STOPPING_FAULTS and s.state.running:
        # the charger cannot safely go on: the transaction ends rather than pauses
        reason = StopReason.EMERGENCY_STOP if e.fault is Fault.EMERGENCY_STOP else StopReason.OTHER
        for c in targets:
            s.stop(s.c(c.connector_id), reason)


def _cable(s: _Step, e: CableRated) -> None:
    s.put(s.c(e.connector_id), cable_max_a=e.max_current_a)


def _energy(s: _Step, e: EnergyRead) -> None:
    c = s.put(s.c(e.connector_id), energy_wh=e.energy_wh)
    if c.tx is not None and not c.invalid_id and s.rules.max_energy_on_invalid_id_wh is not None:
        if TxPoint.AUTHORIZED not in s.rules.tx.end:
            s.judge(c)


def _drawn(s: _Step, e: CurrentDrawn) -> None:
    """An EV that draws clearly less than offered frees the rest of its share for the others
    (core/sharing.py); judged only under a charger-wide limit, the only one it can free."""
    c = s.c(e.connector_id)
    if c.share_a is not None:
        s.put(c, draw=c.draw.observe(e.current_a, c.offer_a, e.at_s))


def _limit(s: _Step, e: LimitSet) -> None:
    if e.connector_id == 0:
        s.state = replace(s.state, limit_a=e.limit_a)
    else:
        s.put(s.c(e.connector_id), smart_limit_a=e.limit_a)


def _local_limit(s: _Step, e: LocalLimitSet) -> None:
    s.put(s.c(e.connector_id), local_limit_a=e.limit_a)


def _authorized(s: _Step, e: Authorized) -> None:
    """An idTag for the connector: it joins a transaction begun without one, or waits for the
    rest of a begin point (begin_where_due decides after every event)."""
    c = s.c(e.connector_id)
    if c.tx is not None and c.tx.id_tag is None and c.stop is None:
        s.put(c, tx=replace(c.tx, id_tag=e.id_tag, parent_id_tag=e.parent_id_tag))
        s.effects.append(RecordAuthorization(connector_id=c.connector_id, tx_key=c.tx.tx_key,
                                             id_tag=e.id_tag, parent_id_tag=e.parent_id_tag))
        return
    if not usable(s.state, c.connector_id):
        raise IllegalEvent(f"connector {c.connector_id} cannot take a session now")
    timeout_s = max(1, s.rules.connection_timeout_s)
    s.put(c, waiting=Waiting(id_tag=e.id_tag, parent_id_tag=e.parent_id_tag,
                             reservation_id=e.reservation_id,
                             deadline=s.now + timedelta(seconds=timeout_s)))


def _wait_cancelled(s: _Step, e: WaitCancelled) -> None:
    c = s.c(e.connector_id)
    if c.waiting is None:
        raise IllegalEvent(f"connector {c.connector_id} has no waiting session")
    s.put(c, waiting=None)


def _tx_started(s: _Step, e: TxStarted) -> None:
    c = s.c(e.connector_id)
    if c.tx is not None:
        raise IllegalEvent(f"connector {c.connector_id} already has a transaction")
    if c.hold is not None:  # used up (or another card took the reserved connector)
        s.effects.append(ForgetReservation(reservation_id=c.hold.reservation_id))
    c = s.put(c, tx=e.tx, waiting=None, hold=None, invalid_id=False, finishing=False, stop=None,
              begin_asked=False)
    if c.pilot is PilotState.A and c.connect_by is None and TxPoint.EV_CONNECTED in s.rules.tx.end:
        # The EV left while the start was being recorded (the shell waits until the record is
        # durable before the contactor may close): the session ends as an unplug ends it.
        s.stop(c, StopReason.EV_DISCONNECTED, unlock=s.rules.unlock_on_ev_disconnect)
        return
    s.judge(c)


def _stop_requested(s: _Step, e: StopRequested) -> None:
    c = s.c(e.connector_id)
    if c.tx is None:
        raise IllegalEvent(f"connector {c.connector_id} has no transaction to stop")
    s.stop(c, e.reason, e.stop_id_tag, unlock=e.unlock)


def _tx_ended(s: _Step, e: TxEnded) -> None:
    c = s.c(e.connector_id)
    if c.tx is None or c.stop is None:
        raise IllegalEvent(f"connector {c.connector_id} has no transaction being stopped")
    unlock = c.stop.unlock
    # the next session's draw is judged afresh
    c = s.put(c, tx=None, stop=None, invalid_id=False, finishing=c.pilot.plugged,
              draw=DrawWatch(), connect_by=None)
    if c.scheduled_operative is not None:  # a Scheduled ChangeAvailability applies now (§5.2)
        s.set_operative(c, c.scheduled_operative)
    if unlock:  # as at the end of any session: a lock left engaged keeps the driver's cable
        s.effects.append(MoveLock(connector_id=c.connector_id, locked=False))


def _lock_moved(s: _Step, e: LockMoved) -> None:
    """Only a lock move that worked lets the contactor close (core/safety.py) or a session
    begin (begin_where_due); after a failed one the lock's position is not known. Its outcome
    sets or clears ConnectorLockFailure."""
    c = s.c(e.connector_id)
    faults: tuple[Fault, ...] = tuple(f for f in c.faults if f is not Fault.LOCK_FAILURE)
    if not e.ok:
        faults += (Fault.LOCK_FAILURE,)
    c = s.put(c, locked=e.ok and e.locked, faults=faults,
              locking=c.locking and not e.locked)
    if not e.locked or c.tx is not None:
        return  # a running session without its lock stays without energy (§4.9: Faulted)
    if not e.ok:
        # OCTT TC_024 (Start Charging Session - Lock Failure): ConnectorLockFailure and no
        # transaction; the authorization is used up, the fault clears when the cable leaves.
        s.put(c, waiting=None, begin_asked=True)
    elif not begin_due(s.state, c, s.rules.tx):
        # nothing needs it any more (the EV left, the card was withdrawn): release the plug
        s.effects.append(MoveLock(connector_id=c.connector_id, locked=False))


def _id_tag_judged(s: _Step, e: IdTagJudged) -> None:
    c = s.c(e.connector_id)
    if c.tx is None:
        raise IllegalEvent(f"connector {c.connector_id} has no transaction to judge")
    parent = e.parent_id_tag if e.parent_id_tag is not None else c.tx.parent_id_tag
    s.judge(s.put(c, tx=replace(c.tx, id_tag_status=e.status, parent_id_tag=parent)))


def _reserved(s: _Step, e: Reserved) -> None:
    _forget(s, e.hold.reservation_id)  # the same id replaces (§5.13)
    c = s.c(e.connector_id)
    if c.hold is not None:
        raise IllegalEvent(f"connector {c.connector_id} is reserved already")
    s.put(c, hold=e.hold)
    s.effects.append(StoreReservation(connector_id=c.connector_id, hold=e.hold))


def _forget(s: _Step, reservation_id: int, *, expired: bool = False) -> None:
    for c in s.state.connectors.values():
        if c.hold is not None and c.hold.reservation_id == reservation_id:
            s.put(c, hold=None)
            s.effects.append(ForgetReservation(reservation_id=reservation_id, expired=expired))


def _reservation_cancelled(s: _Step, e: ReservationCancelled) -> None:
    _forget(s, e.reservation_id)


def _availability(s: _Step, e: AvailabilitySet) -> None:
    if e.connector_id == 0:
        s.state = replace(s.state, operative=e.operative)
        s.effects.append(StoreAvailability(connector_id=0, operative=e.operative, scheduled=None))
        targets = list(s.state.connectors.values())
    else:
        targets = [s.c(e.connector_id)]
    for c in targets:
        if c.tx is not None:  # Scheduled: applies when the transaction ends
            s.put(c, scheduled_operative=e.operative)
            s.effects.append(StoreAvailability(connector_id=c.connector_id,
                                               operative=c.operative, scheduled=e.operative))
        else:
            s.set_operative(c, e.operative)


def _timer(s: _Step, e: TimerFired) -> None:
    due = wanted_timers(s.state).get(e.timer)
    if due is None:
        return  # cancelled or replaced meanwhile
    if s.now < due:  # fired early: the wall clock was set back meanwhile
        s.effects.append(ArmTimer(timer=e.timer, at=due))
        return
    match e.timer.kind:
        case TimerKind.CONNECTION:  # §9.1.6: no EV in time
            c = s.c(e.timer.key)
            if c.waiting is not None:  # the idTag waited: back to Available
                s.put(c, waiting=None)
            else:  # the transaction begun before its EV ends
                s.stop(s.put(c, connect_by=None), StopReason.TIMEOUT)
        case TimerKind.RESERVATION:
            _forget(s, e.timer.key, expired=True)


def _started(s: _Step, e: Started) -> None:
    """End of start-up: transactions the power cut left open resume or end (§4.10, TC_032);
    a Scheduled availability whose transaction ended with the power applies; plug locks are
    brought where the sessions need them."""
    s.state = replace(s.state, running=True)
    for c in list(s.state.connectors.values()):
        if c.tx is not None and c.stop is not None:
            # A stop was asked before the restart: finished as asked, whatever power_loss says
            # (its contactor was open from the moment it was asked).
            stop, c = c.stop, s.put(c, stop=None)
            s.stop(c, stop.reason, stop.stop_id_tag, end=EndPoint.AS_ASKED)
        elif resumes(c, s.rules):
            s.judge(c)
            if c.spec.lockable and s.c(c.connector_id).stop is None:
                # What the lock did while the daemon was down is unknown: no energy before the
                # plug is locked again.
                s.lock(s.c(c.connector_id))
        elif c.tx is not None:
            s.stop(c, StopReason.POWER_LOSS, end=EndPoint.LAST_RECORD)
        else:
            if c.scheduled_operative is not None:
                s.set_operative(c, c.scheduled_operative)
            if c.spec.lockable:  # no session holds this plug: release it
                s.effects.append(MoveLock(connector_id=c.connector_id, locked=False))


def _shutting_down(s: _Step, e: ShuttingDown) -> None:
    s.state = replace(s.state, shutting_down=True)


_RULES: dict[type[Any], Callable[[_Step, Any], None]] = {
    PilotSeen: _pilot,
    FaultSeen: _fault,
    CableRated: _cable,
    EnergyRead: _energy,
    CurrentDrawn: _drawn,
    LimitSet: _limit,
    LocalLimitSet: _local_limit,
    Authorized: _authorized,
    WaitCancelled: _wait_cancelled,
    TxStarted: _tx_started,
    StopRequested: _stop_requested,
    TxEnded: _tx_ended,
    IdTagJudged: _id_tag_judged,
    LockMoved: _lock_moved,
    Reserved: _reserved,
    ReservationCancelled: _reservation_cancelled,
    AvailabilitySet: _availability,
    TimerFired: _timer,
    Started: _started,
    ShuttingDown: _shutting_down,
}


def step(
    state: ChargerState, event: Event, now: datetime, rules: Rules
) -> tuple[ChargerState, tuple[Effect, ...]]:
    """Apply one event. Returns the new state and what the shell must do, in order."""
    s = _Step(state, now, rules)
    _RULES[type(event)](s, event)
    s.begin_where_due()
    s.end_where_due(state)
    new, settled = settle(state, s.state, rules)
    # outputs and statuses first (an open contactor never waits behind a storage write)
    return new, (*settled, *s.effects)
