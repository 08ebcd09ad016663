"""A station with a recording board, to check the safety rules after every event synchronously.

Only the board is a recorder here: it stands for the contactor and pilot outputs, which is what
the property is about. Transactions are set directly on the connector (the session logic has its
own end-to-end tests).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from ocppd import config
from ocppd.hw.base import FaultChanged, Hardware, PilotChanged
from ocppd.station import Station
from ocppd.storage import TxRecord


class RecordingBoard:
    def __init__(self) -> None:
        self.closed: dict[int, bool] = {1: False}
        self.offer: dict[int, float | None] = {1: None}
        self.locked: dict[int, bool] = {1: False}
        self.lock_works = True

    async def start(self, emit: Any) -> None: ...
    async def close(self) -> None: ...

    def set_contactor(self, connector_id: int, closed: bool) -> None:
        self.closed[connector_id] = closed

    def set_offer(self, connector_id: int, current_a: float | None) -> None:
        self.offer[connector_id] = current_a

    def set_pilot_error(self, connector_id: int) -> None:
        self.offer[connector_id] = None

    async def lock(self, connector_id: int, locked: bool) -> bool:
        if self.lock_works:
            self.locked[connector_id] = locked
        return self.lock_works

    def has_lock(self, connector_id: int) -> bool:
        return True


class _Policy:
    def __getattr__(self, name: str) -> Any:
        return 0


class Rig:
    def __init__(self) -> None:
        cfg = config.from_dict(
            {
                "charge_point": {"id": "X"},
                "central_system": {"url": "ws://127.0.0.1:1/x"},
                "connectors": [{}],
                "storage": {"path": "/tmp/unused.db"},
                "control": {"socket": "/tmp/x.sock"},
            }
        )
        self.board = RecordingBoard()
        self.station = Station(
            cfg=cfg,
            store=None,
            hw=Hardware(board=self.board, meters={}),  # type: ignore[arg-type]
            policy=_Policy(),
        )  # type: ignore[arg-type]
        self.connector = self.station.connectors[1]
        self.station._apply(self.connector)

    @property
    def closed(self) -> bool:
        return self.board.closed[1]

    @property
    def offer(self) -> float | None:
        return self.board.offer[1]

    def apply(self, kind: str, value: Any) -> None:
        c = self.connector
        if kind == "pilot":
            self.station._emit(PilotChanged(connector_id=1, state=value))
        elif kind == "fault":
            fault, active = value
            self.station._emit(FaultChanged(connector_id=1, fault=fault, active=active))
        elif kind == "limit":
            self.station.set_limit(1, value)
        elif kind == "tx":
            c.tx = _tx() if value else None
            self.station._apply(c)
        elif kind == "lock":  # a lock move that works (True) or fails (False)
            self.board.lock_works = value
            asyncio.run(self.station._move_lock(c, locked=True))


def _tx() -> TxRecord:
    now = datetime.now(UTC)
    return TxRecord(
        local_id=1,
        connector_id=1,
        id_tag="T",
        tx_id=None,
        meter_start_wh=0,
        started_at=now,
        last_meter_wh=None,
        last_meter_at=None,
        meter_stop_wh=None,
        stopped_at=None,
        stop_reason=None,
        stop_id_tag=None,
        reservation_id=None,
        id_tag_status=None,
        finished=False,
    )
