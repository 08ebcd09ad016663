"""The durability barrier (ocppd/storage/durability.py): commits return without an fsync, a
background thread makes them durable, ``durable()`` waits for it, checkpoints run off the
caller's thread and only when allowed; the write pattern of a meter sample is one commit."""

from __future__ import annotations

import asyncio
import errno
import os
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ocppd.errors import StorageError
from ocppd.storage import Store


def test_durable_commit_is_synced_by_the_background_thread(store: Store) -> None:
    syncer = store._db.syncer
    before = syncer.fsyncs
    store.set_setting("k", "v")
    generation = syncer.committed
    assert generation >= 1
    # nobody waits: the commit itself asked the thread for an fsync
    assert _eventually(lambda: syncer.durable >= generation)
    assert syncer.fsyncs > before


def test_lazy_commit_waits_for_the_next_fsync(store: Store) -> None:
    """A commit made with durable=False asks for no fsync; the next durable one covers it."""
    syncer = store._db.syncer
    store.sync()
    fsyncs = syncer.fsyncs
    with store._db.write("a lazy write", durable=False):
        store._db.exec("INSERT INTO settings(key, value) VALUES ('lazy', '1')")
    lazy_generation = syncer.committed
    assert syncer.durable < lazy_generation
    assert syncer.fsyncs == fsyncs  # nobody asked: nothing happened
    store.set_setting("durable", "1")
    assert store.sync()
    assert syncer.durable >= lazy_generation


async def test_barrier_returns_once_everything_committed_is_durable(store: Store) -> None:
    for i in range(20):
        store.set_setting(f"k{i}", "v")
    generation = store._db.syncer.committed
    await asyncio.wait_for(store.durable(), 10)
    assert store._db.syncer.durable >= generation
    await asyncio.wait_for(store.durable(), 10)  # nothing new: returns at once


def test_a_meter_sample_is_one_commit_of_about_one_page(store: Store) -> None:
    """SD-card wear: a transaction's sample is one event row in one commit (one generation, one
    fsync; the issue counted three commits per sample), appended to one table with no index:
    about one 1 KiB page in the log per sample, and the transaction's row is not rewritten."""
    now = datetime.now(UTC)
    local_id = store.begin_transaction(connector_id=1, id_tag="T", meter_start_wh=0,
                                       started_at=now)
    reading = {"reading": {"energy_import_wh": 12345.6, "power_w": 7200.0,
                           "current_a": [10.1, 10.2, 10.3], "voltage_v": [230.1, 229.8, 231.0]},
               "offered_a": 16.0}
    wal = Path(f"{store.path}-wal")
    before, size0 = store._db.syncer.committed, wal.stat().st_size
    n = 40
    for i in range(n):
        store.tx_event_add(local_id, "sample", now + timedelta(seconds=i), trigger="periodic",
                           energy_wh=12345 + i, data=reading)
        assert store._db.syncer.committed == before + i + 1
    frames = (wal.stat().st_size - size0) / (1024 + 24)
    assert frames / n <= 1.5, f"{frames / n:.2f} log pages per sample"


def _wal_size(path: Path) -> int:
    try:
        return os.path.getsize(f"{path}-wal")
    except FileNotFoundError:
        return 0


def _eventually(pred: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """The checkpoint runs on the thread just after the fsync the caller waited for."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _fill(store: Store, n: int) -> None:
    for i in range(n):
        store.set_setting(f"fill{i}", "x" * 600)


def test_checkpoints_run_only_when_allowed(db_path: Path) -> None:
    s = Store.open(db_path)
    try:
        syncer = s._db.syncer
        syncer.checkpoint_bytes, syncer.checkpoint_max_bytes = 64 * 1024, 1 << 30
        s.may_checkpoint = lambda: False  # a session is running
        _fill(s, 200)
        assert s.sync()
        assert syncer.checkpoints == 0
        assert _wal_size(db_path) > 64 * 1024
        s.may_checkpoint = lambda: True  # between sessions
        s.set_setting("one more", "write")
        assert s.sync()
        assert _eventually(lambda: syncer.checkpoints >= 1)
    finally:
        s.close()


def test_a_log_that_outgrows_the_hard_limit_is_checkpointed_anyway(db_path: Path) -> None:
    s = Store.open(db_path)
    try:
        syncer = s._db.syncer
        syncer.checkpoint_bytes, syncer.checkpoint_max_bytes = 32 * 1024, 64 * 1024
        s.may_checkpoint = lambda: False
        _fill(s, 200)
        assert s.sync()
        assert _eventually(lambda: syncer.checkpoints >= 1)
    finally:
        s.close()


async def test_a_disk_that_cannot_flush_fails_the_barrier(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever waits for durability learns that the disk fails (a session is refused, a
    message is retried), instead of waiting forever; once the disk answers, it works again."""
    real = os.fdatasync

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", broken)
    store.set_setting("k", "v")
    with pytest.raises(StorageError, match="cannot make the write-ahead log durable"):
        await asyncio.wait_for(store.durable(), 10)
    monkeypatch.setattr(os, "fdatasync", real)
    store.set_setting("k", "w")
    await asyncio.wait_for(store.durable(), 10)


def test_a_periodic_sample_keeps_its_reading_in_the_event_row(db_path: Path) -> None:
    """SD-card wear: in a sample's commit the meter register rides in the transaction event's
    row, so the transaction's own row is not rewritten; reading the transaction (and, after a
    power cut, ending it with its last reading) still sees the newest register."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with Store.open(db_path) as s:
        lid = s.begin_transaction(connector_id=1, id_tag="T", meter_start_wh=100, started_at=t0)
        for i in range(1, 4):
            at = t0 + timedelta(minutes=i)
            with s.atomic():
                s.update_meter(lid, 100 + i, at)
                s.tx_event_add(lid, "sample", at, trigger="periodic", data={})
        tx = s.transaction(lid)
        assert tx is not None and (tx.last_meter_wh, tx.last_meter_at) == (103, t0 + timedelta(
            minutes=3))
        at = t0 + timedelta(minutes=4)
        with s.atomic():  # no transaction sample in this commit: the row takes the reading
            s.update_meter(lid, 104, at)
    raw = sqlite3.connect(db_path)
    try:
        row = raw.execute("SELECT last_meter_wh FROM transactions WHERE local_id = ?",
                          (lid,)).fetchone()
        assert row[0] == 104
        stored = raw.execute("SELECT count(*) FROM tx_events WHERE energy_wh IS NOT NULL"
                             ).fetchone()[0]
        assert stored == 3  # the three sample commits did not rewrite the transaction row
    finally:
        raw.close()
    with Store.open(db_path) as s:
        (tx,) = s.active_transactions()  # as after a power cut
        assert (tx.last_meter_wh, tx.last_meter_at) == (104, at)
