"""Authorization cache (OCPP 1.6 §3.4) and local authorization list (§3.5)."""

from __future__ import annotations

from pathlib import Path

import pytest
from storekit import at

from ocppd.storage import AuthEntry, StorageError, Store


def _e(tag: str, status: str = "Accepted", expiry_s: float | None = None,
       parent: str | None = None) -> AuthEntry:
    return AuthEntry(id_tag=tag, status=status,
                     expiry=None if expiry_s is None else at(expiry_s), parent_id_tag=parent)


def test_cache_is_case_insensitive_and_updates_in_place(store: Store) -> None:
    store.cache_put(_e("AbCd01", parent="P1"), max_entries=10)
    got = store.cache_get("abcd01")
    assert got == _e("AbCd01", parent="P1")
    store.cache_put(_e("ABCD01", "Blocked", expiry_s=60), max_entries=10)
    assert store.cache_count() == 1
    assert store.cache_get("AbCd01") == _e("ABCD01", "Blocked", expiry_s=60)
    assert store.cache_get("unknown") is None


def test_cache_survives_reopen_and_clear(store: Store, db_path: Path) -> None:
    store.cache_put(_e("T1"), max_entries=10)
    store.close()
    with Store.open(db_path) as again:
        assert again.cache_get("t1") == _e("T1")
        again.cache_clear()
        assert again.cache_count() == 0 and again.cache_get("T1") is None


def test_cache_evicts_not_valid_entries_first(store: Store) -> None:
    now = at(1000)
    store.cache_put(_e("valid-old"), max_entries=4, now=now)
    store.cache_put(_e("blocked", "Blocked"), max_entries=4, now=now)
    store.cache_put(_e("expired", expiry_s=500), max_entries=4, now=now)  # expired at put time
    store.cache_put(_e("valid-new", expiry_s=5000), max_entries=4, now=now)
    store.cache_put(_e("n1"), max_entries=4, now=now)
    assert store.cache_get("blocked") is None  # oldest not-valid goes first
    store.cache_put(_e("n2"), max_entries=4, now=now)
    assert store.cache_get("expired") is None
    assert store.cache_count() == 4
    # only valid entries left: the least recently used goes
    store.cache_put(_e("n3"), max_entries=4, now=now)
    assert store.cache_get("valid-old") is None
    assert {t for t in ("valid-new", "n1", "n2", "n3") if store.cache_get(t)} == {
        "valid-new", "n1", "n2", "n3"}


def test_cache_lookup_refreshes_recency(store: Store) -> None:
    for tag in ("a", "b", "c"):
        store.cache_put(_e(tag), max_entries=3, now=at(0))
    assert store.cache_get("A") is not None  # 'a' is now the most recently used
    store.cache_put(_e("d"), max_entries=3, now=at(0))
    assert store.cache_get("b") is None
    assert store.cache_get("a") is not None


def test_cache_shrinks_to_a_lowered_limit(store: Store) -> None:
    for i in range(6):
        store.cache_put(_e(f"t{i}"), max_entries=10, now=at(0))
    store.cache_put(_e("new"), max_entries=3, now=at(0))
    assert store.cache_count() == 3
    assert store.cache_get("new") is not None and store.cache_get("t5") is not None
    with pytest.raises(ValueError):
        store.cache_put(_e("x"), max_entries=0)


def test_local_list_full_replace(store: Store, db_path: Path) -> None:
    assert store.local_list_version() == 0 and store.local_list_count() == 0
    store.local_list_replace(
        3, [_e("A1"), _e("b2", "Blocked", expiry_s=10, parent="PX")], max_entries=10
    )
    store.local_list_replace(4, [_e("C3"), _e("a1", "Expired")], max_entries=10)
    store.close()
    with Store.open(db_path) as again:
        assert again.local_list_version() == 4
        assert again.local_list_count() == 2
        assert again.local_list_get("B2") is None
        assert again.local_list_get("A1") == _e("a1", "Expired")
        assert again.local_list_get("c3") == _e("C3")
        again.local_list_replace(5, [], max_entries=10)
        assert again.local_list_count() == 0 and again.local_list_version() == 5


def test_local_list_differential_update(store: Store) -> None:
    store.local_list_replace(1, [_e("A"), _e("B"), _e("C")], max_entries=10)
    store.local_list_update(
        2, upserts=[_e("b", "Blocked"), _e("D")], deletes=["c", "zz"], max_entries=10
    )
    assert store.local_list_version() == 2
    assert store.local_list_count() == 3
    assert store.local_list_get("B") == _e("b", "Blocked")
    assert store.local_list_get("C") is None
    assert store.local_list_get("d") == _e("D")


def test_local_list_update_is_all_or_nothing(store: Store) -> None:
    store.local_list_replace(1, [_e("A")], max_entries=10)
    bad = AuthEntry(id_tag="B", status=None, expiry=None, parent_id_tag=None)  # type: ignore[arg-type]
    with pytest.raises(StorageError, match="NOT NULL"):
        store.local_list_update(2, upserts=[_e("C"), bad], deletes=["A"], max_entries=10)
    assert store.local_list_version() == 1
    assert store.local_list_get("A") is not None and store.local_list_get("C") is None


def test_local_list_over_max_length_changes_nothing(store: Store) -> None:
    store.local_list_replace(1, [_e("A"), _e("B")], max_entries=2)
    assert not store.local_list_update(2, upserts=[_e("C")], deletes=[], max_entries=2)
    assert store.local_list_version() == 1 and store.local_list_get("C") is None
    assert not store.local_list_replace(3, [_e("X"), _e("Y"), _e("Z")], max_entries=2)
    assert store.local_list_version() == 1 and store.local_list_get("A") is not None
    assert store.local_list_update(4, upserts=[_e("C")], deletes=["a"], max_entries=2)
    assert store.local_list_version() == 4 and store.local_list_count() == 2


def test_list_and_cache_are_separate(store: Store) -> None:
    store.local_list_replace(1, [_e("L")], max_entries=10)
    assert store.cache_get("L") is None
    store.cache_put(_e("K"), max_entries=5)
    assert store.local_list_get("K") is None
