"""OCPP 1.6 Security Whitepaper: the security log and SecurityEventNotification.

``SecurityLog.record`` is what app.py attaches to ``ocppd.security.security_event``: every
event goes into the persistent, bounded security log (storage/seclog.py); the critical ones
(whitepaper's Critical column, ``ocppd.security.CRITICAL``) are also sent to the Central System
as SecurityEventNotification. Those are queued like transaction messages (§3.7): written before
sending, sent after BootNotification was accepted, in order, kept across restarts while
offline, retried TransactionMessageAttempts times TransactionMessageRetryInterval × preceding
attempts apart (§3.7.1) when the Central System answers CALLERROR or not at all; a lost
connection does not use up attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
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
                 wall: Callable[[], datetime]) -> None:
        self.store = store
        self.cp = cp
        self.keys = keys
        self.wall = wall
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
            wait_s = (entry.next_attempt_at or 0.0) - time.time()
            if wait_s <= 0:
                wait_s = await self._deliver(entry)
            if wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait_s)

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
                return 0.0
            retry_s = float(self.keys.get_int("TransactionMessageRetryInterval") * attempts)
            log.warning("SecurityEventNotification %s failed (%s); attempt %d of %d, next in"
                        " %.0f s", entry.kind, exc, attempts, max_attempts, retry_s)
            self.store.seclog_attempt_failed(entry.id, next_attempt_at=time.time() + retry_s)
            return retry_s
        self.store.seclog_delivered(entry.id)
        return 0.0
