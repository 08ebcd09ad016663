"""Transaction events as an earlier run of the daemon leaves them in its database (queued while
offline, or cut off by a crash), for tests that start a daemon on such a database."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from ocppd.storage import Store


def seed_samples(db: Path, stamps: list[datetime], *, tx_id: int = 4242,
                 energy_wh: float = 10.0) -> list[int]:
    """Periodic samples of a finished transaction whose start the Central System confirmed
    (``tx_id``) and whose samples are still to be delivered, one per instant of ``stamps``;
    returns their seqs. Each is sent as one MeterValues with that timestamp."""
    store = Store.open(db)
    try:
        with store.atomic():
            lid = store.begin_transaction(connector_id=1, id_tag="SEED", meter_start_wh=0,
                                          started_at=stamps[0])
            store.set_remote_id(lid, str(tx_id))
            store.tx_event_add(lid, "started", stamps[0], energy_wh=0)
        store.tx_event_delivered(store.tx_events_pending(1)[0])
        with store.atomic():
            seqs = [store.tx_event_add(lid, "sample", at, trigger="periodic",
                                       energy_wh=int(energy_wh),
                                       data={"reading": {"energy_import_wh": energy_wh}})
                    for at in stamps]
            store.finish_transaction(lid, meter_stop_wh=int(energy_wh), stopped_at=stamps[-1],
                                     reason="local", stop_id_tag=None)
    finally:
        store.close()
    return seqs
