"""End to end on the EVSE WB driver: the real daemon, a real Central System on loopback, and a
register-level EVSE WB board (tests/evsewbsim.py) with an SDM630 meter on the same RTU line."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from csms import CentralSystem, call
from evsewbsim import RCD_ERROR, EvseWbSim
from harness import CP_ID, booted, running, sim_config_text, wait_status, wait_until
from hw.hwpeers import image_for

from ocppd import config
from ocppd.config import Config
from ocppd.hw.metermap import load_meter_map

pytestmark = pytest.mark.asyncio

ENERGY_KWH = 1234.5
DISABLED, DISABLE_AFTER_CHARGE, CHARGE_ON_D = 1 << 14, 1 << 13, 1 << 3


def meter_values(energy_kwh: float) -> dict[str, float]:
    return {"energy_import_wh": energy_kwh * 1000.0, "power_w": 0.0, "frequency_hz": 50.0,
            "current_l1_a": 0.0, "current_l2_a": 0.0, "current_l3_a": 0.0,
            "voltage_l1_v": 230.0, "voltage_l2_v": 230.0, "voltage_l3_v": 230.0,
            "energy_export_wh": 0.0, "power_factor": 1.0}


def evse_wb_config(tmp_path: Path, url: str, port: str) -> Config:
    text = sim_config_text(tmp_path, url).replace('[hardware]\ndriver = "sim"', f"""
[buses.rs485]
type = "rtu"
port = "{port}"
timeout_s = 0.2

[meters.m1]
model = "sdm630"
bus = "rs485"
unit_id = 2

[hardware]
driver = "evse_wb"

[hardware.evse_wb]
bus = "rs485"
unit_ids = [1]
poll_interval_s = 0.05
link_timeout_s = 1.0
""")
    text = text.replace("cable = \"socket\"\n", "cable = \"socket\"\nmeter = \"m1\"\n", 1)
    path = tmp_path / "ocppd.toml"
    path.write_text(text)
    return config.load(path)


@pytest.fixture
async def board() -> AsyncIterator[EvseWbSim]:
    # A board as an installer might leave it: disabled, 16 A after power-up.
    sim = EvseWbSim(boot_current_a=16, config=CHARGE_ON_D | DISABLED)
    sim.meters[2] = image_for(load_meter_map("sdm630"), meter_values(ENERGY_KWH))
    yield sim
    sim.close()


def off_bit(board: EvseWbSim) -> bool:
    return bool(board.regs[1004] & 1)


async def charging(cs: CentralSystem, d: object, board: EvseWbSim) -> int:
    board.plug(ready=True)
    await wait_status(cs, "Preparing")
    await d.station.swipe("TAG1", None)  # type: ignore[attr-defined]
    await wait_status(cs, "Charging")
    tx = (await cs.wait_for("StartTransaction"))[0]
    assert tx["meterStart"] == round(ENERGY_KWH * 1000)  # the meter, read on the shared line
    await wait_until(lambda: d.station.connectors[1].tx.remote_id is not None,  # type: ignore
                     what="tx id")
    return int(d.station.connectors[1].tx.remote_id)  # type: ignore[attr-defined]


async def test_session_charges_and_a_smart_charging_limit_reaches_register_1000(
    cs: CentralSystem, tmp_path: Path, board: EvseWbSim
) -> None:
    async with running(evse_wb_config(tmp_path, cs.url, board.port)) as d:
        await booted(cs)
        # Start-up: safe state first, the board enabled, no current after a power cut.
        await wait_until(lambda: board.regs[2000] == 0 and not board.regs[2005] & DISABLED,
                         what="board configured")
        assert off_bit(board) and board.regs[1000] == 0
        assert not board.relay_on
        tx_id = await charging(cs, d, board)
        await wait_until(lambda: board.relay_on, what="relay on")
        assert board.regs[1000] == 32 and not off_bit(board)
        # The relay closed only while the core's offer stood and the off bit was clear.
        assert all(c.current_a >= 6 and not c.off_bit for c in board.relay_log if c.on)
        conf = await cs.call(CP_ID, call.SetChargingProfile(connector_id=1, cs_charging_profiles={
            "chargingProfileId": 1, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Relative", "transactionId": tx_id,
            "chargingSchedule": {"chargingRateUnit": "A",
                                 "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10.7}]}}))
        assert conf.status == "Accepted"
        await wait_until(lambda: board.regs[1000] == 10, what="10 A in register 1000")
        assert board.offered_a == 10 and board.relay_on  # 10.7 A is offered as 10, never 11
        board.unplug()
        await wait_status(cs, "Available", count=2)
        await wait_until(lambda: off_bit(board) and board.regs[1000] == 0, what="back to off")


async def test_fault_bit_opens_the_contactor_and_stops_the_session(
    cs: CentralSystem, tmp_path: Path, board: EvseWbSim
) -> None:
    async with running(evse_wb_config(tmp_path, cs.url, board.port)) as d:
        await booted(cs)
        await charging(cs, d, board)
        await wait_until(lambda: board.relay_on, what="relay on")
        board.set_error(RCD_ERROR)
        fault = (await cs.wait_for("StatusNotification", lambda p: p["status"] == "Faulted"))[0]
        assert fault["errorCode"] == "GroundFailure"
        assert not board.relay_on
        await wait_until(lambda: off_bit(board) and board.regs[1000] == 0, what="off written")
        stop = (await cs.wait_for("StopTransaction"))[0]  # a ground fault ends the session
        assert stop["reason"] == "Other"
        board.set_error(RCD_ERROR, False)
        board.unplug()
        await wait_status(cs, "Available", count=2)
        assert not board.relay_on and off_bit(board)


async def test_lost_board_link_is_faulted_and_the_board_is_opened_when_it_answers(
    cs: CentralSystem, tmp_path: Path, board: EvseWbSim
) -> None:
    async with running(evse_wb_config(tmp_path, cs.url, board.port)) as d:
        await booted(cs)
        await charging(cs, d, board)
        await wait_until(lambda: board.relay_on, what="relay on")
        board.silent = True  # the RS-485 line is cut
        lost = (await cs.wait_for("StatusNotification",
                                  lambda p: p["errorCode"] == "InternalError"))[0]
        assert lost["status"] == "Faulted" and lost["vendorErrorCode"] == "BoardLinkLost"
        opened_before = sum(1 for c in board.relay_log if not c.on)
        board.silent = False
        # The first words to the board are "off, 0 A": the relay opens before anything else.
        await wait_until(lambda: sum(1 for c in board.relay_log if not c.on) > opened_before,
                         what="relay opened when the line came back")
        # The fault clears, and the core (not the board) decides to charge again.
        await wait_status(cs, "Charging", count=2)
        assert board.relay_on
        board.unplug()
        await wait_status(cs, "Available", count=2)
