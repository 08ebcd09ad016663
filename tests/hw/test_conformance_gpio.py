"""The conformance kit against the GPIO driver on gpiozero's MockFactory.

The rig plays the EV on the pilot: it reads the PWM duty the driver writes (a sysfs PWM tree in
a temporary directory) and puts the matching pilot voltages on the mock MCP3008, +9 V or +6 V on
the high plateau and -12 V on the low one while the PWM oscillates (a healthy diode).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory
from mockadc import MockMCP3008

from ocppd.config import ConnectorConfig, ContactorConfig, HardwareConfig, InputConfig, PilotConfig
from ocppd.hw import conformance
from ocppd.hw.pilot import LocalPilot
from ocppd.hw.realboard import GpioBoard

PILOT = PilotConfig(pwm="sysfs", debounce_ms=0, sample_interval_ms=5)
RELAYS = (17, 27)
RCD_PIN, ESTOP_PIN = 23, 24


def adc_v(pilot_v: float) -> float:
    return PILOT.adc_offset_v + pilot_v / PILOT.adc_gain


def offered_from_duty(duty: float) -> float | None:
    """What an EV reads from the duty cycle (SAE J1772 / IEC 61851-1 Table A.8)."""
    pct = duty * 100.0
    if 10.0 - 0.5 <= pct <= 85.0:
        return pct * 0.6
    if 85.0 < pct <= 96.0:
        return (pct - 64.0) * 2.5
    return 0.0 if 0.0 < pct < 100.0 else None


class GpioRig:
    self_switching = False
    fault_names = ("rcd", "emergency_stop")
    has_link = False
    connector_ids = (1,)

    def __init__(self, factory: MockFactory, adc: MockMCP3008, pwm_root: Path) -> None:
        self.factory, self.adc, self.pwm_root = factory, adc, pwm_root
        self.plugged = self.ready = False
        conn = ConnectorConfig(contactor=ContactorConfig(pins=list(RELAYS)), pilot=PILOT,
                               meter="m1", rcd=InputConfig(pin=RCD_PIN), lock=None)
        hw = HardwareConfig(driver="gpio",
                            emergency_stop=InputConfig(pin=ESTOP_PIN, active_high=False))
        self.board = GpioBoard([conn], hw, pin_factory=factory, pwm_root=pwm_root)
        self._ev = asyncio.create_task(self._ev_loop())

    def duty(self) -> float:
        ns = int((self.pwm_root / "pwmchip0" / "pwm0" / "duty_cycle").read_text())
        return ns / 1_000_000

    def _apply_ev(self) -> None:
        duty = self.duty()
        offer = offered_from_duty(duty)
        if not self.plugged:
            high = 12.0
        elif self.ready and offer is not None and offer >= 6.0:
            high = 6.0
        else:
            high = 9.0
        oscillating = 0.0 < duty < 1.0
        self.adc.channels[0] = ([adc_v(high), adc_v(-12.0)] if oscillating and self.plugged
                                else adc_v(high))

    async def _ev_loop(self) -> None:
        while True:  # the EV reacts to the pilot within milliseconds
            self._apply_ev()
            await asyncio.sleep(0.002)

    def plug(self, connector_id: int, *, ready: bool) -> None:
        self.plugged, self.ready = True, ready
        self._apply_ev()

    def set_ready(self, connector_id: int, ready: bool) -> None:
        self.ready = ready
        self._apply_ev()

    def unplug(self, connector_id: int) -> None:
        self.plugged = self.ready = False
        self._apply_ev()

    def contactor_closed(self, connector_id: int) -> bool:
        return any(self.factory.pin(p).state for p in RELAYS)

    def offered_a(self, connector_id: int) -> float | None:
        return offered_from_duty(self.duty())

    def inject_fault(self, connector_id: int, name: str, active: bool) -> None:
        if name == "rcd":
            pin, level = self.factory.pin(RCD_PIN), active
        else:
            pin, level = self.factory.pin(ESTOP_PIN), not active  # active low
        if level:
            pin.drive_high()
        else:
            pin.drive_low()

    def cut_link(self) -> None:
        raise NotImplementedError

    def restore_link(self) -> None:
        raise NotImplementedError

    async def settle(self) -> None:
        pilot = self.board.pilots[1]
        assert isinstance(pilot, LocalPilot)
        assert await asyncio.to_thread(pilot.wait_windows, 4, 3.0), "pilot stopped sampling"

    async def teardown(self) -> None:
        self._ev.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._ev
        await self.board.close()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[GpioRig]:
    factory = MockFactory()
    saved, Device.pin_factory = Device.pin_factory, factory  # software SPI uses the default
    adc = MockMCP3008(pin_factory=factory)
    adc.channels[0] = adc_v(12.0)
    pwm = tmp_path / "pwmchip0" / "pwm0"
    pwm.mkdir(parents=True)
    (tmp_path / "pwmchip0" / "export").write_text("")
    for name in ("period", "duty_cycle", "enable"):
        (pwm / name).write_text("0\n")
    factory.pin(ESTOP_PIN).drive_high()  # released: the input is active low
    r = GpioRig(factory, adc, tmp_path)
    yield r
    await r.teardown()
    adc.close()
    factory.reset()
    Device.pin_factory = saved


@pytest.mark.parametrize("check", conformance.CHECKS, ids=conformance.check_id)
async def test_gpio_conforms(rig: GpioRig, check: Callable[[GpioRig], Awaitable[None]]) -> None:
    await check(rig)
