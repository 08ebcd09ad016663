"""Records of the charging domain, as plain frozen values: a transaction, an event of a
transaction (what the Central System must learn, in order), a reservation.

The store keeps them, the shell acts on them, protocol adapters make messages of them. They carry
no protocol's names. ``local_id`` is the station's own id of a transaction; ``remote_id`` the
one the Central System gave it, an opaque string (the 1.6 adapter maps its integer
transactionId; a 2.0.1 charger makes its own transactionId and the adapter stores that).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class TxRecord:
    """One transaction. ``local_id`` is ours; ``remote_id`` the Central System's id of it."""

    local_id: int
    connector_id: int
    id_tag: str | None  # None: begun without one (a begin point without authorization)
    remote_id: str | None
    meter_start_wh: int
    started_at: datetime
    last_meter_wh: int | None
    last_meter_at: datetime | None
    meter_stop_wh: int | None
    stopped_at: datetime | None
    stop_reason: str | None
    stop_id_tag: str | None
    reservation_id: int | None
    id_tag_status: str | None
    finished: bool
    parent_id_tag: str | None = None  # the idTag's parent when the session began (§3.4)

    @property
    def stop_requested(self) -> bool:
        """A stop was asked for and not yet recorded (a crash came in between)."""
        return not self.finished and self.stop_reason is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class TxEvent:
    """Something that happened to a transaction, to be delivered in ``seq`` order
    (storage/txevents.py). Protocol-neutral: the adapter makes its messages of it."""

    seq: int
    local_tx_id: int | None
    kind: str  # 'started' | 'sample' | 'ended'
    trigger: str | None  # a sample's: 'periodic' | 'clock'
    at: datetime
    energy_wh: int | None  # the meter register at the event
    data: dict[str, Any] | None  # {"reading": {...}, "offered_a": ...} (core.evse.reading_*)
    legacy_action: str | None  # a row from schema <= 5: the OCPP 1.6 action, data its payload
    attempts: int
    next_attempt_at: float | None  # wall-clock epoch seconds: survives a reboot


@dataclass(frozen=True, slots=True, kw_only=True)
class Reservation:
    """A reservation (OCPP 1.6 ReserveNow) kept until used, cancelled or expired."""

    reservation_id: int
    connector_id: int
    id_tag: str
    parent_id_tag: str | None
    expiry: datetime
