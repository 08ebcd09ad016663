"""Authorization cache (OCPP 1.6 §3.4) and local authorization list (§3.5).

Id tags are IdToken = CiString20: they compare case-insensitively. Rows are keyed by the
case-folded tag and keep the spelling last seen, which is what the layers above get back.

Cache eviction when full (§3.4): entries that are not valid go first (status other than
Accepted, or expired at the time of the put), then the least recently used valid ones. "Used"
means put or found by ``cache_get``; recency is a counter, not the wall clock, so a clock step
cannot reorder it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from ocppd.errors import StorageError
from ocppd.storage.db import Database
from ocppd.storage.records import AuthEntry, dt_to_text, opt_dt_from_text, opt_dt_to_text

log = logging.getLogger(__name__)

_LIST_VERSION_KEY = "local_list_version"


def tag_key(id_tag: str) -> str:
    return id_tag.casefold()


class AuthMixin:
    _db: Database

    # --- authorization cache ------------------------------------------------------------------

    def cache_get(self, id_tag: str) -> AuthEntry | None:
        key = tag_key(id_tag)
        row = self._db.one("read the authorization cache",
                           "SELECT id_tag, status, expiry, parent_id_tag FROM auth_cache"
                           " WHERE tag_key = ?", (key,))
        if row is None:
            return None
        try:
            # recency is a hint for eviction: cheap lazy commit, and never a reason to fail a
            # lookup (reads must keep working on a full disk)
            with self._db.write("mark a cache entry used", durable=False):
                self._db.exec("UPDATE auth_cache SET used_at = (SELECT coalesce(max(used_at), 0)"
                              " + 1 FROM auth_cache) WHERE tag_key = ?", (key,))
        except StorageError as e:
            log.debug("authorization cache: recency not updated: %s", e)
        return _entry(row)

    def cache_put(self, entry: AuthEntry, *, max_entries: int,
                  now: datetime | None = None) -> None:
        """Insert or replace the entry for its id tag, evicting when the cache is full."""
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        key = tag_key(entry.id_tag)
        now_text = dt_to_text(now or datetime.now(UTC))
        with self._db.write("update the authorization cache"):
            exists = self._db.exec("SELECT 1 FROM auth_cache WHERE tag_key = ?",
                                   (key,)).fetchone() is not None
            if not exists:
                count = int(self._db.exec("SELECT count(*) FROM auth_cache").fetchone()[0])
                excess = count - max_entries + 1
                if excess > 0:
                    self._db.exec(
                        "DELETE FROM auth_cache WHERE tag_key IN (SELECT tag_key FROM auth_cache"
                        " ORDER BY (status != 'Accepted' OR (expiry IS NOT NULL AND expiry <= ?))"
                        " DESC, used_at LIMIT ?)", (now_text, excess))
            self._db.exec(
                "INSERT INTO auth_cache(tag_key, id_tag, status, expiry, parent_id_tag, used_at)"
                " VALUES (?, ?, ?, ?, ?, (SELECT coalesce(max(used_at), 0) + 1 FROM auth_cache))"
                " ON CONFLICT(tag_key) DO UPDATE SET id_tag = excluded.id_tag,"
                " status = excluded.status, expiry = excluded.expiry,"
                " parent_id_tag = excluded.parent_id_tag, used_at = excluded.used_at",
                (key, entry.id_tag, entry.status, opt_dt_to_text(entry.expiry),
                 entry.parent_id_tag))

    def cache_clear(self) -> None:
        with self._db.write("clear the authorization cache"):
            self._db.exec("DELETE FROM auth_cache")

    def cache_count(self) -> int:
        row = self._db.one("count the authorization cache", "SELECT count(*) FROM auth_cache")
        assert row is not None
        return int(row[0])

    # --- local authorization list (changed only by SendLocalList, §3.5) -----------------------

    def local_list_version(self) -> int:
        row = self._db.one("read the local list version",
                           "SELECT value FROM meta WHERE key = ?", (_LIST_VERSION_KEY,))
        return 0 if row is None else int(row[0])

    def local_list_get(self, id_tag: str) -> AuthEntry | None:
        row = self._db.one("read the local list",
                           "SELECT id_tag, status, expiry, parent_id_tag FROM local_list"
                           " WHERE tag_key = ?", (tag_key(id_tag),))
        return None if row is None else _entry(row)

    def local_list_replace(self, version: int, entries: list[AuthEntry], *,
                           max_entries: int) -> bool:
        """SendLocalList Full: the list becomes exactly ``entries``, atomically.

        False, with nothing changed, when the list would hold more than ``max_entries``.
        """
        if len({tag_key(e.id_tag) for e in entries}) > max_entries:
            return False
        with self._db.write("replace the local list"):
            self._db.exec("DELETE FROM local_list")
            self._upsert(entries)
            self._set_list_version(version)
        return True

    def local_list_update(self, version: int, upserts: list[AuthEntry],
                          deletes: list[str], *, max_entries: int) -> bool:
        """SendLocalList Differential: add/replace ``upserts``, remove ``deletes``, atomically.

        False, with nothing changed (entries and version), when the list would then hold more
        than ``max_entries`` (OCPP 1.6 §5.15: a Failed update must leave the list as it was).
        """
        try:
            with self._db.write("update the local list"):
                self._db.execmany("DELETE FROM local_list WHERE tag_key = ?",
                                  [(tag_key(t),) for t in deletes])
                self._upsert(upserts)
                if self.local_list_count() > max_entries:
                    raise _ListTooLong
                self._set_list_version(version)
        except _ListTooLong:
            return False
        return True

    def local_list_count(self) -> int:
        row = self._db.one("count the local list", "SELECT count(*) FROM local_list")
        assert row is not None
        return int(row[0])

    def _upsert(self, entries: list[AuthEntry]) -> None:
        self._db.execmany(
            "INSERT INTO local_list(tag_key, id_tag, status, expiry, parent_id_tag)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT(tag_key) DO UPDATE SET id_tag = excluded.id_tag,"
            " status = excluded.status, expiry = excluded.expiry,"
            " parent_id_tag = excluded.parent_id_tag",
            [(tag_key(e.id_tag), e.id_tag, e.status, opt_dt_to_text(e.expiry), e.parent_id_tag)
             for e in entries])

    def _set_list_version(self, version: int) -> None:
        self._db.exec("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key)"
                      " DO UPDATE SET value = excluded.value", (_LIST_VERSION_KEY, str(version)))


class _ListTooLong(Exception):
    """Raised inside a write block to roll a local-list update back."""


def _entry(row: Any) -> AuthEntry:
    return AuthEntry(id_tag=row["id_tag"], status=row["status"],
                     expiry=opt_dt_from_text(row["expiry"]), parent_id_tag=row["parent_id_tag"])
