"""Helpers for the simulator tests: a clock tests move by hand and an event recorder."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocppd.config import Config, from_dict
from ocppd.hw.base import BoardEvent, PilotChanged, PilotState
from ocppd.hw.sim import SimBoard

WAIT_S = 2.0


@dataclass
class FakeClock:
    now_s: float = 1000.0

    def __call__(self) -> float:
        return self.now_s

    def tick(self, seconds: float) -> None:
        self.now_s += seconds


@dataclass
class Recorder:
    """The ``emit`` callback: records each event and the thread-loop it arrived on."""

    events: list[BoardEvent] = field(default_factory=list)
    loops: list[asyncio.AbstractEventLoop] = field(default_factory=list)
    _queue: asyncio.Queue[BoardEvent] = field(default_factory=asyncio.Queue)

    def __call__(self, event: BoardEvent) -> None:
        self.loops.append(asyncio.get_running_loop())
        self.events.append(event)
        self._queue.put_nowait(event)

    async def next(self) -> BoardEvent:
        return await asyncio.wait_for(self._queue.get(), WAIT_S)

    async def pilot(self, connector_id: int) -> PilotState:
        """The next pilot state reported for ``connector_id`` (other events are skipped)."""
        while True:
            event = await self.next()
            if isinstance(event, PilotChanged) and event.connector_id == connector_id:
                return event.state

    async def settle(self) -> None:
        """Let already scheduled callbacks run (events are sent with call_soon)."""
        for _ in range(3):
            await asyncio.sleep(0)

    def pending(self) -> list[BoardEvent]:
        out = []
        while not self._queue.empty():
            out.append(self._queue.get_nowait())
        return out


def make_config(tmp_path: Path, **sections: Any) -> Config:
    data: dict[str, Any] = {
        "charge_point": {"id": "CP1"},
        "central_system": {"url": "ws://127.0.0.1:9/ocpp"},
        "connectors": [{}, {}],
        "storage": {"path": str(tmp_path / "ocppd.db")},
        "control": {"socket": str(tmp_path / "control.sock")},
    }
    data.update(sections)
    # the physics tests count energy from zero unless they say otherwise
    data["sim"] = {"meter_start_wh": 0.0, **sections.get("sim", {})}
    return from_dict(data)


Rig = tuple[SimBoard, Recorder, FakeClock]
