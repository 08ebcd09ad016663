"""Energy meters against real Modbus peers: a pymodbus TCP server and an RTU slave on a pty."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hwpeers import RtuResponder, TcpMeterServer, image_for

from ocppd.config import BusConfig
from ocppd.errors import ConfigError, MeterError
from ocppd.hw.base import Meter
from ocppd.hw.metermap import available_models, load_meter_map
from ocppd.hw.modbus import ModbusBus, ModbusMeter

# Values every map can represent exactly at its resolution (0.1 kWh, 0.01 A, 0.1 V ...).
THREE_PHASE = {
    "energy_import_wh": 12_345_600.0,
    "energy_export_wh": 1_000.0,
    "power_w": 11_040.5,
    "frequency_hz": 50.0,
    "power_factor": 0.987,
    "current_l1_a": 16.25, "current_l2_a": 15.5, "current_l3_a": 14.75,
    "voltage_l1_v": 230.1, "voltage_l2_v": 231.2, "voltage_l3_v": 229.8,
}


def approx(v: object) -> object:
    return pytest.approx(v, rel=1e-6, abs=1e-3)


def tcp_bus(port: int) -> ModbusBus:
    return ModbusBus(BusConfig(type="tcp", host="127.0.0.1", tcp_port=port, timeout_s=0.5))


def rtu_bus(port: str) -> ModbusBus:
    return ModbusBus(BusConfig(type="rtu", port=port, baudrate=9600, timeout_s=0.2))


@pytest.fixture
async def rtu() -> AsyncIterator[RtuResponder]:
    responder = RtuResponder({})
    yield responder
    responder.close()


def test_every_builtin_map_loads_and_names_its_source() -> None:
    models = available_models()
    for needed in ("sdm630", "sdm72d", "sdm120", "sdm220", "abb_b23", "abb_b24", "cg_em340",
                   "cg_et340"):
        assert needed in models
    for model in models:
        meter_map = load_meter_map(model)
        assert meter_map.source and "energy_import_wh" in meter_map.registers
        assert len(meter_map.currents) == meter_map.phases


@pytest.mark.parametrize("model", available_models())
async def test_each_map_decodes_a_real_tcp_meter(model: str) -> None:
    meter_map = load_meter_map(model)
    server = TcpMeterServer({1: image_for(meter_map, THREE_PHASE)})
    await server.start()
    bus = tcp_bus(server.port)
    try:
        meter = ModbusMeter(bus, meter_map, unit_id=1, name=model)
        assert isinstance(meter, Meter)
        r = await meter.read()
    finally:
        await bus.close()
        await server.stop()
    n = meter_map.phases
    assert r.energy_import_wh == approx(12_345_600.0)
    assert r.energy_export_wh == approx(1_000.0)
    assert r.power_w == approx(11_040.5)
    assert r.frequency_hz == approx(50.0)
    assert r.current_a == approx((16.25, 15.5, 14.75)[:n])
    assert r.voltage_v == approx((230.1, 231.2, 229.8)[:n])
    if "power_factor" in meter_map.registers:
        assert r.power_factor == approx(0.987)


async def test_two_meters_share_one_rtu_line_through_one_bus(rtu: RtuResponder) -> None:
    sdm, abb = load_meter_map("sdm630"), load_meter_map("abb_b23")
    rtu.images[1] = image_for(sdm, THREE_PHASE)
    rtu.images[7] = image_for(abb, {**THREE_PHASE, "energy_import_wh": 500_000.0})
    bus = rtu_bus(rtu.port)
    try:
        m1 = ModbusMeter(bus, sdm, unit_id=1)
        m7 = ModbusMeter(bus, abb, unit_id=7)
        r1, r7 = await asyncio.gather(m1.read(), m7.read())  # serialised by the bus lock
    finally:
        await bus.close()
    assert r1.energy_import_wh == approx(12_345_600.0)
    assert r7.energy_import_wh == approx(500_000.0)
    assert r7.voltage_v == approx((230.1, 231.2, 229.8))
    assert rtu.requests == len(sdm.registers) + len(abb.registers)


async def test_silent_rtu_meter_raises_then_recovers(rtu: RtuResponder,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    sdm = load_meter_map("sdm120")
    rtu.images[1] = image_for(sdm, THREE_PHASE)
    bus = rtu_bus(rtu.port)
    meter = ModbusMeter(bus, sdm, unit_id=1, name="m1")
    try:
        assert (await meter.read()).energy_import_wh == approx(12_345_600.0)
        rtu.silent = True
        caplog.set_level(logging.WARNING, logger="ocppd.hw.modbus")
        for _ in range(2):
            with pytest.raises(MeterError, match="no answer"):
                await meter.read()
        rtu.silent = False
        assert (await meter.read()).power_w == approx(11_040.5)
    finally:
        await bus.close()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unavailable" in m for m in messages) == 1  # a transition, not every poll
    assert sum("answering again" in m for m in messages) == 1


async def test_wrong_unit_id_on_rtu_is_a_meter_error(rtu: RtuResponder) -> None:
    rtu.images[1] = image_for(load_meter_map("sdm120"), THREE_PHASE)
    bus = rtu_bus(rtu.port)
    try:
        with pytest.raises(MeterError):
            await ModbusMeter(bus, load_meter_map("sdm120"), unit_id=9).read()
    finally:
        await bus.close()


async def test_stopped_tcp_meter_raises_then_recovers_on_same_port() -> None:
    sdm = load_meter_map("sdm630")
    server = TcpMeterServer({1: image_for(sdm, THREE_PHASE)})
    await server.start()
    bus = tcp_bus(server.port)
    meter = ModbusMeter(bus, sdm)
    try:
        await meter.read()
        await server.stop()
        with pytest.raises(MeterError):
            await meter.read()
        await server.start()  # same port
        assert (await meter.read()).energy_import_wh == approx(12_345_600.0)
    finally:
        await bus.close()
        await server.stop()


async def test_nan_sentinel_is_a_meter_error_not_a_value(rtu: RtuResponder) -> None:
    abb = load_meter_map("abb_b23")
    rtu.images[1] = image_for(abb, THREE_PHASE, nan=("power_w",))
    sdm = load_meter_map("sdm630")
    rtu.images[2] = image_for(sdm, THREE_PHASE, nan=("energy_import_wh",))
    bus = rtu_bus(rtu.port)
    try:
        with pytest.raises(MeterError, match="NaN"):
            await ModbusMeter(bus, abb, unit_id=1).read()
        with pytest.raises(MeterError, match="NaN"):
            await ModbusMeter(bus, sdm, unit_id=2).read()
    finally:
        await bus.close()


async def test_energy_going_backwards_is_refused(rtu: RtuResponder) -> None:
    sdm = load_meter_map("sdm630")
    rtu.images[1] = image_for(sdm, THREE_PHASE)
    bus = rtu_bus(rtu.port)
    meter = ModbusMeter(bus, sdm)
    try:
        await meter.read()
        rtu.images[1] = image_for(sdm, {**THREE_PHASE, "energy_import_wh": 12_000_000.0})
        with pytest.raises(MeterError, match="backwards"):
            await meter.read()
        rtu.images[1] = image_for(sdm, {**THREE_PHASE, "energy_import_wh": 12_400_000.0})
        assert (await meter.read()).energy_import_wh == approx(12_400_000.0)
    finally:
        await bus.close()


@pytest.mark.parametrize(("qty", "value"), [("voltage_l1_v", 5000.0), ("frequency_hz", 5.0),
                                            ("current_l2_a", 20_000.0)])
async def test_absurd_values_are_refused(rtu: RtuResponder, qty: str, value: float) -> None:
    sdm = load_meter_map("sdm630")
    rtu.images[1] = image_for(sdm, {**THREE_PHASE, qty: value})
    bus = rtu_bus(rtu.port)
    try:
        with pytest.raises(MeterError, match="implausible"):
            await ModbusMeter(bus, sdm).read()
    finally:
        await bus.close()


async def test_exception_response_is_a_meter_error(rtu: RtuResponder) -> None:
    sdm = load_meter_map("sdm630")
    image = image_for(sdm, THREE_PHASE)
    del image[4][0x0034]  # the meter does not know the power register
    rtu.images[1] = image
    bus = rtu_bus(rtu.port)
    try:
        with pytest.raises(MeterError, match="exception code 2"):
            await ModbusMeter(bus, sdm).read()
    finally:
        await bus.close()


def test_user_map_file_adds_a_meter_without_code(tmp_path: Path) -> None:
    path = tmp_path / "mymeter.toml"
    path.write_text('name = "My meter"\nsource = ["vendor datasheet rev 3"]\nphases = 1\n'
                    '[defaults]\nfunction = 3\ntype = "uint32"\n'
                    '[registers]\nenergy_import_wh = { address = 0x10 }\n'
                    'power_w = { address = 0x20, type = "int16", word_order = "little" }\n')
    meter_map = load_meter_map(str(path))
    reg = meter_map.registers["energy_import_wh"]
    assert (reg.function, reg.address, reg.nan) == (3, 0x10, 0xFFFFFFFF)
    assert reg.decode([0x0001, 0x0002]) == 65538.0


@pytest.mark.parametrize("body", [
    'name = "x"\nsource = ["y"]\n[registers]\npower_w = { address = 1 }\n',  # no energy
    'name = "x"\nsource = ["y"]\n[registers]\nenergy_import_wh = { address = 1 }\n'
    'energy_wh = { address = 3 }\n',  # typo in a quantity
    'name = "x"\n[registers]\nenergy_import_wh = { address = 1 }\n',  # no source
    'name = "x"\nsource = ["y"]\n[registers]\nenergy_import_wh = { address = 1, type = "f32" }\n',
])
def test_bad_map_file_is_a_config_error(tmp_path: Path, body: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(ConfigError, match="bad.toml"):
        load_meter_map(path)


def test_unknown_model_lists_builtin_maps() -> None:
    with pytest.raises(ConfigError, match="sdm630"):
        load_meter_map("no_such_meter")
