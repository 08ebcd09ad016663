"""A real OCPP 1.6 Central System for tests and the demo, built on the `ocpp` package.

It runs on loopback with `websockets`, answers every charge-point-initiated action, records
every message in both directions, and lets a test call the charge point. It is test-side code:
the daemon itself never depends on the `ocpp` package (Debian does not ship it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

# Debian ships no `ocpp` package: where it is missing, every test module that needs this Central
# System is skipped (a module-level skip at collection), instead of failing to import.
pytest.importorskip("ocpp", reason="the test-side Central System needs the `ocpp` package")

import websockets
from ocpp.exceptions import InternalError
from ocpp.routing import on
from ocpp.v16 import ChargePoint as OcppChargePoint
from ocpp.v16 import call, call_result
from ocpp.v16.enums import Action, AuthorizationStatus, RegistrationStatus

log = logging.getLogger("csms")


def now_iso(offset_s: float = 0.0) -> str:
    at = datetime.now(UTC) + timedelta(seconds=offset_s)
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Message:
    direction: str  # "in" (charge point -> CS) or "out"
    action: str
    payload: dict[str, Any]
    at: float


@dataclass
class Behaviour:
    """How the Central System answers; tests change these fields."""

    boot_status: str = "Accepted"
    boot_interval: int = 300
    accepted_tags: set[str] | None = None  # None: every tag is accepted
    tag_status: dict[str, str] = field(default_factory=dict)
    start_tag_status: dict[str, str] = field(default_factory=dict)
    parent_of: dict[str, str] = field(default_factory=dict)
    fail_actions: dict[str, int] = field(default_factory=dict)  # answer CALLERROR n times
    clock_offset_s: float = 0.0  # the Central System's clock runs this far ahead
    sign_status: str = "Accepted"  # the answer to SignCertificate
    # action -> gate: a CALL of that action is answered only once its gate is set (while held,
    # further frames are still read, so a CALL that overtakes it is seen)
    hold: dict[str, asyncio.Event] = field(default_factory=dict)


class _CP(OcppChargePoint):
    def __init__(self, cp_id: str, ws: Any, server: CentralSystem) -> None:
        super().__init__(cp_id, ws, response_timeout=10)
        self.server = server

    async def route_message(self, raw: str) -> None:  # record before the library handles it
        action = self.server._record_raw("in", raw)
        gate = self.server.behaviour.hold.get(action or "")
        if gate is not None and not gate.is_set():
            task = asyncio.ensure_future(self._route_when(gate, raw))
            self.server._tasks.add(task)
            task.add_done_callback(self.server._tasks.discard)
            return
        await super().route_message(raw)

    async def _route_when(self, gate: asyncio.Event, raw: str) -> None:
        await gate.wait()
        await super().route_message(raw)

    async def _send(self, message: str) -> None:
        self.server._record_raw("out", message)
        await super()._send(message)

    def _tag_info(self, id_tag: str, table: dict[str, str] | None = None) -> dict[str, Any]:
        b = self.server.behaviour
        status = (table or {}).get(id_tag) or b.tag_status.get(id_tag)
        if status is None:
            ok = b.accepted_tags is None or id_tag in b.accepted_tags
            status = AuthorizationStatus.accepted if ok else AuthorizationStatus.invalid
        info: dict[str, Any] = {"status": status}
        if id_tag in b.parent_of:
            info["parent_id_tag"] = b.parent_of[id_tag]
        return info

    @on(Action.boot_notification)
    async def on_boot(self, **_: Any) -> Any:
        b = self.server.behaviour
        return call_result.BootNotification(
            current_time=now_iso(b.clock_offset_s),
            interval=b.boot_interval,
            status=RegistrationStatus(b.boot_status),
        )

    @on(Action.heartbeat)
    async def on_heartbeat(self) -> Any:
        return call_result.Heartbeat(current_time=now_iso(self.server.behaviour.clock_offset_s))

    @on(Action.status_notification)
    async def on_status(self, **_: Any) -> Any:
        return call_result.StatusNotification()

    @on(Action.authorize)
    async def on_authorize(self, id_tag: str) -> Any:
        return call_result.Authorize(id_tag_info=self._tag_info(id_tag))

    def _maybe_fail(self, action: str) -> None:
        left = self.server.behaviour.fail_actions.get(action, 0)
        if left > 0:
            self.server.behaviour.fail_actions[action] = left - 1
            raise InternalError(description=f"{action} failure injected by the test")

    @on(Action.start_transaction)
    async def on_start(self, id_tag: str, **_: Any) -> Any:
        self._maybe_fail("StartTransaction")
        tx_id = next(self.server.tx_ids)
        return call_result.StartTransaction(
            transaction_id=tx_id,
            id_tag_info=self._tag_info(id_tag, self.server.behaviour.start_tag_status),
        )

    @on(Action.stop_transaction)
    async def on_stop(self, **_: Any) -> Any:
        self._maybe_fail("StopTransaction")
        return call_result.StopTransaction()

    @on(Action.meter_values)
    async def on_meter_values(self, **_: Any) -> Any:
        self._maybe_fail("MeterValues")
        return call_result.MeterValues()

    @on(Action.data_transfer)
    async def on_data_transfer(self, **_: Any) -> Any:
        return call_result.DataTransfer(status="Accepted")

    @on(Action.diagnostics_status_notification)
    async def on_diag(self, **_: Any) -> Any:
        return call_result.DiagnosticsStatusNotification()

    @on(Action.firmware_status_notification)
    async def on_fw(self, **_: Any) -> Any:
        return call_result.FirmwareStatusNotification()

    # OCPP 1.6 Security Whitepaper messages the charge point initiates
    @on(Action.security_event_notification)
    async def on_security_event(self, **_: Any) -> Any:
        self._maybe_fail("SecurityEventNotification")
        return call_result.SecurityEventNotification()

    @on(Action.signed_firmware_status_notification)
    async def on_signed_fw(self, **_: Any) -> Any:
        return call_result.SignedFirmwareStatusNotification()

    @on(Action.log_status_notification)
    async def on_log_status(self, **_: Any) -> Any:
        return call_result.LogStatusNotification()

    @on(Action.sign_certificate)
    async def on_sign_certificate(self, **_: Any) -> Any:
        return call_result.SignCertificate(status=self.server.behaviour.sign_status)


class CentralSystem:
    """Start with ``async with CentralSystem() as cs:``; ``cs.url`` is the base URL."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        on_message: Callable[[Message], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.ssl_context = ssl_context  # wss:// (security profiles 2 and 3)
        # per accepted connection: its Authorization header and the client certificate, if any
        self.handshakes: list[dict[str, Any]] = []
        self.behaviour = Behaviour()
        self.messages: list[Message] = []
        self.tx_ids = itertools.count(1000)
        self.on_message = on_message
        self.cps: dict[str, _CP] = {}
        self.connections = 0
        # OCPP-J §4.1.1: CALLs of the charge point not answered yet, and the most ever at once
        self.in_flight: set[str] = set()
        self.max_in_flight = 0
        self._changed = asyncio.Condition()
        self._server: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        scheme = "wss" if self.ssl_context is not None else "ws"
        return f"{scheme}://{self.host}:{self.port}/ocpp"

    async def __aenter__(self) -> CentralSystem:
        self._server = await websockets.serve(
            self._handler, self.host, self.port, subprotocols=["ocpp1.6"], ssl=self.ssl_context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t

    async def _handler(self, ws: Any) -> None:
        path = ws.request.path if hasattr(ws, "request") else ws.path
        cp_id = path.rstrip("/").split("/")[-1]
        cp = _CP(cp_id, ws, self)
        headers = ws.request.headers if hasattr(ws, "request") else ws.request_headers
        self.handshakes.append({
            "authorization": headers.get("Authorization"),
            "peercert": ws.transport.get_extra_info("peercert") if self.ssl_context else None,
            "tls": ws.transport.get_extra_info("cipher") if self.ssl_context else None,
        })
        self.cps[cp_id] = cp
        self.connections += 1
        await self._notify()
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await cp.start()
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            if self.cps.get(cp_id) is cp:
                del self.cps[cp_id]

    def _record_raw(self, direction: str, raw: str) -> str | None:
        """Record one frame; returns the action of a CALL (None for answers)."""
        import json

        try:
            frame = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(frame, list) or frame[0] not in (2, 3, 4):
            return None  # ignored (OCPP-J §4.1.3)
        if direction == "in" and frame[0] == 2:
            self.in_flight.add(frame[1])
            self.max_in_flight = max(self.max_in_flight, len(self.in_flight))
        elif direction == "out" and frame[0] in (3, 4):
            self.in_flight.discard(frame[1])
        if frame[0] == 2:
            action, payload = frame[2], frame[3]
            self._pending_action = getattr(self, "_pending_action", {})
            self._pending_action[frame[1]] = action
        else:
            pending = getattr(self, "_pending_action", {})
            action = pending.pop(frame[1], "?") + (".conf" if frame[0] == 3 else ".error")
            payload = frame[2] if frame[0] == 3 else {"code": frame[2], "description": frame[3]}
        msg = Message(direction, action, payload, asyncio.get_running_loop().time())
        self.messages.append(msg)
        if self.on_message is not None:
            self.on_message(msg)
        self._tasks.add(t := asyncio.ensure_future(self._notify()))
        t.add_done_callback(self._tasks.discard)
        return action if frame[0] == 2 else None

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def received(
        self, action: str, where: Callable[[dict[str, Any]], bool] | None = None
    ) -> list[dict[str, Any]]:
        return [
            m.payload
            for m in self.messages
            if m.direction == "in" and m.action == action and (where is None or where(m.payload))
        ]

    async def wait_for(
        self,
        action: str,
        where: Callable[[dict[str, Any]], bool] | None = None,
        *,
        count: int = 1,
        timeout: float = 10.0,
    ) -> list[dict[str, Any]]:
        """Wait for ``count`` messages ``action`` (matching ``where``) from the charge point."""

        async def check() -> list[dict[str, Any]]:
            async with self._changed:
                while len(found := self.received(action, where)) < count:
                    await self._changed.wait()
                return found

        try:
            return await asyncio.wait_for(check(), timeout)
        except TimeoutError:
            got = [f"{m.direction} {m.action} {m.payload}" for m in self.messages[-15:]]
            raise AssertionError(f"no {count}x {action} within {timeout} s; last: {got}") from None

    async def wait_connected(self, cp_id: str, timeout: float = 10.0) -> _CP:
        async def check() -> _CP:
            async with self._changed:
                while cp_id not in self.cps:
                    await self._changed.wait()
                return self.cps[cp_id]

        return await asyncio.wait_for(check(), timeout)

    async def call(self, cp_id: str, request: Any) -> Any:
        cp = await self.wait_connected(cp_id)
        return await cp.call(request)

    def status_sequence(self, connector_id: int) -> list[str]:
        return [
            p["status"]
            for p in self.received("StatusNotification")
            if p["connectorId"] == connector_id
        ]

    def actions(self) -> list[str]:
        return [m.action for m in self.messages if m.direction == "in"]


__all__ = ["CentralSystem", "Behaviour", "Message", "call", "call_result"]
