"""The link's keepalive: WebSocket pings that find a half-open connection (OCPP-J §5.3).

WebSocketPingInterval ``interval`` after the last frame received, a ping; any frame (the pong
or another) due within half an interval, else the connection is declared dead and aborted, so
the link reconnects. A dead link is found within about 1.5 intervals. One timer per interval,
nothing per frame (aiohttp's own heartbeat reschedules on every frame received): the timer,
when it fires, looks at when the last frame came in.

Time is the link's injectable clock and timers come from an injectable ``call_later``, so
tests can step through the intervals without waiting for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


#: ``call_later(delay_s, callback)``: run ``callback`` after ``delay_s`` of the link's clock
CallLater = Callable[[float, Callable[[], None]], Timer]


class Peer(Protocol):
    """What the keepalive needs of a connection (transport.Connection)."""

    received_at: float  # link clock of the last frame of any kind received

    async def ping(self) -> None: ...

    def abort(self) -> None: ...


def loop_call_later(delay_s: float, callback: Callable[[], None]) -> Timer:
    """The event loop's timers, for the default clock (time.monotonic, as the loop's)."""
    return asyncio.get_running_loop().call_later(delay_s, callback)


class Keepalive:
    """Pings on one connection at a time; ``on_dead(reason)`` when one goes unanswered."""

    def __init__(self, *, clock: Callable[[], float], call_later: CallLater,
                 spawn: Callable[[Awaitable[Any], str], None],
                 on_dead: Callable[[str], None]) -> None:
        self._clock = clock
        self._call_later = call_later
        self._spawn = spawn
        self._on_dead = on_dead
        self._conn: Peer | None = None
        self._interval_s = 0.0
        self._timer: Timer | None = None

    def start(self, conn: Peer, interval_s: float) -> None:
        """Watch ``conn``; 0 = no pings (WebSocketPingInterval 0)."""
        self.stop()
        self._conn, self._interval_s = conn, interval_s
        self._schedule(conn)

    def stop(self) -> None:
        self._conn = None
        self._cancel()

    def retime(self, interval_s: float) -> None:
        """A new interval, applied at once: the next ping one new interval after the last
        frame received."""
        self._interval_s = interval_s
        conn = self._conn
        if conn is not None:
            self._cancel()
            self._schedule(conn)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self, conn: Peer) -> None:
        """Arm the keepalive for one interval after the last frame received."""
        interval = self._interval_s
        if interval > 0 and self._conn is conn:
            delay_s = interval - (self._clock() - conn.received_at)
            self._timer = self._call_later(max(0.0, delay_s), lambda: self._ping_due(conn))

    def _ping_due(self, conn: Peer) -> None:
        """``interval`` after the last frame received: ping, unless something came meanwhile."""
        self._timer = None
        interval = self._interval_s
        if self._conn is not conn or interval <= 0:
            return
        if self._clock() - conn.received_at < interval:
            self._schedule(conn)  # something came meanwhile: one interval after it
            return
        sent_at = self._clock()
        self._spawn(conn.ping(), "ping")
        self._timer = self._call_later(interval / 2, lambda: self._pong_due(conn, sent_at))

    def _pong_due(self, conn: Peer, sent_at: float) -> None:
        self._timer = None
        if self._conn is not conn:
            return
        if conn.received_at >= sent_at:  # the pong, or any other frame: the link is alive
            self._schedule(conn)
            return
        self._on_dead(f"no answer to a WebSocket ping within {self._interval_s / 2:g} s"
                      " (half-open connection?)")
        conn.abort()


__all__ = ["CallLater", "Keepalive", "Peer", "Timer", "loop_call_later"]
