"""OCPP 1.6 Security Whitepaper: the security log and SecurityEventNotification.

``SecurityLog.record`` is what app.py attaches to ``ocppd.security.security_event``: every
event goes into the persistent, bounded security log (storage/seclog.py); the critical ones
(whitepaper's Critical column, ``ocppd.security.CRITICAL``) are also sent to the Central System
as SecurityEventNotification. Those are queued like transaction messages (§3.7): written before
sending, sent after BootNotification was accepted, in order, kept across restarts while
offline, retried TransactionMessageAttempts times TransactionMessageRetryInterval × preceding
attempts apart (§3.7.1) when the Central System answers CALLERROR or not at all; a lost
connection does not use up attempts. Those waits run on the monotonic clock: the wall time
stored with an entry is a record, and after a restart it is trusted only up to the interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from ocppd.ocpp.rpc import CallTimeout, LinkDown, OcppCallError
from ocppd.ocpp.v16 import mapping
from ocppd.ocpp.v16.keys import Keys
from ocppd.security import SecurityEventType, is_critical
from ocppd.storage import Store
from ocppd.storage.seclog import SecurityLogEntry

log = logging.getLogger("ocppd.security")

LINK_DOWN_RECHECK_S = 1.0


class SecurityLog:
    def __init__(self, *, store: Store, cp: Any, keys: Keys,
                 wall: Callable[[], datetime],
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.store = store
        self.cp = cp
        self.keys = keys
        self.wall = wall
        self.monotonic = monotonic
        self.sleep = sleep
        self._due: dict[int, float] = {}  # entry id -> monotonic time of its next attempt
        self._wake = asyncio.Event()
        cp.on_accepted.append(self._wake.set)

    def record(self, kind: SecurityEventType, tech_info: str | None, at: datetime) -> None:
        """The recorder for ``ocppd.security.attach``."""
        self.store.seclog_add(at=at, kind=kind.value, tech_info=tech_info,
                              deliver=is_critical(kind))
        if is_critical(kind):
            self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Deliver the pending critical events, for ever (cancelled at shutdown)."""
        while True:
            self._wake.clear()  # before looking: a record() from now on is not missed
            entry = self.store.seclog_next_pending() if self.cp.online else None
            if entry is None:
                await self._wake.wait()
                continue
            wait_s = self._due_at(entry) - self.monotonic()
            if wait_s <= 0:
                wait_s = await self._deliver(entry)
            if wait_s > 0:
                await self._pause(wait_s)

    def _due_at(self, entry: SecurityLogEntry) -> float:
        """When to try ``entry`` next, on the monotonic clock. An entry first seen in this run
        (stored by an earlier one) waits what its stored wall time says, at most the §3.7.1
        interval: that wall time may have been written while the clock was wrong."""
        due = self._due.get(entry.id)
        if due is None:
            left_s = 0.0
            if entry.next_attempt_at is not None and entry.attempts > 0:
                most_s = self.keys.get_int("TransactionMessageRetryInterval") * entry.attempts
                left_s = min(max(0.0, entry.next_attempt_at - self.wall().timestamp()), most_s)
            due = self._due[entry.id] = self.monotonic() + left_s
        return due

    async def _pause(self, wait_s: float) -> None:
        """Wait ``wait_s`` or until woken (a new event, a new connection), whichever is first."""
        sleeper = asyncio.ensure_future(self.sleep(wait_s))
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((sleeper, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (sleeper, woken):
                t.cancel()
            await asyncio.gather(sleeper, woken, return_exceptions=True)

    async def _deliver(self, entry: SecurityLogEntry) -> float:
        """Send one entry; the seconds to wait before the next try (0: go on at once)."""
        payload: dict[str, Any] = {"type": entry.kind, "timestamp": mapping.iso(entry.at)}
        if entry.tech_info:
            payload["techInfo"] = entry.tech_info
        try:
            await self.cp.link.call("SecurityEventNotification", payload)
        except LinkDown:
            return LINK_DOWN_RECHECK_S  # not an attempt; on_accepted wakes us on reconnect
        except (CallTimeout, OcppCallError) as exc:
            attempts = entry.attempts + 1
            max_attempts = self.keys.get_int("TransactionMessageAttempts")
            if attempts >= max_attempts:
                log.error("SecurityEventNotification %s failed %d times (%s): given up; it"
                          " stays in the security log", entry.kind, attempts, exc)
                self.store.seclog_attempt_failed(entry.id, next_attempt_at=None)
                self._due.pop(entry.id, None)
                return 0.0
            retry_s = float(self.keys.get_int("TransactionMessageRetryInterval") * attempts)
            log.warning("SecurityEventNotification %s failed (%s); attempt %d of %d, next in"
                        " %.0f s", entry.kind, exc, attempts, max_attempts, retry_s)
            self._due[entry.id] = self.monotonic() + retry_s
            self.store.seclog_attempt_failed(
                entry.id, next_attempt_at=self.wall().timestamp() + retry_s)
            return retry_s
        self.store.seclog_delivered(entry.id)
        self._due.pop(entry.id, None)
        return 0.0
