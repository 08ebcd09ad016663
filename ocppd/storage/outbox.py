"""The outbox of transaction-related messages (OCPP 1.6 §3.7).

Messages are written here *before* they are sent and removed when their CALLRESULT arrives, so a
crash or power cut at any instant loses none: after a restart they are sent again, oldest first.

Removal durability. Removing a confirmed StartTransaction/StopTransaction commits durably
(fsync) at once: a confirmed start or stop must never be sent twice (a second StartTransaction
opens a second transaction at the Central System). Removing a confirmed MeterValues commits
lazily (no fsync); after a power cut the last few confirmed MeterValues may be sent again, which
is harmless (same timestamps and values, the Central System de-duplicates or stores a repeat).
The WAL is sequential, so a lazily removed MeterValues can only come back if no durable commit
followed it; in particular it can never come back after its own confirmed StopTransaction. This
keeps a replay of thousands of queued MeterValues at the speed of the link, not of the disk.

Size cap (``outbox_max_messages``). When a put finds the outbox full, room is made by thinning
the OLDEST periodic MeterValues ('meter' kind): of the oldest ones, every other one is dropped
(so the series keeps its span at a coarser resolution instead of losing a contiguous block), a
tenth of the cap at a time so thinning does not run on every put. 'start' and 'stop' messages
are NEVER dropped: when only they remain the put is accepted anyway, beyond the cap, with one
warning, because losing a transaction is worse than exceeding a soft limit. The number dropped
is logged and added to ``Store.outbox_dropped``.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from ocppd.storage.db import Database
from ocppd.storage.records import OutboxItem, dt_from_text, dt_to_text

log = logging.getLogger(__name__)

KINDS = ("start", "stop", "meter")
_COLS = "seq, action, payload, local_tx_id, kind, attempts, next_attempt_at, created_at"


def dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


class OutboxMixin:
    _db: Database
    _outbox_max: int
    _outbox_n: int | None  # cached count; None after a rollback
    _over_cap_warned: bool
    outbox_dropped: int

    def outbox_put(self, *, action: str, payload: dict[str, Any], local_tx_id: int | None,
                   kind: str) -> int:
        """Queue a message; returns its seq (chronological order of delivery)."""
        if kind not in KINDS:
            raise ValueError(f"outbox kind must be one of {KINDS}, not {kind!r}")
        text = dumps(payload)
        now = dt_to_text(datetime.now(UTC))
        with self._db.write("queue a message"):
            count = self.outbox_count()
            if count >= self._outbox_max:
                count -= self._make_room(count)
            else:
                self._over_cap_warned = False  # back under the cap: warn again next time
            cur = self._db.exec(
                "INSERT INTO outbox(action, payload, local_tx_id, kind, created_at)"
                " VALUES (?, ?, ?, ?, ?)", (action, text, local_tx_id, kind, now))
            self._outbox_n = count + 1
            seq = cur.lastrowid
        assert seq is not None
        return seq

    def _make_room(self, count: int) -> int:
        """Thin the oldest 'meter' messages; returns how many were dropped."""
        need = count - self._outbox_max + 1 + max(1, self._outbox_max // 10)
        oldest = [r[0] for r in self._db.exec(
            "SELECT seq FROM outbox WHERE kind = 'meter' ORDER BY seq LIMIT ?", (2 * need,))]
        drop = oldest[1::2][:need]  # keep the 1st, 3rd, 5th, ... of the oldest
        if len(drop) < need:  # not enough to thin: take the oldest of those left
            dropped = set(drop)
            kept = [s for s in oldest if s not in dropped]
            drop += kept[: need - len(drop)]
        if drop:
            self._db.execmany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in drop])
            self.outbox_dropped += len(drop)
            log.warning("outbox full (%d messages, cap %d): dropped %d of the oldest MeterValues"
                        " (thinned, every other one)", count, self._outbox_max, len(drop))
        if count - len(drop) >= self._outbox_max:
            if not self._over_cap_warned:
                log.warning("outbox over its cap of %d with only StartTransaction/StopTransaction"
                            " left: accepting anyway (transactions are never dropped)",
                            self._outbox_max)
                self._over_cap_warned = True
        else:
            self._over_cap_warned = False
        return len(drop)

    def outbox_head(self) -> OutboxItem | None:
        row = self._db.one("read the outbox",
                           f"SELECT {_COLS} FROM outbox ORDER BY seq LIMIT 1")
        return None if row is None else _item(row)

    def outbox_items(self, limit: int | None = None) -> list[OutboxItem]:
        rows = self._db.rows("read the outbox",
                             f"SELECT {_COLS} FROM outbox ORDER BY seq LIMIT ?",
                             (-1 if limit is None else limit,))
        return [_item(r) for r in rows]

    def outbox_count(self) -> int:
        if self._outbox_n is None:
            row = self._db.one("count the outbox", "SELECT count(*) FROM outbox")
            assert row is not None
            self._outbox_n = int(row[0])
        return self._outbox_n

    def outbox_remove(self, seq: int) -> None:
        """Forget a confirmed message. Unknown seqs are ignored (already removed)."""
        row = self._db.one("read the outbox", "SELECT kind FROM outbox WHERE seq = ?", (seq,))
        if row is None:
            return
        # see the module docstring: only confirmed MeterValues may come back after a power cut
        with self._db.write("remove a confirmed message", durable=row[0] != "meter"):
            cur = self._db.exec("DELETE FROM outbox WHERE seq = ?", (seq,))
            if self._outbox_n is not None:
                self._outbox_n -= cur.rowcount

    def outbox_record_attempt(self, seq: int, *, next_attempt_at: float | None) -> int:
        """Count one more delivery attempt (OCPP 1.6 §3.7.1 TransactionMessageAttempts)."""
        with self._db.write("record a delivery attempt"):
            row = self._db.exec(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ? WHERE seq = ?"
                " RETURNING attempts", (next_attempt_at, seq)).fetchone()
            if row is None:
                raise KeyError(f"no queued message with seq {seq}")
            return int(row[0])

    def outbox_set_payload(self, seq: int, payload: dict[str, Any]) -> None:
        text = dumps(payload)
        with self._db.write("rewrite a queued message"):
            if self._db.exec("UPDATE outbox SET payload = ? WHERE seq = ?",
                             (text, seq)).rowcount == 0:
                raise KeyError(f"no queued message with seq {seq}")

    def outbox_assign_tx_id(self, local_tx_id: int, tx_id: int) -> int:
        """Put the Central System's transactionId into every queued MeterValues and
        StopTransaction of a transaction (they were queued before it was known); returns how
        many were rewritten. The queued StartTransaction has no transactionId and is left alone.
        """
        with self._db.write("assign a transactionId to queued messages"):
            rows = self._db.exec(
                "SELECT seq, payload FROM outbox WHERE local_tx_id = ? AND kind != 'start'",
                (local_tx_id,)).fetchall()
            updates = []
            for seq, text in rows:
                payload = json.loads(text)
                payload["transactionId"] = tx_id
                updates.append((dumps(payload), seq))
            self._db.execmany("UPDATE outbox SET payload = ? WHERE seq = ?", updates)
        return len(updates)


def _item(row: Any) -> OutboxItem:
    return OutboxItem(
        seq=row["seq"], action=row["action"], payload=json.loads(row["payload"]),
        local_tx_id=row["local_tx_id"], kind=row["kind"], attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"], created_at=dt_from_text(row["created_at"]),
    )
