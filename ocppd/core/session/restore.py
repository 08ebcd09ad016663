"""Restart is a function of stored state: the one path from what storage kept to a core state.

The shell reads storage into ``Stored`` (protocol-neutral values) and calls ``rebuild``; then the
hardware reports what it sees (pilots, faults, meters, restored limits) as ordinary events, and
``Started`` decides what the power cut left open (machine.py). Nothing else restores anything.

What is stored, and so survives: availability (and a Scheduled change), reservations, running
transactions with their idTag verdict, last register reading and a stop asked for. What is
not: an idTag waiting for the EV (a card shown before a power cut is not remembered), a session
that had just ended (Finishing), the reduced-draw ceiling (measured afresh), whether a plug is
locked (locked again at start-up when a session resumes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from ocppd.core.session.derive import settle
from ocppd.core.session.state import (
    ChargerState,
    ConnectorSpec,
    Effect,
    ForgetReservation,
    Hold,
    Rules,
    Stop,
    Tx,
    initial,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredTx:
    connector_id: int
    tx: Tx
    last_meter_wh: int | None  # the last register reading stored while it ran
    stop: Stop | None = None  # a stop asked for and not recorded when the charger went down


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredHold:
    connector_id: int
    hold: Hold


@dataclass(frozen=True, slots=True, kw_only=True)
class Stored:
    # connector id (0: the charger) -> (operative, scheduled operative)
    availability: Mapping[int, tuple[bool, bool | None]] = field(default_factory=dict)
    holds: tuple[StoredHold, ...] = ()
    transactions: tuple[StoredTx, ...] = ()


def rebuild(
    specs: list[ConnectorSpec], stored: Stored, now: datetime, rules: Rules
) -> tuple[ChargerState, list[Effect]]:
    """The core state that ``stored`` describes, and what must be done about it: timers to
    arm, reservations that expired while the charger was off to forget."""
    state = initial(specs)
    start = state
    effects: list[Effect] = []
    connectors = dict(state.connectors)
    for cid, (operative, scheduled) in stored.availability.items():
        if cid == 0:
            state = replace(state, operative=operative)
        elif cid in connectors:
            connectors[cid] = replace(connectors[cid], operative=operative,
                                      scheduled_operative=scheduled)
    for h in stored.holds:
        if h.connector_id in connectors and h.hold.expiry > now:
            connectors[h.connector_id] = replace(connectors[h.connector_id], hold=h.hold)
        else:  # expired while the charger was off (or the connector is gone)
            effects.append(ForgetReservation(reservation_id=h.hold.reservation_id, expired=True))
    for t in stored.transactions:
        if t.connector_id in connectors:
            energy_wh = t.last_meter_wh if t.last_meter_wh is not None else t.tx.meter_start_wh
            connectors[t.connector_id] = replace(connectors[t.connector_id], tx=t.tx,
                                                 energy_wh=float(energy_wh), stop=t.stop)
    state, settled = settle(start, replace(state, connectors=connectors), rules)
    return state, [*effects, *settled]
