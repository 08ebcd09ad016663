"""Control pilot: the pure rules (duty, states, debounce, PP) and the PWM/ADC drivers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPWMPin
from hypothesis import given
from hypothesis import strategies as st
from mockadc import MockMCP3008

from ocppd.config import PilotConfig
from ocppd.errors import HardwareError
from ocppd.hw.base import BoardEvent, CableRating, FaultChanged, PilotChanged, PilotState
from ocppd.hw.pilot import (
    PAUSE_DUTY,
    PWM_PERIOD_NS,
    Debouncer,
    GpioPwm,
    LocalPilot,
    SysfsPwm,
    cable_rating_a,
    classify,
    duty_for_offer,
    open_adc,
    pp_resistance_ohms,
)

# --- duty --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("amps", "duty_pct"), [(6, 10.0), (16, 26.667), (32, 53.333),
                                                (51, 85.0), (63, 89.2), (80, 96.0)])
def test_duty_follows_iec_61851_table(amps: float, duty_pct: float) -> None:
    assert duty_for_offer(amps) * 100 == pytest.approx(duty_pct, abs=1e-3)


def test_no_offer_is_steady_plus_12v_and_zero_is_a_no_charging_duty() -> None:
    assert duty_for_offer(None) == 1.0
    assert duty_for_offer(0) == PAUSE_DUTY
    assert PAUSE_DUTY > 0.97 and PAUSE_DUTY < 1.0  # IEC 61851-1: > 97 % = no charging


@given(st.floats(6, 80), st.floats(6, 80))
def test_duty_is_monotonic_and_within_the_current_band(a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert duty_for_offer(lo) <= duty_for_offer(hi)
    assert 0.10 - 1e-9 <= duty_for_offer(lo) <= 0.96 + 1e-9


@given(st.floats(6, 80))
def test_duty_maps_back_to_the_same_current(amps: float) -> None:
    pct = duty_for_offer(amps) * 100  # the EV side of SAE J1772 / IEC 61851-1
    back = pct * 0.6 if pct <= 85 + 1e-9 else (pct - 64) * 2.5
    if 51 < amps <= 52.5:  # no duty encodes these: the EV must read less, never more
        assert back == pytest.approx(51.0)
    else:
        assert back == pytest.approx(amps, rel=1e-9)


# --- states --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("high_v", "state"), [
    (12.0, PilotState.A), (10.6, PilotState.A), (9.0, PilotState.B), (7.6, PilotState.B),
    (6.0, PilotState.C), (4.6, PilotState.C), (3.0, PilotState.D), (1.6, PilotState.D),
    (0.0, PilotState.E), (-1.4, PilotState.E), (-12.0, PilotState.F), (-1.6, PilotState.F),
])
def test_state_from_high_plateau(high_v: float, state: PilotState) -> None:
    assert classify(high_v, -12.0, oscillating=True) == (state, True)
    assert classify(high_v, high_v, oscillating=False) == (state, True)


@pytest.mark.parametrize("high_v", [9.0, 6.0, 3.0])
def test_missing_diode_while_oscillating_is_state_f(high_v: float) -> None:
    assert classify(high_v, -high_v, oscillating=True) == (PilotState.F, False)
    assert classify(high_v, -high_v, oscillating=False)[1] is True  # no PWM: no check


@given(st.floats(-13, 13), st.floats(-13, -10.01))
def test_classification_is_monotonic_in_voltage(v: float, low_v: float) -> None:
    order = [PilotState.F, PilotState.E, PilotState.D, PilotState.C, PilotState.B, PilotState.A]
    s1, _ = classify(v, low_v, oscillating=True)
    s2, _ = classify(v + 0.5, low_v, oscillating=True)
    assert order.index(s1) <= order.index(s2)


def test_debounce_reports_first_state_then_only_stable_changes() -> None:
    d = Debouncer(0.05)
    assert d.update("A", 0.0) and d.reported == "A"
    assert not d.update("B", 1.00)
    assert not d.update("A", 1.02)  # a glitch
    assert not d.update("B", 1.03)
    assert not d.update("B", 1.07)
    assert d.update("B", 1.08) and d.reported == "B"
    assert not d.update("B", 2.0)


@pytest.mark.parametrize(("ohms", "amps"), [(1500, 13), (1545, 13), (680, 20), (700, 20),
                                            (220, 32), (213, 32), (100, 63), (60, 63),
                                            (10_000, None), (float("inf"), None), (10, None)])
def test_cable_rating_from_pp_resistor(ohms: float, amps: float | None) -> None:
    assert cable_rating_a(ohms) == amps


def test_pp_divider_inverts() -> None:
    v = 3.3 * 680 / (1000 + 680)
    assert pp_resistance_ohms(v, 3.3) == pytest.approx(680)


# --- PWM drivers ----------------------------------------------------------------------------------


def fake_sysfs(root: Path, *, exported: bool = True) -> Path:
    chip = root / "pwmchip0"
    chip.mkdir(parents=True)
    (chip / "export").write_text("")
    pwm = chip / "pwm0"
    if exported:
        pwm.mkdir()
        for name in ("period", "duty_cycle", "enable"):
            (pwm / name).write_text("0\n")
    return pwm


def test_sysfs_pwm_sets_period_duty_and_enable(tmp_path: Path) -> None:
    pwm_dir = fake_sysfs(tmp_path)
    pwm = SysfsPwm(chip=0, channel=0, root=tmp_path)
    assert (pwm_dir / "period").read_text().strip() == str(PWM_PERIOD_NS)
    assert (pwm_dir / "duty_cycle").read_text().strip() == str(PWM_PERIOD_NS)  # +12 V first
    assert (pwm_dir / "enable").read_text().strip() == "1"
    pwm.set_duty(duty_for_offer(16))
    assert int((pwm_dir / "duty_cycle").read_text()) == 266_667
    pwm.set_duty(0.0)
    assert (pwm_dir / "duty_cycle").read_text().strip() == "0"
    inv = SysfsPwm(chip=0, channel=0, root=tmp_path, inverted=True)
    inv.set_duty(0.1)
    assert int((pwm_dir / "duty_cycle").read_text()) == 900_000


def test_sysfs_pwm_without_channel_writes_export_and_explains(tmp_path: Path) -> None:
    fake_sysfs(tmp_path, exported=False)
    with pytest.raises(HardwareError, match="overlay"):
        SysfsPwm(chip=0, channel=0, root=tmp_path)
    assert (tmp_path / "pwmchip0" / "export").read_text().strip() == "0"


def test_gpio_pwm_runs_at_1khz_with_duty_from_current() -> None:
    factory = MockFactory(pin_class=MockPWMPin)
    try:
        pwm = GpioPwm(pin=18, pin_factory=factory)
        pin = factory.pin(18)
        assert pin.frequency == 1000 and pin.state == 1.0  # +12 V before any offer
        for amps in (6, 16, 32, 51, 63, 80):
            pwm.set_duty(duty_for_offer(amps))
            assert pin.state == pytest.approx(duty_for_offer(amps))
        pwm.set_duty(duty_for_offer(None))
        assert pin.state == 1.0
        pwm.close()
    finally:
        factory.reset()


# --- sampling through a (mock) MCP3008 ---------------------------------------------------

CFG = PilotConfig(debounce_ms=0, sample_interval_ms=1, pp_adc_channel=1)


def adc_v(pilot_v: float) -> float:
    return pilot_v / CFG.adc_gain + CFG.adc_offset_v


class FakePwm:
    def __init__(self) -> None:
        self.duty = 1.0

    def set_duty(self, duty: float) -> None:
        self.duty = duty

    def close(self) -> None:
        self.duty = 1.0


@pytest.fixture
def adc_rig() -> Iterator[tuple[MockFactory, MockMCP3008]]:
    # gpiozero's software SPI takes its pins from the default factory, whatever pin_factory says
    factory = MockFactory()
    saved, Device.pin_factory = Device.pin_factory, factory
    slave = MockMCP3008(pin_factory=factory)
    yield factory, slave
    slave.close()
    factory.reset()
    Device.pin_factory = saved


async def next_event(q: asyncio.Queue[BoardEvent], kind: type, timeout_s: float = 2.0
                     ) -> BoardEvent:
    async def wait() -> BoardEvent:
        while True:
            ev = await q.get()
            if isinstance(ev, kind):
                return ev

    return await asyncio.wait_for(wait(), timeout_s)


async def test_sampler_reports_states_from_adc_plateaus(adc_rig: tuple[MockFactory, MockMCP3008]
                                                        ) -> None:
    factory, slave = adc_rig
    slave.channels[0] = adc_v(12.0)
    slave.channels[1] = 3.3 * 220 / (1000 + 220)  # 32 A cable
    q: asyncio.Queue[BoardEvent] = asyncio.Queue()
    adc = open_adc("mcp3008", 0, select_pin=8, vref_v=3.3, pin_factory=factory)
    pp = open_adc("mcp3008", 1, select_pin=8, vref_v=3.3, pin_factory=factory)
    pilot = LocalPilot(1, CFG, FakePwm(), adc, pp)
    pilot.start(q.put_nowait, asyncio.get_running_loop())
    try:
        assert await next_event(q, PilotChanged) == PilotChanged(connector_id=1,
                                                                 state=PilotState.A)
        assert await next_event(q, CableRating) == CableRating(connector_id=1, max_current_a=32)
        pilot.set_offer(16)
        for high_v, state in ((9.0, PilotState.B), (6.0, PilotState.C), (3.0, PilotState.D),
                              (0.0, PilotState.E)):
            slave.channels[0] = [adc_v(high_v), adc_v(-12.0)]  # oscillating, diode present
            assert await next_event(q, PilotChanged) == PilotChanged(connector_id=1, state=state)
        slave.channels[0] = [adc_v(6.0), adc_v(-6.0)]  # no diode
        fault = await next_event(q, FaultChanged)
        assert isinstance(fault, FaultChanged) and fault.active and "diode" in fault.detail
        assert await next_event(q, PilotChanged) == PilotChanged(connector_id=1,
                                                                 state=PilotState.F)
        slave.channels[0] = [adc_v(9.0), adc_v(-12.0)]
        cleared = await next_event(q, FaultChanged)
        assert isinstance(cleared, FaultChanged) and not cleared.active
    finally:
        pilot.close()


async def test_sampler_debounces_a_short_glitch(adc_rig: tuple[MockFactory, MockMCP3008]) -> None:
    factory, slave = adc_rig
    slave.channels[0] = adc_v(12.0)
    q: asyncio.Queue[BoardEvent] = asyncio.Queue()
    adc = open_adc("mcp3008", 0, select_pin=8, vref_v=3.3, pin_factory=factory)
    cfg = PilotConfig(debounce_ms=2000, sample_interval_ms=1)
    pilot = LocalPilot(1, cfg, FakePwm(), adc)
    pilot.start(q.put_nowait, asyncio.get_running_loop())
    try:
        await next_event(q, PilotChanged)
        slave.channels[0] = adc_v(9.0)
        assert await asyncio.to_thread(pilot.wait_windows, 3, 2.0)
        slave.channels[0] = adc_v(12.0)  # back before the debounce time: nothing reported
        assert await asyncio.to_thread(pilot.wait_windows, 2, 2.0)
    finally:
        pilot.close()
    await asyncio.sleep(0)
    assert q.empty()


# --- issue 15: sysfs PWM waits for udev to hand the new attributes over ------------------------


class FakeUdev:
    """A sysfs tree where the exported channel's attributes become writable only after udev ran
    (the real race: udev changes their group a moment after export creates them).

    ``poll`` is the wait between two checks that SysfsPwm is given: each call is one tick of
    a fake clock, and udev acts after ``after_ticks`` of them. Nothing sleeps.
    """

    def __init__(self, root: Path, *, after_ticks: int | None) -> None:
        self.chip = root / "pwmchip0"
        self.chip.mkdir(parents=True)
        (self.chip / "export").write_text("")
        self.pwm = self.chip / "pwm0"
        self.after_ticks = after_ticks
        self.now_s = 0.0
        self.ticks = 0
        self.ready = False
        self.checked: list[str] = []
        # the kernel made the channel at once (export); udev has not run yet
        self.pwm.mkdir()
        for name in ("period", "duty_cycle", "enable"):
            (self.pwm / name).write_text("0\n")

    def clock(self) -> float:
        return self.now_s

    def poll(self, interval_s: float) -> None:
        self.ticks += 1
        self.now_s += interval_s
        if self.after_ticks is not None and self.ticks >= self.after_ticks:
            self.ready = True

    def writable(self, path: Path) -> bool:
        self.checked.append(path.name)
        return self.ready


def test_sysfs_pwm_waits_until_udev_made_period_writable(tmp_path: Path) -> None:
    udev = FakeUdev(tmp_path, after_ticks=3)
    pwm = SysfsPwm(chip=0, channel=0, root=tmp_path, writable=udev.writable, poll=udev.poll,
                   clock=udev.clock)
    assert udev.ticks == 3 and udev.ready
    assert "period" in udev.checked
    assert (udev.pwm / "period").read_text().strip() == str(PWM_PERIOD_NS)
    assert (udev.pwm / "enable").read_text().strip() == "1"
    pwm.close()


def test_sysfs_pwm_gives_up_after_a_bounded_wait_and_says_why(tmp_path: Path) -> None:
    udev = FakeUdev(tmp_path, after_ticks=None)  # udev never changes the group
    with pytest.raises(HardwareError) as info:
        SysfsPwm(chip=0, channel=0, root=tmp_path, writable=udev.writable, poll=udev.poll,
                 clock=udev.clock)
    assert "period" in str(info.value) and "not writable" in str(info.value)
    assert "gpio" in str(info.value)  # the group the udev rule hands the attributes to
    assert 1.0 <= udev.now_s <= 10.0  # bounded: gave up after seconds of the fake clock
    assert (udev.pwm / "period").read_text().strip() == "0"  # never written
