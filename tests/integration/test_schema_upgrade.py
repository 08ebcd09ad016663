"""A charger upgraded from a version that queued OCPP 1.6 messages (schema 5) delivers what it
had queued, as it was queued, after the upgrade: the offline session's StartTransaction, its
MeterValues and its StopTransaction with the StopTransaction samples recorded before."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from csms import CentralSystem
from harness import booted, running, sim_config, wait_until

from ocppd.storage.schema import migrate

pytestmark = pytest.mark.asyncio

T = "2026-11-01T10:00:00.000000+00:00"
BEGIN_SAMPLE = {"timestamp": "2026-11-01T10:00:00Z", "sampledValue": [
    {"value": "100.0", "context": "Transaction.Begin", "measurand": "Energy.Active.Import.Register",
     "location": "Outlet", "unit": "Wh"}]}


def _version_5_database(path: Path) -> None:
    """What version 5 left behind after an offline session: a finished transaction without a
    transactionId, its three messages queued, one StopTransaction sample."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        migrate(conn, 5)
        conn.execute("BEGIN")
        conn.execute(
            "INSERT INTO transactions(local_id, connector_id, id_tag, meter_start_wh, started_at,"
            " meter_stop_wh, stopped_at, stop_reason, finished) VALUES"
            " (7, 1, 'OLD1', 100, ?, 900, ?, 'local', 1)", (T, T))
        conn.execute("INSERT INTO tx_samples(local_id, id, taken_at, payload) VALUES"
                     " (7, 1, ?, ?)", (T, json.dumps(BEGIN_SAMPLE)))
        start = {"connectorId": 1, "idTag": "OLD1", "meterStart": 100,
                 "timestamp": "2026-11-01T10:00:00Z"}
        meter = {"connectorId": 1, "meterValue": [{"timestamp": "2026-11-01T10:01:00Z",
                 "sampledValue": [{"value": "500", "measurand": "Energy.Active.Import.Register",
                                   "unit": "Wh", "context": "Sample.Periodic"}]}]}
        stop = {"meterStop": 900, "timestamp": "2026-11-01T10:02:00Z", "reason": "Local",
                "transactionData": [BEGIN_SAMPLE]}
        for seq, (action, kind, payload) in enumerate(
                [("StartTransaction", "start", start), ("MeterValues", "meter", meter),
                 ("StopTransaction", "stop", stop)], start=11):
            conn.execute("INSERT INTO outbox(seq, action, payload, local_tx_id, kind, created_at)"
                         " VALUES (?, ?, ?, 7, ?, ?)", (seq, action, json.dumps(payload), kind, T))
        conn.execute("COMMIT")
    finally:
        conn.close()


async def test_messages_queued_by_schema_5_are_delivered_after_the_upgrade(
        cs: CentralSystem, tmp_path: Path) -> None:
    db = tmp_path / "ocppd.db"
    _version_5_database(db)
    async with running(sim_config(tmp_path, cs.url, db=db)) as d:
        await booted(cs)
        (stop,) = await cs.wait_for("StopTransaction")
        (start,) = cs.received("StartTransaction")
        (meter,) = cs.received("MeterValues")
        remote_id = d.store.transaction(7).remote_id
        assert remote_id is not None
        tx_id = int(remote_id)
        assert start["idTag"] == "OLD1" and start["meterStart"] == 100
        # queued before the id was known: it is added when they are sent
        assert meter["transactionId"] == stop["transactionId"] == tx_id
        assert meter["meterValue"][0]["sampledValue"][0]["value"] == "500"
        assert stop["meterStop"] == 900 and stop["transactionData"] == [BEGIN_SAMPLE]
        order = [m.action for m in cs.messages if m.direction == "in"
                 and m.action in ("StartTransaction", "MeterValues", "StopTransaction")]
        assert order == ["StartTransaction", "MeterValues", "StopTransaction"]
        await wait_until(lambda: d.store.tx_events_count() == 0, what="all delivered")
        assert d.store.tx_events_of(7) == []  # the transaction's events are done with
