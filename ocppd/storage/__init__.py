"""Persistent store (SQLite): transactions and their events (the queue of what the Central
System must learn), authorization cache and local list, charging profiles, reservations,
availability, settings and a diagnostics log.

See ``store.py`` for the contract, ``txevents.py`` for the event queue, its cap and durability.
"""

from ocppd.errors import StorageError
from ocppd.storage.db import StorageCorruptError, StorageFullError
from ocppd.storage.records import AuthEntry, Reservation, StoredProfile, TxEvent, TxRecord
from ocppd.storage.schema import LATEST_VERSION, MIGRATIONS
from ocppd.storage.store import Store

__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "AuthEntry",
    "Reservation",
    "StorageCorruptError",
    "StorageError",
    "StorageFullError",
    "Store",
    "StoredProfile",
    "TxEvent",
    "TxRecord",
]
