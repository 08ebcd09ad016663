"""Transaction events (storage/txevents.py): order, delivery watermark, retries, cap, crashes."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from storekit import at, child_env

from ocppd.storage import Store, TxEvent
from ocppd.storage.bench import events_replay, events_roundtrip


def _tx(store: Store, tag: str = "A") -> int:
    return store.begin_transaction(connector_id=1, id_tag=tag, meter_start_wh=0,
                                   started_at=at(0))


def _sample(store: Store, local_id: int, i: int) -> int:
    return store.tx_event_add(local_id, "sample", at(i), trigger="periodic", energy_wh=i,
                              data={"reading": {"energy_import_wh": float(i)}})


def _raw_count(store: Store) -> int:
    row = store._db.one("probe", "SELECT count(*) FROM tx_events")
    assert row is not None
    return int(row[0])


def test_events_are_in_order_and_survive_reopen(store: Store, db_path: Path) -> None:
    lid = _tx(store)
    s1 = store.tx_event_add(lid, "started", at(0), energy_wh=0)
    s2 = _sample(store, lid, 1)
    s3 = store.tx_event_add(lid, "ended", at(2), energy_wh=5, data=None)
    assert s1 < s2 < s3
    store.close()
    with Store.open(db_path) as again:
        events = again.tx_events_pending()
        assert [(e.seq, e.kind, e.trigger, e.local_tx_id, e.energy_wh) for e in events] == [
            (s1, "started", None, lid, 0), (s2, "sample", "periodic", lid, 1),
            (s3, "ended", None, lid, 5)]
        assert events[1].data == {"reading": {"energy_import_wh": 1.0}}
        assert events[1].at == at(1) and events[0].attempts == 0
        assert again.tx_events_count() == 3
        again.tx_event_delivered(events[0])
        again.tx_event_delivered(events[0])  # a repeated confirmation is harmless
        assert [e.seq for e in again.tx_events_pending(limit=1)] == [s2]
        assert again.tx_events_count() == 2


def test_a_delivered_start_or_end_is_durable_at_once(store: Store, db_path: Path) -> None:
    lid = _tx(store)
    store.tx_event_add(lid, "started", at(0))
    started = store.tx_events_pending()[0]
    committed = store._db.syncer.committed
    needed = store._db.syncer.needed
    store.tx_event_delivered(started)
    # its own commit, and one the durability barrier waits for
    assert store._db.syncer.committed == committed + 1
    assert store._db.syncer.needed == committed + 1 > needed
    Path(f"{db_path}.delivered").unlink()  # as after a power cut (the mark is on a tmpfs)
    store._mark = None  # ... and the closing store must not write it again
    store.close()
    with Store.open(db_path) as again:
        assert again.tx_events_pending() == []


def test_a_delivered_sample_costs_no_commit_and_rides_with_the_next_event(
        store: Store, db_path: Path) -> None:
    lid = _tx(store)
    seq = _sample(store, lid, 1)
    committed = store._db.syncer.committed
    store.tx_event_delivered(store.tx_events_pending()[0])
    assert store._db.syncer.committed == committed  # no commit of its own
    assert store.tx_events_count() == 0
    s2 = _sample(store, lid, 2)  # the next sample's row carries the watermark
    Path(f"{db_path}.delivered").unlink()  # as after a power cut
    store._mark = None
    store._w_stored = store._w  # and no flush at close: only the rows tell
    store.close()
    with Store.open(db_path) as again:
        assert [e.seq for e in again.tx_events_pending()] == [s2]
        assert seq < s2


def test_the_transaction_is_forgotten_when_its_end_is_delivered(store: Store) -> None:
    a, b = _tx(store, "A"), _tx(store, "B")
    store.tx_event_add(a, "started", at(0))
    store.tx_event_add(b, "started", at(0))
    _sample(store, a, 1)
    store.tx_event_add(a, "ended", at(2))
    for event in store.tx_events_pending():
        store.tx_event_delivered(event)
    assert [e.local_tx_id for e in store.tx_events_of(b)] == [b]
    assert store.tx_events_of(a) == []


def test_seq_is_never_reused(store: Store, db_path: Path) -> None:
    lid = _tx(store)
    s1 = store.tx_event_add(lid, "started", at(0))
    store.tx_event_add(lid, "ended", at(1))
    for event in store.tx_events_pending():
        store.tx_event_delivered(event)
    assert _raw_count(store) == 0
    store.close()
    with Store.open(db_path) as again:
        lid2 = _tx(again)
        assert again.tx_event_add(lid2, "started", at(3)) > s1 + 1


def test_attempts_and_next_attempt_persist(store: Store, db_path: Path) -> None:
    seq = store.tx_event_add(_tx(store), "started", at(0))
    assert store.tx_event_attempt(seq, next_attempt_at=1_700_000_000.5) == 1
    assert store.tx_event_attempt(seq, next_attempt_at=1_700_000_060.0) == 2
    store.close()
    with Store.open(db_path) as again:
        head = again.tx_events_pending(1)[0]
        assert (head.attempts, head.next_attempt_at) == (2, 1_700_000_060.0)
        assert again.tx_event_attempt(seq, next_attempt_at=None) == 3
        with pytest.raises(KeyError):
            again.tx_event_attempt(seq + 100, next_attempt_at=None)


def test_a_rolled_back_delivery_is_not_recorded(store: Store) -> None:
    lid = _tx(store)
    store.tx_event_add(lid, "started", at(0))
    started = store.tx_events_pending()[0]
    with pytest.raises(RuntimeError), store.atomic():
        store.set_remote_id(lid, "77")
        store.tx_event_delivered(started)
        raise RuntimeError("crash between the two")
    tx = store.transaction(lid)
    assert tx is not None and tx.remote_id is None
    assert [e.seq for e in store.tx_events_pending()] == [started.seq]


def test_unknown_kind_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="kind"):
        store.tx_event_add(1, "heartbeat", at(0))


def test_the_register_of_a_sample_block_goes_into_its_event(store: Store) -> None:
    lid = _tx(store)
    with store.atomic():
        store.update_meter(lid, 1234, at(5))
        store.tx_event_add(lid, "sample", at(5), trigger="periodic", data={})
    event = store.tx_events_pending()[0]
    assert event.energy_wh == 1234
    tx = store.transaction(lid)
    assert tx is not None and (tx.last_meter_wh, tx.last_meter_at) == (1234, at(5))


def test_cap_thins_oldest_samples_every_other(db_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    with Store.open(db_path, max_pending_events=100) as s:
        lid = _tx(s)
        start = s.tx_event_add(lid, "started", at(0))
        samples = [_sample(s, lid, i) for i in range(99)]
        assert s.tx_events_count() == 100
        with caplog.at_level(logging.WARNING, logger="ocppd.storage"):
            newest = _sample(s, lid, 99)
        left = [e.seq for e in s.tx_events_pending()]
        assert s.tx_events_count() == len(left) <= 100
        dropped = set(samples) - set(left)
        assert s.tx_events_dropped == len(dropped) > 0
        assert start in left and newest in left
        # thinned, not a block: the oldest survivor is kept and gaps alternate
        assert samples[0] in left and samples[1] in dropped and samples[2] in left
        assert all(m in left for m in samples[2 * len(dropped):])
        assert "dropped" in caplog.text and str(len(dropped)) in caplog.text


def test_cap_never_drops_starts_or_ends(db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Store.open(db_path, max_pending_events=100) as s:
        for i in range(100):
            s.tx_event_add(i, "started" if i % 2 == 0 else "ended", at(i))
        with caplog.at_level(logging.WARNING, logger="ocppd.storage"):
            for i in range(5):
                s.tx_event_add(1000 + i, "ended", at(i))
            _sample(s, 2000, 0)  # a new sample still gets in beyond the cap
        assert s.tx_events_count() == 106
        assert s.tx_events_dropped == 0
        warnings = [r for r in caplog.records if "never dropped" in r.getMessage()]
        assert len(warnings) == 1  # a transition, not a repetition


def test_a_long_session_keeps_its_newest_delivered_samples(db_path: Path) -> None:
    with Store.open(db_path, tx_samples_max=10) as s:
        lid = _tx(s)
        s.tx_event_add(lid, "started", at(0))
        for i in range(1, 600):
            _sample(s, lid, i)
            for event in s.tx_events_pending():
                s.tx_event_delivered(event)
        kept = [e for e in s.tx_events_of(lid) if e.kind == "sample"]
        assert len(kept) < 600 - 256  # thinned in batches
        assert kept[-1].energy_wh == 599  # the newest are kept
        assert [e.kind for e in s.tx_events_of(lid)][0] == "started"  # and the start


def test_benchmarks_report_a_rate(tmp_path: Path) -> None:
    assert events_roundtrip(tmp_path / "a.db", 50) > 0
    assert events_replay(tmp_path / "b.db", 200) > 0
    with Store.open(tmp_path / "b.db") as s:
        assert s.tx_events_pending() == []


_CONFIRM_THEN_DIE = r"""
import os, sys
from datetime import UTC, datetime
from ocppd.storage import Store

t = datetime(2024, 5, 1, tzinfo=UTC)
s = Store.open(sys.argv[1])
lid = s.begin_transaction(connector_id=1, id_tag="A", meter_start_wh=0, started_at=t)
seqs = [s.tx_event_add(lid, "sample", t, trigger="periodic", data={}) for i in range(10)]
for event in s.tx_events_pending()[:5]:
    s.tx_event_delivered(event)  # only the mark file records them
print(" ".join(map(str, seqs)), flush=True)
os.kill(os.getpid(), 9)  # no close, no flush: as SIGKILL or a crash leaves it
"""


def test_delivered_samples_are_not_resent_after_a_crash(db_path: Path) -> None:
    """The mark file (``<db>.delivered``): samples confirmed before a SIGKILL are recorded
    nowhere in the database, yet never come back after reopening; the others do, in order."""
    proc = subprocess.run([sys.executable, "-c", _CONFIRM_THEN_DIE, str(db_path)],
                          capture_output=True, text=True, env=child_env(), timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    seqs = [int(x) for x in proc.stdout.split()]
    assert Path(f"{db_path}.delivered").exists()
    s = Store.open(db_path)
    try:
        assert [e.seq for e in s.tx_events_pending()] == seqs[5:]
        assert s.tx_events_count() == 5
    finally:
        s.close()


def test_the_mark_of_a_replaced_database_is_ignored(db_path: Path, tmp_path: Path) -> None:
    """A mark belongs to its database file: copied next to another one, it covers nothing
    there (at worst confirmed samples are sent again, never unsent ones lost)."""
    s = Store.open(db_path)
    lid = _tx(s)
    for i in range(4):
        _sample(s, lid, i)
    for event in s.tx_events_pending()[:2]:
        s.tx_event_delivered(event)
    mark = Path(f"{db_path}.delivered").read_bytes()
    s.close()
    other = tmp_path / "other.db"
    s = Store.open(other)
    try:
        lid = _tx(s)
        mine = [_sample(s, lid, i) for i in range(4)]
    finally:
        s.close()
    Path(f"{other}.delivered").write_bytes(mark)
    s = Store.open(other)
    try:
        assert [e.seq for e in s.tx_events_pending()] == mine
    finally:
        s.close()


def test_event_records_are_plain_values() -> None:
    e = TxEvent(seq=1, local_tx_id=None, kind="sample", trigger="clock", at=at(0),
                energy_wh=None, data=None, legacy_action=None, attempts=0, next_attempt_at=None)
    with pytest.raises(AttributeError):
        e.seq = 2  # type: ignore[misc]
