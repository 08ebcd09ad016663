"""The station keeps the sum of all pilot offers within the charger-wide limit, at every instant.

A property over random event sequences on a three-connector station: sessions start and stop,
EVs plug and ask for power, faults come and go, connector and charger limits change. The board
records each offer as it is set, so an ordering mistake (raising one connector before lowering
another) shows even if the end state is fine.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from safety_rig import _tx

from ocppd import config
from ocppd.core import safety
from ocppd.hw.base import CableRating, Fault, FaultChanged, Hardware, PilotChanged, PilotState
from ocppd.station import Station

SITE_A = 20.0
N = 3


class SummingBoard:
    """Records offers and checks their sum against the bound in force at each call."""

    def __init__(self) -> None:
        self.offer: dict[int, float | None] = dict.fromkeys(range(1, N + 1))
        self.closed: dict[int, bool] = dict.fromkeys(range(1, N + 1), False)
        self.bound_a = SITE_A
        self.worst_excess_a = 0.0

    async def start(self, emit: Any) -> None: ...
    async def close(self) -> None: ...

    def set_contactor(self, connector_id: int, closed: bool) -> None:
        self.closed[connector_id] = closed

    def set_offer(self, connector_id: int, current_a: float | None) -> None:
        self.offer[connector_id] = current_a
        total = sum(x or 0.0 for x in self.offer.values())
        self.worst_excess_a = max(self.worst_excess_a, total - self.bound_a)

    def set_pilot_error(self, connector_id: int) -> None:
        self.offer[connector_id] = None

    async def lock(self, connector_id: int, locked: bool) -> bool:
        return True

    def has_lock(self, connector_id: int) -> bool:
        return True


class _Policy:
    def __getattr__(self, name: str) -> Any:
        return 0


def _station(board: SummingBoard) -> Station:
    cfg = config.from_dict(
        {
            "charge_point": {"id": "X"},
            "central_system": {"url": "ws://127.0.0.1:1/x"},
            "hardware": {"max_current_a": SITE_A},
            "connectors": [{}] * N,
            "storage": {"path": "/tmp/unused.db"},
            "control": {"socket": "/tmp/x.sock"},
        }
    )
    return Station(
        cfg=cfg,
        store=None,  # type: ignore[arg-type]
        hw=Hardware(board=board, meters={}),  # type: ignore[arg-type]
        policy=_Policy(),  # type: ignore[arg-type]
    )


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
    ),
    max_size=40,
)


def _total(station: Station) -> float:
    limit = station.charger_limit_a
    return SITE_A if limit is None else min(SITE_A, limit)


@settings(max_examples=300, deadline=None)
@given(events)
def test_sum_of_offers_never_exceeds_the_charger_limit(seq: list[tuple[str, int, Any]]) -> None:
    board = SummingBoard()
    station = _station(board)
    started = 0.0
    for kind, cid, value in seq:
        before = _total(station)
        if kind == "charger":  # during the change the old or the new bound may hold
            board.bound_a = max(before, SITE_A if value is None else min(SITE_A, value))
        match kind:
            case "pilot":
                station._emit(PilotChanged(connector_id=cid, state=value))
            case "tx":
                c = station.connectors[cid]
                started += 1
                c.tx = replace(_tx(), connector_id=cid, local_id=int(started)) if value else None
                station._apply(c)
            case "fault":
                fault, active = value
                station._emit(FaultChanged(connector_id=cid, fault=fault, active=active))
            case "limit":
                station.set_limit(cid, value)
            case "cable":
                station._emit(CableRating(connector_id=cid, max_current_a=value))
            case "charger":
                station.set_charger_limit(value)
        board.bound_a = _total(station)
        total = sum(x or 0.0 for x in board.offer.values())
        assert total <= board.bound_a + 1e-9, (kind, cid, value, board.offer)
        for x in board.offer.values():
            assert x is None or x == 0 or safety.MIN_OFFER_A <= x
    assert board.worst_excess_a <= 1e-9


def test_a_session_whose_ev_is_unplugged_holds_no_share() -> None:
    """StopTransactionOnEVSideDisconnect = false keeps the transaction; its share is free."""
    board = SummingBoard()
    station = _station(board)
    for cid in (1, 2):
        station._emit(PilotChanged(connector_id=cid, state=PilotState.C))
        c = station.connectors[cid]
        c.tx = replace(_tx(), connector_id=cid, local_id=cid)
        station._apply(c)
    assert (board.offer[1], board.offer[2]) == (10, 10)
    station._emit(PilotChanged(connector_id=2, state=PilotState.A))
    assert (board.offer[1], board.offer[2]) == (20, 0)
    station._emit(PilotChanged(connector_id=2, state=PilotState.B))  # back: shares again
    assert (board.offer[1], board.offer[2]) == (10, 10)
    assert board.worst_excess_a <= 1e-9
