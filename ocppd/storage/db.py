"""The SQLite connection: opening, integrity check, migrations, transactions, error translation.

This is the one place that talks to ``sqlite3`` and the one place its errors become
``StorageError``. Everything runs synchronously on the event-loop thread, so every statement
must be quick (indexed lookups, small batches).

Durability. The database is in WAL mode with ``synchronous=NORMAL``: a commit appends its frames
to the write-ahead log and returns without an fsync, so nothing on the event-loop thread waits for
the disk. A background thread (``durability.Syncer``) fsyncs the log: at once after a commit made
with ``durable=True`` (the default), or with the next one for a commit made with ``durable=False``
(writes whose loss after a power cut is harmless). Code that may only act once a write survives a
power cut awaits the barrier (``Store.durable()``). The WAL is append-only and checksummed, so a
power cut can only undo a tail of commits nobody acted upon. See durability.py.

No shared-memory index. The connection holds the database in ``locking_mode=EXCLUSIVE``, set
before WAL mode is entered, so SQLite keeps the WAL index in the process's heap instead of the
memory-mapped ``-shm`` file. That file's pages were rewritten by every commit and written back
to the card by the kernel every half minute or so: two to three 4 KiB pages per meter sample at
a 60 s interval, more than the sample itself. The price: no other process can open the database
while ocppd runs (ocppctl talks to the daemon, never to the file), and checkpoints run on this
same connection, from the background thread, only while no transaction is open
(durability.py).

Page size. New databases use 1 KiB pages: a commit writes whole pages to the log, and the rows a
meter sample touches are small, so 4 KiB pages wrote four times the bytes for the same data
(SD-card wear). Existing databases keep their page size.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ocppd.errors import StorageError
from ocppd.storage import schema
from ocppd.storage.durability import Syncer

log = logging.getLogger(__name__)

# primary result codes (the low byte of sqlite_errorcode)
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_NOTADB = 26
_CORRUPT_CODES = (_SQLITE_CORRUPT, _SQLITE_NOTADB)

Params = Sequence[Any]

PAGE_SIZE_BYTES = 1024  # new databases (see the module docstring)


class StorageFullError(StorageError):
    """The disk (or the file-size limit) is full. Reads still work; retry writes later."""


class StorageCorruptError(StorageError):
    """The database file is damaged or is not a database."""


def _code(e: sqlite3.Error) -> int:
    return int(getattr(e, "sqlite_errorcode", 0) or 0) & 0xFF


def _describe(e: sqlite3.Error) -> str:
    name = getattr(e, "sqlite_errorname", None)
    return f"{e} [{name}]" if name else str(e)


class Database:
    """One connection in autocommit mode; ``atomic()`` draws the transaction boundaries."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._depth = 0  # nesting of atomic()
        self.on_rollback: list[Any] = []  # callbacks: drop caches that may describe undone work
        # callbacks run inside every outermost transaction just before COMMIT (writes that ride
        # along with whatever commits next), and after a COMMIT succeeded
        self.before_commit: list[Callable[[], None]] = []
        self.after_commit: list[Callable[[], None]] = []
        # the loop thread and the durability thread's checkpoints share the one connection
        self.mutex = threading.RLock()
        self.syncer = Syncer(path, checkpoint=self._checkpoint)

    # --- opening ------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, move_aside_corrupt: bool,
             max_size_bytes: int | None = None) -> Database:
        path = Path(path)
        conn = _connect(path)
        problem = _integrity_problem(conn, path)
        if problem is not None:
            conn.close()
            if not move_aside_corrupt:
                raise StorageCorruptError(
                    f"{path}: database is corrupt ({problem}); refusing to start. Move the file"
                    " aside (or set storage.move_aside_corrupt = true) to start with an empty"
                    " store"
                )
            moved = _move_aside(path)
            log.error("%s: database is corrupt (%s); moved it to %s and starting with an empty"
                      " store", path, problem, moved)
            conn = _connect(path)
        try:
            version = schema.schema_version(conn)
            if version > schema.LATEST_VERSION:
                raise StorageError(
                    f"{path}: schema version {version} was written by a newer ocppd (this one"
                    f" knows up to {schema.LATEST_VERSION}); refusing to open it"
                )
            if version == 0 and int(conn.execute("PRAGMA page_count").fetchone()[0]) == 0:
                conn.execute(f"PRAGMA page_size = {PAGE_SIZE_BYTES}")  # before the first table
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"{path}: cannot switch the database to WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
            # checkpoints fsync: the background thread runs them (durability.py)
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            conn.execute("PRAGMA journal_size_limit = 4194304")  # trim the WAL after checkpoints
            if max_size_bytes is not None:
                # a hard ceiling keeps the store from filling the SD card; hitting it behaves
                # like a full disk (SQLITE_FULL)
                page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
                conn.execute(f"PRAGMA max_page_count = {max(1, max_size_bytes // page_size)}")
            reached = schema.migrate(conn)
            if reached:
                log.info("%s: schema upgraded from version %d to %d", path, version, reached[-1])
        except sqlite3.Error as e:
            conn.close()
            raise _translate(e, path, "open the database") from e
        except BaseException:
            conn.close()
            raise
        return cls(conn, path)

    def close(self) -> None:
        self.syncer.close()  # everything committed becomes durable first
        try:
            self._conn.close()
        except sqlite3.Error as e:
            raise _translate(e, self.path, "close the database") from e

    @property
    def schema_version(self) -> int:
        with self.guard("read the schema version"):
            return schema.schema_version(self._conn)

    # --- statements ---------------------------------------------------------------------------

    @contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Translate sqlite3 errors raised inside into StorageError naming the path and action."""
        try:
            yield
        except sqlite3.Error as e:
            raise _translate(e, self.path, what) from e

    def rows(self, what: str, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        with self.mutex, self.guard(what):
            return self._conn.execute(sql, params).fetchall()

    def one(self, what: str, sql: str, params: Params = ()) -> sqlite3.Row | None:
        with self.mutex, self.guard(what):
            row: sqlite3.Row | None = self._conn.execute(sql, params).fetchone()
            return row

    def exec(self, sql: str, params: Params = ()) -> sqlite3.Cursor:
        """Run a write statement; only inside ``write()``/``atomic()``."""
        if self._depth == 0 or not self._conn.in_transaction:
            # sqlite may roll back the whole transaction on SQLITE_FULL/IOERR; a caller that
            # caught that error inside atomic() must not go on writing in autocommit mode
            raise StorageError(f"{self.path}: write outside a live transaction (aborted by an"
                               " earlier error?)")
        return self._conn.execute(sql, params)

    def execmany(self, sql: str, seq: Sequence[Params]) -> sqlite3.Cursor:
        self.exec("SELECT 1")  # the same liveness check
        return self._conn.executemany(sql, seq)

    # --- transactions -------------------------------------------------------------------------

    @contextmanager
    def write(self, what: str, *, durable: bool = True) -> Iterator[None]:
        """A guarded atomic block: the unit every write method uses."""
        with self.guard(what), self.atomic(durable=durable):
            yield

    @contextmanager
    def atomic(self, *, durable: bool = True) -> Iterator[None]:
        """All writes inside commit together, or none on an exception.

        Nested blocks become savepoints: an exception caught inside the outer block undoes only
        the inner block. ``durable`` matters only for the outermost block: True asks the
        background thread to fsync the log at once, False leaves the commit to the next fsync.
        Either way the commit returns without waiting for the disk.
        """
        conn = self._conn
        if self._depth:
            name = f"sp{self._depth}"
            self.exec(f"SAVEPOINT {name}")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if conn.in_transaction:
                    try:
                        conn.execute(f"ROLLBACK TO {name}")
                        conn.execute(f"RELEASE {name}")
                    except sqlite3.Error:
                        log.debug("rollback to %s failed", name, exc_info=True)
                self._rolled_back()
                raise
            self._depth -= 1
            self.exec(f"RELEASE {name}")
            return

        # sqlite3 errors propagate untranslated: the caller's guard() names the action
        with self.mutex:
            yield from self._outermost(conn, durable)

    def _outermost(self, conn: sqlite3.Connection, durable: bool) -> Iterator[None]:
        changes = conn.total_changes
        try:
            conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
                for cb in self.before_commit:
                    cb()
            except BaseException:
                self._rollback()
                raise
            try:
                conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        finally:
            self._depth = 0
        for cb in self.after_commit:
            cb()
        if conn.total_changes != changes:
            self.syncer.committed_one(sync=durable)

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.warning("%s: rollback failed", self.path, exc_info=True)
        self._rolled_back()

    def _rolled_back(self) -> None:
        for cb in self.on_rollback:
            cb()

    def _checkpoint(self) -> bool:
        """Copy the WAL into the database and empty it (the durability thread calls this).
        Skipped (False) while the loop thread is using the connection: it is tried again after
        the next commit. TRUNCATE: the log restarts here, not in the loop's next commit."""
        if not self.mutex.acquire(blocking=False):
            return False
        try:
            if self._conn.in_transaction:
                return False
            row = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            return row is not None and int(row[0]) == 0
        except sqlite3.Error as exc:
            log.warning("%s: checkpoint failed: %s", self.path, _describe(exc))
            return False
        finally:
            self.mutex.release()

    @property
    def in_atomic(self) -> bool:
        return self._depth > 0

    def raw_integrity_check(self) -> list[str]:
        """``PRAGMA quick_check`` rows ('ok' when healthy); for diagnostics."""
        return [str(r[0]) for r in self.rows("check integrity", "PRAGMA quick_check")]


def _connect(path: Path) -> sqlite3.Connection:
    try:
        # check_same_thread: the durability thread runs checkpoints on it (Database.mutex)
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=2.0,
                               check_same_thread=False)
    except sqlite3.Error as e:
        raise _translate(e, path, "open the database") from e
    conn.row_factory = sqlite3.Row
    try:
        # before the first access to a WAL database: the WAL index then lives in memory, no
        # -shm file (see the module docstring)
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
    except sqlite3.Error as e:
        conn.close()
        raise _translate(e, path, "open the database") from e
    return conn


def _integrity_problem(conn: sqlite3.Connection, path: Path) -> str | None:
    """What is wrong with the file, or None. Errors other than corruption are raised."""
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as e:
        if _code(e) in _CORRUPT_CODES:
            return _describe(e)
        conn.close()
        raise _translate(e, path, "open the database") from e
    found = [str(r[0]) for r in rows]
    if found == ["ok"]:
        return None
    return "; ".join(found[:3]) + (f" (+{len(found) - 3} more)" if len(found) > 3 else "")


def _move_aside(path: Path) -> Path:
    """Rename the damaged file (and its WAL/shm, which belong to it) out of the way."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    dest = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while dest.exists():
        n += 1
        dest = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    try:
        for suffix in ("-wal", "-shm"):
            side = Path(f"{path}{suffix}")
            if side.exists():
                os.replace(side, Path(f"{dest}{suffix}"))
        os.replace(path, dest)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename itself must survive a power cut
        finally:
            os.close(fd)
    except OSError as e:
        raise StorageError(f"{path}: database is corrupt and cannot be moved aside: {e}") from e
    return dest


def _translate(e: sqlite3.Error, path: Path, what: str) -> StorageError:
    code = _code(e)
    detail = _describe(e)
    if code == _SQLITE_FULL:
        return StorageFullError(
            f"{path}: cannot {what}: disk full ({detail}); free space on the file system."
            " Reads still work and writes succeed again once there is room"
        )
    if code == _SQLITE_IOERR:
        return StorageError(f"{path}: cannot {what}: I/O error ({detail}); check the disk"
                            " (full, file-size limit, failing SD card)")
    if code in _CORRUPT_CODES:
        return StorageCorruptError(f"{path}: cannot {what}: database is corrupt ({detail})")
    if code == _SQLITE_CANTOPEN:
        return StorageError(f"{path}: cannot {what}: cannot open the file ({detail}); check"
                            " that the directory exists and is writable")
    if isinstance(e, sqlite3.ProgrammingError) and "closed" in str(e):
        return StorageError(f"{path}: cannot {what}: the store is closed")
    return StorageError(f"{path}: cannot {what}: {detail}")
