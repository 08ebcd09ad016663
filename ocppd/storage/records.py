"""Values the store hands out and takes in. Plain data: no sqlite, no OCPP logic.

Every datetime is timezone-aware UTC. The store keeps them as ISO 8601 text in one fixed shape
(``2024-05-01T12:00:00.000000+00:00``), so text order is time order and SQL can compare them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ocppd.core.records import Reservation, TxEvent, TxRecord

__all__ = ["AuthEntry", "Reservation", "StoredProfile", "TxEvent", "TxRecord", "dt_from_text",
           "dt_to_text", "opt_dt_from_text", "opt_dt_to_text"]


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
