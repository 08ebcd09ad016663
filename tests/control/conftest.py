"""Fixtures for the control socket tests: a real server on a socket in tmp_path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from controlkit import FakeStation

from ocppd.control import ControlServer


@pytest.fixture
def station() -> FakeStation:
    return FakeStation()


@pytest.fixture
async def server(tmp_path: Path, station: FakeStation) -> AsyncIterator[ControlServer]:
    async with ControlServer(station, tmp_path / "control.sock") as srv:
        yield srv
