"""The GPIO board on gpiozero's MockFactory: contactors, feedback, RCD, e-stop, lock, LEDs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory
from mockadc import MockMCP3008

from ocppd.config import (
    ConnectorConfig,
    ContactorConfig,
    HardwareConfig,
    InputConfig,
    LedConfig,
    LockConfig,
    PilotConfig,
)
from ocppd.hw.base import BoardEvent, EvseBoard, Fault, FaultChanged, PilotChanged, PilotState
from ocppd.hw.realboard import GpioBoard

PILOT = PilotConfig(pwm="sysfs", debounce_ms=0, sample_interval_ms=5)


def connector(**kw: object) -> ConnectorConfig:
    base: dict[str, object] = {
        "contactor": ContactorConfig(pins=[17, 27], feedback_pin=22, feedback_delay_ms=100),
        "pilot": PILOT, "meter": "m1", "rcd": InputConfig(pin=23),
        "lock": LockConfig(lock_pin=5, unlock_pin=6, pulse_ms=10, feedback_pin=13),
    }
    base.update(kw)
    return ConnectorConfig(**base)  # type: ignore[arg-type]


HW = HardwareConfig(driver="gpio", emergency_stop=InputConfig(pin=24, active_high=False),
                    leds=LedConfig(ready_pin=16, charging_pin=20, fault_pin=21))


@dataclass
class Rig:
    factory: MockFactory
    slave: MockMCP3008
    pwm_root: Path
    events: asyncio.Queue[BoardEvent]

    def pin(self, n: int) -> object:
        return self.factory.pin(n)

    async def wait_for(self, match: Callable[[BoardEvent], bool], timeout_s: float = 1.0
                       ) -> BoardEvent:
        async def wait() -> BoardEvent:
            while True:
                ev = await self.events.get()
                if match(ev):
                    return ev

        return await asyncio.wait_for(wait(), timeout_s)

    def board(self, connectors: list[ConnectorConfig], hw: HardwareConfig = HW) -> GpioBoard:
        return GpioBoard(connectors, hw, pin_factory=self.factory, pwm_root=self.pwm_root)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    factory = MockFactory()
    saved, Device.pin_factory = Device.pin_factory, factory  # software SPI uses the default
    slave = MockMCP3008(pin_factory=factory)
    slave.channels[0] = PILOT.adc_offset_v + 12.0 / PILOT.adc_gain  # +12 V: state A
    slave.channels[1] = PILOT.adc_offset_v + 12.0 / PILOT.adc_gain
    pwm = tmp_path / "pwmchip0" / "pwm0"
    pwm.mkdir(parents=True)
    (tmp_path / "pwmchip0" / "export").write_text("")
    for name in ("period", "duty_cycle", "enable"):
        (pwm / name).write_text("0\n")
    yield Rig(factory, slave, tmp_path, asyncio.Queue())
    slave.close()
    factory.reset()
    Device.pin_factory = saved


def duty_ns(rig: Rig) -> int:
    return int((rig.pwm_root / "pwmchip0" / "pwm0" / "duty_cycle").read_text())


async def test_board_starts_safe_and_reports_pilot_state(rig: Rig) -> None:
    board = rig.board([connector()])
    assert isinstance(board, EvseBoard)
    assert rig.pin(17).state == 0 and rig.pin(27).state == 0
    await board.start(rig.events.put_nowait)
    try:
        ev = await rig.wait_for(lambda e: isinstance(e, PilotChanged))
        assert ev == PilotChanged(connector_id=1, state=PilotState.A)
        assert duty_ns(rig) == 1_000_000  # +12 V, nothing offered
        board.set_offer(1, 16)
        assert duty_ns(rig) == 266_667
        board.set_pilot_error(1)
        assert duty_ns(rig) == 0
    finally:
        await board.close()


async def test_contactor_switches_every_relay_with_its_active_level(rig: Rig) -> None:
    conn = connector(contactor=ContactorConfig(pins=[17, 27], active_high=False), rcd=None)
    board = rig.board([conn], HardwareConfig(driver="gpio"))
    assert rig.pin(17).state == 1 and rig.pin(27).state == 1  # active low: high = open
    await board.start(rig.events.put_nowait)
    try:
        board.set_contactor(1, True)
        assert rig.pin(17).state == 0 and rig.pin(27).state == 0
        board.set_contactor(1, False)
        assert rig.pin(17).state == 1 and rig.pin(27).state == 1
    finally:
        await board.close()


async def test_feedback_mismatch_is_reported_within_the_feedback_delay(rig: Rig) -> None:
    board = rig.board([connector()])
    await board.start(rig.events.put_nowait)
    try:
        t0 = time.monotonic()
        board.set_contactor(1, True)  # feedback pin 22 stays low: stuck open
        ev = await rig.wait_for(lambda e: isinstance(e, FaultChanged))
        assert ev == FaultChanged(connector_id=1, fault=Fault.CONTACTOR_STUCK_OPEN, active=True,
                                  detail="feedback open, commanded closed")
        assert 0.09 <= time.monotonic() - t0 < 0.6
        rig.pin(22).drive_high()  # contact finally closes
        ev = await rig.wait_for(lambda e: isinstance(e, FaultChanged))
        assert ev.active is False  # type: ignore[union-attr]
        board.set_contactor(1, False)  # but the feedback stays closed: welded
        ev = await rig.wait_for(lambda e: isinstance(e, FaultChanged) and e.active)
        assert ev.fault is Fault.CONTACTOR_WELDED  # type: ignore[union-attr]
    finally:
        await board.close()


async def test_short_feedback_lag_is_not_a_fault(rig: Rig) -> None:
    board = rig.board([connector()])
    await board.start(rig.events.put_nowait)
    try:
        board.set_contactor(1, True)
        rig.pin(22).drive_high()  # the contact follows well within 100 ms
        with pytest.raises(TimeoutError):
            await rig.wait_for(lambda e: isinstance(e, FaultChanged), timeout_s=0.3)
    finally:
        await board.close()


async def test_rcd_trip_opens_the_contactor_at_once(rig: Rig) -> None:
    board = rig.board([connector(contactor=ContactorConfig(pins=[17])),
                       connector(contactor=ContactorConfig(pins=[26]), rcd=InputConfig(pin=19),
                                 pilot=None, lock=None)])
    await board.start(rig.events.put_nowait)
    try:
        board.set_contactor(1, True)
        board.set_contactor(2, True)
        rig.pin(23).drive_high()
        assert rig.pin(17).state == 0  # opened by the driver itself, before any event
        assert rig.pin(26).state == 1  # the other connector keeps charging
        ev = await rig.wait_for(lambda e: isinstance(e, FaultChanged))
        assert ev == FaultChanged(connector_id=1, fault=Fault.GROUND_FAILURE, active=True)
        board.set_contactor(1, True)  # refused while tripped
        assert rig.pin(17).state == 0
        rig.pin(23).drive_low()
        ev = await rig.wait_for(lambda e: isinstance(e, FaultChanged))
        assert ev.active is False  # type: ignore[union-attr]
    finally:
        await board.close()


async def test_emergency_stop_opens_every_contactor(rig: Rig) -> None:
    board = rig.board([connector(contactor=ContactorConfig(pins=[17])),
                       connector(contactor=ContactorConfig(pins=[26]), rcd=None, pilot=None,
                                 lock=None)])
    rig.pin(24).drive_high()  # active-low e-stop, released
    await board.start(rig.events.put_nowait)
    try:
        board.set_contactor(1, True)
        board.set_contactor(2, True)
        rig.pin(24).drive_low()  # pressed
        assert rig.pin(17).state == 0 and rig.pin(26).state == 0
        ev = await rig.wait_for(lambda e: isinstance(e, FaultChanged))
        assert ev == FaultChanged(connector_id=0, fault=Fault.EMERGENCY_STOP, active=True)
    finally:
        await board.close()


async def test_lock_pulses_the_motor_and_checks_feedback(rig: Rig) -> None:
    board = rig.board([connector()])
    await board.start(rig.events.put_nowait)
    try:
        assert board.has_lock(1)
        rig.pin(13).drive_high()  # the lock reports "locked"
        assert await board.lock(1, True) is True
        assert [s.state for s in rig.pin(5).states][-2:] == [1, 0]  # one pulse on the lock pin
        assert rig.pin(6).state == 0
        assert await board.lock(1, False) is False  # feedback still says locked
        ev = await rig.wait_for(lambda e: isinstance(e, FaultChanged))
        assert ev.fault is Fault.LOCK_FAILURE and ev.active  # type: ignore[union-attr]
        assert [s.state for s in rig.pin(6).states][-2:] == [1, 0]
        rig.pin(13).drive_low()
        assert await board.lock(1, False) is True
        ev = await rig.wait_for(lambda e: isinstance(e, FaultChanged))
        assert ev.fault is Fault.LOCK_FAILURE and not ev.active  # type: ignore[union-attr]
    finally:
        await board.close()


async def test_solenoid_lock_without_feedback_is_held(rig: Rig) -> None:
    board = rig.board([connector(lock=LockConfig(lock_pin=5, pulse_ms=10))])
    await board.start(rig.events.put_nowait)
    try:
        assert await board.lock(1, True) is True
        assert rig.pin(5).state == 1  # held while locked
        assert await board.lock(1, False) is True
        assert rig.pin(5).state == 0
    finally:
        await board.close()
    # a fixed cable has no lock at all
    fixed_board = rig.board([connector(cable="fixed", lock=None, pilot=None)])
    assert not fixed_board.has_lock(1)
    assert await fixed_board.lock(1, True) is True
    await fixed_board.close()


async def test_status_leds(rig: Rig) -> None:
    board = rig.board([connector(pilot=None)])
    board.set_leds(ready=True, charging=False, fault=True)
    assert (rig.pin(16).state, rig.pin(20).state, rig.pin(21).state) == (1, 0, 1)
    board.set_leds(ready=False, charging=True, fault=False)
    assert (rig.pin(16).state, rig.pin(20).state, rig.pin(21).state) == (0, 1, 0)
    await board.close()


async def test_factory_builds_board_meters_on_shared_buses_and_readers(rig: Rig) -> None:
    from hwpeers import TcpMeterServer, image_for

    from ocppd.config import (
        BusConfig,
        CentralSystemConfig,
        ChargePointConfig,
        Config,
        MeterConfig,
        RfidConfig,
    )
    from ocppd.hw.metermap import load_meter_map
    from ocppd.hw.modbus import ModbusMeter
    from ocppd.hw.realboard import build_real_hardware
    from ocppd.hw.rfid import Pn532Reader, Rdm6300Reader

    sdm = load_meter_map("sdm120")
    values = {"energy_import_wh": 1500.0, "energy_export_wh": 0.0, "power_w": 3680.0,
              "frequency_hz": 50.0, "current_l1_a": 16.0, "voltage_l1_v": 230.0}
    server = TcpMeterServer({1: image_for(sdm, values), 2: image_for(sdm, values)})
    await server.start()
    cfg = Config(
        charge_point=ChargePointConfig(id="cp1"),
        central_system=CentralSystemConfig(url="ws://127.0.0.1:9/ocpp"),
        connectors=[connector(meter="m1"),
                    connector(meter="m2", contactor=ContactorConfig(pins=[26]), rcd=None,
                              lock=None, pilot=None)],
        hardware=HW,
        buses={"gw": BusConfig(type="tcp", host="127.0.0.1", tcp_port=server.port,
                               timeout_s=0.5)},
        meters={"m1": MeterConfig(model="sdm120", bus="gw", unit_id=1),
                "m2": MeterConfig(model="sdm120", bus="gw", unit_id=2)},
        rfid=[RfidConfig(type="rdm6300", port="/dev/null-reader"),
              RfidConfig(type="pn532", port="/dev/null-reader2")],
    )
    hw = build_real_hardware(cfg, pin_factory=rig.factory, pwm_root=rig.pwm_root)
    try:
        assert isinstance(hw.board, GpioBoard)
        m1, m2 = hw.meters[1], hw.meters[2]
        assert isinstance(m1, ModbusMeter) and isinstance(m2, ModbusMeter)
        assert m1.bus is m2.bus  # one owner for the gateway
        assert [type(r) for r in hw.readers] == [Rdm6300Reader, Pn532Reader]
        assert (await m2.read()).power_w == pytest.approx(3680.0)
    finally:
        await hw.board.close()
        for closer in hw.extra_closers:
            result = closer()
            if asyncio.iscoroutine(result):
                await result
        await server.stop()


# --- issue 15: which pin library, and one clear line when there is none ------------------------


async def test_board_logs_the_pin_factory_and_spi_in_use(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="ocppd.hw.realboard")
    board = rig.board([connector()])
    try:
        line = next(r.getMessage() for r in caplog.records if "pin factory" in r.getMessage())
    finally:
        await board.close()
    assert "MockFactory" in line, line
    # under the mock factory the MCP3008 is bit-banged: that is worth a word in the log
    assert "software SPI" in line, line


def test_missing_pin_library_names_the_pin_and_what_to_install(tmp_path: Path) -> None:
    """No usable gpiozero pin factory (this machine is no Pi): one line, no traceback, an exit
    code the unit does not restart on."""
    import os
    import subprocess
    import sys

    from ocppd.errors import HardwareError

    text = f"""
[charge_point]
id = "CP-1"
[central_system]
url = "ws://127.0.0.1:9/ocpp"
[hardware]
driver = "gpio"
[[connectors]]
meter = "main"
[connectors.contactor]
pins = [17]
[connectors.pilot]
pwm = "sysfs"
[buses.rs485]
type = "tcp"
host = "127.0.0.1"
tcp_port = 9
[meters.main]
model = "sdm630"
bus = "rs485"
[storage]
path = "{tmp_path / "db.sqlite"}"
[control]
socket = "{tmp_path / "ctl.sock"}"
"""
    cfg = tmp_path / "ocppd.toml"
    cfg.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPIOZERO_")}
    env["JOURNAL_STREAM"] = ""
    proc = subprocess.run([sys.executable, "-m", "ocppd", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == HardwareError.exit_code, (proc.returncode, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "connectors[1].contactor" in lines[0] and "17" in lines[0], lines[0]
    assert "python3-lgpio" in lines[0], lines[0]


async def test_diagnostics_show_each_input_and_its_verdict(rig: Rig) -> None:
    """The set-up check's raw inputs: pilot plateaus, contactor and lock feedback, RCD."""
    board = rig.board([connector()])
    await board.start(rig.events.put_nowait)
    try:
        await rig.wait_for(lambda e: isinstance(e, PilotChanged))
        diag = board.diagnostics(1)
        assert diag["pilot high level"] == ("+12.0 V", "ok", "on a nominal level (±1 V)")
        assert "pilot low level" not in diag  # not oscillating: no diode to judge
        assert diag["contactor feedback input"][:2] == ("open", "ok")
        assert diag["RCD input"][:2] == ("normal", "ok")
        assert diag["emergency stop input"][:2] == ("released", "ok")
        # an EV without its diode, while a current is offered: the low plateau says so
        board.set_offer(1, 16)
        rig.slave.channels[0] = [PILOT.adc_offset_v + 6.0 / PILOT.adc_gain,
                                 PILOT.adc_offset_v - 6.0 / PILOT.adc_gain]
        await rig.wait_for(lambda e: isinstance(e, PilotChanged) and e.state is PilotState.F)
        diag = board.diagnostics(1)
        assert diag["pilot low level"][:2] == ("-6.0 V", "problem")
        # feedback that disagrees with the command
        rig.pin(22).drive_high()
        assert diag != board.diagnostics(1)
        assert board.diagnostics(1)["contactor feedback input"][:2] == ("closed", "problem")
    finally:
        await board.close()
