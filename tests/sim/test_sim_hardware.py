"""build_sim_hardware: the simulated charger app.py wires in, and its card reader."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from simkit import WAIT_S, make_config

from ocppd.errors import HardwareError, OcppdError
from ocppd.hw.base import CardReader, EvseBoard, Meter
from ocppd.hw.sim import SimBoard, SimCardReader, SimMeter, build_sim_hardware


def test_build_gives_a_board_a_meter_per_connector_and_a_reader(tmp_path: Path) -> None:
    hw = build_sim_hardware(make_config(tmp_path))
    assert isinstance(hw.board, SimBoard) and isinstance(hw.board, EvseBoard)
    assert hw.sim is hw.board
    assert sorted(hw.meters) == [1, 2]
    assert all(isinstance(m, SimMeter) and isinstance(m, Meter) for m in hw.meters.values())
    assert len(hw.readers) == 1
    assert isinstance(hw.readers[0], SimCardReader) and isinstance(hw.readers[0], CardReader)


async def test_meters_read_their_own_connector(tmp_path: Path) -> None:
    hw = build_sim_hardware(make_config(tmp_path, connectors=[{"phases": 1}, {"phases": 3}]))
    one, three = await hw.meters[1].read(), await hw.meters[2].read()
    assert one.voltage_v is not None and len(one.voltage_v) == 1
    assert three.voltage_v is not None and len(three.voltage_v) == 3


def test_unknown_connector_is_a_hardware_error(tmp_path: Path) -> None:
    board = build_sim_hardware(make_config(tmp_path)).board
    assert isinstance(board, SimBoard)
    with pytest.raises(HardwareError):
        board.plug(3)
    assert issubclass(HardwareError, OcppdError)


async def test_presented_card_reaches_the_callback_on_the_loop(tmp_path: Path) -> None:
    reader = build_sim_hardware(make_config(tmp_path)).readers[0]
    assert isinstance(reader, SimCardReader)
    loop = asyncio.get_running_loop()
    seen: asyncio.Queue[tuple[str, asyncio.AbstractEventLoop]] = asyncio.Queue()
    await reader.start(lambda tag: seen.put_nowait((tag, asyncio.get_running_loop())))
    try:
        reader.present("04A1B2C3")
        reader.present("04A1B2C3")  # each presentation counts; the station debounces
        assert await asyncio.wait_for(seen.get(), WAIT_S) == ("04A1B2C3", loop)
        assert await asyncio.wait_for(seen.get(), WAIT_S) == ("04A1B2C3", loop)
    finally:
        await reader.close()
    with pytest.raises(HardwareError):
        reader.present("DEADBEEF")


def test_card_presented_before_start_is_refused(tmp_path: Path) -> None:
    reader = SimCardReader()
    with pytest.raises(HardwareError):
        reader.present("04A1B2C3")
