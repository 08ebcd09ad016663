"""The transaction-message outbox (OCPP 1.6 §3.7): order, retries, transactionId, cap."""

from __future__ import annotations

import logging
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from storekit import at, child_env

from ocppd.storage import Store
from ocppd.storage.bench import outbox_replay, outbox_roundtrip


def _meter(store: Store, i: int, local_tx_id: int | None = 1) -> int:
    return store.outbox_put(action="MeterValues", payload={"i": i}, local_tx_id=local_tx_id,
                            kind="meter")


def test_outbox_is_chronological_and_survives_reopen(store: Store, db_path: Path) -> None:
    s1 = store.outbox_put(action="StartTransaction", payload={"idTag": "A"}, local_tx_id=1,
                          kind="start")
    s2 = _meter(store, 1)
    s3 = store.outbox_put(action="StopTransaction", payload={"meterStop": 5}, local_tx_id=1,
                          kind="stop")
    assert s1 < s2 < s3
    store.close()
    with Store.open(db_path) as again:
        items = again.outbox_items()
        assert [(i.seq, i.action, i.kind, i.local_tx_id) for i in items] == [
            (s1, "StartTransaction", "start", 1), (s2, "MeterValues", "meter", 1),
            (s3, "StopTransaction", "stop", 1)]
        assert items[0].payload == {"idTag": "A"} and items[0].attempts == 0
        assert items[0].created_at.tzinfo is not None
        assert again.outbox_count() == 3
        head = again.outbox_head()
        assert head is not None and head.seq == s1
        again.outbox_remove(s1)
        again.outbox_remove(s1)  # a repeated confirmation is harmless
        head = again.outbox_head()
        assert head is not None and head.seq == s2
        assert [i.seq for i in again.outbox_items(limit=1)] == [s2]
        assert again.outbox_count() == 2


def test_removals_persist_for_every_kind(store: Store, db_path: Path) -> None:
    seqs = [store.outbox_put(action="A", payload={}, local_tx_id=1, kind=k)
            for k in ("start", "meter", "stop", "meter")]
    for s in seqs[:3]:
        store.outbox_remove(s)
    store.close()
    with Store.open(db_path) as again:
        assert [i.seq for i in again.outbox_items()] == [seqs[3]]


def test_seq_is_never_reused_after_emptying(store: Store) -> None:
    s1 = _meter(store, 1)
    store.outbox_remove(s1)
    assert store.outbox_head() is None
    assert _meter(store, 2) > s1


def test_attempts_and_next_attempt_persist(store: Store, db_path: Path) -> None:
    seq = store.outbox_put(action="StartTransaction", payload={}, local_tx_id=1, kind="start")
    assert store.outbox_record_attempt(seq, next_attempt_at=1_700_000_000.5) == 1
    assert store.outbox_record_attempt(seq, next_attempt_at=1_700_000_060.0) == 2
    store.close()
    with Store.open(db_path) as again:
        head = again.outbox_head()
        assert head is not None and (head.attempts, head.next_attempt_at) == (2, 1_700_000_060.0)
        assert again.outbox_record_attempt(seq, next_attempt_at=None) == 3
        with pytest.raises(KeyError):
            again.outbox_record_attempt(seq + 100, next_attempt_at=None)


def test_set_payload_rewrites_one_message(store: Store) -> None:
    seq = _meter(store, 1)
    store.outbox_set_payload(seq, {"i": 2, "note": "ü"})
    head = store.outbox_head()
    assert head is not None and head.payload == {"i": 2, "note": "ü"}
    with pytest.raises(KeyError):
        store.outbox_set_payload(seq + 1, {})


def test_assign_tx_id_rewrites_meter_and_stop_but_not_start(store: Store) -> None:
    start = store.outbox_put(action="StartTransaction", payload={"idTag": "A"}, local_tx_id=1,
                             kind="start")
    m1 = store.outbox_put(action="MeterValues", payload={"connectorId": 1, "transactionId": -1},
                          local_tx_id=1, kind="meter")
    other = store.outbox_put(action="MeterValues", payload={"transactionId": -1},
                             local_tx_id=2, kind="meter")
    stop = store.outbox_put(action="StopTransaction", payload={"transactionId": -1},
                            local_tx_id=1, kind="stop")
    assert store.outbox_assign_tx_id(1, 4242) == 2
    by_seq = {i.seq: i.payload for i in store.outbox_items()}
    assert by_seq[start] == {"idTag": "A"}
    assert by_seq[m1] == {"connectorId": 1, "transactionId": 4242}
    assert by_seq[stop] == {"transactionId": 4242}
    assert by_seq[other] == {"transactionId": -1}
    assert store.outbox_assign_tx_id(99, 1) == 0


def test_assign_tx_id_is_atomic_with_the_mapping(store: Store) -> None:
    lid = store.begin_transaction(connector_id=1, id_tag="A", meter_start_wh=0,
                                  started_at=at(0))
    store.outbox_put(action="StopTransaction", payload={"transactionId": -1}, local_tx_id=lid,
                     kind="stop")
    with pytest.raises(RuntimeError), store.atomic():
        store.set_transaction_id(lid, 77)
        store.outbox_assign_tx_id(lid, 77)
        raise RuntimeError("crash between the two")
    tx = store.transaction(lid)
    head = store.outbox_head()
    assert tx is not None and tx.tx_id is None
    assert head is not None and head.payload == {"transactionId": -1}


def test_unknown_kind_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="kind"):
        store.outbox_put(action="Heartbeat", payload={}, local_tx_id=None, kind="other")


def test_cap_thins_oldest_meter_values_every_other(db_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    with Store.open(db_path, outbox_max_messages=100) as s:
        start = s.outbox_put(action="StartTransaction", payload={}, local_tx_id=1, kind="start")
        meters = [_meter(s, i) for i in range(99)]
        assert s.outbox_count() == 100
        with caplog.at_level(logging.WARNING, logger="ocppd.storage"):
            newest = _meter(s, 99)
        left = [i.seq for i in s.outbox_items()]
        assert s.outbox_count() == len(left) <= 100
        dropped = set(meters) - set(left)
        assert s.outbox_dropped == len(dropped) > 0
        assert start in left and newest in left
        # thinned, not a block: the oldest survivor is kept and gaps alternate
        assert meters[0] in left and meters[1] in dropped and meters[2] in left
        assert all(m in left for m in meters[2 * len(dropped):])
        assert "dropped" in caplog.text and str(len(dropped)) in caplog.text


def test_cap_never_drops_start_or_stop(db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Store.open(db_path, outbox_max_messages=100) as s:
        kinds = ["start", "stop"] * 50
        for i, k in enumerate(kinds):
            s.outbox_put(action="X", payload={"i": i}, local_tx_id=i, kind=k)
        with caplog.at_level(logging.WARNING, logger="ocppd.storage"):
            for i in range(5):
                s.outbox_put(action="Y", payload={}, local_tx_id=1000 + i, kind="stop")
            _meter(s, 0)  # a new meter message still gets in beyond the cap
        assert s.outbox_count() == 106
        assert s.outbox_dropped == 0
        warnings = [r for r in caplog.records if "never dropped" in r.getMessage()]
        assert len(warnings) == 1  # a transition, not a repetition


def test_cap_with_mixed_kinds_drops_only_meter(db_path: Path) -> None:
    with Store.open(db_path, outbox_max_messages=100) as s:
        for i in range(300):
            kind = "start" if i % 10 == 0 else "stop" if i % 10 == 9 else "meter"
            s.outbox_put(action="X", payload={"i": i}, local_tx_id=i // 10, kind=kind)
        kinds = [i.kind for i in s.outbox_items()]
        assert kinds.count("start") == 30 and kinds.count("stop") == 30
        assert len(kinds) <= 100
        assert kinds[-8:] == ["meter"] * 8 or kinds[-1] == "stop"


def test_benchmarks_report_a_rate(tmp_path: Path) -> None:
    assert outbox_roundtrip(tmp_path / "a.db", 50) > 0
    assert outbox_replay(tmp_path / "b.db", 200) > 0
    with Store.open(tmp_path / "b.db") as s:
        assert s.outbox_count() == 0


_CONFIRM_THEN_DIE = r"""
import os, sys
from ocppd.storage import Store

s = Store.open(sys.argv[1])
seqs = [s.outbox_put(action="MeterValues", payload={"i": i}, local_tx_id=None, kind="meter")
        for i in range(10)]
for seq in seqs[:5]:
    s.outbox_confirm(seq, "meter")  # below the batch size: only the watermark records them
print(" ".join(map(str, seqs)), flush=True)
os.kill(os.getpid(), 9)  # no close, no flush: as SIGKILL or a crash leaves it
"""


def test_confirmed_meter_values_are_not_resent_after_a_crash(db_path: Path) -> None:
    """The watermark file (``<db>.confirmed``): MeterValues confirmed before a SIGKILL are
    still rows in the table (deleted in batches), yet never come back after reopening; the
    unconfirmed ones do, in order."""
    proc = subprocess.run([sys.executable, "-c", _CONFIRM_THEN_DIE, str(db_path)],
                          capture_output=True, text=True, env=child_env(), timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    seqs = [int(x) for x in proc.stdout.split()]
    assert Path(f"{db_path}.confirmed").exists()
    raw = sqlite3.connect(db_path)
    try:  # the confirmed rows are still in the table: only the watermark tells
        assert raw.execute("SELECT count(*) FROM outbox").fetchone()[0] == 10
    finally:
        raw.close()
    s = Store.open(db_path)
    try:
        assert [i.seq for i in s.outbox_items()] == seqs[5:]
        assert s.outbox_count() == 5
    finally:
        s.close()


def test_watermark_of_a_replaced_database_is_ignored(db_path: Path, tmp_path: Path) -> None:
    """A watermark belongs to its database file: copied next to another one, it deletes
    nothing there (at worst confirmed MeterValues are sent again, never unsent ones lost)."""
    s = Store.open(db_path)
    seqs = [s.outbox_put(action="MeterValues", payload={"i": i}, local_tx_id=None, kind="meter")
            for i in range(4)]
    s.outbox_confirm(seqs[0], "meter")
    s.outbox_confirm(seqs[1], "meter")
    mark = Path(f"{db_path}.confirmed").read_bytes()
    s.close()
    other = tmp_path / "other.db"
    s = Store.open(other)
    try:
        mine = [s.outbox_put(action="MeterValues", payload={"i": i}, local_tx_id=None,
                             kind="meter") for i in range(4)]
    finally:
        s.close()
    Path(f"{other}.confirmed").write_bytes(mark)
    s = Store.open(other)
    try:
        assert [i.seq for i in s.outbox_items()] == mine
    finally:
        s.close()
