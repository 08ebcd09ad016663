"""The durability barrier: commits are made durable by a background thread, never on the loop.

Why. Commits run on the event-loop thread, and pilot, fault and unplug events reach the
contactor decision through the same loop. With ``synchronous=FULL`` every commit waited for an
fsync there, and an SD card can take hundreds of milliseconds for one: a contactor that must
open would wait behind it. So the connection runs with ``synchronous=NORMAL``: a commit only
appends its frames to the write-ahead log (WAL) in the page cache and returns. This thread then
fsyncs the WAL file.

Why that loses nothing that was acted upon. SQLite documents WAL mode with ``synchronous=NORMAL``
as always consistent: a power cut can roll back the last commits, never corrupt the file. WAL
frames carry cumulative checksums and the salt of their WAL generation, so at recovery the
readable log ends at the first frame that did not reach the disk intact, at a commit boundary:
whatever was not yet fsynced vanishes cleanly, and because the log is sequential, a commit can
only survive if every commit before it survives too. What must not vanish is what was *acted
upon*. So code that acts on a write only after it is durable awaits the barrier
(``Store.durable()``): the sender before it sends a queued message, the station before it closes
the contactor for a new transaction. Nothing else waits, and opening a contactor never touches
storage at all.

Generations. The loop thread counts commits that changed something (``committed``). A barrier
for generation g is passed once an fsync that *started* after commit g returned; one fsync
serves every commit before it, so a burst of commits costs one fsync (group commit).

Checkpoints. Automatic checkpoints are off (a checkpoint fsyncs the WAL and the database file).
The database is held in exclusive locking mode (db.py: no -shm file), so there is one connection
and this thread checkpoints on it (``checkpoint``, which also empties the log) once the WAL has
grown past ``checkpoint_bytes``, and only while ``may_checkpoint()`` says so (no transaction
open). While a checkpoint runs, the loop thread would wait for the connection; with no
transaction open no contactor is closed, so nothing that must open waits; a transaction's first
commit may wait, and closing the contactor may wait for storage anyway. Past
``checkpoint_max_bytes`` it checkpoints regardless, so the log stays bounded during a session
that never ends: at 1 KiB pages and one sample a minute that is weeks of one session, and it is
the one case where the loop can wait for the disk during a session (two fsyncs, once).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from ocppd.errors import StorageError

log = logging.getLogger(__name__)

CHECKPOINT_BYTES = 1 << 20  # WAL size that asks for a checkpoint (when idle)
CHECKPOINT_MAX_BYTES = 64 << 20  # ... and that forces one (see the module docstring)


class Syncer:
    """The background thread that makes commits durable (see the module docstring)."""

    def __init__(self, db_path: Path, *, checkpoint: Callable[[], bool],
                 checkpoint_bytes: int = CHECKPOINT_BYTES,
                 checkpoint_max_bytes: int = CHECKPOINT_MAX_BYTES) -> None:
        self.db_path = Path(db_path)
        self.wal_path = Path(f"{db_path}-wal")
        self.checkpoint_bytes = checkpoint_bytes
        self.checkpoint_max_bytes = checkpoint_max_bytes
        self.may_checkpoint: Callable[[], bool] = lambda: True
        self._checkpoint = checkpoint
        self.committed = 0  # written by the loop thread only
        self.needed = 0  # the last commit made with sync=True (what the barrier waits for)
        self.durable = 0  # written by the sync thread only
        self.fsyncs = 0
        self.checkpoints = 0
        self.error: OSError | None = None
        self._wanted = 0
        self._cond = threading.Condition()
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._closing = False
        self._fd = -1
        self._thread = threading.Thread(target=self._run, name="ocppd-storage-sync", daemon=True)
        self._thread.start()

    # --- the loop's side -------------------------------------------------------------------------

    def committed_one(self, *, sync: bool) -> None:
        """A commit that changed something returned; ``sync``: make it durable now."""
        self.committed += 1
        if sync:
            self.needed = self.committed
            self.request(self.committed)

    def request(self, generation: int) -> None:
        with self._cond:
            if generation > self._wanted:
                self._wanted = generation
                self._cond.notify()

    async def wait(self, generation: int | None = None) -> None:
        """Return once every commit up to ``generation`` is durable. The default is the last
        commit that asked for durability: a lazy one after it (whose loss is harmless, such as
        deleting confirmed MeterValues) is not waited for, so a replay never waits for one."""
        gen = self.needed if generation is None else generation
        if self.durable >= gen:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._cond:
            if self.durable >= gen:
                return
            self._waiters.append((gen, loop, fut))
            if gen > self._wanted:
                self._wanted = gen
                self._cond.notify()
        await fut

    def wait_blocking(self, generation: int | None = None, timeout_s: float = 60.0) -> bool:
        """The same, blocking the calling thread (shutdown, tests). True when durable."""
        gen = self.committed if generation is None else generation
        with self._cond:
            if gen > self._wanted:
                self._wanted = gen
                self._cond.notify()
            return self._cond.wait_for(lambda: self.durable >= gen or self.error is not None
                                       or not self._thread.is_alive(), timeout_s) \
                and self.durable >= gen

    def close(self) -> None:
        """Make everything durable, then stop the thread."""
        self.wait_blocking()
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout=60)

    # --- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._wanted > self.durable or self._closing)
                    if self._wanted <= self.durable and self._closing:
                        return
                    gen = self.committed  # every commit up to here is in the page cache
                try:
                    self._fsync_wal()
                    self.error = None
                except OSError as exc:
                    self._failed(exc)
                    continue
                with self._cond:
                    self.durable = max(self.durable, gen)
                    self._cond.notify_all()
                    done = [w for w in self._waiters if w[0] <= self.durable]
                    self._waiters = [w for w in self._waiters if w[0] > self.durable]
                for _, loop, fut in done:
                    loop.call_soon_threadsafe(_resolve, fut)
                self._maybe_checkpoint()
        finally:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def _fsync_wal(self) -> None:
        try:
            st = os.stat(self.wal_path)
        except FileNotFoundError:
            return  # nothing written since the last checkpoint removed it
        if self._fd >= 0 and os.fstat(self._fd).st_ino != st.st_ino:
            os.close(self._fd)  # SQLite made a new log file: follow it
            self._fd = -1
        if self._fd < 0:
            self._fd = os.open(self.wal_path, os.O_RDONLY | os.O_CLOEXEC)
        os.fdatasync(self._fd)  # fdatasync: the data and the file size, not the mtime
        self.fsyncs += 1

    def _failed(self, exc: OSError) -> None:
        if self.error is None or str(self.error) != str(exc):
            log.error("%s: cannot make the write-ahead log durable: %s; retrying",
                      self.wal_path, exc)
        self.error = exc
        with self._cond:
            failed, self._waiters = self._waiters, []
            self._cond.notify_all()
        # whoever waits learns it now (a session is refused, a message waits and is retried)
        # rather than waiting on a disk that may never answer
        error = StorageError(f"{self.wal_path}: cannot make the write-ahead log durable: {exc};"
                             " check the disk (failing SD card, full file system)")
        for _, loop, fut in failed:
            loop.call_soon_threadsafe(_fail, fut, error)
        with self._cond:
            self._cond.wait(timeout=1.0)  # a failing disk: do not spin

    def _maybe_checkpoint(self) -> None:
        try:
            size = os.stat(self.wal_path).st_size
        except FileNotFoundError:
            return
        if size < self.checkpoint_bytes:
            return
        if size < self.checkpoint_max_bytes and not self.may_checkpoint():
            return
        # synchronous=NORMAL: the checkpoint syncs the WAL before it copies frames into the
        # database, and the database before it empties the log
        if self._checkpoint():
            self.checkpoints += 1


def _fail(fut: asyncio.Future[None], error: Exception) -> None:
    if not fut.done():
        fut.set_exception(error)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
