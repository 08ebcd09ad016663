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
once and made durable at once (the background fsync, see durability.py), together with every
MeterValues confirmed before it. A confirmed MeterValues costs no write of its own: its row is
deleted in the next commit the store makes anyway (in the normal rhythm, the one of the next
sample, so the deletion is durable with that sample's fsync: one fsync per sample, not two), or
with 63 others when a backlog is replayed. Until then its seq is the *confirmed watermark*:
delivery is strictly in seq order, so every MeterValues at or below it was confirmed (or
discarded), and reads skip those rows. The watermark is also written (pwrite, no fsync) to a
small file, ``<db name>.confirmed``, so that a SIGKILL resends no confirmed message: at the next
open, the rows at or below it are deleted before anything is read. The daemon keeps that file in
its runtime directory (tmpfs: no SD-card wear); without one it sits next to the database. After
a power cut only the MeterValues confirmed since the last fsync can come back (in the periodic
rhythm the last one at most), with its original timestamp and values. The file carries the
database file's identity, so the watermark of a database that was replaced (moved aside as
corrupt) never applies to another.

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
import zlib
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
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o640)

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


# SD-card wear: a MeterValues with a few measurands is 0.5-1 KiB of JSON, more than a 1 KiB
# page holds in place, so each queued one took an overflow page too (written when queued,
# freed when confirmed). Compressed (zlib, a BLOB) it is a quarter of that and fits.
PACK_FROM_BYTES = 256


def pack(text: str) -> str | bytes:
    """A payload as stored: short ones as text, longer ones zlib-compressed (a BLOB)."""
    raw = text.encode()
    return text if len(raw) < PACK_FROM_BYTES else zlib.compress(raw, 6)


def unpack(stored: str | bytes) -> str:
    return stored if isinstance(stored, str) else zlib.decompress(stored).decode()


class OutboxMixin:
    _db: Database
    _outbox_max: int
    _outbox_n: int | None  # cached count; None after a rollback
    _over_cap_warned: bool
    outbox_dropped: int
    _confirmed: list[int]  # confirmed MeterValues not deleted yet
    _folding: list[int]  # ... of which the commit under way deletes these
    _mark: ConfirmMark | None
    _next_seq: int

    def _open_confirmations(self, mark_dir: Path | None) -> None:
        """Load the watermark and delete what it says was confirmed (called at open)."""
        self._confirmed, self._folding = [], []
        self._db.before_commit.append(self._fold_confirmed)
        self._db.after_commit.append(self._folded)
        # The epoch is the database file's identity: a file that was replaced (moved aside,
        # restored) has another inode, and its watermark is ignored (the safe direction: at
        # worst a few confirmed MeterValues are sent again).
        st = os.stat(self._db.path)
        epoch = ((st.st_dev & 0xFFFFFFFF) << 32) | (st.st_ino & 0xFFFFFFFF)
        where = (mark_dir or self._db.path.parent) / f"{self._db.path.name}.confirmed"
        try:
            self._mark = ConfirmMark(where, epoch)
        except OSError as exc:  # read-only directory: confirm by deleting each row instead
            log.warning("outbox: no watermark file (%s); confirming row by row", exc)
            self._mark = None
            self._next_seq_from(0)
            return
        upto = self._mark.read()
        self._next_seq_from(upto)
        if upto:
            with self._db.write("remove confirmed MeterValues"):
                self._db.exec("DELETE FROM outbox WHERE kind = 'meter' AND seq <= ?", (upto,))
            self._outbox_n = None

    def _next_seq_from(self, watermark: int) -> None:
        """A seq never covers another message (a late confirmation must never remove a newer
        one, a watermark never cover one): the next is above every seq in the table and the
        watermark, the only places a seq is remembered across a restart."""
        row = self._db.one("read the outbox", "SELECT max(seq) FROM outbox")
        self._next_seq = max(int(row[0] or 0) if row else 0, watermark) + 1

    @property
    def _watermark(self) -> int:
        """Every MeterValues at or below this seq was confirmed but may still be a row."""
        return self._confirmed[-1] if self._confirmed else 0

    def outbox_confirm(self, seq: int, kind: str) -> None:
        """The CALLRESULT of queued message ``seq`` arrived: it is never sent again."""
        if kind == "meter" and self._mark is not None:
            self._mark.write(seq)  # no disk write of its own: see the module docstring
            self._confirmed.append(seq)
            if len(self._confirmed) >= CONFIRM_BATCH:
                self.outbox_flush()
            return
        with self._db.write("remove a confirmed message", durable=kind != "meter"):
            cur = self._db.exec("DELETE FROM outbox WHERE seq = ?", (seq,))
            if self._outbox_n is not None:
                self._outbox_n -= cur.rowcount

    def outbox_flush(self) -> None:
        """Delete the confirmed MeterValues still in the table (no fsync of its own)."""
        if self._confirmed:
            with self._db.write("remove confirmed MeterValues", durable=False):
                pass  # before_commit folds them in

    def _fold_confirmed(self) -> None:
        """Runs inside every commit: the confirmed MeterValues ride along (one fsync)."""
        if not self._confirmed:
            return
        self._folding = list(self._confirmed)
        cur = self._db.execmany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in self._folding])
        if self._outbox_n is not None:
            self._outbox_n -= cur.rowcount

    def _folded(self) -> None:
        if self._folding:
            done = set(self._folding)
            self._confirmed = [s for s in self._confirmed if s not in done]
            self._folding = []

    def outbox_put(self, *, action: str, payload: dict[str, Any], local_tx_id: int | None,
                   kind: str) -> int:
        """Queue a message; returns its seq (chronological order of delivery)."""
        if kind not in KINDS:
            raise ValueError(f"outbox kind must be one of {KINDS}, not {kind!r}")
        text = pack(dumps(payload))
        now = dt_to_text(datetime.now(UTC))
        with self._db.write("queue a message"):
            count = self.outbox_count()
            pending = len(self._confirmed)  # still rows: the commit deletes them (before_commit)
            if count >= self._outbox_max:
                count -= self._make_room(count)
            else:
                self._over_cap_warned = False  # back under the cap: warn again next time
            seq = self._next_seq
            self._next_seq += 1  # a rolled-back put leaves a gap, never a reuse
            self._db.exec(
                "INSERT INTO outbox(seq, action, payload, local_tx_id, kind, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)", (seq, action, text, local_tx_id, kind, now))
            self._outbox_n = count + pending + 1
        return seq

    def _make_room(self, count: int) -> int:
        """Thin the oldest 'meter' messages; returns how many were dropped."""
        need = count - self._outbox_max + 1 + max(1, self._outbox_max // 10)
        oldest = [r[0] for r in self._db.exec(
            "SELECT seq FROM outbox WHERE kind = 'meter' AND seq > ? ORDER BY seq LIMIT ?",
            (self._watermark, 2 * need))]
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
        items = self.outbox_items(1)
        return items[0] if items else None

    def outbox_items(self, limit: int | None = None) -> list[OutboxItem]:
        # confirmed MeterValues not yet deleted are skipped (see the module docstring)
        rows = self._db.rows("read the outbox",
                             f"SELECT {_COLS} FROM outbox WHERE NOT (kind = 'meter' AND seq <= ?)"
                             " ORDER BY seq LIMIT ?",
                             (self._watermark, -1 if limit is None else limit))
        return [_item(r) for r in rows]

    def outbox_count(self) -> int:
        if self._outbox_n is None:
            row = self._db.one("count the outbox", "SELECT count(*) FROM outbox")
            assert row is not None
            self._outbox_n = int(row[0])
        return self._outbox_n - len(self._confirmed)

    def outbox_remove(self, seq: int) -> None:
        """Forget a message (confirmed, or given up). Unknown seqs are ignored."""
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
        text = pack(dumps(payload))
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
                "SELECT seq, payload FROM outbox WHERE local_tx_id = ? AND kind != 'start'"
                " AND NOT (kind = 'meter' AND seq <= ?)",
                (local_tx_id, self._watermark)).fetchall()
            updates = []
            for seq, stored in rows:
                payload = json.loads(unpack(stored))
                payload["transactionId"] = tx_id
                updates.append((pack(dumps(payload)), seq))
            self._db.execmany("UPDATE outbox SET payload = ? WHERE seq = ?", updates)
        return len(updates)


def _item(row: Any) -> OutboxItem:
    return OutboxItem(
        seq=row["seq"], action=row["action"], payload_json=unpack(row["payload"]),
        local_tx_id=row["local_tx_id"], kind=row["kind"], attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"], created_at=dt_from_text(row["created_at"]),
    )
