"""The persistent store: one SQLite file that survives crashes, outages and power cuts.

The layers above decide WHAT to store; this class makes it durable, atomic and fast. Every
public method is one transaction, committed before it returns (and fsynced right after, off the
event-loop thread), unless it runs inside ``atomic()``, where everything commits together. All
errors are ``StorageError`` (``StorageFullError`` for a full disk, ``StorageCorruptError`` for
a damaged file); programming errors (unknown ids, naive datetimes) are ``KeyError``/``ValueError``.

Calls are synchronous and quick: the store is used from the event-loop thread, and no call waits
for the disk (commits are made durable by a background thread; ``durable()`` is the barrier for
code that must act only on durable writes, see durability.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from ocppd.storage.auth import AuthMixin
from ocppd.storage.certs import CertificatesMixin
from ocppd.storage.db import Database
from ocppd.storage.records import (
    Reservation,
    StoredProfile,
    dt_from_text,
    dt_to_text,
)
from ocppd.storage.seclog import SecurityLogMixin
from ocppd.storage.transactions import TransactionsMixin
from ocppd.storage.txevents import TxEventsMixin, dumps

EVENTS_MAX = 5000  # diagnostics ring: newest events kept


class Store(TransactionsMixin, TxEventsMixin, AuthMixin, SecurityLogMixin, CertificatesMixin):
    def __init__(self, db: Database, *, max_pending_events: int, tx_samples_max: int,
                 security_log_max: int = 10_000, mark_dir: Path | None = None) -> None:
        self._db = db
        self._seclog_max = security_log_max
        self._events_max_pending = max_pending_events
        self._samples_max = tx_samples_max
        self._open_meter_readings()
        self._open_tx_events(mark_dir)

    @classmethod
    def open(cls, path: Path, *, move_aside_corrupt: bool = False,
             max_pending_events: int = 50_000, tx_samples_max: int = 1000,
             max_size_bytes: int | None = None, security_log_max: int = 10_000,
             mark_dir: Path | None = None) -> Store:
        """Open (creating or upgrading) the store at ``path``.

        A corrupt file raises ``StorageCorruptError`` unless ``move_aside_corrupt``: then it is
        renamed to ``<path>.corrupt-<UTC timestamp>`` (never deleted) and an empty store is
        created. A file from a newer ocppd is always refused. ``max_size_bytes`` caps the file
        (writes beyond it fail like a full disk, with ``StorageFullError``).
        ``max_pending_events``: the cap of undelivered transaction events (txevents.py).
        ``tx_samples_max``: the delivered samples a long session keeps (for its stop message).
        ``mark_dir``: where the delivery watermark file is kept (txevents.py); a tmpfs such as
        the runtime directory spares the disk. Default: next to the database.
        """
        if max_pending_events < 1 or tx_samples_max < 2:
            raise ValueError("max_pending_events must be >= 1 and tx_samples_max >= 2")
        db = Database.open(Path(path), move_aside_corrupt=move_aside_corrupt,
                           max_size_bytes=max_size_bytes)
        return cls(db, max_pending_events=max_pending_events, tx_samples_max=tx_samples_max,
                   security_log_max=security_log_max, mark_dir=mark_dir)

    def close(self) -> None:
        try:
            self._close_tx_events()
        finally:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def path(self) -> Path:
        return self._db.path

    @property
    def schema_version(self) -> int:
        return self._db.schema_version

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Group calls: they commit together (one fsync, in the background), or not at all on an
        exception.
        Nest-safe (inner blocks are savepoints)."""
        with self._db.guard("run an atomic block"), self._db.atomic():
            yield

    async def durable(self) -> None:
        """The durability barrier: returns once every write committed so far survives a power
        cut (all but the lazy ones, ``durable=False``, whose loss is harmless). Await it before
        acting on a write (sending a queued message, closing a contactor for a new
        transaction); commits themselves never wait for the disk (durability.py)."""
        await self._db.syncer.wait()

    def sync(self) -> bool:
        """The same, blocking the calling thread; True once durable (tools and tests)."""
        return self._db.syncer.wait_blocking()

    @property
    def may_checkpoint(self) -> Callable[[], bool]:
        return self._db.syncer.may_checkpoint

    @may_checkpoint.setter
    def may_checkpoint(self, fn: Callable[[], bool]) -> None:
        """When a checkpoint (and the log restart after it, an fsync on the loop thread) is
        harmless: the application says 'no transaction running'."""
        self._db.syncer.may_checkpoint = fn

    def integrity_check(self) -> list[str]:
        """``['ok']`` when the file is healthy (``PRAGMA quick_check``)."""
        return self._db.raw_integrity_check()

    def diagnostics(self) -> dict[str, str]:
        """Facts for ``ocppctl status`` and tests: journal mode, fsync level, sizes."""
        facts = {}
        for pragma in ("journal_mode", "synchronous", "page_count", "page_size",
                       "freelist_count", "user_version"):
            row = self._db.one("read diagnostics", f"PRAGMA {pragma}")
            facts[pragma] = "" if row is None else str(row[0])
        facts["pending_events"] = str(self.tx_events_count())
        facts["dropped_events"] = str(self.tx_events_dropped)
        return facts

    # --- settings -----------------------------------------------------------------------------

    def get_setting(self, key: str) -> str | None:
        row = self._db.one("read a setting", "SELECT value FROM settings WHERE key = ?", (key,))
        return None if row is None else str(row[0])

    def set_setting(self, key: str, value: str) -> None:
        with self._db.write(f"save setting {key}"):
            self._db.exec("INSERT INTO settings(key, value) VALUES (?, ?) ON CONFLICT(key)"
                          " DO UPDATE SET value = excluded.value", (key, value))

    def delete_setting(self, key: str) -> None:
        with self._db.write(f"delete setting {key}"):
            self._db.exec("DELETE FROM settings WHERE key = ?", (key,))

    def settings(self, prefix: str = "") -> dict[str, str]:
        # substr, not LIKE: LIKE is case-insensitive and treats '_' as a wildcard
        rows = self._db.rows("read settings",
                             "SELECT key, value FROM settings WHERE substr(key, 1, ?) = ?"
                             " ORDER BY key", (len(prefix), prefix))
        return {r[0]: r[1] for r in rows}

    # --- availability (OCPP 1.6 §5.2: persists across reboots, Scheduled too) -----------------

    def get_availability(self, connector_id: int) -> tuple[bool, bool | None] | None:
        row = self._db.one("read availability",
                           "SELECT operative, scheduled_operative FROM availability"
                           " WHERE connector_id = ?", (connector_id,))
        if row is None:
            return None
        scheduled = row[1]
        return bool(row[0]), None if scheduled is None else bool(scheduled)

    def set_availability(self, connector_id: int, operative: bool,
                         scheduled: bool | None = None) -> None:
        with self._db.write("save availability"):
            self._db.exec(
                "INSERT INTO availability(connector_id, operative, scheduled_operative)"
                " VALUES (?, ?, ?) ON CONFLICT(connector_id) DO UPDATE SET"
                " operative = excluded.operative,"
                " scheduled_operative = excluded.scheduled_operative",
                (connector_id, int(operative), None if scheduled is None else int(scheduled)))

    # --- charging profiles (opaque JSON) ------------------------------------------------------

    def profiles(self) -> list[StoredProfile]:
        rows = self._db.rows("read charging profiles",
                             "SELECT profile_id, connector_id, purpose, stack_level, tx_id,"
                             " payload FROM profiles ORDER BY profile_id")
        return [StoredProfile(profile_id=r[0], connector_id=r[1], purpose=r[2], stack_level=r[3],
                              tx_id=r[4], payload=json.loads(r[5])) for r in rows]

    def has_profiles(self) -> bool:
        return self._db.one("read charging profiles", "SELECT 1 FROM profiles LIMIT 1") is not None

    def profile_put(self, p: StoredProfile) -> None:
        """Insert, or replace the profile with the same profile_id."""
        text = dumps(p.payload)
        with self._db.write("save a charging profile"):
            self._db.exec("INSERT OR REPLACE INTO profiles(profile_id, connector_id, purpose,"
                          " stack_level, tx_id, payload) VALUES (?, ?, ?, ?, ?, ?)",
                          (p.profile_id, p.connector_id, p.purpose, p.stack_level, p.tx_id, text))

    def profile_delete(self, profile_id: int) -> None:
        with self._db.write("delete a charging profile"):
            self._db.exec("DELETE FROM profiles WHERE profile_id = ?", (profile_id,))

    # --- reservations -------------------------------------------------------------------------

    def reservations(self) -> list[Reservation]:
        rows = self._db.rows("read reservations",
                             "SELECT reservation_id, connector_id, id_tag, parent_id_tag, expiry"
                             " FROM reservations ORDER BY reservation_id")
        return [Reservation(reservation_id=r[0], connector_id=r[1], id_tag=r[2],
                            parent_id_tag=r[3], expiry=dt_from_text(r[4])) for r in rows]

    def reservation_put(self, r: Reservation) -> None:
        """Insert, or replace the reservation with the same id (OCPP 1.6 §5.13)."""
        with self._db.write("save a reservation"):
            self._db.exec("INSERT OR REPLACE INTO reservations(reservation_id, connector_id,"
                          " id_tag, parent_id_tag, expiry) VALUES (?, ?, ?, ?, ?)",
                          (r.reservation_id, r.connector_id, r.id_tag, r.parent_id_tag,
                           dt_to_text(r.expiry)))

    def reservation_delete(self, reservation_id: int) -> None:
        with self._db.write("delete a reservation"):
            self._db.exec("DELETE FROM reservations WHERE reservation_id = ?", (reservation_id,))

    def id_tags_seen(self) -> set[str]:
        """Every idTag the store holds (transactions, cache, local list, reservations): what an
        export must not show in clear (ocppd.privacy.scrub_known)."""
        rows = self._db.rows(
            "read idTags",
            "SELECT id_tag FROM transactions UNION SELECT stop_id_tag FROM transactions"
            " UNION SELECT parent_id_tag FROM transactions"
            " UNION SELECT id_tag FROM auth_cache UNION SELECT parent_id_tag FROM auth_cache"
            " UNION SELECT id_tag FROM local_list UNION SELECT parent_id_tag FROM local_list"
            " UNION SELECT id_tag FROM reservations UNION SELECT parent_id_tag FROM reservations")
        return {r[0] for r in rows if r[0]}

    # --- diagnostics events (a ring of the newest EVENTS_MAX) ---------------------------------

    def log_event(self, at: datetime, kind: str, detail: str) -> None:
        with self._db.write("log an event"):
            cur = self._db.exec("INSERT INTO events(at, kind, detail) VALUES (?, ?, ?)",
                                (dt_to_text(at), kind, detail))
            assert cur.lastrowid is not None
            if cur.lastrowid > EVENTS_MAX and cur.lastrowid % 100 == 0:  # prune in batches
                self._db.exec("DELETE FROM events WHERE id <= ?", (cur.lastrowid - EVENTS_MAX,))

    def events(self, since: datetime | None = None,
               until: datetime | None = None) -> list[tuple[datetime, str, str]]:
        """Events with ``since <= at <= until``, in the order they were logged."""
        rows = self._db.rows(
            "read events",
            "SELECT at, kind, detail FROM events WHERE (?1 IS NULL OR at >= ?1)"
            " AND (?2 IS NULL OR at <= ?2) ORDER BY id",
            (None if since is None else dt_to_text(since),
             None if until is None else dt_to_text(until)))
        return [(dt_from_text(r[0]), r[1], r[2]) for r in rows]
