"""The session core with a recording board, to check the safety rules after every event.

The rig is a minimal shell: it steps the core (ocppd/core/session) and carries the output
effects out on a board that records them in order, so an ordering mistake (raising one offer
before lowering another, changing an offer before opening a contactor) shows even if the end
state is fine. Recording a transaction's start or end is immediate, as a shell's would be.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from session_world import v16

from ocppd.core.model import StopReason
from ocppd.core.session import machine
from ocppd.core.session.state import (
    CableRated,
    ChargerState,
    ConnectorSpec,
    ConnectorState,
    CurrentDrawn,
    EndTransaction,
    Event,
    FaultSeen,
    LimitSet,
    LockMoved,
    MoveLock,
    Offer,
    PilotSeen,
    Rules,
    SetContactor,
    Started,
    StopRequested,
    Tx,
    TxEnded,
    TxStarted,
    initial,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def tx(key: int) -> Tx:
    return Tx(tx_key=str(key), id_tag="T", parent_id_tag=None, meter_start_wh=0,
              started_at=datetime.fromtimestamp(key, UTC))


class Rig:
    def __init__(self, n: int = 1, *, charger_max_a: float | None = None,
                 on_offer: Callable[[dict[int, float | None]], None] | None = None) -> None:
        self.rules = Rules(tx=v16(stop_on_ev_disconnect=False, stop_on_invalid_id=False),
                           charger_max_a=charger_max_a)
        specs = [ConnectorSpec(connector_id=i, evse_id=i, max_current_a=32.0, lockable=True)
                 for i in range(1, n + 1)]
        self.state: ChargerState = initial(specs)
        self.closed: dict[int, bool] = dict.fromkeys(range(1, n + 1), False)
        self.offer: dict[int, float | None] = dict.fromkeys(range(1, n + 1))
        self.locked: dict[int, bool] = dict.fromkeys(range(1, n + 1), False)  # the actuator
        self.lock_works = True
        self._on_offer = on_offer
        self._started = 0
        self.clock_s = 0.0  # the shell's monotonic clock, for the draw readings
        self.step(Started())

    def connector(self, cid: int = 1) -> ConnectorState:
        return self.state.connector(cid)

    def step(self, event: Event) -> None:
        self.state, effects = machine.step(self.state, event, NOW, self.rules)
        for e in effects:
            match e:
                case SetContactor(connector_id=cid, closed=closed):
                    self.closed[cid] = closed
                case Offer(connector_id=cid, current_a=amps):
                    # a contactor opens before its offer drops (open first, then change the offer)
                    assert not self.closed[cid] or (amps or 0) >= 6.0, "offer dropped while closed"
                    self.offer[cid] = amps
                    if self._on_offer is not None:
                        self._on_offer(self.offer)
                case EndTransaction(connector_id=cid):
                    self.step(TxEnded(connector_id=cid))
                case MoveLock(connector_id=cid, locked=locked):
                    self.move_lock(cid, locked)

    def move_lock(self, cid: int, locked: bool) -> None:
        """A lock move, as a shell makes it: the actuator moves if it works."""
        if self.lock_works:
            self.locked[cid] = locked
        self.step(LockMoved(connector_id=cid, locked=locked, ok=self.lock_works))

    def set_tx(self, cid: int, running: bool) -> None:
        """Start or end a transaction, as a shell records it."""
        c = self.connector(cid)
        if running and c.tx is None:
            self._started += 1
            self.step(TxStarted(connector_id=cid, tx=tx(self._started)))
            if c.spec.lockable:  # then the lock, which may fail: no energy before it works
                self.move_lock(cid, True)
        elif not running and c.tx is not None and c.stop is None:
            self.step(StopRequested(connector_id=cid, reason=StopReason.LOCAL))

    def apply(self, kind: str, value: Any, cid: int = 1) -> None:
        if kind == "pilot":
            self.step(PilotSeen(connector_id=cid, pilot=value))
        elif kind == "fault":
            fault, active = value
            self.step(FaultSeen(connector_id=cid, fault=fault, active=active))
        elif kind == "limit":
            self.step(LimitSet(connector_id=cid, limit_a=value))
        elif kind == "cable":
            self.step(CableRated(connector_id=cid, max_current_a=value))
        elif kind == "tx":
            self.set_tx(cid, bool(value))
        elif kind == "drawn":  # a meter reading: the EV's current, some seconds later
            current_a, after_s = value
            self.clock_s += after_s
            self.step(CurrentDrawn(connector_id=cid, current_a=current_a, at_s=self.clock_s))
        elif kind == "lock":  # a lock move that works (True) or fails (False)
            self.lock_works = value
            self.move_lock(cid, True)
