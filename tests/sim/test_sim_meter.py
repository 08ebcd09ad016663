"""The simulated meter and battery: energy flows only when physics allows, at the right rate."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from simkit import Recorder, Rig, make_config

from ocppd.errors import MeterError
from ocppd.hw.base import PilotState
from ocppd.hw.sim import SimBoard, SimMeter, build_sim_hardware

B, C = PilotState.B, PilotState.C
V = 230.0


async def charging(board: SimBoard, rec: Recorder, cid: int = 1, offer_a: float = 16.0) -> None:
    """Plug, offer, close: what the station does for an authorized EV."""
    board.plug(cid)
    board.set_offer(cid, offer_a)
    assert [await rec.pilot(cid), await rec.pilot(cid)] == [B, C]
    board.set_contactor(cid, True)


async def test_register_starts_at_meter_start(make_rig: Callable[..., Any]) -> None:
    board, _, _ = await make_rig(sim={"meter_start_wh": 123456.5})
    reading = await SimMeter(board, 2).read()
    assert reading.energy_import_wh == 123456.5
    assert reading.power_w == 0.0


async def test_register_starts_at_a_used_meters_reading_by_default(tmp_path: Path) -> None:
    """A real meter rarely reads 0: a Central System (Home Assistant) that sees 0 takes the
    values for session energy instead of a register."""
    from ocppd.config import SimConfig

    cfg = make_config(tmp_path)
    cfg = dataclasses.replace(cfg, sim=SimConfig())  # the shipped default, not the test's 0
    hw = build_sim_hardware(cfg, clock=time.monotonic)
    reading = await hw.meters[1].read()
    assert reading.energy_import_wh == SimConfig().meter_start_wh >= 100_000  # >= 100 kWh


@pytest.mark.parametrize(
    ("value", "problem"), [(-1.0, "must be at least 0"), (1e13, "must be at most")]
)
def test_meter_start_must_be_a_plausible_register(
    tmp_path: Path, value: float, problem: str
) -> None:
    from ocppd.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        make_config(tmp_path, sim={"meter_start_wh": value})
    assert any("sim.meter_start_wh" in p and problem in p for p in info.value.problems)


async def test_no_energy_with_the_contactor_open_whatever_the_offer(rig: Rig) -> None:
    board, rec, clock = rig
    board.plug(1)
    board.set_offer(1, 32.0)
    assert [await rec.pilot(1), await rec.pilot(1)] == [B, C]
    clock.tick(3600)
    reading = await SimMeter(board, 1).read()
    assert reading.energy_import_wh == 0.0
    assert reading.current_a == (0.0, 0.0, 0.0)


async def test_no_energy_with_the_contactor_closed_and_the_ev_in_b(rig: Rig) -> None:
    board, rec, clock = rig
    board.plug(1)
    assert await rec.pilot(1) is B
    board.set_contactor(1, True)  # closed but no offer: the EV waits in B
    clock.tick(3600)
    assert (await SimMeter(board, 1).read()).energy_import_wh == 0.0


async def test_energy_rises_while_charging_and_stops_when_the_contactor_opens(rig: Rig) -> None:
    board, rec, clock = rig
    meter = SimMeter(board, 1)
    await charging(board, rec)
    clock.tick(600)
    first = (await meter.read()).energy_import_wh
    assert first == pytest.approx(16 * V * 3 * 600 / 3600)
    board.set_contactor(1, False)
    clock.tick(600)
    assert (await meter.read()).energy_import_wh == first
    board.set_contactor(1, True)
    board.set_ev_state(1, B)  # the EV pauses
    clock.tick(600)
    assert (await meter.read()).energy_import_wh == first


@pytest.mark.parametrize(
    ("sections", "offer_a", "expected_w", "wired"),
    [
        ({}, 16.0, 16 * V * 3, 3),
        ({}, 40.0, 32 * V * 3, 3),  # the EV draws at most its own maximum
        ({"sim": {"ev_max_current_a": 10.0}}, 16.0, 10 * V * 3, 3),
        ({"sim": {"ev_phases": 1}}, 16.0, 16 * V * 1, 3),  # single-phase car on a 3-phase point
        ({"connectors": [{"phases": 1}, {}]}, 16.0, 16 * V * 1, 1),
        ({"hardware": {"nominal_voltage_v": 120.0}}, 16.0, 16 * 120.0 * 3, 3),
    ],
)
async def test_power_is_current_times_voltage_times_phases(
    make_rig: Callable[..., Any],
    sections: dict[str, Any],
    offer_a: float,
    expected_w: float,
    wired: int,
) -> None:
    board, rec, clock = await make_rig(**sections)
    await charging(board, rec, offer_a=offer_a)
    clock.tick(360)
    reading = await SimMeter(board, 1).read()
    assert reading.power_w == pytest.approx(expected_w)
    assert reading.energy_import_wh == pytest.approx(expected_w / 10)
    assert reading.current_a is not None and reading.voltage_v is not None
    assert len(reading.current_a) == len(reading.voltage_v) == wired
    nominal = sections.get("hardware", {}).get("nominal_voltage_v", V)
    assert sum(i * nominal for i in reading.current_a) == pytest.approx(expected_w)
    assert all(abs(v - nominal) < 1.0 for v in reading.voltage_v)
    assert reading.frequency_hz == 50.0


async def test_integration_does_not_depend_on_the_read_rate(make_rig: Callable[..., Any]) -> None:
    board, rec, clock = await make_rig()
    await charging(board, rec, cid=1)
    await charging(board, rec, cid=2)
    often, once = SimMeter(board, 1), SimMeter(board, 2)
    previous = 0.0
    for _ in range(100):
        clock.tick(7.3)
        now = (await often.read()).energy_import_wh
        assert now >= previous  # the register never goes back
        previous = now
    assert (await once.read()).energy_import_wh == pytest.approx(previous)
    assert previous == pytest.approx(16 * V * 3 * 730 / 3600)


async def test_time_factor_scales_energy(make_rig: Callable[..., Any]) -> None:
    board, rec, clock = await make_rig(sim={"time_factor": 60.0})
    await charging(board, rec)
    clock.tick(60)  # one real minute is one simulated hour
    assert (await SimMeter(board, 1).read()).energy_import_wh == pytest.approx(16 * V * 3)


async def test_full_battery_stops_drawing_and_the_ev_goes_to_b(
    make_rig: Callable[..., Any],
) -> None:
    sim = {"battery_capacity_wh": 1000.0, "initial_soc_pct": 50.0, "target_soc_pct": 80.0}
    board, rec, clock = await make_rig(sim=sim)
    meter = SimMeter(board, 1)
    await charging(board, rec)
    assert (await meter.read()).soc_pct == pytest.approx(50.0)
    clock.tick(30)
    soc = (await meter.read()).soc_pct
    assert soc is not None and 50.0 < soc < 80.0
    clock.tick(600)  # 300 Wh at 11 kW takes under 100 s
    reading = await meter.read()
    assert reading.energy_import_wh == pytest.approx(300.0)  # exactly what the battery took
    assert reading.soc_pct == pytest.approx(80.0)
    assert reading.power_w == 0.0
    assert await rec.pilot(1) is B
    board.set_offer(1, 16.0)  # a full EV does not ask again
    board.set_ev_state(1, C)
    clock.tick(600)
    assert (await meter.read()).energy_import_wh == pytest.approx(300.0)
    assert board.view(1).ev_state is B


async def test_battery_fills_on_time_without_anyone_reading(tmp_path: Path) -> None:
    sim = {"battery_capacity_wh": 100.0, "initial_soc_pct": 50.0, "target_soc_pct": 51.0}
    cfg = make_config(tmp_path, sim={**sim, "time_factor": 10_000.0})
    hw = build_sim_hardware(cfg, clock=time.monotonic)
    board = hw.board
    assert isinstance(board, SimBoard)
    rec = Recorder()
    await board.start(rec)
    try:
        assert await rec.pilot(1) is PilotState.A
        await charging(board, rec)
        assert await rec.pilot(1) is B  # 1 Wh at 11 kW × 10 000: the loop timer fires
        assert board.view(1).battery_full
    finally:
        await board.close()


async def test_fresh_ev_on_each_plug_and_no_soc_without_ev(make_rig: Callable[..., Any]) -> None:
    board, rec, clock = await make_rig(sim={"initial_soc_pct": 20.0})
    meter = SimMeter(board, 1)
    assert (await meter.read()).soc_pct is None
    await charging(board, rec)
    clock.tick(3600)
    charged = await meter.read()
    assert charged.soc_pct is not None and charged.soc_pct > 20.0
    board.unplug(1)
    unplugged = await meter.read()
    assert unplugged.soc_pct is None
    assert unplugged.energy_import_wh == charged.energy_import_wh
    board.plug(1)
    assert (await meter.read()).soc_pct == pytest.approx(20.0)


async def test_meter_failure_raises_and_energy_keeps_flowing(rig: Rig) -> None:
    board, rec, clock = rig
    meter = SimMeter(board, 1)
    await charging(board, rec)
    board.meter_fails(1, True)
    clock.tick(360)
    with pytest.raises(MeterError):
        await meter.read()
    assert (await SimMeter(board, 2).read()).energy_import_wh == 0.0  # the other one still reads
    board.meter_fails(1, False)
    assert (await meter.read()).energy_import_wh == pytest.approx(16 * V * 3 / 10)
