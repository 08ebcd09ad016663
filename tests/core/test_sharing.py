"""The charger-wide limit shared between connectors (ocppd/core/sharing.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from safety_rig import Rig

from ocppd.core.evse import PilotState
from ocppd.core.session.state import CurrentDrawn
from ocppd.core.sharing import (
    DRAW_SETTLE_S,
    MIN_SHARE_A,
    Demand,
    DrawWatch,
    share,
)


def d(cid: int, ceiling_a: float, *, asking: bool = True, since: float = 0.0) -> Demand:
    return Demand(connector_id=cid, ceiling_a=ceiling_a, asking=asking, since=since)


demands_st = st.lists(
    st.builds(
        Demand,
        connector_id=st.integers(1, 1000),
        ceiling_a=st.floats(0, 100, allow_nan=False),
        asking=st.booleans(),
        since=st.floats(0, 1e6, allow_nan=False),
    ),
    max_size=8,
    unique_by=lambda x: x.connector_id,
)


@given(total_a=st.floats(0, 500, allow_nan=False), demands=demands_st)
def test_the_sum_never_exceeds_the_limit_and_no_share_breaks_a_rule(
    total_a: float, demands: list[Demand]
) -> None:
    shares = share(total_a, demands)
    assert set(shares) == {x.connector_id for x in demands}
    assert sum(shares.values()) <= total_a + 1e-9  # float addition of tenths, nothing more
    for x in demands:
        got = shares[x.connector_id]
        assert got == 0 or MIN_SHARE_A <= got <= x.ceiling_a + 1e-9  # 6 A or nothing


@given(total_a=st.floats(0, 500, allow_nan=False), demands=demands_st)
def test_nothing_is_left_unused_that_an_admitted_connector_could_take(
    total_a: float, demands: list[Demand]
) -> None:
    shares = share(total_a, demands)
    admitted = [x for x in demands if shares[x.connector_id] > 0]
    unused = total_a - sum(shares.values())
    if admitted and unused >= 0.1 * (len(admitted) + 1):
        # there was room: every admitted connector got its whole ceiling (to the tenth)
        assert all(shares[x.connector_id] >= x.ceiling_a - 0.1 - 1e-9 for x in admitted)


def test_two_connectors_share_16_a_equally() -> None:
    assert share(16, [d(1, 32), d(2, 32)]) == {1: 8.0, 2: 8.0}


def test_a_connector_below_its_equal_share_leaves_the_rest_to_the_others() -> None:
    assert share(32, [d(1, 10), d(2, 32), d(3, 32)]) == {1: 10.0, 2: 11.0, 3: 11.0}


def test_a_connector_that_would_get_less_than_6_a_gets_nothing() -> None:
    # 16 A cannot give three connectors 6 A each: the third in order pauses
    assert share(16, [d(1, 32, since=1), d(2, 32, since=2), d(3, 32, since=3)]) == {
        1: 8.0,
        2: 8.0,
        3: 0.0,
    }
    assert share(5, [d(1, 32)]) == {1: 0.0}


def test_evs_that_ask_for_power_are_admitted_before_those_that_do_not() -> None:
    shares = share(12, [d(1, 32, asking=False, since=1), d(2, 32, since=2), d(3, 32, since=3)])
    assert shares == {1: 0.0, 2: 6.0, 3: 6.0}


def test_a_ceiling_below_6_a_is_never_admitted() -> None:
    assert share(32, [d(1, 5.9), d(2, 32)]) == {1: 0.0, 2: 32.0}


def test_shares_are_tenths_rounded_down() -> None:
    assert share(20, [d(1, 32), d(2, 32), d(3, 32)]) == {1: 6.6, 2: 6.7, 3: 6.7}


# --- the reduced-draw rule (a value: each reading gives the next judgement) ------------------


def watch(*readings: tuple[float, float | None, float]) -> DrawWatch:
    w = DrawWatch()
    for drawn_a, offer_a, now_s in readings:
        w = w.observe(drawn_a, offer_a, now_s)
    return w


def test_an_ev_drawing_well_below_its_offer_for_a_minute_gets_a_reduced_ceiling() -> None:
    w = watch((5.0, 16.0, 0.0), (7.0, 16.0, DRAW_SETTLE_S / 2))
    assert w.ceiling_a is None  # not long enough yet
    w = w.observe(6.0, 16.0, DRAW_SETTLE_S)
    assert w.ceiling_a == 9.0  # highest draw seen (7 A) + 2 A
    # steady at the reduced offer: stays reduced
    w = w.observe(7.0, 9.0, DRAW_SETTLE_S + 10).observe(7.0, 9.0, 2 * DRAW_SETTLE_S + 20)
    assert w.ceiling_a == 9.0


def test_the_ceiling_is_never_below_6_a() -> None:
    assert watch((0.0, 16.0, 0.0), (0.0, 16.0, DRAW_SETTLE_S)).ceiling_a == MIN_SHARE_A


def test_a_reading_close_to_the_offer_lifts_the_ceiling_at_once() -> None:
    w = watch((4.0, 16.0, 0.0), (4.0, 16.0, DRAW_SETTLE_S))
    assert w.ceiling_a == 6.0
    w = w.observe(5.5, 6.0, DRAW_SETTLE_S + 1)  # within 1 A of the offer: wants more
    assert w == DrawWatch()


def test_a_draw_that_recovers_in_the_window_restarts_it() -> None:
    w = watch((4.0, 16.0, 0.0), (15.5, 16.0, DRAW_SETTLE_S / 2))  # using its offer again
    w = w.observe(4.0, 16.0, DRAW_SETTLE_S)
    assert w.ceiling_a is None
    assert w.observe(4.0, 16.0, 2 * DRAW_SETTLE_S).ceiling_a == 6.0


def test_no_judgement_while_nothing_is_offered() -> None:
    w = watch((0.0, 0.0, 0.0), (0.0, None, DRAW_SETTLE_S * 2))
    assert w.ceiling_a is None


# --- the watch in the session core: driven by events, part of the connector's state ---------


def two_sharing(limit_a: float = 16.0) -> Rig:
    rig = Rig(2, charger_max_a=limit_a)
    for cid in (1, 2):
        rig.apply("pilot", PilotState.C, cid)
        rig.apply("tx", True, cid)
    assert (rig.offer[1], rig.offer[2]) == (8.0, 8.0)
    return rig


def test_an_ev_drawing_less_for_a_minute_frees_its_share_for_the_other() -> None:
    rig = two_sharing()
    rig.step(CurrentDrawn(connector_id=2, current_a=1.0, at_s=100.0))
    rig.step(CurrentDrawn(connector_id=2, current_a=1.0, at_s=100.0 + DRAW_SETTLE_S / 2))
    assert (rig.offer[1], rig.offer[2]) == (8.0, 8.0)  # not for long enough yet
    rig.step(CurrentDrawn(connector_id=2, current_a=1.0, at_s=100.0 + DRAW_SETTLE_S))
    assert rig.connector(2).draw_ceiling_a == MIN_SHARE_A
    assert (rig.offer[1], rig.offer[2]) == (10.0, 6.0)
    rig.step(CurrentDrawn(connector_id=2, current_a=5.5, at_s=200.0))  # wants more again
    assert (rig.offer[1], rig.offer[2]) == (8.0, 8.0)


def test_the_draw_is_not_judged_without_a_charger_wide_limit() -> None:
    rig = Rig(1)
    rig.apply("pilot", PilotState.C)
    rig.apply("tx", True)
    for at_s in (0.0, DRAW_SETTLE_S, 2 * DRAW_SETTLE_S):
        rig.step(CurrentDrawn(connector_id=1, current_a=0.0, at_s=at_s))
    assert rig.connector().draw == DrawWatch()


def test_an_ev_that_starts_asking_again_gets_its_ceiling_lifted() -> None:
    rig = two_sharing()
    rig.apply("pilot", PilotState.B, 2)  # EV 2 in B: draws nothing
    rig.step(CurrentDrawn(connector_id=2, current_a=0.0, at_s=0.0))
    rig.step(CurrentDrawn(connector_id=2, current_a=0.0, at_s=DRAW_SETTLE_S))
    assert rig.connector(2).draw_ceiling_a == MIN_SHARE_A
    rig.apply("pilot", PilotState.B, 2)
    assert rig.connector(2).draw_ceiling_a == MIN_SHARE_A  # still not asking: stays reduced
    rig.apply("pilot", PilotState.C, 2)
    assert rig.connector(2).draw == DrawWatch()


def test_the_next_session_is_judged_afresh() -> None:
    rig = two_sharing()
    rig.step(CurrentDrawn(connector_id=2, current_a=0.0, at_s=0.0))
    rig.step(CurrentDrawn(connector_id=2, current_a=0.0, at_s=DRAW_SETTLE_S))
    assert rig.connector(2).draw_ceiling_a == MIN_SHARE_A
    rig.apply("tx", False, 2)
    assert rig.connector(2).draw == DrawWatch()
