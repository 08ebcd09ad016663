"""What the parts of the 1.6 charge point share: its state, and the methods one part calls on
another. Every part (registration.py, txmessages.py, statuses.py, core_profile.py, trigger.py,
local_auth.py, reservation.py) derives from this base, and ChargePoint (chargepoint.py) from all
of them, so the real methods come before these declarations in the method order."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import StrEnum
from typing import Any

from ocppd.config import Config
from ocppd.core.evse import Fault
from ocppd.core.model import Status
from ocppd.core.records import TxRecord
from ocppd.ocpp.link import Link
from ocppd.ocpp.v16.keys import Keys
from ocppd.ocpp.validate import Validator
from ocppd.ports import StationApi, TxEventLog
from ocppd.storage import Store

DataTransferHandler = Callable[[str | None, str | None], Awaitable[tuple[str, str | None]]]


class Registration(StrEnum):
    NONE = "none"
    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class ChargePointBase:
    cfg: Config
    store: Store
    events: TxEventLog
    station: StationApi
    keys: Keys
    link: Link
    validator: Validator
    wall: Callable[[], datetime]
    on_reset: Callable[[bool], None] | None
    _monotonic: Callable[[], float]
    _sleep: Callable[[float], Awaitable[None]]
    _retry_due: dict[int, float]
    _tx_cache: dict[int, TxRecord | None]
    _checked_shapes: set[tuple[Any, ...]]
    _in_change: bool
    _reconnect_reason: str | None
    _accepted: asyncio.Event
    _outbox_wake: asyncio.Event
    _status_tasks: dict[int, asyncio.Task[Any]]
    _sent: dict[int, tuple[Status, Fault | None]]
    _boot_task: asyncio.Task[Any] | None
    _boot_wake: asyncio.Event
    data_transfer: dict[str, dict[str | None, DataTransferHandler]]
    load_plugins: Callable[[], object] | None
    smart: Callable[[], Any] | None
    on_accepted: list[Callable[[], None]]
    diagnostics_status: str
    firmware_status: str
    firmware_request_id: int | None
    log_status: str
    log_request_id: int | None
    request_csr: Callable[[], None] | None

    @property
    def registration(self) -> Registration:
        raise NotImplementedError

    @registration.setter
    def registration(self, value: Registration) -> None:
        raise NotImplementedError

    @property
    def online(self) -> bool:
        raise NotImplementedError

    def _changed(self) -> None:
        raise NotImplementedError

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        raise NotImplementedError

    async def flush(self, timeout_s: float) -> bool:
        raise NotImplementedError

    async def _fire(self, action: str, payload: dict[str, Any]) -> None:
        raise NotImplementedError

    async def _send_direct(self, action: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        raise NotImplementedError

    async def _send_status(
        self, connector_id: int, delay_s: float = 0.0, *, force: bool = False
    ) -> None:
        raise NotImplementedError

    def _send_all_statuses(self) -> None:
        raise NotImplementedError

    def _send_changed_statuses(self) -> None:
        raise NotImplementedError

    def boot_payload(self) -> dict[str, Any]:
        raise NotImplementedError
