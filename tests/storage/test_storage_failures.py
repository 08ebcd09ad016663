"""What goes wrong with files and disks: corruption, unreadable paths, full disks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from storekit import T0, run_child

from ocppd.errors import StorageError
from ocppd.storage import (
    LATEST_VERSION,
    StorageCorruptError,
    StorageFullError,
    Store,
)


def _populated(path: Path, n: int = 300) -> None:
    with Store.open(path) as s, s.atomic():
        for i in range(n):
            s.tx_event_add(1, "sample", T0, data={"i": i, "pad": "x" * 300})
            s.set_setting(f"k{i}", "v" * 100)
    # closing the last connection checkpoints the WAL into the main file


def _corrupt_files(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.corrupt-*"))


def test_garbage_file_is_refused_and_left_alone(db_path: Path) -> None:
    garbage = b"this is not an sqlite database\n" * 200
    db_path.write_bytes(garbage)
    with pytest.raises(StorageCorruptError) as err:
        Store.open(db_path)
    message = str(err.value)
    assert str(db_path) in message and "corrupt" in message and "not a database" in message
    assert db_path.read_bytes() == garbage
    assert _corrupt_files(db_path) == []


def test_garbage_file_is_moved_aside_when_configured(db_path: Path) -> None:
    garbage = b"\x00\x01garbage" * 1000
    db_path.write_bytes(garbage)
    with Store.open(db_path, move_aside_corrupt=True) as s:
        assert s.schema_version == LATEST_VERSION
        assert s.tx_events_count() == 0
        s.set_setting("fresh", "yes")
    moved = _corrupt_files(db_path)
    assert len(moved) == 1 and moved[0].name.startswith("ocppd.db.corrupt-2")
    assert moved[0].name.endswith("Z")  # a UTC timestamp
    assert moved[0].read_bytes() == garbage  # kept, never deleted
    with Store.open(db_path) as s:
        assert s.get_setting("fresh") == "yes"


def test_truncated_database_is_detected(db_path: Path) -> None:
    _populated(db_path)
    data = db_path.read_bytes()
    assert len(data) > 8 * 4096
    db_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(StorageCorruptError, match=str(db_path)):
        Store.open(db_path)
    with Store.open(db_path, move_aside_corrupt=True) as s:
        assert s.tx_events_count() == 0
    assert len(_corrupt_files(db_path)) == 1


def test_damaged_page_is_detected_by_quick_check(db_path: Path) -> None:
    _populated(db_path)
    data = bytearray(db_path.read_bytes())
    page = 4096
    data[3 * page: 3 * page + 64] = b"\xff" * 64  # smash a b-tree page header
    db_path.write_bytes(bytes(data))
    with pytest.raises(StorageCorruptError, match="corrupt"):
        Store.open(db_path)


def test_two_corrupt_files_in_the_same_second_both_kept(db_path: Path) -> None:
    for content in (b"first garbage" * 100, b"second garbage" * 100):
        db_path.write_bytes(content)
        Store.open(db_path, move_aside_corrupt=True).close()
        for side in (Path(f"{db_path}-wal"), Path(f"{db_path}-shm")):
            side.unlink(missing_ok=True)
    kept = {p.read_bytes()[:6] for p in _corrupt_files(db_path)}
    assert kept == {b"first ", b"second"}


def test_unopenable_path_is_a_clear_error(tmp_path: Path) -> None:
    missing_dir = tmp_path / "nope" / "ocppd.db"
    with pytest.raises(StorageError, match="cannot open") as err:
        Store.open(missing_dir, move_aside_corrupt=True)
    assert str(missing_dir) in str(err.value)
    a_directory = tmp_path / "dir.db"
    a_directory.mkdir()
    with pytest.raises(StorageError, match=str(a_directory)):
        Store.open(a_directory, move_aside_corrupt=True)
    assert a_directory.is_dir()  # not moved aside: it is not a corrupt database


def test_size_cap_behaves_like_a_full_disk_and_recovers(db_path: Path) -> None:
    with Store.open(db_path, max_size_bytes=256 * 1024) as s:
        s.set_setting("before", "1")
        seqs = []
        with pytest.raises(StorageFullError) as err:
            for _ in range(10_000):
                seqs.append(s.tx_event_add(1, "sample", T0, data={"pad": os.urandom(500).hex()}))
        assert str(db_path) in str(err.value) and "disk full" in str(err.value)
        assert len(seqs) > 50
        # reads still work, and the failed write left nothing behind
        assert s.get_setting("before") == "1"
        assert s.tx_events_count() == len(seqs) == len(s.tx_events_pending())
        with pytest.raises(StorageFullError):
            with s.atomic():
                s.set_setting("partial", "1")
                s.tx_event_add(1, "sample", T0, data={"pad": os.urandom(25_000).hex()})
        assert s.get_setting("partial") is None
        # space comes back (the backlog is delivered): writes succeed again
        s._db.syncer.wait_blocking()
        with s._db.write("make room"):  # as a delivered transaction's events are removed
            s._db.exec("DELETE FROM tx_events WHERE seq <= ?", (seqs[39],))
        s.tx_event_add(2, "ended", T0)
        assert s.tx_events_count() == len(seqs) - 40 + 1
        assert s.integrity_check() == ["ok"]


def test_error_inside_atomic_stops_further_writes_in_that_block(db_path: Path) -> None:
    with Store.open(db_path, max_size_bytes=128 * 1024) as s:
        s.set_setting("keep", "1")
        with pytest.raises(StorageError), s.atomic():
            try:
                s.set_setting("big", "z" * 500_000)
            except StorageFullError:
                pass  # a caller that swallows the error must not write half a block
            s.set_setting("after-error", "1")
        assert s.get_setting("after-error") is None and s.get_setting("keep") == "1"
        s.set_setting("later", "ok")  # the store is usable again
        assert s.get_setting("later") == "ok"


_FSIZE_CHILD = r"""
import json, os, resource, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write(), not a killed process
from datetime import UTC, datetime
from ocppd.storage import Store, StorageError
t = datetime(2024, 5, 1, tzinfo=UTC)
path = Path(sys.argv[1])
out = {}
s = Store.open(path)
s.set_setting("before", "1")
size = max(os.path.getsize(path), os.path.getsize(f"{path}-wal"))
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 128 * 1024, hard))
ok = 0
for i in range(5000):
    try:
        s.tx_event_add(1, "sample", t, data={"pad": os.urandom(1000).hex()})
        ok += 1
    except StorageError as e:
        out["error"] = str(e)
        break
out["ok"] = ok
out["read_before"] = s.get_setting("before")
out["count_after_error"] = s.tx_events_count()
out["items_after_error"] = len(s.tx_events_pending())
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # space is back
s.tx_event_add(1, "ended", t)
s.close()
with Store.open(path) as again:
    out["count_reopened"] = again.tx_events_count()
    out["check"] = again.integrity_check()
print(json.dumps(out))
"""


def test_file_size_limit_is_reported_and_store_recovers(db_path: Path) -> None:
    result = run_child(_FSIZE_CHILD, str(db_path))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert str(db_path) in out["error"] and "I/O error" in out["error"]
    assert out["read_before"] == "1"
    assert out["count_after_error"] == out["items_after_error"] == out["ok"]
    assert out["count_reopened"] == out["ok"] + 1
    assert out["check"] == ["ok"]
