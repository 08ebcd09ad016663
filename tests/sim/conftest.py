"""Fixtures for the simulator tests: a started simulated charger on a clock the test moves."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from simkit import FakeClock, Recorder, Rig, make_config

from ocppd.hw.base import PilotState
from ocppd.hw.sim import SimBoard, build_sim_hardware


@pytest.fixture
async def make_rig(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``await make_rig(**sections)``: board (started unless start=False), recorder, clock."""
    boards: list[SimBoard] = []

    async def make(start: bool = True, **sections: Any) -> Rig:
        clock = FakeClock()
        hw = build_sim_hardware(make_config(tmp_path, **sections), clock=clock)
        assert isinstance(hw.board, SimBoard)
        rec = Recorder()
        boards.append(hw.board)
        if start:
            await hw.board.start(rec)
            for cid in hw.meters:
                assert await rec.pilot(cid) is PilotState.A
        return hw.board, rec, clock

    yield make
    for board in boards:
        await board.close()


@pytest.fixture
async def rig(make_rig: Callable[..., Any]) -> Rig:
    result: Rig = await make_rig()
    return result
