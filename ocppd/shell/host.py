"""What the station shell's parts (sessions.py, metering.py, recording.py) need of the station:
the type of ``self`` in their methods, so each part states exactly what it touches."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime
from typing import Any, Protocol

from ocppd.core.evse import MeterReading
from ocppd.core.model import StopReason
from ocppd.core.records import TxRecord
from ocppd.core.session.state import ChargerState, ConnectorSpec, Event
from ocppd.errors import StorageError
from ocppd.hw.base import Hardware
from ocppd.ports import CentralPort, Policy, SessionHook, TxHook
from ocppd.shell.authorizing import Authorizer
from ocppd.shell.outputs import Outputs
from ocppd.shell.views import ConnectorView, Live
from ocppd.storage import Store

Job = Coroutine[Any, Any, None]


class Host(Protocol):
    hw: Hardware
    store: Store
    port: CentralPort | None
    state: ChargerState
    storage_error: str | None
    on_tx_started: list[TxHook]
    on_tx_confirmed: list[TxHook]
    on_tx_ended: list[TxHook]
    _specs: list[ConnectorSpec]
    _live: dict[int, Live]
    _outputs: Outputs
    _lock: asyncio.Lock
    _on_start: dict[int, SessionHook | None]
    _auth: Authorizer
    policy: Policy

    @property
    def connectors(self) -> Mapping[int, ConnectorView]: ...

    @property
    def wall(self) -> Callable[[], datetime]: ...

    @property
    def mono(self) -> Callable[[], float]: ...

    def _step(self, event: Event) -> list[Job]: ...

    def _step_soon(self, event: Event) -> None: ...

    async def _move_lock(self, cid: int, *, locked: bool) -> bool: ...

    async def _lock_move(self, cid: int, locked: bool) -> tuple[bool, list[Job]]: ...

    @staticmethod
    async def _logged(job: Job) -> None: ...

    async def _read_meter(self, cid: int) -> MeterReading | None: ...

    def _energy_wh(self, cid: int) -> int: ...
    def _record_sample(self, cid: int, tx: TxRecord, reading: MeterReading, at: datetime,
                       trigger: str) -> None: ...

    def _storage_failed(self, exc: StorageError) -> None: ...

    def _spawn(self, coro: Coroutine[Any, Any, Any], *, name: str | None = None) -> None: ...

    def _connector(self, connector_id: int) -> ConnectorView: ...

    def usable(self, connector_id: int) -> bool: ...

    def reserved_for(self, connector_id: int, id_tag: str, parent: str | None) -> bool: ...

    def pick_free(self, id_tag: str | None, parent: str | None) -> int | None: ...

    async def _begin_session(
        self, cid: int, id_tag: str, parent: str | None, on_start: SessionHook | None = None
    ) -> str: ...

    async def _remote_start(
        self, cid: int, id_tag: str, on_start: SessionHook | None
    ) -> None: ...

    async def stop_transaction(
        self, connector_id: int, reason: StopReason, *, stop_id_tag: str | None = None,
        force: bool = False,
    ) -> bool: ...
