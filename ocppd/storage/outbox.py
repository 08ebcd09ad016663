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

Confirmations (``outbox_confirm``). A confirmed StartTransaction/StopTransaction is deleted at
once, durably, together with every MeterValues confirmed before it. A confirmed MeterValues is
not deleted one by one: its seq is written (no fsync) to a small watermark file next to the
database, ``<db>.confirmed``, and the rows are deleted in batches. Delivery is strictly in seq
order, so every MeterValues at or below the watermark was confirmed (or discarded); at the next
open they are deleted before anything is read. A SIGKILL therefore resends no confirmed message
(the watermark write reached the kernel); only a power cut may bring back the last few confirmed
MeterValues, as described above. The watermark file carries the database file's identity, so
the watermark of a database that was replaced (moved aside as corrupt) never applies to another.

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
import os
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ocppd.storage.db import Database
from ocppd.storage.records import OutboxItem, dt_from_text, dt_to_text

log = logging.getLogger(__name__)

KINDS = ("start", "stop", "meter")
CONFIRM_BATCH = 64  # confirmed MeterValues deleted together
_MARK = struct.Struct(">QQ")  # outbox epoch, highest confirmed MeterValues seq


class ConfirmMark:
    """The watermark file of confirmed MeterValues (see the module docstring)."""

    def __init__(self, path: Path, epoch: int) -> None:
        self.path = path
        self.epoch = epoch
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def read(self) -> int:
        """The watermark if it belongs to this database's epoch, else 0."""
        raw = os.pread(self._fd, _MARK.size, 0)
        if len(raw) != _MARK.size:
            return 0
        epoch, seq = _MARK.unpack(raw)
        return int(seq) if epoch == self.epoch else 0

    def write(self, seq: int) -> None:
        os.pwrite(self._fd, _MARK.pack(self.epoch, seq), 0)

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
_COLS = "seq, action, payload, local_tx_id, kind, attempts, next_attempt_at, created_at"


def dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


class OutboxMixin:
    _db: Database
    _outbox_max: int
    _outbox_n: int | None  # cached count; None after a rollback
    _over_cap_warned: bool
    outbox_dropped: int
    _confirmed: list[int]  # confirmed MeterValues not deleted yet
    _mark: ConfirmMark | None

    def _open_confirmations(self) -> None:
        """Load the watermark and delete what it says was confirmed (called at open)."""
        self._confirmed = []
        # The epoch is the database file's identity: a file that was replaced (moved aside,
        # restored) has another inode, and its watermark is ignored (the safe direction: at
        # worst a few confirmed MeterValues are sent again).
        st = os.stat(self._db.path)
        epoch = ((st.st_dev & 0xFFFFFFFF) << 32) | (st.st_ino & 0xFFFFFFFF)
        try:
            self._mark = ConfirmMark(Path(f"{self._db.path}.confirmed"), epoch)
        except OSError as exc:  # read-only directory: confirm by deleting each row instead
            log.warning("outbox: no watermark file (%s); confirming row by row", exc)
            self._mark = None
            return
        upto = self._mark.read()
        if upto:
            with self._db.write("remove confirmed MeterValues"):
                self._db.exec("DELETE FROM outbox WHERE kind = 'meter' AND seq <= ?", (upto,))
            self._outbox_n = None

    def outbox_confirm(self, seq: int, kind: str) -> None:
        """The CALLRESULT of queued message ``seq`` arrived: it is never sent again."""
        if kind == "meter" and self._mark is not None:
            self._mark.write(seq)
            self._confirmed.append(seq)
            if len(self._confirmed) >= CONFIRM_BATCH:
                self.outbox_flush()
            return
        with self._db.write("remove a confirmed message", durable=kind != "meter"):
            self._delete_confirmed()
            cur = self._db.exec("DELETE FROM outbox WHERE seq = ?", (seq,))
            if self._outbox_n is not None:
                self._outbox_n -= cur.rowcount

    def outbox_flush(self) -> None:
        """Delete the confirmed MeterValues still in the table (no fsync: see the docstring)."""
        if self._confirmed:
            with self._db.write("remove confirmed MeterValues", durable=False):
                self._delete_confirmed()

    def _delete_confirmed(self) -> None:
        if not self._confirmed:
            return
        cur = self._db.execmany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in self._confirmed])
        if self._outbox_n is not None:
            self._outbox_n -= cur.rowcount
        self._confirmed.clear()

    def outbox_put(self, *, action: str, payload: dict[str, Any], local_tx_id: int | None,
                   kind: str) -> int:
        """Queue a message; returns its seq (chronological order of delivery)."""
        if kind not in KINDS:
            raise ValueError(f"outbox kind must be one of {KINDS}, not {kind!r}")
        text = dumps(payload)
        now = dt_to_text(datetime.now(UTC))
        self.outbox_flush()  # the cached count then matches the table
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
        self.outbox_flush()
        row = self._db.one("read the outbox",
                           f"SELECT {_COLS} FROM outbox ORDER BY seq LIMIT 1")
        return None if row is None else _item(row)

    def outbox_items(self, limit: int | None = None) -> list[OutboxItem]:
        self.outbox_flush()
        rows = self._db.rows("read the outbox",
                             f"SELECT {_COLS} FROM outbox ORDER BY seq LIMIT ?",
                             (-1 if limit is None else limit,))
        return [_item(r) for r in rows]

    def outbox_count(self) -> int:
        if self._outbox_n is None:
            self.outbox_flush()
            row = self._db.one("count the outbox", "SELECT count(*) FROM outbox")
            assert row is not None
            self._outbox_n = int(row[0])
        return self._outbox_n - len(self._confirmed)

    def outbox_remove(self, seq: int) -> None:
        """Forget a message (confirmed, or given up). Unknown seqs are ignored."""
        self.outbox_flush()
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
        self.outbox_flush()
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
        seq=row["seq"], action=row["action"], payload_json=row["payload"],
        local_tx_id=row["local_tx_id"], kind=row["kind"], attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"], created_at=dt_from_text(row["created_at"]),
    )
