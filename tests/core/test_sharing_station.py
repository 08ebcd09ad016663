"""The session core keeps the sum of all pilot offers within the charger-wide limit, at every
instant.

A property over random event sequences on a three-connector charger: sessions start and stop,
EVs plug and ask for power (and draw less than offered), faults come and go, connector and
charger limits change. The rig (safety_rig.py) carries out each offer effect in order and this
board checks the sum at each one, so an ordering mistake (raising one connector before lowering
another) shows even if the end state is fine.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from safety_rig import Rig

from ocppd.core import safety
from ocppd.core.evse import Fault, PilotState

SITE_A = 20.0
N = 3


class SummingBoard:
    """Checks the sum of the offers against the bound in force at each offer effect."""

    def __init__(self) -> None:
        self.bound_a = SITE_A
        self.worst_excess_a = 0.0

    def __call__(self, offer: dict[int, float | None]) -> None:
        total = sum(x or 0.0 for x in offer.values())
        self.worst_excess_a = max(self.worst_excess_a, total - self.bound_a)


def _rig(board: SummingBoard) -> Rig:
    return Rig(N, charger_max_a=SITE_A, on_offer=board)


cid_st = st.integers(1, N)
events = st.lists(
    st.one_of(
        st.tuples(st.just("pilot"), cid_st, st.sampled_from(list(PilotState))),
        st.tuples(st.just("tx"), cid_st, st.booleans()),
        st.tuples(
            st.just("fault"),
            st.integers(0, N),
            st.tuples(st.sampled_from([Fault.GROUND_FAILURE, Fault.METER_FAILURE]), st.booleans()),
        ),
        st.tuples(st.just("limit"), cid_st, st.none() | st.floats(0, 40)),
        st.tuples(st.just("cable"), cid_st, st.sampled_from([13.0, 20.0, 32.0])),
        st.tuples(st.just("charger"), st.just(0), st.none() | st.floats(0, 40)),
        # EVs that draw less than offered free part of their share, and want it back
        st.tuples(st.just("drawn"), cid_st,
                  st.tuples(st.floats(0, 40), st.sampled_from([0.0, 30.0, 60.0]))),
    ),
    max_size=40,
)


def _total(rig: Rig) -> float:
    limit = rig.state.limit_a
    return SITE_A if limit is None else min(SITE_A, limit)


@settings(max_examples=300, deadline=None)
@given(events)
def test_sum_of_offers_never_exceeds_the_charger_limit(seq: list[tuple[str, int, Any]]) -> None:
    board = SummingBoard()
    rig = _rig(board)
    for kind, cid, value in seq:
        before = _total(rig)
        if kind == "charger":  # during the change the old or the new bound may hold
            board.bound_a = max(before, SITE_A if value is None else min(SITE_A, value))
            rig.apply("limit", value, 0)
        else:
            rig.apply(kind, value, cid)
        board.bound_a = _total(rig)
        total = sum(x or 0.0 for x in rig.offer.values())
        assert total <= board.bound_a + 1e-9, (kind, cid, value, rig.offer)
        for x in rig.offer.values():
            assert x is None or x == 0 or safety.MIN_OFFER_A <= x
    assert board.worst_excess_a <= 1e-9


def test_a_session_whose_ev_is_unplugged_holds_no_share() -> None:
    """StopTransactionOnEVSideDisconnect = false keeps the transaction; its share is free."""
    board = SummingBoard()
    rig = _rig(board)
    for cid in (1, 2):
        rig.apply("pilot", PilotState.C, cid)
        rig.apply("tx", True, cid)
    assert (rig.offer[1], rig.offer[2]) == (10, 10)
    rig.apply("pilot", PilotState.A, 2)
    assert (rig.offer[1], rig.offer[2]) == (20, 0)
    rig.apply("pilot", PilotState.B, 2)  # back: shares again
    assert (rig.offer[1], rig.offer[2]) == (10, 10)
    assert board.worst_excess_a <= 1e-9
