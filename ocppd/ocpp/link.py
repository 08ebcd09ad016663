"""The OCPP-J 1.6 link: one WebSocket to the Central System, kept up forever, carrying RPC frames.

``Link`` composes three parts and owns the lifetime they share:

- transport.py: connecting (URL, subprotocol, the Security Whitepaper's profiles and TLS
  rules, Basic auth), capped exponential backoff with jitter, the journal while offline, and
  ``Connection``, the only face of aiohttp the rest of the link sees;
- keepalive.py: WebSocket pings that find a half-open connection (OCPP-J §5.3);
- session.py: the RPC session (one outstanding CALL, correlation, deadlines, late answers,
  incoming CALLs, validation, the receive loop).

Here: the connect/serve/backoff loop, reconnecting on demand, closing, and the tasks of all
three (so ``close()`` can cancel every one of them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from ocppd.ocpp.keepalive import CallLater, Keepalive, loop_call_later
from ocppd.ocpp.session import INVALID_MESSAGES_EVENT_EVERY_S, Handler, RpcSession
from ocppd.ocpp.settings import LinkSettings, LinkStats, build_url
from ocppd.ocpp.transport import (
    OFFLINE_REPORT_EVERY_S,
    SHORT_BACKOFF_S,
    ConnectFailed,
    Connection,
    OfflineJournal,
    backoff_delay_s,
    connect,
)
from ocppd.ocpp.validate import Validator
from ocppd.tasks import wait_event

log = logging.getLogger("ocppd.link")
_T = TypeVar("_T")


class Link:
    """One OCPP-J connection, kept up by ``run()``; see the module docstring.

    ``clock`` is the link's time (stable connections, the offline journal, the rate of
    security events, the keepalive); ``call_later`` runs the keepalive's timers on that clock
    (by default the event loop's, which goes with the default clock, time.monotonic).
    """

    def __init__(
        self,
        settings: LinkSettings,
        *,
        handler: Handler,
        validator: Validator | None = None,
        on_connected: Callable[[], Awaitable[None]] | None = None,
        on_disconnected: Callable[[str], None] | None = None,
        on_connect_failed: Callable[[str], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        call_later: CallLater = loop_call_later,
    ) -> None:
        self._settings = settings
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self.on_connect_failed = on_connect_failed  # called with the reason of each failure
        self._sleep = sleep
        self._rand = rand
        self._clock = clock
        self.stats = LinkStats()
        self._conn: Connection | None = None
        self._connected = asyncio.Event()
        self._wake = asyncio.Event()
        self._closing = False
        self._running = False
        self._stopped = asyncio.Event()
        self._drop_reason: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._journal = OfflineJournal(clock)
        self._session = RpcSession(settings=lambda: self._settings, handler=handler,
                                   validator=validator, stats=self.stats, clock=clock,
                                   connected=self._connected.is_set, spawn=self._spawn)
        self._keepalive = Keepalive(clock=clock, call_later=call_later, spawn=self._spawn,
                                    on_dead=self._dead)

    # --- public -----------------------------------------------------------------------------------

    @property
    def settings(self) -> LinkSettings:
        return self._settings

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def last_activity(self) -> float:
        """Link clock of the last OCPP frame sent or received."""
        return self._session.last_activity

    @property
    def on_frame(self) -> list[Callable[[str, str], None]]:
        """Observers of every frame, ("out" | "in", text): the local event stream."""
        return self._session.on_frame

    @property
    def last_received(self) -> float | None:
        """Link clock of the last frame of any kind, pongs too, on the connection (None when
        not connected): what the keepalive watches."""
        conn = self._conn
        return None if conn is None else conn.received_at

    @property
    def calls_waiting(self) -> int:
        """CALLs of ours waiting for the one outstanding slot (OCPP-J §4.1.1)."""
        return self._session.waiting

    async def wait_connected(self) -> None:
        await self._connected.wait()

    def update(self, settings: LinkSettings) -> None:
        """New settings. A new ping interval applies at once; the rest from the next connect
        on (call ``reconnect_now`` to apply them now)."""
        old_interval = self._settings.ping_interval_s
        self._settings = settings
        if settings.ping_interval_s != old_interval:
            self._keepalive.retime(settings.ping_interval_s)

    def reconnect_now(self, reason: str) -> None:
        """Drop the connection (if any) and connect again without waiting out the backoff."""
        self._drop_reason = reason
        conn = self._conn
        if conn is not None:
            log.info("reconnecting: %s", reason)
            self._spawn(conn.close(), "close")
        self._wake.set()

    async def call(self, action: str, payload: dict[str, Any] | str, *,
                   timeout_s: float | None = None, validated: bool = False) -> dict[str, Any]:
        """Send a CALL and return the CALLRESULT payload.

        Raises OutgoingInvalid (our bug, nothing sent), LinkDown, CallTimeout, CallErrorReceived
        (the Central System answered CALLERROR) or InvalidResponse. ``validated``: the caller
        already checked this payload against the schema (queued messages are checked once);
        a ``str`` payload is JSON text sent as it is, and must come ``validated``.
        """
        return await self._session.call(action, payload, timeout_s=timeout_s,
                                        validated=validated)

    async def run(self) -> None:
        """Connect and reconnect until ``close()``."""
        if self._running:
            raise RuntimeError("Link.run() is already running")
        self._running = True
        self._stopped.clear()
        failures = 0
        try:
            while not self._closing:
                self._wake.clear()
                self._drop_reason = None
                conn = await self._unless_woken(self._open(self._settings))
                if conn is not None and (self._closing or self._drop_reason is not None):
                    # close() or reconnect_now() came while the handshake completed
                    await conn.release()
                    continue
                if conn is not None:
                    started = self._clock()
                    await self._serve(conn)
                    if self._clock() - started >= self._settings.stable_after_s:
                        failures = 0  # a stable connection: the next outage starts afresh
                    if not self._closing:
                        self._journal.went_offline()
                if self._closing:
                    break
                if self._wake.is_set() and self._drop_reason is not None:
                    continue  # reconnect_now(): connect again at once with the new settings
                delay_s = backoff_delay_s(failures, self._settings, self._rand)
                failures += 1
                if conn is None:
                    self._journal.attempt_failed(self.stats.last_error or "no connection",
                                                 delay_s)
                else:
                    log.debug("next connect attempt in %.1f s", delay_s)
                await self._unless_woken(self._sleep(delay_s))
        finally:
            self._running = False
            self._stopped.set()

    async def close(self) -> None:
        """Stop ``run()``, close the connection, cancel every task of the link."""
        self._closing = True
        self._wake.set()
        conn = self._conn
        if conn is not None:
            await conn.close()
        if self._running:
            await wait_event(self._stopped, 5.0)
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        self._session.close()

    # --- connection -------------------------------------------------------------------------------

    async def _unless_woken(self, coro: Awaitable[_T]) -> _T | None:
        """Run ``coro`` unless ``close()``/``reconnect_now()`` come first (then None)."""
        task = asyncio.ensure_future(coro)
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({task, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (task, waker):
                if not t.done():
                    t.cancel()
            with contextlib.suppress(BaseException):
                await waker
        if not task.done() or task.cancelled():
            with contextlib.suppress(BaseException):
                await task
            return None
        return task.result()

    async def _open(self, s: LinkSettings) -> Connection | None:
        try:
            return await connect(s, previous_error=self.stats.last_error, clock=self._clock)
        except ConnectFailed as exc:
            # run() reports it in the journal (OfflineJournal.attempt_failed)
            self.stats.last_error = str(exc)
            if self.on_connect_failed is not None:
                try:
                    self.on_connect_failed(str(exc))
                except Exception:
                    log.exception("on_connect_failed failed")
            return None

    def _dead(self, reason: str) -> None:
        """The keepalive found the connection dead; it aborts it, and this is the reason."""
        self._drop_reason = reason

    async def _serve(self, conn: Connection) -> None:
        s = self._settings
        self._conn = conn
        self._session.attach(conn)
        self.stats.connects += 1
        if self.stats.connects > 1:
            self.stats.reconnects += 1
        self.stats.connected_since = datetime.now(UTC)
        self.stats.last_error = None
        self._session.last_activity = self._clock()
        self._connected.set()
        self._journal.back_online(s)
        if self._on_connected is not None:
            self._spawn(self._on_connected(), "on_connected")
        reason = "connection closed"
        conn.received_at = self._clock()
        self._keepalive.start(conn, s.ping_interval_s)
        try:
            reason = await self._session.receive_loop(conn)
        finally:
            self._keepalive.stop()
            self._connected.clear()
            self._session.attach(None)
            self._conn = None
            self.stats.connected_since = None
            reason = self._drop_reason or reason
            self.stats.last_error = reason
            if not self._closing:
                log.warning("connection to the Central System lost: %s", reason)
            # Tell the owner first, so that a caller woken by LinkDown below already finds
            # the link marked down (and waits for the next connection instead of retrying).
            if self._on_disconnected is not None:
                try:
                    self._on_disconnected(reason)
                except Exception:
                    log.exception("on_disconnected failed")
            self._session.link_down(reason)
            await conn.release()

    # --- tasks ------------------------------------------------------------------------------------

    def _spawn(self, aw: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(aw)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, name))

    def _done(self, task: asyncio.Task[Any], name: str) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("%s failed: %s", name, exc, exc_info=exc)


__all__ = ["INVALID_MESSAGES_EVENT_EVERY_S", "OFFLINE_REPORT_EVERY_S", "SHORT_BACKOFF_S", "Handler",
           "Link", "LinkSettings", "LinkStats", "backoff_delay_s", "build_url"]
