"""Settings, availability, profiles, reservations, events, atomic() and reopening."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from storekit import at

from ocppd.errors import StorageError
from ocppd.storage import LATEST_VERSION, Reservation, Store, StoredProfile


def test_store_is_wal_synced_off_the_calling_thread(store: Store, db_path: Path) -> None:
    facts = store.diagnostics()
    assert facts["journal_mode"] == "wal"
    # NORMAL: a commit does not fsync on the caller's thread; the background thread does
    assert facts["synchronous"] == "1"
    assert facts["page_size"] == "1024"  # new databases: small pages, fewer bytes per commit
    assert store.schema_version == LATEST_VERSION
    store.set_setting("probe", "1")
    # exclusive locking: the WAL index is in memory, there is no -shm file to wear the card,
    # and no other process can open the database while the store has it
    assert not Path(f"{db_path}-shm").exists()
    raw = sqlite3.connect(db_path, timeout=0)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            raw.execute("SELECT count(*) FROM settings").fetchone()
        store.close()
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent mode
        assert raw.execute("SELECT value FROM settings WHERE key = 'probe'").fetchone()[0] == "1"
    finally:
        raw.close()


def test_settings_roundtrip_and_prefix(store: Store) -> None:
    assert store.get_setting("ocpp.HeartbeatInterval") is None
    store.set_setting("ocpp.HeartbeatInterval", "300")
    store.set_setting("ocpp.HeartbeatInterval", "60")
    store.set_setting("ocpp.MeterValueSampleInterval", "10")
    store.set_setting("ocppX", "not under the prefix")
    store.set_setting("OCPP.upper", "different case")
    assert store.get_setting("ocpp.HeartbeatInterval") == "60"
    assert store.settings("ocpp.") == {"ocpp.HeartbeatInterval": "60",
                                       "ocpp.MeterValueSampleInterval": "10"}
    assert len(store.settings()) == 4
    store.delete_setting("ocpp.HeartbeatInterval")
    store.delete_setting("never.set")  # deleting a missing key is fine
    assert store.get_setting("ocpp.HeartbeatInterval") is None


def test_prefix_is_literal_not_a_pattern(store: Store) -> None:
    store.set_setting("a_b", "1")
    store.set_setting("axb", "2")
    assert store.settings("a_") == {"a_b": "1"}
    assert store.settings("a%") == {}


def test_availability_persists_with_scheduled_change(store: Store, db_path: Path) -> None:
    assert store.get_availability(1) is None
    store.set_availability(0, False)
    store.set_availability(1, True, scheduled=False)  # ChangeAvailability answered Scheduled
    store.close()
    with Store.open(db_path) as again:
        assert again.get_availability(0) == (False, None)
        assert again.get_availability(1) == (True, False)
        again.set_availability(1, False, None)
        assert again.get_availability(1) == (False, None)


def test_profiles_replace_same_id_and_delete(store: Store) -> None:
    p = StoredProfile(profile_id=7, connector_id=1, purpose="TxDefaultProfile", stack_level=0,
                      tx_id=None, payload={"chargingProfileId": 7, "limit": 16})
    store.profile_put(p)
    store.profile_put(StoredProfile(profile_id=7, connector_id=2, purpose="TxProfile",
                                    stack_level=3, tx_id=99, payload={"limit": 10}))
    store.profile_put(StoredProfile(profile_id=3, connector_id=0,
                                    purpose="ChargePointMaxProfile", stack_level=1, tx_id=None,
                                    payload={"limit": 32}))
    got = store.profiles()
    assert [x.profile_id for x in got] == [3, 7]
    assert got[1] == StoredProfile(profile_id=7, connector_id=2, purpose="TxProfile",
                                   stack_level=3, tx_id=99, payload={"limit": 10})
    store.profile_delete(7)
    store.profile_delete(12345)
    assert [x.profile_id for x in store.profiles()] == [3]


def test_reservations_put_replace_delete(store: Store) -> None:
    r = Reservation(reservation_id=5, connector_id=1, id_tag="ABC", parent_id_tag=None,
                    expiry=at(600))
    store.reservation_put(r)
    store.reservation_put(Reservation(reservation_id=5, connector_id=2, id_tag="ABC",
                                      parent_id_tag="P", expiry=at(900)))
    assert store.reservations() == [Reservation(reservation_id=5, connector_id=2, id_tag="ABC",
                                                parent_id_tag="P", expiry=at(900))]
    store.reservation_delete(5)
    assert store.reservations() == []


def test_events_filter_by_time_in_logged_order(store: Store) -> None:
    store.log_event(at(0), "state", "connector 1 Available")
    store.log_event(at(10), "fault", "ground failure")
    store.log_event(at(20), "state", "connector 1 Faulted")
    assert [e[1] for e in store.events()] == ["state", "fault", "state"]
    assert store.events(since=at(10)) == [(at(10), "fault", "ground failure"),
                                          (at(20), "state", "connector 1 Faulted")]
    assert store.events(since=at(5), until=at(15)) == [(at(10), "fault", "ground failure")]
    assert store.events(until=at(0)) == [(at(0), "state", "connector 1 Available")]


def test_events_are_a_capped_ring(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from ocppd.storage import store as store_module
    monkeypatch.setattr(store_module, "EVENTS_MAX", 50)
    for i in range(400):
        store.log_event(at(i), "tick", str(i))
    kept = store.events()
    assert len(kept) < 150
    assert kept[-1][2] == "399"  # the newest are the ones kept


def test_naive_datetime_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="naive"):
        store.log_event(at(0).replace(tzinfo=None), "x", "y")


def test_atomic_commits_several_calls_together(store: Store, db_path: Path) -> None:
    with store.atomic():
        store.set_setting("a", "1")
        with store.atomic():  # nested: still one transaction
            store.set_setting("b", "2")
        store.set_availability(1, False)
    store.close()
    with Store.open(db_path) as again:
        assert again.settings() == {"a": "1", "b": "2"}
        assert again.get_availability(1) == (False, None)


def test_atomic_rolls_back_everything_on_exception(store: Store) -> None:
    store.set_setting("keep", "old")
    with pytest.raises(RuntimeError), store.atomic():
        store.set_setting("keep", "new")
        store.tx_event_add(1, "sample", at(0), data={})
        raise RuntimeError("boom")
    assert store.get_setting("keep") == "old"
    assert store.tx_events_count() == 0


def test_nested_atomic_failure_undoes_only_the_inner_block(store: Store) -> None:
    with store.atomic():
        store.set_setting("outer", "1")
        with pytest.raises(KeyError), store.atomic():
            store.set_setting("inner", "1")
            store.set_remote_id(424242, "1")  # unknown transaction: KeyError
        store.set_setting("after", "1")
    assert store.settings() == {"outer": "1", "after": "1"}


def test_closed_store_raises_storage_error(db_path: Path) -> None:
    s = Store.open(db_path)
    s.close()
    with pytest.raises(StorageError, match="closed"):
        s.get_setting("x")
