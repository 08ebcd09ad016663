"""Restart is a function of stored state (issue: one core, any protocol).

Random event sequences run on two chargers side by side. One runs without interruption; the
other is restarted at random quiet moments, rebuilt from what its shell stored and what its
hardware reports (session_world.py), by the path the station takes at start-up, also in the
middle of a stop (made durable, its end not yet recorded). After the restart, and after every
later event, both must have made the same decisions: offers,
contactors, statuses, transactions, idTag suspension, availability, reservations and the
timers they need. The transaction points (where a transaction begins and ends, TxPoints) are
drawn too: OCPP 1.6's and those a 2.0.1 TxStartPoint/TxStopPoint can configure.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from session_world import World, reserve_hold

from ocppd.core.evse import Fault, PilotState
from ocppd.core.model import AuthStatus, StopReason
from ocppd.core.session import derive, machine
from ocppd.core.session.state import (
    Authorized,
    AvailabilitySet,
    CableRated,
    EndTransaction,
    EnergyRead,
    FaultSeen,
    IdTagJudged,
    LimitSet,
    PilotSeen,
    ReservationCancelled,
    Reserved,
    Rules,
    StopRequested,
    TxPoint,
    TxPoints,
    WaitCancelled,
    when_all,
)

N = 2
cid = st.integers(1, N)
judge = st.tuples(st.just("judge"), cid, st.sampled_from([AuthStatus.ACCEPTED, AuthStatus.INVALID,
                                                           AuthStatus.BLOCKED]))
session = st.tuples(st.just("session"), cid, st.sampled_from(["A", "B"]))  # plug in, a card
restart = st.tuples(st.just("restart"), st.none(), st.none())
# the power goes while a stop is under way: after the stop was made durable, before its end
# was recorded
crash_in_stop = st.tuples(st.just("crash_in_stop"), cid,
                          st.sampled_from([StopReason.LOCAL, StopReason.REMOTE]))
ops = st.one_of(
    session,
    restart,
    crash_in_stop,
    judge,
    st.tuples(st.just("pilot"), cid, st.sampled_from(list(PilotState))),
    st.tuples(st.just("fault"), st.integers(0, N),
              st.tuples(st.sampled_from([Fault.GROUND_FAILURE, Fault.METER_FAILURE,
                                         Fault.EMERGENCY_STOP, Fault.OVER_TEMPERATURE]),
                        st.booleans())),
    st.tuples(st.just("cable"), cid, st.sampled_from([None, 13.0, 20.0])),
    st.tuples(st.just("energy"), cid, st.integers(0, 3000)),
    st.tuples(st.just("limit"), st.integers(0, N), st.none() | st.sampled_from([0.0, 8.0, 16.0])),
    st.tuples(st.just("authorize"), cid, st.sampled_from(["A", "B"])),
    st.tuples(st.just("cancel_wait"), cid, st.none()),
    st.tuples(st.just("stop"), cid, st.sampled_from([StopReason.LOCAL, StopReason.REMOTE])),
    st.tuples(st.just("reserve"), cid, st.tuples(st.integers(1, 3), st.integers(10, 900))),
    st.tuples(st.just("unreserve"), st.integers(0, N), st.integers(1, 3)),
    st.tuples(st.just("availability"), st.integers(0, N), st.booleans()),
    st.tuples(st.just("wait"), st.none(), st.integers(1, 600)),
)
A, E = TxPoint.AUTHORIZED, TxPoint.EV_CONNECTED
P, T = TxPoint.POWER_PATH_CLOSED, TxPoint.ENERGY_TRANSFER
tx_points = st.builds(
    TxPoints,
    begin=st.sampled_from([
        frozenset({when_all(A, E)}),  # OCPP 1.6
        frozenset({when_all(E)}), frozenset({when_all(A)}), frozenset({when_all(P)}),
        frozenset({when_all(E), when_all(A)}),  # 2.0.1 TxStartPoint=EVConnected,Authorized
        frozenset({when_all(T)}),
    ]),
    end=st.frozensets(st.sampled_from(list(TxPoint))),
)
rules = st.builds(
    Rules,
    connection_timeout_s=st.sampled_from([30, 120]),
    tx=tx_points,
    max_energy_on_invalid_id_wh=st.none() | st.sampled_from([0, 500]),
    charger_max_a=st.none() | st.sampled_from([10.0, 20.0]),
    resume_after_power_loss=st.just(True),
)


def apply(w: World, kind: str, target: Any, value: Any) -> None:
    """One operation, as the shell would pass it on; operations that make no sense in the
    current state (the shell refuses them before the core) are skipped."""
    s = w.state
    match kind:
        case "pilot":
            w.step(PilotSeen(connector_id=target, pilot=value))
        case "fault":
            fault, active = value
            w.step(FaultSeen(connector_id=target, fault=fault, active=active))
        case "cable":
            w.step(CableRated(connector_id=target, max_current_a=value))
        case "energy":  # registers only go up
            w.step(EnergyRead(connector_id=target, energy_wh=w.hw.energy_wh[target] + value))
        case "limit":
            w.step(LimitSet(connector_id=target, limit_a=value))
        case "session":
            w.step(PilotSeen(connector_id=target, pilot=PilotState.C))
            apply(w, "authorize", target, value)
        case "authorize":
            c = w.state.connector(target)
            if c.tx is not None and c.tx.id_tag is None and c.stop is None:  # begun without
                w.step(Authorized(connector_id=target, id_tag=value, parent_id_tag=None,
                                  reservation_id=None))
            elif derive.usable(w.state, target) and derive.reserved_for(c, value, None):
                rid = c.hold.reservation_id if c.hold is not None else None
                w.step(Authorized(connector_id=target, id_tag=value, parent_id_tag=None,
                                  reservation_id=rid))
        case "cancel_wait":
            if s.connector(target).waiting is not None:
                w.step(WaitCancelled(connector_id=target))
        case "stop":
            if s.connector(target).tx is not None:
                w.step(StopRequested(connector_id=target, reason=value))
        case "judge":  # a verdict on a transaction's idTag (none on one begun without)
            tx = s.connector(target).tx
            if tx is not None and tx.id_tag is not None:
                w.step(IdTagJudged(connector_id=target, status=value))
        case "reserve":
            rid, expiry_s = value
            c = s.connector(target)
            others = [x for x in s.connectors.values()
                      if x.hold is not None and x.hold.reservation_id == rid]
            if c.hold is None and c.tx is None and not c.pilot.plugged and not others:
                w.step(Reserved(connector_id=target,
                                hold=reserve_hold(rid, "A", w.now, expiry_s)))
        case "unreserve":
            w.step(ReservationCancelled(reservation_id=value))
        case "availability":
            w.step(AvailabilitySet(connector_id=target, operative=value))
        case "wait":
            w.advance(value)


@settings(max_examples=500, deadline=None)
@given(rules, st.lists(st.one_of(session, judge), max_size=4), st.lists(ops, max_size=60))
def test_decisions_after_a_restart_are_those_of_the_uninterrupted_run(
    r: Rules, opening: list[tuple[str, Any, Any]], seq: list[tuple[str, Any, Any]]
) -> None:
    seq = opening + seq  # most runs have a session going: the interesting restarts
    steady = World(N, r)
    restarted = World(N, r)
    restarts = 0
    for kind, target, value in seq:
        if kind == "restart":
            if restarted.quiet():
                restarted = restarted.restarted()
                restarts += 1
                assert restarted.decisions() == steady.decisions(), "right after the restart"
            continue
        if kind == "crash_in_stop":
            if restarted.quiet() and restarted.state.connector(target).tx is not None:
                apply(steady, "stop", target, value)
                restarted.state, effects = machine.step(
                    restarted.state, StopRequested(connector_id=target, reason=value),
                    restarted.now, restarted.rules)
                restarted.execute([e for e in effects if not isinstance(e, EndTransaction)])
                restarted = restarted.restarted()
                restarts += 1
                assert restarted.decisions() == steady.decisions(), "restart within a stop"
            continue
        apply(steady, kind, target, value)
        apply(restarted, kind, target, value)
        assert restarted.decisions() == steady.decisions(), (kind, target, value, restarts)
