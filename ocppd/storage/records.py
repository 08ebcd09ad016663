"""Values the store hands out and takes in. Plain data: no sqlite, no OCPP logic.

Every datetime is timezone-aware UTC. The store keeps them as ISO 8601 text in one fixed shape
(``2024-05-01T12:00:00.000000+00:00``), so text order is time order and SQL can compare them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class TxRecord:
    """One transaction. ``local_id`` is ours; ``tx_id`` is the Central System's transactionId."""

    local_id: int
    connector_id: int
    id_tag: str
    tx_id: int | None
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
class OutboxItem:
    """A queued transaction-related message (OCPP 1.6 §3.7), oldest first by ``seq``."""

    seq: int
    action: str
    payload_json: str  # as stored: a replay sends it without decoding and encoding it again
    local_tx_id: int | None
    kind: str  # 'start' | 'stop' | 'meter'
    attempts: int
    next_attempt_at: float | None  # wall-clock epoch seconds, not monotonic: survives a reboot
    created_at: datetime

    @property
    def payload(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.payload_json)
        return value


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthEntry:
    """An IdTagInfo remembered for an id tag (authorization cache or local list)."""

    id_tag: str
    status: str  # OCPP AuthorizationStatus: 'Accepted', 'Blocked', 'Expired', 'Invalid', ...
    expiry: datetime | None = None
    parent_id_tag: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredProfile:
    """A charging profile as opaque JSON, with the columns the store indexes."""

    profile_id: int
    connector_id: int
    purpose: str
    stack_level: int
    tx_id: int | None
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Reservation:
    """A reservation (OCPP 1.6 ReserveNow) kept until used, cancelled or expired."""

    reservation_id: int
    connector_id: int
    id_tag: str
    parent_id_tag: str | None
    expiry: datetime


def dt_to_text(dt: datetime) -> str:
    """The one text shape of a stored instant. Naive datetimes are a programming error."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"naive datetime {dt!r}: the store takes timezone-aware UTC only")
    return dt.astimezone(UTC).isoformat(timespec="microseconds")


def dt_from_text(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def opt_dt_to_text(dt: datetime | None) -> str | None:
    return None if dt is None else dt_to_text(dt)


def opt_dt_from_text(text: str | None) -> datetime | None:
    return None if text is None else dt_from_text(text)
