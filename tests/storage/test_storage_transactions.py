"""Transactions: lifecycle, lookups, last meter reading, StopTransaction samples."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from storekit import at

from ocppd.storage import Store, TxRecord


def test_transaction_lifecycle_survives_reopen(store: Store, db_path: Path) -> None:
    lid = store.begin_transaction(connector_id=1, id_tag="TAG1", meter_start_wh=1000,
                                  started_at=at(0), reservation_id=4)
    tx = store.transaction(lid)
    assert tx == TxRecord(local_id=lid, connector_id=1, id_tag="TAG1", remote_id=None,
                          meter_start_wh=1000, started_at=at(0), last_meter_wh=None,
                          last_meter_at=None, meter_stop_wh=None, stopped_at=None,
                          stop_reason=None, stop_id_tag=None, reservation_id=4,
                          id_tag_status=None, finished=False)
    store.set_remote_id(lid, "555")
    store.set_id_tag_status(lid, "Accepted")
    store.update_meter(lid, 1500, at(60))
    store.close()
    with Store.open(db_path) as again:
        tx = again.transaction(lid)
        assert tx is not None
        assert (tx.remote_id, tx.id_tag_status, tx.last_meter_wh, tx.last_meter_at) == (
            "555", "Accepted", 1500, at(60))
        assert again.active_transactions() == [tx]
        again.finish_transaction(lid, meter_stop_wh=1600, stopped_at=at(90), reason="Local",
                                 stop_id_tag="TAG1")
        done = again.transaction(lid)
        assert done is not None and done.finished
        assert (done.meter_stop_wh, done.stopped_at, done.stop_reason, done.stop_id_tag) == (
            1600, at(90), "Local", "TAG1")
        assert again.active_transactions() == []


def test_finishing_twice_is_refused(store: Store) -> None:
    lid = store.begin_transaction(connector_id=1, id_tag="T", meter_start_wh=0,
                                  started_at=at(0))
    store.finish_transaction(lid, meter_stop_wh=10, stopped_at=at(5), reason="Local",
                             stop_id_tag=None)
    with pytest.raises(ValueError, match="already finished"):
        store.finish_transaction(lid, meter_stop_wh=20, stopped_at=at(6), reason="PowerLoss",
                                 stop_id_tag=None)
    tx = store.transaction(lid)
    assert tx is not None and tx.meter_stop_wh == 10 and tx.stop_reason == "Local"


def test_a_stop_request_survives_reopen_and_the_first_one_wins(
        store: Store, db_path: Path) -> None:
    lid = store.begin_transaction(connector_id=1, id_tag="T", meter_start_wh=0,
                                  started_at=at(0))
    store.request_stop(lid, reason="local", stop_id_tag="T", at=at(5))
    store.request_stop(lid, reason="ev_disconnected", stop_id_tag=None, at=at(6))
    store.close()
    with Store.open(db_path) as again:
        (tx,) = again.active_transactions()
        assert tx.stop_requested and not tx.finished
        assert (tx.stop_reason, tx.stop_id_tag, tx.stopped_at) == ("local", "T", at(5))
        again.finish_transaction(lid, meter_stop_wh=10, stopped_at=at(7), reason="local",
                                 stop_id_tag="T")
        again.request_stop(lid, reason="remote", stop_id_tag=None, at=at(8))  # too late
        done = again.transaction(lid)
        assert done is not None and not done.stop_requested
        assert (done.stop_reason, done.stopped_at) == ("local", at(7))
        with pytest.raises(KeyError):
            again.request_stop(lid + 1, reason="local", stop_id_tag=None, at=at(9))


def test_meter_update_after_finish_is_ignored(store: Store) -> None:
    lid = store.begin_transaction(connector_id=1, id_tag="T", meter_start_wh=0,
                                  started_at=at(0))
    store.update_meter(lid, 50, at(1))
    store.finish_transaction(lid, meter_stop_wh=60, stopped_at=at(2), reason="Local",
                             stop_id_tag=None)
    store.update_meter(lid, 70, at(3))
    tx = store.transaction(lid)
    assert tx is not None and tx.last_meter_wh == 50


def test_unknown_local_id_raises_key_error(store: Store) -> None:
    calls: list[Callable[[], None]] = [
        lambda: store.set_remote_id(99, "1"),
        lambda: store.set_id_tag_status(99, "Invalid"),
        lambda: store.update_meter(99, 1, at(0)),
        lambda: store.finish_transaction(99, meter_stop_wh=1, stopped_at=at(0), reason="Local",
                                         stop_id_tag=None),
    ]
    for call in calls:
        with pytest.raises(KeyError):
            call()
    assert store.transaction(99) is None


def test_lookup_by_central_system_id_and_recent_order(store: Store) -> None:
    ids = [store.begin_transaction(connector_id=c, id_tag=f"T{c}", meter_start_wh=0,
                                   started_at=at(c)) for c in (1, 2, 3)]
    store.set_remote_id(ids[1], "7001")
    found = store.transaction_by_remote_id("7001")
    assert found is not None and found.local_id == ids[1]
    assert store.transaction_by_remote_id("7002") is None
    assert [t.local_id for t in store.recent_transactions()] == ids[::-1]
    assert [t.local_id for t in store.recent_transactions(limit=2)] == ids[:0:-1]


def test_local_ids_are_never_reused(store: Store, db_path: Path) -> None:
    first = store.begin_transaction(connector_id=1, id_tag="T", meter_start_wh=0,
                                    started_at=at(0))
    store.close()
    with Store.open(db_path) as again:
        second = again.begin_transaction(connector_id=1, id_tag="T", meter_start_wh=0,
                                         started_at=at(1))
    assert second > first


def test_old_finished_transactions_are_pruned_unless_queued(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from ocppd.storage import transactions
    monkeypatch.setattr(transactions, "KEEP_FINISHED_TX", 3)
    ids = []
    for i in range(8):
        lid = store.begin_transaction(connector_id=1, id_tag="T", meter_start_wh=0,
                                      started_at=at(i))
        ids.append(lid)
    # the first transaction's end is still to be delivered: it must stay
    store.tx_event_add(ids[0], "ended", at(100))
    running = ids[-1]
    for lid in ids[:-1]:
        store.finish_transaction(lid, meter_stop_wh=1, stopped_at=at(100), reason="Local",
                                 stop_id_tag=None)
    kept = {t.local_id for t in store.recent_transactions(limit=100)}
    assert kept == {ids[0], ids[4], ids[5], ids[6], running}
    assert [e.kind for e in store.tx_events_of(ids[0])] == ["ended"]


def test_a_transaction_begun_without_an_idtag_gets_one_once(store: Store) -> None:
    lid = store.begin_transaction(connector_id=1, id_tag=None, meter_start_wh=0,
                                  started_at=at(0))
    tx = store.transaction(lid)
    assert tx is not None and tx.id_tag is None
    store.record_authorization(lid, id_tag="CARD", parent_id_tag="FLEET")
    tx = store.transaction(lid)
    assert tx is not None and (tx.id_tag, tx.parent_id_tag) == ("CARD", "FLEET")
    with pytest.raises(ValueError, match="already"):
        store.record_authorization(lid, id_tag="OTHER", parent_id_tag=None)
    with pytest.raises(KeyError):
        store.record_authorization(lid + 100, id_tag="X", parent_id_tag=None)
