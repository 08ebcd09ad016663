"""A light OCPP-J 1.6 Central System for the benchmarks, on aiohttp.

The test Central System (tests/csms.py) is built on the ``ocpp`` package, which validates every
payload with jsonschema and dispatches through its router: fine for tests, but its own cost
would be counted in every round trip we time. This one answers each action with a fixed,
schema-valid reply straight from the parsed frame and timestamps everything on the monotonic
clock (CLOCK_MONOTONIC is system-wide, so times from other processes' spawn compare directly).

What the benchmarks need from it:
- when a BootNotification arrived, per charge point id (start-up figure);
- how long it held each CALL before answering (its own response time, subtracted from the
  reaction figure);
- arrival times of MeterValues (replay rate);
- ``call()``: a CALL to a charge point, timed from send to the matching CALLRESULT.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

# actions someone may wait for (not MeterValues: see wait_meter_values)
_WATCHED = ("BootNotification", "StatusNotification", "StartTransaction", "Authorize")


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(slots=True)
class Station:
    """What the Central System saw from one charge point connection."""

    cp_id: str
    ws: web.WebSocketResponse
    boot_at: list[float] = field(default_factory=list)
    # action -> list of (arrived_at, answered_at) on the monotonic clock
    handled: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    meter_at: list[float] = field(default_factory=list)
    pending: dict[str, asyncio.Future[tuple[list[Any], float]]] = field(default_factory=dict)
    meter_waiter: tuple[int, asyncio.Future[None]] | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class CentralSystem:
    """``async with CentralSystem() as cs``; charge points connect to ``cs.url + '/' + id``."""

    def __init__(self) -> None:
        self.boot_status = "Accepted"
        # per charge point: "Pending" holds its transaction messages back (OCPP 1.6 §4.2)
        self.boot_status_of: dict[str, str] = {}
        self.boot_interval_s = 300
        self.stations: dict[str, Station] = {}
        self._changed = asyncio.Condition()
        self._ids = itertools.count(1)
        self._tx_ids = itertools.count(1000)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp"

    async def __aenter__(self) -> CentralSystem:
        app = web.Application()
        app.router.add_get("/ocpp/{cp_id}", self._ws)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server  # noqa: SLF001 - the only way to learn an ephemeral port on 3.8
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for st in list(self.stations.values()):
            await st.ws.close()
        assert self._runner is not None
        await self._runner.cleanup()

    # --- waiting -------------------------------------------------------------------------------

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait(self, pred: Callable[[], bool], timeout_s: float, what: str) -> None:
        async def check() -> None:
            async with self._changed:
                await self._changed.wait_for(pred)
        try:
            await asyncio.wait_for(check(), timeout_s)
        except TimeoutError:
            raise RuntimeError(f"timed out after {timeout_s:g} s waiting for {what}") from None

    async def wait_boot(self, cp_id: str, timeout_s: float = 30.0) -> Station:
        await self.wait(lambda: cp_id in self.stations and bool(self.stations[cp_id].boot_at),
                        timeout_s, f"BootNotification from {cp_id}")
        return self.stations[cp_id]

    async def wait_meter_values(self, cp_id: str, count: int, timeout_s: float) -> Station:
        # A future, not the condition: waking a waiter on each of 10,000 frames would put the
        # Central System's own bookkeeping into the replay rate.
        st = self.stations[cp_id]
        if len(st.meter_at) < count:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            st.meter_waiter = (count, fut)
            try:
                await asyncio.wait_for(fut, timeout_s)
            except TimeoutError:
                raise RuntimeError(f"only {len(st.meter_at)} of {count} MeterValues from {cp_id}"
                                   f" within {timeout_s:g} s") from None
            finally:
                st.meter_waiter = None
        return st

    # --- calls to the charge point --------------------------------------------------------------

    async def call(self, cp_id: str, action: str, payload: dict[str, Any],
                   timeout_s: float = 10.0) -> tuple[list[Any], float]:
        """Send a CALL; returns (reply frame, round trip in seconds)."""
        st = self.stations[cp_id]
        msg_id = f"cs-{next(self._ids)}"
        fut: asyncio.Future[tuple[list[Any], float]] = asyncio.get_running_loop().create_future()
        st.pending[msg_id] = fut
        text = json.dumps([2, msg_id, action, payload], separators=(",", ":"))
        t0 = time.monotonic()
        await st.ws.send_str(text)
        try:
            frame, t1 = await asyncio.wait_for(fut, timeout_s)
        finally:
            st.pending.pop(msg_id, None)
        if frame[0] != 3:
            raise RuntimeError(f"{action} answered with {frame}")
        return frame, t1 - t0

    # --- serving -------------------------------------------------------------------------------

    def _answer(self, cp_id: str, action: str) -> dict[str, Any]:
        match action:
            case "BootNotification":
                return {"currentTime": now_iso(), "interval": self.boot_interval_s,
                        "status": self.boot_status_of.get(cp_id, self.boot_status)}
            case "Heartbeat":
                return {"currentTime": now_iso()}
            case "Authorize":
                return {"idTagInfo": {"status": "Accepted"}}
            case "StartTransaction":
                return {"transactionId": next(self._tx_ids), "idTagInfo": {"status": "Accepted"}}
            case "DataTransfer":
                return {"status": "Accepted"}
            case _:  # StatusNotification, MeterValues, StopTransaction, *StatusNotification
                return {}

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("ocpp1.6",), max_msg_size=0)
        await ws.prepare(request)
        cp_id = request.match_info["cp_id"]
        st = Station(cp_id=cp_id, ws=ws)
        self.stations[cp_id] = st
        await self._notify()
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                arrived = time.monotonic()
                frame = json.loads(msg.data)
                if frame[0] != 2:  # a reply to one of our calls
                    fut = st.pending.get(frame[1])
                    if fut is not None and not fut.done():
                        fut.set_result((frame, arrived))
                    continue
                _, msg_id, action, _payload = frame
                if action == "BootNotification":
                    st.boot_at.append(arrived)
                elif action == "MeterValues":
                    st.meter_at.append(arrived)
                    w = st.meter_waiter
                    if w is not None and len(st.meter_at) >= w[0] and not w[1].done():
                        w[1].set_result(None)
                reply = json.dumps([3, msg_id, self._answer(cp_id, action)], separators=(",", ":"))
                await ws.send_str(reply)
                st.handled.setdefault(action, []).append((arrived, time.monotonic()))
                if action in _WATCHED:
                    await self._notify()
        finally:
            st.closed.set()
            await self._notify()
        return ws
