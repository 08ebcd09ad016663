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
MeterValues confirmed before it. A confirmed MeterValues is not deleted one by one: its seq is
recorded as the *confirmed watermark* in the ``meta`` table, in a commit of its own that the
next fsync makes durable (in the normal rhythm, the one of the next sample: one fsync per
sample, not two), and the rows are deleted in batches. Delivery is strictly in seq order, so
every MeterValues at or below the watermark was confirmed (or discarded); at the next open they
are deleted before anything is read. A SIGKILL resends no confirmed message (the commit reached
the kernel). After a power cut, only a MeterValues confirmed after the last fsync can come back,
at most the last one in the periodic rhythm (it is sent again with its original timestamp and
values). The watermark lives in the database itself, so it can never apply to another file.
Earlier versions kept it in a ``<db>.confirmed`` file; that file is read once and removed.

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


WATERMARK_KEY = "outbox.confirmed_meter_seq"  # in the meta table


def _legacy_watermark(db_path: Path) -> int:
    """The watermark of an earlier version's ``<db>.confirmed`` file (0 if none or foreign),
    removed once read: the database holds it from now on."""
    path = Path(f"{db_path}.confirmed")
    try:
        raw = path.read_bytes()
        st = os.stat(db_path)
    except OSError:
        return 0
    epoch = ((st.st_dev & 0xFFFFFFFF) << 32) | (st.st_ino & 0xFFFFFFFF)
    seq = 0
    if len(raw) == _MARK.size:
        mark_epoch, mark_seq = _MARK.unpack(raw)
        if mark_epoch == epoch:  # a file copied next to another database is ignored
            seq = int(mark_seq)
    return seq


def _drop_legacy_watermark(db_path: Path) -> None:
    try:
        Path(f"{db_path}.confirmed").unlink()
    except OSError:
        pass


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

    def _open_confirmations(self) -> None:
        """Delete what the watermark says was confirmed (called at open)."""
        self._confirmed = []
        row = self._db.one("read the outbox watermark", "SELECT value FROM meta WHERE key = ?",
                           (WATERMARK_KEY,))
        upto = max(0 if row is None else int(row[0]), _legacy_watermark(self._db.path))
        if upto:
            with self._db.write("remove confirmed MeterValues"):
                self._set_watermark(upto)
                self._db.exec("DELETE FROM outbox WHERE kind = 'meter' AND seq <= ?", (upto,))
            self._outbox_n = None
        self._db.syncer.wait_blocking()
        _drop_legacy_watermark(self._db.path)  # only once the database holds its watermark

    def _set_watermark(self, seq: int) -> None:
        self._db.exec("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key)"
                      " DO UPDATE SET value = excluded.value", (WATERMARK_KEY, str(seq)))

    def outbox_confirm(self, seq: int, kind: str) -> None:
        """The CALLRESULT of queued message ``seq`` arrived: it is never sent again."""
        if kind == "meter":
            # no fsync of its own: durable with the next one (see the module docstring)
            with self._db.write("record a confirmed MeterValues", durable=False):
                self._set_watermark(seq)
                self._confirmed.append(seq)
                if len(self._confirmed) >= CONFIRM_BATCH:
                    self._delete_confirmed()
            return
        with self._db.write("remove a confirmed message"):
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
