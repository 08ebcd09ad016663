"""Hardware outputs: carries out the core's contactor and pilot effects on the board, and keeps
the status LEDs (boards that have them) in line with the connector statuses."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ocppd.core.model import Status
from ocppd.core.session.state import Offer, SetContactor
from ocppd.hw.base import EvseBoard


class Outputs:
    def __init__(self, board: EvseBoard, mono: Callable[[], float]) -> None:
        self._board, self._mono = board, mono
        self.switched_s: dict[int, float] = {}  # monotonic time each contactor last moved

    def apply(self, effect: SetContactor | Offer) -> None:
        match effect:
            case SetContactor(connector_id=cid, closed=closed):
                self._board.set_contactor(cid, closed)
                self.switched_s[cid] = self._mono()
            case Offer(connector_id=cid, current_a=amps):
                self._board.set_offer(cid, amps)

    def show(self, statuses: Iterable[Status | None]) -> None:
        leds = getattr(self._board, "set_leds", None)
        if leds is None:
            return
        seen = list(statuses)
        leds(
            ready=Status.FAULTED not in seen,
            charging=Status.CHARGING in seen,
            fault=Status.FAULTED in seen,
        )
