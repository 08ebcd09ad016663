"""Control pilot on a Raspberry Pi: 1 kHz PWM out, an MCP3008/MCP3004 reading it back.

The pure part (duty from current, state from plateau voltages, debounce, proximity pilot
rating) has no I/O and is tested exhaustively. The I/O part is a ``PilotPort``: ``LocalPilot``
drives the PWM (kernel hardware PWM under /sys/class/pwm, or a gpiozero PWMOutputDevice) and
samples the ADC in a thread.

A pilot run by a separate EVSE controller board (an MCU over serial or Modbus, as most
production designs do) plugs in as another ``PilotPort``: its ``set_offer``/``set_error`` send
the duty or current to the controller, and a reader task turns the controller's state reports
into the same ``PilotChanged``/``CableRating``/``FaultChanged`` events through ``emit``.
``GpioBoard`` takes a ``pilots`` mapping, so nothing above it changes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ocppd.config import PilotConfig
from ocppd.errors import HardwareError
from ocppd.hw.base import CableRating, Emit, Fault, FaultChanged, PilotChanged, PilotState

log = logging.getLogger(__name__)

PWM_FREQUENCY_HZ = 1000  # IEC 61851-1 Annex A: 1 kHz pilot
PWM_PERIOD_NS = 1_000_000
MIN_CURRENT_A = 6.0  # IEC 61851-1 Table A.7: lowest current a duty cycle can signal
MAX_CURRENT_A = 80.0
# Offer 0 A ("charging not allowed now"): IEC 61851-1 Table A.8 reads a duty above 97 % as
# "no charging allowed". We keep oscillating at 98 % rather than dropping to a steady +12 V, so
# the EV stays awake in B2 and resumes at once when current is offered again; the high plateau
# stays measurable (the low one is too short for the diode check, which is then skipped).
# The low side (< 3 %) is avoided: 3-7 % means ISO 15118 digital communication, and a 20 us high
# pulse would be missed by the ADC, hiding an unplug.
PAUSE_DUTY = 0.98
DIODE_CHECK_MAX_DUTY = 0.90  # above this the low plateau is too short to sample reliably
SAMPLES_PER_WINDOW = 64  # ADC reads per window; at >10 kS/s that spans several 1 ms periods

# State thresholds on the high plateau (V), as used by public Pi EVSE designs (A/B 10.5,
# B/C 7.5, C/D 4.5) for the IEC 61851-1 nominal levels +12/+9/+6/+3/0/-12 V.
THRESHOLDS_V = ((10.5, PilotState.A), (7.5, PilotState.B), (4.5, PilotState.C),
                (1.5, PilotState.D), (-1.5, PilotState.E))
# Diode check: while oscillating, the low plateau must be near -12 V (EV diode present).
DIODE_LOW_MAX_V = -10.0

# Proximity pilot (IEC 61851-1 Annex B, Table B.2): cable resistor Rc -> current capacity.
PP_NOMINAL_OHMS = ((1500.0, 13.0), (680.0, 20.0), (220.0, 32.0), (100.0, 63.0))
# Decision limits: geometric midpoints between neighbouring nominal values, an open circuit
# above 3 x 1.5 kOhm and a short below 50 Ohm.
PP_OPEN_OHMS = 4500.0
PP_SHORT_OHMS = 50.0
# Not in PilotConfig yet: the PP front end (pull-up to the ADC reference).
PP_PULLUP_OHMS = 1000.0


def duty_for_offer(current_a: float | None) -> float:
    """PWM duty (0..1) for an offer. None: steady +12 V (1.0). 0: pause (PAUSE_DUTY).

    IEC 61851-1 Table A.7 / SAE J1772: 6-51 A -> duty % = A / 0.6; 52.5-80 A -> A / 2.5 + 64.
    Offers between 0 and 6 A are raised to 6 A (the core should not send them), above 80 A
    clamped to 80 A.
    """
    if current_a is None:
        return 1.0
    if current_a <= 0:
        return PAUSE_DUTY
    amps = min(max(current_a, MIN_CURRENT_A), MAX_CURRENT_A)
    if amps <= 51.0:
        pct = amps / 0.6
    elif amps <= 52.5:
        # The EV reads 85 % as 51 A and only duty > 85 % through the high-band formula
        # (> 52.5 A): a current in between cannot be signalled, so offer 51 A, never more.
        pct = 85.0
    else:
        pct = amps / 2.5 + 64.0
    return pct / 100.0


def classify(high_v: float, low_v: float, *, oscillating: bool) -> tuple[PilotState, bool]:
    """Pilot state from the plateaus of one window -> (state, diode_ok).

    The state comes from the high plateau; when the EVSE oscillates and an EV is plugged
    (B/C/D), a low plateau above DIODE_LOW_MAX_V means the EV's diode is missing or shorted,
    which IEC 61851-1 treats as state F.
    """
    state = PilotState.F
    for limit_v, candidate in THRESHOLDS_V:
        if high_v > limit_v:
            state = candidate
            break
    if oscillating and state.plugged and low_v > DIODE_LOW_MAX_V:
        return PilotState.F, False
    return state, True


def adc_to_pilot_v(adc_v: float, offset_v: float, gain: float) -> float:
    """Front end: pilot volts = (ADC volts - offset) * gain (PilotConfig.adc_offset_v/adc_gain)."""
    return (adc_v - offset_v) * gain


def pp_resistance_ohms(adc_v: float, supply_v: float, pullup_ohms: float = PP_PULLUP_OHMS
                       ) -> float:
    """Rc from the divider pull-up -> Rc -> PE. Infinite when the input sits at the supply."""
    if adc_v >= supply_v:
        return float("inf")
    return pullup_ohms * max(adc_v, 0.0) / (supply_v - adc_v)


def cable_rating_a(ohms: float) -> float | None:
    """IEC 61851-1 Table B.2 cable capacity for a PP resistance; None: no/invalid cable."""
    if ohms >= PP_OPEN_OHMS or ohms < PP_SHORT_OHMS:
        return None
    for (r_hi, amps), (r_lo, _) in zip(PP_NOMINAL_OHMS, PP_NOMINAL_OHMS[1:], strict=False):
        if ohms >= (r_hi * r_lo) ** 0.5:
            return amps
    return PP_NOMINAL_OHMS[-1][1]


_UNSET: Any = object()


@dataclass(slots=True)
class Debouncer:
    """A value must be seen for ``hold_s`` before it is reported; the very first one at once."""

    hold_s: float
    reported: Any = _UNSET
    _candidate: Any = _UNSET
    _since: float = 0.0

    def update(self, value: Any, now: float) -> bool:
        """Feed one observation; True when ``reported`` changed."""
        if self.reported is _UNSET:
            self.reported = value
            return True
        if value == self.reported:
            self._candidate = _UNSET
            return False
        if value != self._candidate:
            self._candidate, self._since = value, now
        if now - self._since >= self.hold_s:
            self.reported, self._candidate = value, _UNSET
            return True
        return False


# --- PWM outputs ----------------------------------------------------------------------------------


class PwmOutput(Protocol):
    def set_duty(self, duty: float) -> None: ...

    def close(self) -> None: ...


# After ``export`` the kernel creates pwmM/ owned by root; udev then hands its attributes to
# group gpio (60-ocppd.rules). Until it has, a write as user ocppd fails: wait for it, bounded.
ATTRIBUTE_WAIT_S = 5.0
ATTRIBUTE_POLL_S = 0.05


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK)


class SysfsPwm:
    """Kernel hardware PWM (/sys/class/pwm/pwmchipN/pwmM), e.g. ``dtoverlay=pwm,pin=18,func=2``.

    ``root`` is a constructor argument so tests can point it at a directory with the same files;
    ``writable``, ``poll`` and ``clock`` let them stand in for udev and for time.
    """

    def __init__(self, *, chip: int = 0, channel: int = 0, inverted: bool = False,
                 root: Path = Path("/sys/class/pwm"),
                 writable: Callable[[Path], bool] = _writable,
                 poll: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.inverted = inverted
        chip_dir = root / f"pwmchip{chip}"
        self.dir = chip_dir / f"pwm{channel}"
        try:
            if not self.dir.is_dir():
                (chip_dir / "export").write_text(f"{channel}\n")
            if not self.dir.is_dir():
                raise HardwareError(f"{self.dir}: not created by export (is the PWM overlay on?)")
            self._wait_writable(("period", "duty_cycle", "enable"), writable, poll, clock)
            duty_now = int((self.dir / "duty_cycle").read_text().strip() or 0)
            if duty_now > PWM_PERIOD_NS:  # duty_cycle must never exceed period
                self._write("duty_cycle", 0)
            self._write("period", PWM_PERIOD_NS)
        except OSError as exc:
            raise HardwareError(f"PWM {chip_dir}: {exc}") from None
        self.set_duty(1.0)  # safe: steady +12 V, nothing offered
        self._write("enable", 1)

    def _wait_writable(self, names: tuple[str, ...], writable: Callable[[Path], bool],
                       poll: Callable[[float], None], clock: Callable[[], float]) -> None:
        """Return once every attribute is writable; raise after ATTRIBUTE_WAIT_S. Blocking on
        purpose: this runs once, while the hardware is set up, before the event loop works."""
        deadline = clock() + ATTRIBUTE_WAIT_S
        for name in names:
            path = self.dir / name
            while not writable(path):
                if clock() >= deadline:
                    raise HardwareError(
                        f"{path}: not writable after {ATTRIBUTE_WAIT_S:.0f} s (the udev rule "
                        "60-ocppd.rules gives it to group gpio: is it installed, and is user "
                        "ocppd in group gpio?)")
                poll(ATTRIBUTE_POLL_S)

    def _write(self, name: str, value: int) -> None:
        (self.dir / name).write_text(f"{value}\n")

    def set_duty(self, duty: float) -> None:
        if self.inverted:
            duty = 1.0 - duty
        try:
            self._write("duty_cycle", round(duty * PWM_PERIOD_NS))
        except OSError as exc:
            raise HardwareError(f"PWM {self.dir}: {exc}") from None

    def close(self) -> None:
        # Leave the output at steady +12 V (duty 100 %): "no offer" is the safe state.
        self.set_duty(1.0)


class GpioPwm:
    """gpiozero PWMOutputDevice at 1 kHz (software or pigpio PWM, depending on the factory)."""

    def __init__(self, *, pin: int, inverted: bool = False, pin_factory: Any = None) -> None:
        from gpiozero import PWMOutputDevice

        self.device = PWMOutputDevice(pin, active_high=not inverted, initial_value=1.0,
                                      frequency=PWM_FREQUENCY_HZ, pin_factory=pin_factory)

    def set_duty(self, duty: float) -> None:
        self.device.value = duty

    def close(self) -> None:
        self.device.value = 1.0
        self.device.close()


# --- ADC ----------------------------------------------------------------------------------------


def open_adc(kind: str, channel: int, *, select_pin: int, vref_v: float,
             pin_factory: Any = None) -> Any:
    from gpiozero import MCP3004, MCP3008

    cls = MCP3004 if kind == "mcp3004" else MCP3008
    kwargs: dict[str, Any] = {"channel": channel, "max_voltage": vref_v}
    if pin_factory is not None:  # gpiozero 1.6 devices take pin_factory only as a keyword
        kwargs["pin_factory"] = pin_factory
    return cls(select_pin=select_pin, **kwargs)


# --- the pilot port -------------------------------------------------------------------------------


class PilotPort(Protocol):
    """One connector's pilot, wherever it is generated and measured."""

    def start(self, emit: Emit, loop: asyncio.AbstractEventLoop) -> None: ...

    def set_offer(self, current_a: float | None) -> None: ...

    def set_error(self) -> None: ...

    def close(self) -> None: ...


class LocalPilot:
    """PWM + ADC on the Pi; sampling in a thread, events to the loop via call_soon_threadsafe."""

    def __init__(self, connector_id: int, cfg: PilotConfig, pwm: PwmOutput, adc: Any,
                 pp_adc: Any = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.connector_id = connector_id
        self.cfg = cfg
        self.pwm = pwm
        self.adc = adc
        self.pp_adc = pp_adc
        self._clock = clock
        self._duty = 1.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._debounce = Debouncer(cfg.debounce_ms / 1000.0)
        self._pp_debounce = Debouncer(cfg.debounce_ms / 1000.0)
        self._diode_fault = False
        self.windows = 0  # sample windows processed (for tests and diagnostics)
        self.levels_v: tuple[float, float] | None = None  # last (high, low) plateau, set-up check
        self._window_done = threading.Condition()

    def start(self, emit: Emit, loop: asyncio.AbstractEventLoop) -> None:
        def send(event: Any) -> None:
            loop.call_soon_threadsafe(emit, event)

        self._send = send
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"ocppd-pilot-{self.connector_id}")
        self._thread.start()

    def set_offer(self, current_a: float | None) -> None:
        self._duty = duty_for_offer(current_a)
        self.pwm.set_duty(self._duty)

    def set_error(self) -> None:
        self._duty = 0.0  # steady -12 V: state F (IEC 61851-1)
        self.pwm.set_duty(0.0)

    def wait_windows(self, count: int, timeout_s: float) -> bool:
        """Block until ``count`` more sample windows were processed (tests, diagnostics)."""
        with self._window_done:
            target = self.windows + count
            return self._window_done.wait_for(lambda: self.windows >= target, timeout_s)

    def _run(self) -> None:
        interval_s = self.cfg.sample_interval_ms / 1000.0
        failing = False
        while not self._stop.is_set():
            try:
                self.sample_once()
                if failing:
                    log.warning("pilot %d: ADC readable again", self.connector_id)
                failing = False
            except Exception as exc:  # noqa: BLE001 - a sampling thread must not die
                if not failing:
                    log.error("pilot %d: ADC read failed: %s", self.connector_id, exc)
                failing = True
            self._stop.wait(interval_s)

    def sample_once(self) -> None:
        vref = self.cfg.adc_vref_v
        volts = [adc_to_pilot_v(self.adc.value * vref, self.cfg.adc_offset_v, self.cfg.adc_gain)
                 for _ in range(SAMPLES_PER_WINDOW)]
        duty = self._duty
        oscillating = 0.0 < duty < DIODE_CHECK_MAX_DUTY
        state, diode_ok = classify(max(volts), min(volts), oscillating=oscillating)
        self.levels_v = (max(volts), min(volts))
        now = self._clock()
        if self._debounce.update(state, now):
            reported = self._debounce.reported
            fault = reported is PilotState.F and not diode_ok
            if fault != self._diode_fault:
                self._diode_fault = fault
                self._send(FaultChanged(connector_id=self.connector_id, fault=Fault.PILOT_FAULT,
                                        active=fault, detail="diode check failed" if fault else ""))
            self._send(PilotChanged(connector_id=self.connector_id, state=reported))
        if self.pp_adc is not None:
            ohms = pp_resistance_ohms(self.pp_adc.value * vref, vref)
            if self._pp_debounce.update(cable_rating_a(ohms), now):
                self._send(CableRating(connector_id=self.connector_id,
                                       max_current_a=self._pp_debounce.reported))
        with self._window_done:
            self.windows += 1
            self._window_done.notify_all()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        self.pwm.close()
        for dev in (self.adc, self.pp_adc):
            if dev is not None:
                dev.close()
