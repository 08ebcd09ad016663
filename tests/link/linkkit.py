"""Link test kit: a scriptable OCPP-J Central System on loopback (aiohttp), and helpers.

The Central System speaks raw frames so tests can send anything, broken or not. CALLs the charge
point sends are answered from ``CentralSystem.answers`` (action -> payload) or queued in
``Conn.calls`` for the test to answer by hand.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from ocppd.ocpp.link import Link, LinkSettings
from ocppd.ocpp.rpc import CallErrorCode, OcppCallError, Reply

_ids = itertools.count(1)


@dataclass
class Conn:
    """One WebSocket connection from the charge point, seen from the Central System."""

    ws: web.WebSocketResponse
    request: web.Request
    cp_id: str
    raw_path: str
    calls: asyncio.Queue[list[Any]] = field(default_factory=asyncio.Queue)
    frames: list[str | bytes] = field(default_factory=list)
    waiting: dict[str, asyncio.Future[list[Any]]] = field(default_factory=dict)
    stray: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)  # answers nobody awaited
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    pings: int = 0  # WebSocket pings received from the charge point

    async def send(self, text: str) -> None:
        await self.ws.send_str(text)

    async def request_raw(self, text: str, message_id: str, timeout_s: float = 5.0) -> list[Any]:
        """Send a frame and wait for the answer carrying ``message_id``."""
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.waiting[message_id] = fut
        try:
            await self.ws.send_str(text)
            return await asyncio.wait_for(fut, timeout_s)
        finally:
            self.waiting.pop(message_id, None)

    async def call(self, action: str, payload: Any, timeout_s: float = 5.0) -> list[Any]:
        mid = f"cs-{next(_ids)}"
        return await self.request_raw(json.dumps([2, mid, action, payload]), mid, timeout_s)

    async def answer(self, frame: list[Any], payload: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps([3, frame[1], payload]))

    async def next_call(self, timeout_s: float = 5.0) -> list[Any]:
        return await asyncio.wait_for(self.calls.get(), timeout_s)


class CentralSystem:
    """aiohttp WebSocket server at ``ws(s)://127.0.0.1:<port>/ocpp/<id>``."""

    def __init__(self, *, protocols: tuple[str, ...] = ("ocpp1.6",), password: str | None = None,
                 known_ids: set[str] | None = None, ssl_context: ssl.SSLContext | None = None,
                 answers: dict[str, dict[str, Any]] | None = None,
                 answer_pings: bool = True, heartbeat_s: float | None = None) -> None:
        self.protocols = protocols
        self.answer_pings = answer_pings  # False: a peer whose TCP is up but never pongs
        self.heartbeat_s = heartbeat_s  # the server pings, and drops a client that does not pong
        self.password = password
        self.known_ids = known_ids
        self.ssl_context = ssl_context
        self.answers: dict[str, dict[str, Any]] = answers if answers is not None else {}
        self.conns: list[Conn] = []
        self.attempts: list[web.Request] = []  # every HTTP request, refused ones too
        self._new = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        scheme = "wss" if self.ssl_context else "ws"
        return f"{scheme}://127.0.0.1:{self.port}/ocpp"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ocpp/{cp_id}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]  # the port the OS chose for port 0

    async def __aenter__(self) -> CentralSystem:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.ws.close(), 1.0)
        if self._runner is not None:
            await self._runner.cleanup()

    async def connection(self, n: int = 1, timeout_s: float = 5.0) -> Conn:
        """Wait for the n-th accepted WebSocket connection (1-based) and return it."""
        async with self._new:
            await asyncio.wait_for(self._new.wait_for(lambda: len(self.conns) >= n), timeout_s)
        return self.conns[n - 1]

    async def attempt(self, n: int, timeout_s: float = 5.0) -> None:
        async with self._new:
            await asyncio.wait_for(self._new.wait_for(lambda: len(self.attempts) >= n), timeout_s)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        async with self._new:
            self.attempts.append(request)
            self._new.notify_all()
        cp_id = request.match_info["cp_id"]
        if self.password is not None:
            expected = "Basic " + base64.b64encode(f"{cp_id}:{self.password}".encode()).decode()
            if request.headers.get("Authorization") != expected:
                raise web.HTTPUnauthorized()
        if self.known_ids is not None and cp_id not in self.known_ids:
            raise web.HTTPNotFound()
        ws = web.WebSocketResponse(protocols=self.protocols, max_msg_size=64 * 1024 * 1024,
                                   autoping=False, heartbeat=self.heartbeat_s)
        await ws.prepare(request)
        conn = Conn(ws=ws, request=request, cp_id=cp_id, raw_path=request.raw_path)
        async with self._new:
            self.conns.append(conn)
            self._new.notify_all()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    conn.frames.append(msg.data)
                    await self._on_text(conn, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    conn.frames.append(msg.data)
                elif msg.type == WSMsgType.PING:
                    conn.pings += 1
                    if self.answer_pings:
                        await ws.pong(msg.data)
        finally:
            conn.closed.set()
        return ws

    async def _on_text(self, conn: Conn, text: str) -> None:
        frame = json.loads(text)
        if frame[0] == 2:
            if frame[2] in self.answers:
                await conn.answer(frame, self.answers[frame[2]])
            else:
                await conn.calls.put(frame)
            return
        fut = conn.waiting.get(frame[1])
        if fut is not None and not fut.done():
            fut.set_result(frame)
        else:
            await conn.stray.put(frame)


HandlerFn = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any] | Reply]]


class Handlers:
    """The charge point side: per-action handlers; unknown actions answer NotSupported."""

    def __init__(self) -> None:
        self.by_action: dict[str, HandlerFn] = {}
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def set(self, action: str, fn: HandlerFn) -> None:
        self.by_action[action] = fn

    def returns(self, action: str, payload: dict[str, Any]) -> None:
        async def fn(_a: str, _p: dict[str, Any]) -> dict[str, Any]:
            return payload

        self.by_action[action] = fn

    async def __call__(self, action: str, payload: dict[str, Any]) -> dict[str, Any] | Reply:
        self.seen.append((action, payload))
        fn = self.by_action.get(action)
        if fn is None:
            raise OcppCallError(CallErrorCode.NotSupported, f"{action} not supported here")
        return await fn(action, payload)


def settings_for(url: str, **kw: Any) -> LinkSettings:
    base: dict[str, Any] = dict(url=url, charge_point_id="CP-1", reconnect_min_s=0.05,
                                reconnect_max_s=0.2, stable_after_s=60, response_timeout_s=5,
                                connect_timeout_s=5, ping_interval_s=0)
    base.update(kw)
    return LinkSettings(**base)


@contextlib.asynccontextmanager
async def running(link: Link) -> AsyncIterator[Link]:
    """Run ``link`` in a task; close it and wait for the task on the way out."""
    task = asyncio.ensure_future(link.run())
    try:
        yield link
    finally:
        await link.close()
        await asyncio.wait_for(task, 5.0)


@dataclass
class Pair:
    cs: CentralSystem
    conn: Conn
    link: Link
    handlers: Handlers
    events: list[str]


class SteppedSleep:
    """An injected ``sleep`` that records each delay and blocks until the test releases it."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._queue: asyncio.Queue[float] = asyncio.Queue()
        self._go = asyncio.Semaphore(0)

    async def __call__(self, delay_s: float) -> None:
        self.delays.append(delay_s)
        await self._queue.put(delay_s)
        await self._go.acquire()

    async def next(self, timeout_s: float = 5.0) -> float:
        return await asyncio.wait_for(self._queue.get(), timeout_s)

    def release(self) -> None:
        self._go.release()


class ManualTimer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """An injected clock with its timers (``Link(clock=c, call_later=c.call_later)``): time
    moves only when the test advances it, and timers fire at their exact time on it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self._timers: list[ManualTimer] = []

    def __call__(self) -> float:
        return self.now

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> ManualTimer:
        timer = ManualTimer(self.now + delay_s, callback)
        self._timers.append(timer)
        return timer

    @property
    def armed(self) -> int:
        """Timers waiting to fire."""
        return sum(not t.cancelled for t in self._timers)

    def advance(self, delta_s: float) -> None:
        """Move time on by ``delta_s``, firing each timer due on the way at its own time."""
        end = self.now + delta_s
        while True:
            self._timers = [t for t in self._timers if not t.cancelled]
            due = [t for t in self._timers if t.when <= end]
            if not due:
                break
            timer = min(due, key=lambda t: t.when)
            self._timers.remove(timer)
            self.now = max(self.now, timer.when)
            timer.callback()
        self.now = end
