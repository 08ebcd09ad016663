"""Persistent store (SQLite): transactions, the transaction-message outbox, authorization cache
and local list, charging profiles, reservations, availability, settings and a diagnostics log.

See ``store.py`` for the contract, ``outbox.py`` for the outbox cap and durability policy.
"""

from ocppd.errors import StorageError
from ocppd.storage.db import StorageCorruptError, StorageFullError
from ocppd.storage.records import AuthEntry, OutboxItem, Reservation, StoredProfile, TxRecord
from ocppd.storage.schema import LATEST_VERSION, MIGRATIONS
from ocppd.storage.store import Store

__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "AuthEntry",
    "OutboxItem",
    "Reservation",
    "StorageCorruptError",
    "StorageError",
    "StorageFullError",
    "Store",
    "StoredProfile",
    "TxRecord",
]
