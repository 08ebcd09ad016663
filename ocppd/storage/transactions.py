"""Transactions: who, where, when, and the meter at start and stop.

Every write here is durable: the last persisted meter reading becomes meterStop when a power cut
ends a transaction (OCPP 1.6 §4.10, TC_032), so it is billing data.

The last reading of a running transaction lives in its row (``last_meter_wh``) or, when a meter
sample is recorded in the same commit as a transaction event (the periodic sample: one atomic
block), in that event's row (``tx_events.energy_wh``, txevents.py): SD-card wear, the
transaction's row is then not rewritten on every sample. Reading a transaction takes the newer
of the two. History: finished transactions beyond the newest ``KEEP_FINISHED_TX`` are pruned,
but never while one of their events is still stored.

A stop is recorded twice: ``request_stop`` writes its reason, idTag and time as soon as it is
asked (the transaction is still open, ``finished`` = 0), and ``finish_transaction`` completes
it with the meter reading. An open transaction with a ``stop_reason`` is one whose stop was
asked for and not yet recorded (``TxRecord.stop_requested``): start-up finishes it rather than
resuming it, so a stop survives a crash.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from ocppd.storage.db import Database
from ocppd.storage.records import (
    TxRecord,
    dt_from_text,
    dt_to_text,
    opt_dt_from_text,
)

KEEP_FINISHED_TX = 1000

_COLS = ("local_id, connector_id, id_tag, remote_id, meter_start_wh, started_at, last_meter_wh,"
         " last_meter_at, meter_stop_wh, stopped_at, stop_reason, stop_id_tag, reservation_id,"
         " id_tag_status, finished, parent_id_tag")


class TransactionsMixin:
    _db: Database
    _pending_meter: dict[int, tuple[int, str]]  # local_id -> (Wh, at): this commit's reading

    def _open_meter_readings(self) -> None:
        self._pending_meter = {}
        self._db.before_commit.append(self._write_pending_meters)
        self._db.on_rollback.append(self._pending_meter.clear)

    def _write_pending_meters(self) -> None:
        """Readings no transaction event of the same commit took: into their rows."""
        for local_id, (energy_wh, at_text) in self._pending_meter.items():
            self._db.exec("UPDATE transactions SET last_meter_wh = ?, last_meter_at = ?"
                          " WHERE local_id = ? AND finished = 0", (energy_wh, at_text, local_id))
        self._pending_meter.clear()

    def begin_transaction(self, *, connector_id: int, id_tag: str | None, meter_start_wh: int,
                          started_at: datetime, reservation_id: int | None = None,
                          parent_id_tag: str | None = None) -> int:
        """Record a started transaction; returns its local_id (ours, never reused)."""
        with self._db.write("record a started transaction"):
            cur = self._db.exec(
                "INSERT INTO transactions(connector_id, id_tag, meter_start_wh, started_at,"
                " reservation_id, parent_id_tag) VALUES (?, ?, ?, ?, ?, ?)",
                (connector_id, id_tag, meter_start_wh, dt_to_text(started_at), reservation_id,
                 parent_id_tag))
        assert cur.lastrowid is not None
        return cur.lastrowid

    def record_authorization(self, local_id: int, *, id_tag: str,
                             parent_id_tag: str | None) -> None:
        """The idTag of a transaction begun without one. Only once: an idTag already there is
        never replaced (the first authorization is the transaction's)."""
        with self._db.write("record a transaction's idTag"):
            cur = self._db.exec("UPDATE transactions SET id_tag = ?, parent_id_tag = ?"
                                " WHERE local_id = ? AND id_tag IS NULL",
                                (id_tag, parent_id_tag, local_id))
            if cur.rowcount == 0:
                self._require(local_id)
                raise ValueError(f"transaction {local_id} has its idTag already")

    def set_remote_id(self, local_id: int, remote_id: str) -> None:
        """Record the Central System's id of the transaction (opaque text)."""
        self._update(local_id, "remote_id = ?", (remote_id,), "record a transaction's id")

    def set_id_tag_status(self, local_id: int, status: str) -> None:
        self._update(local_id, "id_tag_status = ?", (status,), "record an idTag status")

    def set_parent_id_tag(self, local_id: int, parent_id_tag: str | None) -> None:
        self._update(local_id, "parent_id_tag = ?", (parent_id_tag,), "record a parentIdTag")

    def update_meter(self, local_id: int, energy_wh: int, at: datetime) -> None:
        """Persist the latest reading of a running transaction (ignored once finished)."""
        at_text = dt_to_text(at)
        if self._db.in_atomic:  # a sample's block: a transaction event may carry it (above)
            row = self._db.exec("SELECT finished FROM transactions WHERE local_id = ?",
                                (local_id,)).fetchone()
            if row is None:
                raise KeyError(f"no transaction with local_id {local_id}")
            if not row[0]:  # a late sample after the stop is fine
                self._pending_meter[local_id] = (energy_wh, at_text)
            return
        with self._db.write("record a meter reading"):
            cur = self._db.exec(
                "UPDATE transactions SET last_meter_wh = ?, last_meter_at = ?"
                " WHERE local_id = ? AND finished = 0", (energy_wh, at_text, local_id))
            if cur.rowcount == 0:
                self._require(local_id)  # a late sample after the stop is fine; unknown is not

    def request_stop(self, local_id: int, *, reason: str, stop_id_tag: str | None,
                     at: datetime) -> None:
        """Record that the transaction's stop was asked for. The first request wins: a second
        one while the first is under way changes nothing. Ignored once finished."""
        with self._db.write("record a stop request"):
            cur = self._db.exec(
                "UPDATE transactions SET stop_reason = ?, stop_id_tag = ?, stopped_at = ?"
                " WHERE local_id = ? AND finished = 0 AND stop_reason IS NULL",
                (reason, stop_id_tag, dt_to_text(at), local_id))
            if cur.rowcount == 0:
                self._require(local_id)

    def finish_transaction(self, local_id: int, *, meter_stop_wh: int, stopped_at: datetime,
                           reason: str, stop_id_tag: str | None) -> None:
        """Mark a transaction finished. Finishing twice is an error: a second stop would be a
        second StopTransaction (a known interoperability bug), so the caller must look first."""
        with self._db.write("record a finished transaction"):
            cur = self._db.exec(
                "UPDATE transactions SET finished = 1, meter_stop_wh = ?, stopped_at = ?,"
                " stop_reason = ?, stop_id_tag = ? WHERE local_id = ? AND finished = 0",
                (meter_stop_wh, dt_to_text(stopped_at), reason, stop_id_tag, local_id))
            if cur.rowcount == 0:
                self._require(local_id)
                raise ValueError(f"transaction {local_id} is already finished")
            self._prune_finished()

    def transaction(self, local_id: int) -> TxRecord | None:
        row = self._db.one("read a transaction",
                           f"SELECT {_COLS} FROM transactions WHERE local_id = ?", (local_id,))
        return None if row is None else self._latest(_tx(row))

    def active_transactions(self) -> list[TxRecord]:
        rows = self._db.rows("read active transactions",
                             f"SELECT {_COLS} FROM transactions WHERE finished = 0"
                             " ORDER BY local_id")
        return [self._latest(_tx(r)) for r in rows]

    def recent_transactions(self, limit: int = 20) -> list[TxRecord]:
        rows = self._db.rows("read recent transactions",
                             f"SELECT {_COLS} FROM transactions ORDER BY local_id DESC LIMIT ?",
                             (limit,))
        return [self._latest(_tx(r)) for r in rows]

    def transaction_by_remote_id(self, remote_id: str) -> TxRecord | None:
        row = self._db.one("read a transaction",
                           f"SELECT {_COLS} FROM transactions WHERE remote_id = ?"
                           " AND remote_id IS NOT NULL ORDER BY local_id DESC LIMIT 1",
                           (remote_id,))
        return None if row is None else self._latest(_tx(row))

    def _latest(self, tx: TxRecord) -> TxRecord:
        """The transaction with its newest stored reading (its row or its newest sample's)."""
        if tx.finished:
            return tx
        # newest first by seq (the table's key): a running transaction's events are the last
        row = self._db.one("read a transaction event",
                           "SELECT energy_wh, at FROM tx_events WHERE local_tx_id = ?"
                           " AND energy_wh IS NOT NULL ORDER BY seq DESC LIMIT 1",
                           (tx.local_id,))
        if row is None:
            return tx
        at = dt_from_text(row[1])
        if tx.last_meter_at is not None and tx.last_meter_at >= at:
            return tx
        return dataclasses.replace(tx, last_meter_wh=int(row[0]), last_meter_at=at)

    # --- helpers ------------------------------------------------------------------------------

    def _update(self, local_id: int, assignment: str, params: tuple[Any, ...], what: str) -> None:
        with self._db.write(what):
            cur = self._db.exec(f"UPDATE transactions SET {assignment} WHERE local_id = ?",
                                (*params, local_id))
            if cur.rowcount == 0:
                raise KeyError(f"no transaction with local_id {local_id}")

    def _require(self, local_id: int) -> None:
        if self._db.exec("SELECT 1 FROM transactions WHERE local_id = ?",
                         (local_id,)).fetchone() is None:
            raise KeyError(f"no transaction with local_id {local_id}")

    def _prune_finished(self) -> None:
        old = [r[0] for r in self._db.exec(
            "SELECT local_id FROM transactions WHERE finished = 1 AND local_id NOT IN"
            " (SELECT local_tx_id FROM tx_events WHERE local_tx_id IS NOT NULL)"
            " ORDER BY local_id DESC LIMIT -1 OFFSET ?", (KEEP_FINISHED_TX,))]
        if old:
            self._db.execmany("DELETE FROM transactions WHERE local_id = ?", [(i,) for i in old])


def _tx(row: Any) -> TxRecord:
    return TxRecord(
        local_id=row["local_id"], connector_id=row["connector_id"], id_tag=row["id_tag"],
        remote_id=row["remote_id"], meter_start_wh=row["meter_start_wh"],
        started_at=dt_from_text(row["started_at"]), last_meter_wh=row["last_meter_wh"],
        last_meter_at=opt_dt_from_text(row["last_meter_at"]),
        meter_stop_wh=row["meter_stop_wh"], stopped_at=opt_dt_from_text(row["stopped_at"]),
        stop_reason=row["stop_reason"], stop_id_tag=row["stop_id_tag"],
        reservation_id=row["reservation_id"], id_tag_status=row["id_tag_status"],
        finished=bool(row["finished"]), parent_id_tag=row["parent_id_tag"],
    )
