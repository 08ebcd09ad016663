"""Crash consistency: a writer killed with SIGKILL at random moments loses nothing it reported.

The child reports each write on stdout only after the call returned (committed). After each
kill the parent reopens the store: every reported write is there, every reported removal is
gone (a delivered transaction event never comes back), and the file passes
``PRAGMA quick_check``. Several rounds run on the same file.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from storekit import child_env

from ocppd.storage import Store

_WRITER = r"""
import sys
from datetime import UTC, datetime
from ocppd.storage import Store

s = Store.open(sys.argv[1])
base = int(sys.argv[2])
lid = None
prev = None
i = 0
while True:
    i += 1
    now = datetime.now(UTC)
    if lid is None or i % 7 == 0:
        with s.atomic():
            lid = s.begin_transaction(connector_id=1, id_tag=f"T{base}-{i}",
                                      meter_start_wh=i, started_at=now)
            seq = s.tx_event_add(lid, "started", now, energy_wh=i)
        print("tx", lid, seq, flush=True)
    seq = s.tx_event_add(lid, "sample", now, trigger="periodic",
                         data={"i": i, "pad": "m" * 300})
    print("put", seq, flush=True)
    s.update_meter(lid, base + i, now)
    print("meter", lid, base + i, flush=True)
    if prev is not None and i % 3 == 0:
        for event in s.tx_events_pending():  # delivered in order, up to the one before
            if event.seq > prev:
                break
            print("delivering", event.seq, flush=True)
            s.tx_event_delivered(event)
            print("del", event.seq, flush=True)
    prev = seq
    if i % 5 == 0:
        s.set_setting(f"k{base}-{i}", "v")
        print("set", f"k{base}-{i}", flush=True)
"""


def test_sigkill_at_random_moments_loses_no_committed_write(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    rng = random.Random(1234)
    queued: set[int] = set()
    removed: set[int] = set()
    txs: dict[int, int] = {}  # local_id -> last reported meter
    keys: set[str] = set()
    for round_no in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), str(round_no * 1_000_000)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
        try:
            assert proc.stdout is not None
            lines = []
            kill_after = rng.randint(5, 400)
            for line in proc.stdout:
                lines.append(line)
                if len(lines) >= kill_after:
                    break
            os.kill(proc.pid, signal.SIGKILL)
            # read on through the pipe's buffer: communicate() would read the file descriptor
            # and skip lines already buffered (a writer that does not wait for the disk prints
            # many lines at once)
            rest = proc.stdout.read()
            err = proc.stderr.read() if proc.stderr is not None else ""
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL, err
        # reported before the kill landed: committed too (a last line cut by the kill is not)
        lines += rest.split("\n")[:-1]
        assert len(lines) >= kill_after, err
        delivering: set[int] = set()
        for line in lines:
            match line.split():
                case ["tx", lid, seq]:
                    txs.setdefault(int(lid), 0)
                    queued.add(int(seq))
                case ["put", seq]:
                    queued.add(int(seq))
                case ["delivering", seq]:
                    delivering.add(int(seq))
                case ["meter", lid, wh]:
                    txs[int(lid)] = int(wh)
                case ["del", seq]:
                    removed.add(int(seq))
                case ["set", key]:
                    keys.add(key)
                case []:
                    pass  # the last line may be cut by the kill
                case other:
                    raise AssertionError(f"unexpected line {other}")

        raw = sqlite3.connect(path)
        try:
            assert raw.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        finally:
            raw.close()
        with Store.open(path) as store:
            assert store.integrity_check() == ["ok"]
            present = {event.seq for event in store.tx_events_pending()}
            # The writer records a delivery before it prints "del": a kill in between delivers
            # the event without the test hearing of it.
            unreported = delivering - removed
            lost = queued - removed - present
            assert lost <= unreported, f"round {round_no}: lost queued events {lost}"
            removed |= lost
            assert not (removed & present), f"round {round_no}: removed messages came back"
            for local_id, last_wh in txs.items():
                tx = store.transaction(local_id)
                assert tx is not None, f"round {round_no}: lost transaction {local_id}"
                assert (tx.last_meter_wh or 0) >= last_wh
            assert keys <= set(store.settings("k"))
    assert len(queued) > 20 and removed
