"""Micro-benchmarks of the outbox, for the benchmark suite.

``outbox_roundtrip``: the online path, one MeterValues at a time: put (durable), head, remove.
``outbox_replay``: the reconnect path: n MeterValues already queued, read in batches and confirmed,
as the sender does while replaying a backlog to the Central System.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ocppd.storage.store import Store


def meter_payload(i: int) -> dict[str, Any]:
    """The i-th benchmark MeterValues (the benchmark suite queues the very same ones)."""
    return {
        "connectorId": 1,
        "transactionId": 1234,
        "meterValue": [{
            "timestamp": f"2024-05-01T12:{i // 60 % 60:02d}:{i % 60:02d}Z",
            "sampledValue": [
                {"value": str(1000 + i), "measurand": "Energy.Active.Import.Register",
                 "unit": "Wh", "context": "Sample.Periodic"},
                {"value": "7200", "measurand": "Power.Active.Import", "unit": "W"},
            ],
        }],
    }


def outbox_roundtrip(path: Path, n: int) -> float:
    """Messages per second for put + head + remove, one message at a time."""
    with Store.open(Path(path), outbox_max_messages=max(n, 100)) as store:
        t0 = time.perf_counter()
        for i in range(n):
            store.outbox_put(action="MeterValues", payload=meter_payload(i), local_tx_id=1,
                             kind="meter")
            head = store.outbox_head()
            assert head is not None
            store.outbox_remove(head.seq)
        elapsed = time.perf_counter() - t0
    return n / elapsed if elapsed > 0 else float("inf")


def outbox_replay(path: Path, n: int, *, batch: int = 64) -> float:
    """Messages per second for the daemon's replay path over a backlog of n queued MeterValues:
    read in batches, confirm each (the sender in ocppd/ocpp/v16/chargepoint.py does the same)."""
    with Store.open(Path(path), outbox_max_messages=max(n, 100)) as store:
        with store.atomic():
            for i in range(n):
                store.outbox_put(action="MeterValues", payload=meter_payload(i), local_tx_id=1,
                                 kind="meter")
        t0 = time.perf_counter()
        while items := store.outbox_items(limit=batch):
            for item in items:
                store.outbox_confirm(item.seq, item.kind)
        elapsed = time.perf_counter() - t0
    return n / elapsed if elapsed > 0 else float("inf")
