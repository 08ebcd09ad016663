"""Schema migrations: every earlier version upgrades to the latest with its rows intact.

Generic over ``MIGRATIONS``: the database at version k is built by applying the first k steps,
one representative row is inserted into every table that exists at k (values chosen from the
column's name and type), and after ``Store.open`` upgrades it every one of those values is still
there and readable through the store's API.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from storekit import T0

from ocppd.errors import StorageError
from ocppd.storage import LATEST_VERSION, MIGRATIONS, Store
from ocppd.storage.records import dt_to_text
from ocppd.storage.schema import migrate


def _value(table: str, column: str, decl: str, pk: int) -> Any:
    """A representative, valid value for a column, from its name and declared type."""
    if pk and "INT" in decl.upper():
        return 1
    if column in ("at", "expiry") or column.endswith("_at"):
        return dt_to_text(T0)
    if column == "payload":
        return json.dumps({"transactionId": -1, "table": table})
    if column == "kind":
        return "ended" if table == "tx_events" else "stop"
    if column == "status":
        return "Accepted"
    if column == "use":  # certificates: CHECK (use IN (...))
        return "central_system_root"
    if column == "delivery":  # security_log: CHECK (delivery IN (...))
        return "pending"
    if column in ("key", "tag_key"):
        return "key1"
    if "INT" in decl.upper():
        return 1
    if "REAL" in decl.upper():
        return 1.5
    return f"{table}.{column}"


_REPLACED = {"outbox", "tx_samples"}  # by tx_events (version 6)


def _tables(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        " ORDER BY name")]


def _seed(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """One row per table; returns what was written."""
    written = {}
    for table in _tables(conn):
        cols = conn.execute(f"PRAGMA table_info({table})").fetchall()
        row = {c[1]: _value(table, c[1], c[2], c[5]) for c in cols}
        names = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        conn.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", tuple(row.values()))
        written[table] = row
    return written


def _build(path: Path, version: int) -> dict[str, dict[str, Any]]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert migrate(conn, version) == list(range(1, version + 1))
        assert conn.execute("PRAGMA user_version").fetchone()[0] == version
        conn.execute("BEGIN")
        written = _seed(conn)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return written


def _schema(path: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        return [(r[0], " ".join(r[1].split())) for r in conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")]
    finally:
        conn.close()


@pytest.mark.parametrize("version", range(LATEST_VERSION))
def test_upgrade_from_every_earlier_version_keeps_rows(tmp_path: Path, version: int) -> None:
    path = tmp_path / f"v{version}.db"
    written = _build(path, version)
    with Store.open(path) as store:
        assert store.schema_version == LATEST_VERSION
    # every value written at the old version is still there (the tables that were replaced:
    # through the API below)
    conn = sqlite3.connect(path)
    try:
        for table, row in written.items():
            if table in _REPLACED:
                continue
            row = dict(row)
            if table == "transactions" and "tx_id" in row:  # text since version 6
                row["remote_id"] = str(row.pop("tx_id"))
            got = conn.execute(f"SELECT {', '.join(row)} FROM {table}").fetchall()
            assert got == [tuple(row.values())], table
    finally:
        conn.close()
    with Store.open(path) as store:
        # and readable through the API (parsing of times, JSON, booleans)
        if version >= 1:
            assert store.get_setting("key1") == "settings.value"
            assert store.get_availability(1) == (True, True)
            tx = store.transaction(1)
            assert tx is not None and tx.started_at == T0 and tx.finished
            assert [t.local_id for t in store.active_transactions()] == []
            assert store.transaction_by_remote_id("1") == tx
            # the queued message and the stop's sample of version <= 5 are events now, kept
            # as the OCPP 1.6 they were written as
            (sample,) = [e for e in store.tx_events_of(1) if e.kind == "sample"]
            assert sample.legacy_action == "transactionData" and sample.seq < 0
            assert sample.data == {"transactionId": -1, "table": "tx_samples"}
            (queued,) = store.tx_events_pending()
            assert (queued.seq, queued.kind, queued.local_tx_id, queued.at) == (1, "ended", 1, T0)
            assert queued.legacy_action == "outbox.action"
            assert queued.data == {"transactionId": -1, "table": "outbox"}
            assert store.cache_get("KEY1") is not None
            assert store.local_list_get("key1") is not None
            assert store.profiles()[0].payload["table"] == "profiles"
            assert store.reservations()[0].expiry == T0
            assert store.events()[0][0] == T0
        # and the upgraded store takes new writes
        store.set_setting("after", "upgrade")
        store.tx_event_add(1, "sample", T0, trigger="periodic", data={})
    # the upgraded schema is exactly the schema of a fresh database
    fresh = tmp_path / "fresh.db"
    Store.open(fresh).close()
    assert _schema(path) == _schema(fresh)


def test_each_step_is_one_transaction_with_its_version(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    try:
        for k in range(1, LATEST_VERSION + 1):
            assert migrate(conn, k) == [k]
            assert conn.execute("PRAGMA user_version").fetchone()[0] == k
            assert not conn.in_transaction
        assert migrate(conn) == []  # nothing left to do
    finally:
        conn.close()


def test_failed_step_leaves_the_previous_version(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from ocppd.storage import schema
    broken = (*MIGRATIONS, "CREATE TABLE late (x INTEGER); CREATE TABLE late (x INTEGER);")
    monkeypatch.setattr(schema, "MIGRATIONS", broken)
    monkeypatch.setattr(schema, "LATEST_VERSION", len(broken))
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError):
            migrate(conn)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert "late" not in _tables(conn)
    finally:
        conn.close()


def test_newer_schema_is_refused(db_path: Path) -> None:
    Store.open(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="newer ocppd") as err:
        Store.open(db_path, move_aside_corrupt=True)  # not corrupt: never moved aside
    assert str(db_path) in str(err.value)
    assert list(db_path.parent.glob("*.corrupt-*")) == []


def test_unknown_target_version_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    try:
        with pytest.raises(ValueError):
            migrate(conn, LATEST_VERSION + 1)
    finally:
        conn.close()


def test_a_local_id_is_never_reused_across_the_rebuild_of_version_6(tmp_path: Path) -> None:
    """Version 6 rebuilds the transactions table; AUTOINCREMENT's high-water mark moves with it,
    so an id used by a transaction pruned before the upgrade is never handed out again."""
    path = tmp_path / "v5.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        migrate(conn, 5)
        for _ in range(5):
            conn.execute("INSERT INTO transactions(connector_id, id_tag, meter_start_wh,"
                         " started_at, finished) VALUES (1, 'T', 0, ?, 1)", (dt_to_text(T0),))
        conn.execute("DELETE FROM transactions WHERE local_id > 2")  # pruned: 3..5 were used
    finally:
        conn.close()
    with Store.open(path) as store:
        assert store.begin_transaction(connector_id=1, id_tag="NEW", meter_start_wh=0,
                                       started_at=T0) == 6
