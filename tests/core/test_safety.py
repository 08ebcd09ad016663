"""The safety rules as properties over random event sequences (issue: safe by construction)."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from ocppd.core import safety
from ocppd.core.safety import MAX_OFFER_A, MIN_OFFER_A, SafetyInputs, may_close, offer_a
from ocppd.hw.base import Fault, PilotState

faults = st.frozensets(st.sampled_from(list(Fault)), max_size=3)
inputs = st.builds(
    SafetyInputs,
    pilot=st.sampled_from(list(PilotState)),
    faults=faults,
    tx_authorized=st.booleans(),
    evse_suspended=st.booleans(),
    stopping=st.booleans(),
    lock_required=st.booleans(),
    locked=st.booleans(),
)


def test_contactor_closes_only_with_authorized_session_and_ev_asking_for_power() -> None:
    for pilot, auth, susp, stop, needs_lock, locked in itertools.product(
        PilotState, *[[True, False]] * 5
    ):
        s = SafetyInputs(
            pilot=pilot,
            faults=frozenset(),
            tx_authorized=auth,
            evse_suspended=susp,
            stopping=stop,
            lock_required=needs_lock,
            locked=locked,
        )
        expected = (
            pilot in (PilotState.C, PilotState.D)
            and auth
            and not susp
            and not stop
            and (locked or not needs_lock)
        )
        assert may_close(s) is expected, s


@given(inputs)
def test_a_socket_with_a_lock_never_closes_on_a_plug_not_locked(s: SafetyInputs) -> None:
    """IEC 61851-1 case B: the plug is locked before the contactor closes."""
    if s.lock_required and not s.locked:
        assert not may_close(s)


@given(inputs)
def test_any_fault_but_a_reader_failure_opens_the_contactor(s: SafetyInputs) -> None:
    if s.faults - {Fault.READER_FAILURE}:
        assert not may_close(s)


@given(inputs)
def test_unplugged_or_error_pilot_never_closes(s: SafetyInputs) -> None:
    if s.pilot in (PilotState.A, PilotState.B, PilotState.E, PilotState.F):
        assert not may_close(s)


@given(
    st.floats(1, 100),
    st.none() | st.floats(0, 100),
    st.none() | st.floats(0, 100),
    st.booleans(),
    faults,
)
def test_offer_never_exceeds_any_limit_and_is_legal(
    conn: float, cable: float | None, smart: float | None, suspended: bool, fs: frozenset[Fault]
) -> None:
    offer = offer_a(
        connector_max_a=conn,
        cable_max_a=cable,
        smart_limit_a=smart,
        tx_authorized=True,
        evse_suspended=suspended,
        faults=fs,
    )
    if offer is None:
        assert fs - {Fault.READER_FAILURE, Fault.METER_FAILURE}
        return
    if offer == 0:
        return  # pause: legal
    assert MIN_OFFER_A <= offer <= MAX_OFFER_A
    assert offer <= conn and (cable is None or offer <= cable) and (smart is None or offer <= smart)
    assert not suspended


def test_below_six_amperes_pauses_instead_of_an_illegal_offer() -> None:
    assert (
        offer_a(
            connector_max_a=32,
            cable_max_a=None,
            smart_limit_a=4.0,
            tx_authorized=True,
            evse_suspended=False,
            faults=frozenset(),
        )
        == 0.0
    )
    assert (
        offer_a(
            connector_max_a=32,
            cable_max_a=13,
            smart_limit_a=None,
            tx_authorized=True,
            evse_suspended=False,
            faults=frozenset(),
        )
        == 13
    )
    assert (
        offer_a(
            connector_max_a=32,
            cable_max_a=None,
            smart_limit_a=None,
            tx_authorized=False,
            evse_suspended=False,
            faults=frozenset(),
        )
        is None
    )


def test_a_dead_meter_pauses_but_does_not_drop_the_pilot() -> None:
    assert (
        offer_a(
            connector_max_a=32,
            cable_max_a=None,
            smart_limit_a=None,
            tx_authorized=True,
            evse_suspended=False,
            faults=frozenset({Fault.METER_FAILURE}),
        )
        == 0.0
    )
    assert not may_close(
        SafetyInputs(
            pilot=PilotState.C,
            faults=frozenset({Fault.METER_FAILURE}),
            tx_authorized=True,
            evse_suspended=False,
            stopping=False,
            lock_required=False,
            locked=False,
        )
    )


# --- the session core applies the rules after every event of a random sequence -----------------

Event = tuple[str, object]
events = st.lists(
    st.one_of(
        st.tuples(st.just("pilot"), st.sampled_from(list(PilotState))),
        st.tuples(
            st.just("fault"),
            st.tuples(
                st.sampled_from(
                    [
                        Fault.GROUND_FAILURE,
                        Fault.EMERGENCY_STOP,
                        Fault.CONTACTOR_WELDED,
                        Fault.OVER_TEMPERATURE,
                    ]
                ),
                st.booleans(),
            ),
        ),
        st.tuples(st.just("limit"), st.none() | st.floats(0, 40)),
        st.tuples(st.just("tx"), st.booleans()),
        st.tuples(st.just("lock"), st.booleans()),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(events)
def test_core_outputs_follow_the_rules_after_every_event(seq: list[Event]) -> None:
    from safety_rig import Rig

    from ocppd.core.session.derive import evse_suspended

    rig = Rig()
    assert rig.closed[1] is False  # open at start-up
    for kind, value in seq:
        rig.apply(kind, value)
        c = rig.connector()
        allowed = may_close(
            SafetyInputs(
                pilot=c.pilot,
                faults=frozenset(c.faults + rig.state.faults),
                tx_authorized=c.tx is not None and c.stop is None,
                evse_suspended=evse_suspended(c),
                stopping=c.stop is not None,
                lock_required=c.spec.lockable,
                locked=c.locked,
            )
        )
        assert rig.closed[1] == allowed, (kind, value, c)
        if rig.closed[1]:
            assert rig.locked[1], "the contactor closed on a plug that is not locked"
        offer = rig.offer[1]
        if offer is not None and offer > 0:
            assert offer <= 32 and (c.smart_limit_a is None or offer <= c.smart_limit_a)
            assert offer >= safety.MIN_OFFER_A
