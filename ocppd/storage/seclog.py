"""The persistent security log (OCPP 1.6 Security Whitepaper: "security events ... stored in a
security log"), and the delivery queue of its critical entries.

Bounded: at most ``seclog_max`` entries, the oldest dropped first, so a flood of events (a
reconnect loop that fails its TLS handshake) cannot fill the disk. The entries are few and
precious, so every write is durable. Delivery follows the outbox's rules (§3.7): in order,
oldest first, a CALLERROR or timeout counts as an attempt, a dead link does not.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from datetime import datetime

from ocppd.storage.db import Database
from ocppd.storage.records import dt_from_text, dt_to_text

log = logging.getLogger(__name__)

_COLS = "id, at, kind, tech_info, delivery, attempts, next_attempt_at"


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityLogEntry:
    id: int
    at: datetime
    kind: str
    tech_info: str | None
    delivery: str  # none | pending | sent | failed
    attempts: int
    next_attempt_at: float | None


def _entry(row: sqlite3.Row) -> SecurityLogEntry:
    return SecurityLogEntry(id=row[0], at=dt_from_text(row[1]), kind=row[2], tech_info=row[3],
                            delivery=row[4], attempts=row[5], next_attempt_at=row[6])


class SecurityLogMixin:
    _db: Database
    _seclog_max: int

    def seclog_add(self, *, at: datetime, kind: str, tech_info: str | None,
                   deliver: bool) -> int:
        """Append an entry (to be delivered when ``deliver``); drops the oldest beyond the cap."""
        with self._db.write("write the security log"):
            cur = self._db.exec(
                "INSERT INTO security_log(at, kind, tech_info, delivery) VALUES (?, ?, ?, ?)",
                (dt_to_text(at), kind, tech_info, "pending" if deliver else "none"))
            new_id = cur.lastrowid
            assert new_id is not None
            dropped = self._db.exec(
                "DELETE FROM security_log WHERE id <= ? RETURNING delivery",
                (new_id - self._seclog_max,)).fetchall()
        lost = sum(1 for (d,) in dropped if d == "pending")
        if lost:
            log.warning("security log full (%d entries): %d undelivered critical event(s)"
                        " dropped", self._seclog_max, lost)
        return new_id

    def seclog_entries(self, since: datetime | None = None,
                       until: datetime | None = None) -> list[SecurityLogEntry]:
        rows = self._db.rows(
            "read the security log",
            f"SELECT {_COLS} FROM security_log WHERE (?1 IS NULL OR at >= ?1)"
            " AND (?2 IS NULL OR at <= ?2) ORDER BY id",
            (None if since is None else dt_to_text(since),
             None if until is None else dt_to_text(until)))
        return [_entry(r) for r in rows]

    def seclog_next_pending(self) -> SecurityLogEntry | None:
        row = self._db.one("read the security log",
                           f"SELECT {_COLS} FROM security_log WHERE delivery = 'pending'"
                           " ORDER BY id LIMIT 1")
        return None if row is None else _entry(row)

    def seclog_delivered(self, entry_id: int) -> None:
        with self._db.write("confirm a security event"):
            self._db.exec("UPDATE security_log SET delivery = 'sent' WHERE id = ?", (entry_id,))

    def seclog_attempt_failed(self, entry_id: int, *, next_attempt_at: float | None) -> None:
        """One more failed attempt; ``next_attempt_at`` None: given up."""
        with self._db.write("record a security event delivery attempt"):
            self._db.exec(
                "UPDATE security_log SET attempts = attempts + 1, next_attempt_at = ?,"
                " delivery = CASE WHEN ? IS NULL THEN 'failed' ELSE delivery END WHERE id = ?",
                (next_attempt_at, next_attempt_at, entry_id))
