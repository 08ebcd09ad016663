"""Micro-benchmarks of the transaction-event queue, for the benchmark suite.

``events_roundtrip``: the online path, one meter sample at a time: add, read the head, confirm.
``events_replay``: the reconnect path: n samples already queued, read in batches and confirmed,
as the sender does while replaying a backlog to the Central System.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ocppd.storage.store import Store

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def sample_data(i: int) -> dict[str, Any]:
    """The i-th benchmark sample, as the station records it (core.evse.reading_to_data)."""
    return {"reading": {"energy_import_wh": 1000.0 + i, "power_w": 7200.0}}


def sample_at(i: int) -> datetime:
    return T0 + timedelta(seconds=i)


def prefill(store: Store, n: int, *, remote_id: str = "1234") -> int | None:
    """A finished transaction known to the Central System with n samples still to deliver (its
    start delivered; no end queued: the benchmark measures MeterValues alone); returns its
    local id. None for n = 0: nothing is written."""
    if n == 0:
        return None
    with store.atomic():
        local_id = store.begin_transaction(connector_id=1, id_tag="BENCH", meter_start_wh=1000,
                                           started_at=T0)
        store.set_remote_id(local_id, remote_id)
        store.tx_event_add(local_id, "started", T0, energy_wh=1000)
    started = store.tx_events_pending(1)[0]
    store.tx_event_delivered(started)
    with store.atomic():
        for i in range(n):
            store.tx_event_add(local_id, "sample", sample_at(i), trigger="periodic",
                               energy_wh=1000 + i, data=sample_data(i))
        store.finish_transaction(local_id, meter_stop_wh=1000 + n, stopped_at=sample_at(n),
                                 reason="local", stop_id_tag=None)
    return local_id


def events_roundtrip(path: Path, n: int) -> float:
    """Samples per second for add + head + confirm, one at a time."""
    with Store.open(Path(path), max_pending_events=max(n, 100)) as store:
        local_id = store.begin_transaction(connector_id=1, id_tag="BENCH", meter_start_wh=1000,
                                           started_at=T0)
        t0 = time.perf_counter()
        for i in range(n):
            store.tx_event_add(local_id, "sample", sample_at(i), trigger="periodic",
                               energy_wh=1000 + i, data=sample_data(i))
            head = store.tx_events_pending(1)
            assert head
            store.tx_event_delivered(head[0])
        elapsed = time.perf_counter() - t0
    return n / elapsed if elapsed > 0 else float("inf")


def events_replay(path: Path, n: int, *, batch: int = 64) -> float:
    """Samples per second for the daemon's replay path over a backlog of n queued samples:
    read in batches, confirm each (the sender in ocppd/ocpp/v16/txmessages.py does the same)."""
    with Store.open(Path(path), max_pending_events=max(n, 100)) as store:
        prefill(store, n)
        t0 = time.perf_counter()
        while events := store.tx_events_pending(limit=batch):
            for event in events:
                store.tx_event_delivered(event)
        elapsed = time.perf_counter() - t0
    return n / elapsed if elapsed > 0 else float("inf")
