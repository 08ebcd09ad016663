"""Transaction events: what happened to a transaction, in order, until the Central System has it.

One table, ``tx_events``, holds every event of a transaction (started, authorized: the idTag
came after the start, a meter sample, ended)
with a sequence number that is the order of delivery. Events are protocol-neutral: a sample is
the meter reading itself, not a message; the protocol adapter turns events into its messages when
it sends them (OCPP 1.6: StartTransaction, MeterValues, StopTransaction with its
transactionData from the same rows; OCPP 2.0.1: TransactionEvent). Events are written before
anything is sent (OCPP 1.6 §3.7: queued, delivered in chronological order), so a crash or a power
cut at any instant loses none that was acted upon.

Delivery is strictly in sequence order, so one number says what was delivered: the *delivery
watermark* W. Every event at or below W was confirmed by the Central System (or given up after
TransactionMessageAttempts); the rest are pending. Confirming an event writes no row of its own:

- a confirmed start or end writes W into ``meta`` at once, durably (a confirmed
  StartTransaction sent twice opens a second transaction at the Central System), and an end
  removes its transaction's events, which nobody needs any more;
- a confirmed sample moves W in memory only, and the next event written carries it (column
  ``delivered``): so in the periodic rhythm the confirmation of one sample is made durable by the
  commit of the next, with its single fsync. W is also written (pwrite, no fsync) to a small file
  in the runtime directory (tmpfs), so that a crash of the process resends nothing; after a power
  cut at most the samples confirmed since the last commit come back, with their original time
  and values. ``flush()`` (every 64 such confirmations, and at close) writes W into ``meta``.

SD-card wear: a sample is one row appended to the right-most leaf of one table (1 KiB pages, a
few rows per page) and nothing else: about one page written per sample. Nothing is deleted per
confirmation; a transaction's rows go in one delete when its end is confirmed, and a long
session's delivered samples are thinned in batches (the newest ``samples_max`` are kept: they
are the ones a stop message may carry).

Size cap (``max_pending``). When adding finds that many pending events, the OLDEST pending
samples are thinned: every other one of them is dropped (the series keeps its span at a coarser
resolution), a tenth of the cap at a time. Starts and ends are NEVER dropped: losing a
transaction is worse than exceeding a soft limit. Drops are logged and counted (``dropped``).

Rows from before schema version 6 keep the OCPP 1.6 message they were queued as
(``legacy_action``, ``data`` is its payload) and the 1.6 adapter sends them as they are; the
StopTransaction samples of a transaction open across the upgrade became rows with negative
sequence numbers (always below W: never sent on their own, part of the stop).
"""

from __future__ import annotations

import json
import logging
import os
import struct
import zlib
from datetime import datetime
from pathlib import Path
from typing import Any

from ocppd.storage.db import Database
from ocppd.storage.records import TxEvent, dt_from_text, dt_to_text

log = logging.getLogger(__name__)

KINDS = ("started", "authorized", "sample", "ended")
FLUSH_EVERY = 64  # lazy confirmations between two writes of W into meta
THIN_EVERY = 256  # samples between two thinnings of a long session's delivered samples
_W_KEY = "tx_events.delivered"
_MARK = struct.Struct(">QQ")  # database identity, W

_COLS = ("seq, local_tx_id, kind, trigger, at, energy_wh, data, legacy_action, attempts,"
         " next_attempt_at")


def dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


# A payload longer than this is stored zlib-compressed (a BLOB): a 1 KiB page then holds more
# rows (a sample's reading is about 220 bytes of JSON, 160 compressed), so a new page, and the
# extra log pages of the split, come less often.
PACK_FROM_BYTES = 128


def pack(text: str) -> str | bytes:
    raw = text.encode()
    return text if len(raw) < PACK_FROM_BYTES else zlib.compress(raw, 6)


def unpack(stored: str | bytes) -> str:
    return stored if isinstance(stored, str) else zlib.decompress(stored).decode()


class DeliveryMark:
    """W in a small file (see the module docstring), tied to one database file's identity so
    that the mark of a database that was replaced never applies to another."""

    def __init__(self, path: Path, identity: int) -> None:
        self.path = path
        self.identity = identity
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o640)

    def read(self) -> int:
        raw = os.pread(self._fd, _MARK.size, 0)
        if len(raw) != _MARK.size:
            return 0
        identity, seq = _MARK.unpack(raw)
        return int(seq) if identity == self.identity else 0

    def write(self, seq: int) -> None:
        os.pwrite(self._fd, _MARK.pack(self.identity, seq), 0)

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class TxEventsMixin:
    _db: Database
    _pending_meter: dict[int, tuple[int, str]]  # transactions.py: this commit's reading
    _events_max_pending: int
    _samples_max: int
    _w: int  # the delivery watermark
    _w_safe: int  # ... as of the last commit (a rollback goes back to it)
    _w_stored: int  # ... as last written into meta or a row
    _w_lazy: int  # lazy confirmations since W was last written
    _next_seq: int
    _mark: DeliveryMark | None
    _over_cap_warned: bool
    tx_events_dropped: int

    def _open_tx_events(self, mark_dir: Path | None) -> None:
        self._over_cap_warned = False
        self.tx_events_dropped = 0
        self._w_lazy = 0
        row = self._db.one("read the delivery watermark",
                           "SELECT max(coalesce((SELECT CAST(value AS INTEGER) FROM meta"
                           " WHERE key = ?), 0), coalesce((SELECT max(delivered) FROM"
                           " tx_events), 0))", (_W_KEY,))
        self._w = self._w_safe = self._w_stored = int(row[0]) if row is not None else 0
        st = os.stat(self._db.path)
        identity = ((st.st_dev & 0xFFFFFFFF) << 32) | (st.st_ino & 0xFFFFFFFF)
        where = (mark_dir or self._db.path.parent) / f"{self._db.path.name}.delivered"
        try:
            self._mark = DeliveryMark(where, identity)
        except OSError as exc:  # read-only directory: W goes into meta at every confirmation
            log.warning("transaction events: no delivery mark file (%s); every confirmation"
                        " is written", exc)
            self._mark = None
        else:
            self._w = self._w_safe = max(self._w, self._mark.read())
        row = self._db.one("read transaction events", "SELECT max(seq) FROM tx_events")
        # a seq is never reused: a late confirmation must never cover a newer event
        self._next_seq = max(int(row[0] or 0) if row else 0, self._w) + 1
        self._db.on_rollback.append(self._events_rolled_back)
        self._db.after_commit.append(self._events_committed)

    def _events_committed(self) -> None:
        if self._w_safe != self._w:
            self._w_safe = self._w
            if self._mark is not None:
                self._mark.write(self._w)

    def _events_rolled_back(self) -> None:
        # a delivery recorded in the undone block is not recorded: it is sent again
        self._w = self._w_safe
        self._w_stored = min(self._w_stored, self._w)

    # --- writing ------------------------------------------------------------------------------

    def tx_event_add(self, local_tx_id: int, kind: str, at: datetime, *,
                     trigger: str | None = None, energy_wh: int | None = None,
                     data: dict[str, Any] | None = None) -> int:
        """Record an event of a transaction; returns its seq (the order of delivery).

        ``energy_wh``: the meter register at the event; for a sample, a reading given to
        ``update_meter`` in the same atomic block with the same time is taken when omitted.
        """
        if kind not in KINDS:
            raise ValueError(f"transaction event kind must be one of {KINDS}, not {kind!r}")
        at_text = dt_to_text(at)
        stored = None if data is None else pack(dumps(data))
        with self._db.write("record a transaction event"):
            reading = self._pending_meter.get(local_tx_id)
            if reading is not None and reading[1] == at_text:  # update_meter's, same sample
                self._pending_meter.pop(local_tx_id)
                if energy_wh is None:
                    energy_wh = reading[0]
            if kind == "sample":
                self._cap_pending()
            seq = self._next_seq
            self._next_seq += 1  # a rolled-back add leaves a gap, never a reuse
            self._db.exec(
                "INSERT INTO tx_events(seq, local_tx_id, kind, trigger, at, energy_wh, data,"
                " delivered) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, local_tx_id, kind, trigger, at_text, energy_wh, stored, self._w))
            self._w_stored, self._w_lazy = self._w, 0  # W rides along with this row
            if kind == "sample" and seq % THIN_EVERY == 0:
                self._thin_delivered(local_tx_id)
        return seq

    def tx_event_delivered(self, event: TxEvent) -> None:
        """The event was confirmed (or given up after all attempts): never sent again.
        Events are delivered in seq order; an event at or below W is ignored."""
        if event.seq <= self._w:
            return
        self._w = event.seq
        if (event.kind == "sample" and event.legacy_action in (None, "MeterValues")
                and self._mark is not None):
            self._w_lazy += 1
            if not self._db.in_atomic:  # (inside a block: at its commit, _events_committed)
                self._events_committed()  # the mark file only: see the module docstring
            if self._w_lazy >= FLUSH_EVERY:
                self.tx_events_flush()
            return
        with self._db.write("record a delivered transaction event",
                            durable=event.kind != "sample"):
            self._store_w()
            if event.kind == "ended" and event.local_tx_id is not None:
                # the transaction is complete at the Central System: its events are done with
                self._db.exec("DELETE FROM tx_events WHERE local_tx_id = ? AND seq <= ?",
                              (event.local_tx_id, self._w))

    def tx_events_flush(self) -> None:
        """Write W into meta if a lazy confirmation moved it (no fsync of its own)."""
        if self._w_stored < self._w:
            with self._db.write("record delivered transaction events", durable=False):
                self._store_w()

    def _store_w(self) -> None:
        self._db.exec("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key)"
                      " DO UPDATE SET value = excluded.value", (_W_KEY, str(self._w)))
        self._w_stored, self._w_lazy = self._w, 0

    def tx_event_attempt(self, seq: int, *, next_attempt_at: float | None) -> int:
        """Count one more delivery attempt (OCPP 1.6 §3.7.1); returns the attempts so far."""
        with self._db.write("record a delivery attempt"):
            row = self._db.exec(
                "UPDATE tx_events SET attempts = attempts + 1, next_attempt_at = ?"
                " WHERE seq = ? RETURNING attempts", (next_attempt_at, seq)).fetchone()
            if row is None:
                raise KeyError(f"no transaction event with seq {seq}")
            return int(row[0])

    def _cap_pending(self) -> None:
        count = self.tx_events_count()
        if count < self._events_max_pending:
            self._over_cap_warned = False
            return
        need = count - self._events_max_pending + 1 + max(1, self._events_max_pending // 10)
        oldest = [r[0] for r in self._db.exec(
            "SELECT seq FROM tx_events WHERE seq > ? AND kind = 'sample' ORDER BY seq LIMIT ?",
            (self._w, 2 * need))]
        drop = oldest[1::2][:need]  # keep the 1st, 3rd, 5th, ... of the oldest
        if len(drop) < need:  # not enough to thin: take the oldest of those left
            dropped = set(drop)
            drop += [s for s in oldest if s not in dropped][: need - len(drop)]
        if drop:
            self._db.execmany("DELETE FROM tx_events WHERE seq = ?", [(s,) for s in drop])
            self.tx_events_dropped += len(drop)
            log.warning("%d transaction events pending (cap %d): dropped %d of the oldest meter"
                        " samples (thinned, every other one)", count,
                        self._events_max_pending, len(drop))
        if count - len(drop) >= self._events_max_pending and not self._over_cap_warned:
            log.warning("transaction events over their cap of %d with only starts and ends"
                        " left: accepting anyway (transactions are never dropped)",
                        self._events_max_pending)
            self._over_cap_warned = True

    def _thin_delivered(self, local_tx_id: int) -> None:
        """A long session: keep its newest ``samples_max`` delivered samples, drop older ones."""
        self._db.exec(
            "DELETE FROM tx_events WHERE local_tx_id = ?1 AND kind = 'sample' AND seq <= ?2"
            " AND seq < (SELECT min(seq) FROM (SELECT seq FROM tx_events WHERE"
            " local_tx_id = ?1 AND kind = 'sample' ORDER BY seq DESC LIMIT ?3))",
            (local_tx_id, self._w, self._samples_max))

    # --- reading ------------------------------------------------------------------------------

    def tx_events_pending(self, limit: int | None = None) -> list[TxEvent]:
        """Events not yet delivered, oldest first."""
        rows = self._db.rows("read pending transaction events",
                             f"SELECT {_COLS} FROM tx_events WHERE seq > ? ORDER BY seq LIMIT ?",
                             (self._w, -1 if limit is None else limit))
        return [_event(r) for r in rows]

    def tx_events_count(self) -> int:
        """How many events are not yet delivered."""
        row = self._db.one("count pending transaction events",
                           "SELECT count(*) FROM tx_events WHERE seq > ?", (self._w,))
        return int(row[0]) if row is not None else 0

    def tx_events_of(self, local_tx_id: int) -> list[TxEvent]:
        """Every stored event of one transaction (delivered or not), in order."""
        rows = self._db.rows("read a transaction's events",
                             f"SELECT {_COLS} FROM tx_events WHERE local_tx_id = ? ORDER BY seq",
                             (local_tx_id,))
        return [_event(r) for r in rows]

    def _close_tx_events(self) -> None:
        try:
            if self._mark is None or not self._mark.closed:
                self.tx_events_flush()
        finally:
            if self._mark is not None:
                self._mark.close()


def _event(row: Any) -> TxEvent:
    stored = row["data"]
    return TxEvent(
        seq=row["seq"], local_tx_id=row["local_tx_id"], kind=row["kind"],
        trigger=row["trigger"], at=dt_from_text(row["at"]), energy_wh=row["energy_wh"],
        data=None if stored is None else json.loads(unpack(stored)),
        legacy_action=row["legacy_action"], attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
    )
