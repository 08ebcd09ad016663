"""What follows from a state, whatever event led to it: pilot offers and contactors (through
the safety rules, core/safety.py, and the charger-wide share, core/sharing.py), statuses
(core/model.py), the timers the state needs; and the questions the shell asks before it acts.

``settle`` turns the difference between two states into effects. Timers are never armed or
cancelled by hand: "replace", "restore after restart" and "cancel" are all the same difference.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from ocppd.core import safety, sharing
from ocppd.core.auth import same_tag
from ocppd.core.evse import Fault
from ocppd.core.model import ConnectorFacts, Status, charger_status, derive_status
from ocppd.core.session.state import (
    ArmTimer,
    CancelTimer,
    ChargerState,
    ConnectorState,
    Effect,
    Offer,
    ReportStatus,
    Rules,
    SetContactor,
    TimerId,
    TimerKind,
    TxPoint,
    TxPoints,
)

Effects = list[Effect]


def usable(state: ChargerState, connector_id: int) -> bool:
    """Whether a new session may begin on the connector."""
    c = state.connector(connector_id)
    faults = set(c.faults) | set(state.faults)
    return (
        c.operative
        and state.operative
        and state.running
        and not state.shutting_down
        and c.tx is None
        and c.waiting is None
        and not faults - {Fault.READER_FAILURE}
    )


def reserved_for(c: ConnectorState, id_tag: str | None, parent_id_tag: str | None) -> bool:
    """Whether ``id_tag`` (or its parent) may use ``c``: unreserved, or reserved for it."""
    if c.hold is None:
        return True
    return same_tag(c.hold.id_tag, id_tag) or (
        c.hold.parent_id_tag is not None and same_tag(c.hold.parent_id_tag, parent_id_tag)
    )


def pick_free(state: ChargerState, id_tag: str | None, parent_id_tag: str | None) -> int | None:
    """The connector a session without a named connector goes to: one reserved for this idTag,
    else an unreserved one, preferring one with an EV plugged in."""
    free = [c for c in state.connectors.values() if usable(state, c.connector_id)]
    if id_tag is not None:  # a reservation for this tag wins
        for c in free:
            if c.hold is not None and reserved_for(c, id_tag, parent_id_tag):
                return c.connector_id
    free = [c for c in free if c.hold is None]
    plugged = [c for c in free if c.pilot.plugged]
    candidates = plugged or free
    return candidates[0].connector_id if candidates else None


def _holds(state: ChargerState, c: ConnectorState, point: TxPoint) -> bool:
    """Whether a begin point holds on ``c`` (no transaction yet)."""
    match point:
        case TxPoint.EV_CONNECTED:
            return c.pilot.plugged
        case TxPoint.AUTHORIZED:
            return c.waiting is not None
        case TxPoint.POWER_PATH_CLOSED | TxPoint.ENERGY_TRANSFER:
            # all the contactor needs but the transaction itself (core/safety.py)
            return c.waiting is not None and safety.may_close(safety.SafetyInputs(
                pilot=c.pilot, faults=frozenset(_all_faults(state, c)), tx_authorized=True,
                evse_suspended=c.withheld, stopping=False, lock_required=False,
                locked=c.locked))


def begin_due(state: ChargerState, c: ConnectorState, points: TxPoints) -> bool:
    """Whether a transaction begins on ``c`` now: every point of one begin set holds.

    A begin with an idTag uses the waiting idTag up, so it happens once. One without (a
    begin set without AUTHORIZED: the cable alone) happens once per EV connection, on a
    connector that could take a new session and is not reserved (a reservation waits for
    its idTag), and not again on the EV of a transaction that just ended (Finishing)."""
    if not state.running or state.shutting_down or c.tx is not None or c.stop is not None:
        return False
    for need in points.begin:
        if not all(_holds(state, c, p) for p in need):
            continue
        if c.waiting is not None:
            return True
        if not (c.begin_asked or c.finishing or c.hold is not None) and usable(
                state, c.connector_id):
            return True
    return False


def resumes(c: ConnectorState, rules: Rules) -> bool:
    """Whether the transaction a restart found open on ``c`` goes on (§4.10): power_loss is
    "resume", its EV is still plugged in, and no stop was asked before the restart."""
    return c.tx is not None and c.stop is None and rules.resume_after_power_loss and c.pilot.plugged


def wanted_timers(state: ChargerState) -> dict[TimerId, datetime]:
    """Every timer the state needs, and when it is due."""
    out: dict[TimerId, datetime] = {}
    for c in state.connectors.values():
        connection = TimerId(kind=TimerKind.CONNECTION, key=c.connector_id)
        if c.waiting is not None and not c.pilot.plugged:
            out[connection] = c.waiting.deadline
        elif c.tx is not None and c.connect_by is not None and c.stop is None:
            out[connection] = c.connect_by
        if c.hold is not None:
            out[TimerId(kind=TimerKind.RESERVATION, key=c.hold.reservation_id)] = c.hold.expiry
    return out


def _authorized_now(state: ChargerState, c: ConnectorState) -> bool:
    # Nothing is energised before start-up has decided what the power cut left open.
    # and an idTag: a transaction begun before one gets nothing until it has one (TxPoints)
    return (state.running and not state.shutting_down and c.tx is not None and c.stop is None
            and c.tx.id_tag is not None)


def _all_faults(state: ChargerState, c: ConnectorState) -> tuple[Fault, ...]:
    return c.faults + tuple(f for f in state.faults if f not in c.faults)


def _shares(state: ChargerState, rules: Rules) -> dict[int, float | None]:
    """Each connector's share of the charger-wide limit (core/sharing.py); None: no limit."""
    limits = [x for x in (rules.charger_max_a, state.limit_a) if x is not None]
    if not limits:
        return dict.fromkeys(state.connectors)
    demands = []
    for c in state.connectors.values():
        own = safety.offer_a(
            connector_max_a=c.spec.max_current_a,
            cable_max_a=c.cable_max_a,
            smart_limit_a=c.own_limit_a,
            tx_authorized=_authorized_now(state, c),
            evse_suspended=c.withheld,
            faults=frozenset(_all_faults(state, c)),
        )
        # an unplugged EV (transaction kept, §4.9 SuspendedEV) cannot draw: no share
        if own is not None and own > 0 and c.pilot.plugged:
            ceiling = own if c.draw_ceiling_a is None else min(own, c.draw_ceiling_a)
            assert c.tx is not None
            demands.append(sharing.Demand(connector_id=c.connector_id, ceiling_a=ceiling,
                                          asking=c.pilot.wants_power,
                                          since=c.tx.started_at.timestamp()))
    shares = sharing.share(min(limits), demands)
    return {cid: shares.get(cid, 0.0) for cid in state.connectors}


def evse_suspended(c: ConnectorState) -> bool:
    no_share = c.share_a is not None and c.share_a < safety.MIN_OFFER_A
    return c.withheld or no_share


def settle(
    before: ChargerState, state: ChargerState, rules: Rules
) -> tuple[ChargerState, list[Effect]]:
    """Outputs, statuses and timers that follow from ``state``, as effects against ``before``.

    Order: contactors that open, offers that go down, offers that go up, contactors that close,
    so no contactor carries more than it may and the sum of the offers never exceeds the
    charger-wide limit, not even for an instant.
    """
    opens: Effects = []
    lowered: Effects = []
    raised: Effects = []
    closes: Effects = []
    reports: Effects = []
    shares = _shares(state, rules)
    connectors = dict(state.connectors)
    for cid, c in state.connectors.items():
        c = replace(c, share_a=shares[cid])
        faults = frozenset(_all_faults(state, c))
        authorized = _authorized_now(state, c)
        limits = [x for x in (c.own_limit_a, c.share_a) if x is not None]
        offer = safety.offer_a(
            connector_max_a=c.spec.max_current_a,
            cable_max_a=c.cable_max_a,
            smart_limit_a=min(limits) if limits else None,
            tx_authorized=authorized,
            evse_suspended=evse_suspended(c),
            faults=faults,
        )
        close = safety.may_close(safety.SafetyInputs(
            pilot=c.pilot, faults=faults, tx_authorized=authorized,
            evse_suspended=evse_suspended(c), stopping=c.stop is not None,
            lock_required=c.spec.lockable, locked=c.locked,
        ))
        if c.contactor_closed and not close:
            opens.append(SetContactor(connector_id=cid, closed=False))
        if offer != c.offer_a:
            down = (offer or 0.0) <= (c.offer_a or 0.0)  # no offer counts as 0 A
            (lowered if down else raised).append(Offer(connector_id=cid, current_a=offer))
        if close and not c.contactor_closed:
            closes.append(SetContactor(connector_id=cid, closed=True))
        c = replace(c, offer_a=offer, contactor_closed=close)
        status = _status(state, c)
        if status is not None and status is not c.status:
            c = replace(c, status=status)
            if state.running:
                fault = next(iter(_all_faults(state, c)), None)
                reports.append(ReportStatus(connector_id=cid, status=status, fault=fault))
        connectors[cid] = c
    state = replace(state, connectors=connectors)
    whole = charger_status(operative=state.operative, faults=frozenset(state.faults))
    if whole is not state.status:
        state = replace(state, status=whole)
        if state.running:
            fault = next(iter(state.faults), None)
            reports.append(ReportStatus(connector_id=0, status=whole, fault=fault))
    return state, [*opens, *lowered, *raised, *closes, *reports, *_timer_diff(before, state)]


def _status(state: ChargerState, c: ConnectorState) -> Status | None:
    """The §4.9 status of ``c``; None while a stop is under way (contactor open, meter being
    read): no state worth reporting, the next one is Finishing/Available after the stop."""
    faults = frozenset(_all_faults(state, c))
    status = derive_status(ConnectorFacts(
        pilot=c.pilot,
        faults=faults,
        operative=c.operative,
        tx_active=c.tx is not None,
        authorized_waiting=c.waiting is not None,
        finishing=c.finishing,
        reserved=c.hold is not None,
        evse_suspended=evse_suspended(c),
        contactor_closed=c.contactor_closed,
    ))
    if c.stop is not None and status is not Status.FAULTED:
        return None
    return status


def _timer_diff(before: ChargerState, after: ChargerState) -> Effects:
    old, new = wanted_timers(before), wanted_timers(after)
    out: Effects = [CancelTimer(timer=t) for t in sorted(old) if t not in new]
    out += [ArmTimer(timer=t, at=at) for t, at in sorted(new.items()) if old.get(t) != at]
    return out
