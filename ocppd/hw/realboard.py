"""The Raspberry Pi board (GPIO + pilot) and the factory that builds all real hardware."""

from __future__ import annotations

import asyncio
import logging
import warnings
from pathlib import Path
from typing import Any

from ocppd.config import Config, ConnectorConfig, HardwareConfig
from ocppd.errors import HardwareError
from ocppd.hw.base import BoardEvent, CardReader, Emit, Fault, FaultChanged, Hardware, Meter
from ocppd.hw.drivers import Driver
from ocppd.hw.gpio import ConnectorLock, Contactor, FaultInput, StatusLeds
from ocppd.hw.metermap import load_meter_map
from ocppd.hw.modbus import ModbusBus, ModbusMeter
from ocppd.hw.pilot import (
    DIODE_LOW_MAX_V,
    GpioPwm,
    LocalPilot,
    PilotPort,
    PwmOutput,
    SysfsPwm,
    open_adc,
)

log = logging.getLogger(__name__)

SYSFS_PWM_ROOT = Path("/sys/class/pwm")


# What a Raspberry Pi needs for gpiozero to drive pins, by distribution.
PIN_LIBRARY_HINT = ("install python3-lgpio (Raspberry Pi OS; the Pi 5 needs it) or "
                    "python3-rpi-lgpio; on Debian, gpiozero's native driver needs a Pi 1-4")


def _explain(exc: Exception) -> str:
    """One line for a pin library failure, with what to install or fix."""
    from gpiozero.exc import BadPinFactory

    if isinstance(exc, BadPinFactory):
        return f"no usable GPIO pin library: {PIN_LIBRARY_HINT}"
    if isinstance(exc, PermissionError):
        return f"{exc} (is user ocppd in group gpio? see the udev rule 60-ocppd.rules)"
    return f"{type(exc).__name__}: {exc}"


def _spi_kind(pilot: Any) -> str | None:
    """'hardware SPI' or 'software SPI' for a LocalPilot's ADC (gpiozero's SPI interface)."""
    iface = getattr(getattr(pilot, "adc", None), "_spi", None)
    if iface is None:
        return None
    # gpiozero 2.0: SPISoftware; 1.6: LocalPiSoftwareSPI, PiGPIOSoftwareSPI (and subclasses)
    software = any("Software" in cls.__name__ for cls in type(iface).__mro__)
    return "software SPI" if software else "hardware SPI"


def build_local_pilot(connector_id: int, conn: ConnectorConfig, *, pin_factory: Any = None,
                      pwm_root: Path = SYSFS_PWM_ROOT) -> LocalPilot:
    cfg = conn.pilot
    assert cfg is not None
    # The ADC first: with gpiozero's mock factory its SPI pins must exist before PWM pins.
    adc = open_adc(cfg.adc, cfg.adc_channel, select_pin=cfg.adc_select_pin,
                   vref_v=cfg.adc_vref_v, pin_factory=pin_factory)
    pp = (None if cfg.pp_adc_channel is None else
          open_adc(cfg.adc, cfg.pp_adc_channel, select_pin=cfg.adc_select_pin,
                   vref_v=cfg.adc_vref_v, pin_factory=pin_factory))
    pwm: PwmOutput
    if cfg.pwm == "sysfs":
        pwm = SysfsPwm(chip=cfg.pwm_chip, channel=cfg.pwm_channel, inverted=cfg.pwm_inverted,
                       root=pwm_root)
    else:
        pwm = GpioPwm(pin=cfg.pwm_pin, inverted=cfg.pwm_inverted, pin_factory=pin_factory)
    return LocalPilot(connector_id, cfg, pwm, adc, pp)


class GpioBoard:
    """hw.base.EvseBoard for N connectors wired to the Pi's GPIO.

    Connector ids are 1..N in the order of ``connectors``. The pilot of each connector is a
    ``PilotPort`` (see pilot.py): built from its [connectors.pilot] table by default, or passed
    in ``pilots`` (an external EVSE controller, a test double).
    """

    def __init__(self, connectors: list[ConnectorConfig], hardware: HardwareConfig, *,
                 pin_factory: Any = None, pwm_root: Path = SYSFS_PWM_ROOT,
                 pilots: dict[int, PilotPort] | None = None) -> None:
        self._emit: Emit | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.contactors: dict[int, Contactor] = {}
        self.locks: dict[int, ConnectorLock] = {}
        self.rcds: dict[int, FaultInput] = {}
        self.pilots: dict[int, PilotPort] = dict(pilots or {})
        self.estop: FaultInput | None = None
        self.leds: StatusLeds | None = None
        self._closables: list[Any] = []
        self._closed = False
        part = "hardware"  # the device being set up, for the one line that says what failed
        try:
            with warnings.catch_warnings(record=True) as fallbacks:
                # gpiozero warns once per pin library it could not load, and once when SPI
                # falls back to bit-banging; the log gets one line about the outcome instead.
                warnings.simplefilter("always")
                # Contactors first: their relays are created open (the safe state) before
                # anything.
                for cid, conn in enumerate(connectors, start=1):
                    if conn.contactor is not None:
                        part = f"connectors[{cid}].contactor GPIO{conn.contactor.pins[0]}"
                        self.contactors[cid] = Contactor(cid, conn.contactor,
                                                         pin_factory=pin_factory)
                for cid, conn in enumerate(connectors, start=1):
                    if conn.rcd is not None:
                        part = f"connectors[{cid}].rcd GPIO{conn.rcd.pin}"
                        self.rcds[cid] = FaultInput(
                            cid, Fault.GROUND_FAILURE, conn.rcd, pin_factory=pin_factory,
                            on_trip=lambda cid=cid: self._open_now(cid))  # type: ignore[misc]
                    if conn.lock is not None and conn.cable != "fixed":
                        part = f"connectors[{cid}].lock GPIO{conn.lock.lock_pin}"
                        self.locks[cid] = ConnectorLock(cid, conn.lock, pin_factory=pin_factory)
                    if conn.pilot is not None and cid not in self.pilots:
                        part = f"connectors[{cid}].pilot"
                        self.pilots[cid] = build_local_pilot(cid, conn, pin_factory=pin_factory,
                                                             pwm_root=pwm_root)
                if hardware.emergency_stop is not None:
                    part = f"hardware.emergency_stop GPIO{hardware.emergency_stop.pin}"
                    self.estop = FaultInput(0, Fault.EMERGENCY_STOP, hardware.emergency_stop,
                                            on_trip=self._open_all_now, pin_factory=pin_factory)
                if hardware.leds is not None:
                    part = "hardware.leds"
                    self.leds = StatusLeds(hardware.leds, pin_factory=pin_factory)
        except Exception as exc:
            self._release()
            if isinstance(exc, HardwareError):
                raise HardwareError(f"{part}: {exc}") from None
            raise HardwareError(f"{part}: {_explain(exc)}") from None
        self._log_backend(pin_factory, [str(w.message) for w in fallbacks])

    def _log_backend(self, pin_factory: Any, fallbacks: list[str]) -> None:
        """Say which pin library drives the pins and whether the pilot ADC has hardware SPI."""
        from gpiozero import Device

        factory = pin_factory if pin_factory is not None else Device.pin_factory
        name = type(factory).__name__ if factory is not None else "none"
        spi = [_spi_kind(p) for p in self.pilots.values()]
        spi_text = ", ".join(sorted({k for k in spi if k})) or "no SPI devices"
        log.info("GPIO: pin factory %s; pilot ADC over %s", name, spi_text)
        for text in fallbacks:
            log.debug("GPIO: %s", text)

    # --- set-up check (the installer's web page, ocppctl check) ------------------------------

    def diagnostics(self, connector_id: int) -> dict[str, tuple[str, str, str]]:
        """The raw inputs of a connector: name -> (reading, verdict, why); verdict is "ok",
        "problem" or "unknown"."""
        out: dict[str, tuple[str, str, str]] = {}
        pilot = self.pilots.get(connector_id)
        levels = getattr(pilot, "levels_v", None)
        if levels is not None:
            high, low = levels
            # IEC 61851-1 Table A.4: +12/+9/+6/+3 V plateaus, ±1 V
            near = min(abs(high - nominal) for nominal in (12.0, 9.0, 6.0, 3.0))
            out["pilot high level"] = (f"{high:+.1f} V", "ok" if near <= 1.0 else "problem",
                                       "on a nominal level (±1 V)" if near <= 1.0
                                       else "between nominal levels: check the front end")
            if high - low > 3.0:  # oscillating: the EV's diode clamps the low plateau
                ok = low <= DIODE_LOW_MAX_V
                out["pilot low level"] = (f"{low:+.1f} V", "ok" if ok else "problem",
                                          "-12 V: the EV's diode is there" if ok
                                          else "above -10 V: diode missing or shorted")
        contactor = self.contactors.get(connector_id)
        if contactor is not None:
            if contactor.feedback is None:
                out["contactor feedback input"] = ("not wired", "unknown",
                                                   "no feedback_pin configured")
            else:
                closed = bool(contactor.feedback.is_active)
                agrees = closed == contactor.commanded_closed
                out["contactor feedback input"] = (
                    "closed" if closed else "open", "ok" if agrees else "problem",
                    "agrees with the command" if agrees else
                    f"commanded {'closed' if contactor.commanded_closed else 'open'}")
        lock = self.locks.get(connector_id)
        if lock is not None and lock.feedback is not None:
            locked = bool(lock.feedback.is_active)
            out["lock feedback input"] = ("locked" if locked else "unlocked",
                                          "problem" if lock.failed else "ok",
                                          "the last move failed" if lock.failed else
                                          "the last move reached its position")
        rcd = self.rcds.get(connector_id)
        if rcd is not None:
            out["RCD input"] = ("tripped" if rcd.tripped else "normal",
                                "problem" if rcd.tripped else "ok", "")
        if self.estop is not None:
            out["emergency stop input"] = ("pressed" if self.estop.tripped else "released",
                                           "problem" if self.estop.tripped else "ok", "")
        return out

    # --- safety paths (any thread) ------------------------------------------------------------

    def _open_now(self, connector_id: int) -> None:
        contactor = self.contactors.get(connector_id)
        if contactor is not None:
            contactor.set(False)

    def _open_all_now(self) -> None:
        for contactor in self.contactors.values():
            contactor.set(False)

    def _blocked(self, connector_id: int) -> str | None:
        if self.estop is not None and self.estop.tripped:
            return "emergency stop"
        rcd = self.rcds.get(connector_id)
        if rcd is not None and rcd.tripped:
            return "RCD tripped"
        return None

    # --- EvseBoard ----------------------------------------------------------------------------

    async def start(self, emit: Emit) -> None:
        self._open_all_now()  # first thing, whatever state a previous run left behind
        loop = asyncio.get_running_loop()
        self._emit, self._loop = emit, loop

        def report(event: BoardEvent) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(emit, event)

        for contactor in self.contactors.values():
            contactor.start(loop, report)
        if self.estop is not None:
            self.estop.start(report)
        for rcd in self.rcds.values():
            rcd.start(report)
        for pilot in self.pilots.values():
            pilot.start(emit, loop)

    async def close(self) -> None:
        if self._closed:  # the contract: close() may be called again (devices are gone)
            return
        self._open_all_now()
        self._release()
        self._closed = True

    def _release(self) -> None:
        for pilot in self.pilots.values():
            pilot.close()
        for part in [*self.contactors.values(), *self.locks.values(), *self.rcds.values(),
                     self.estop, self.leds]:
            if part is not None:
                part.close()

    def set_contactor(self, connector_id: int, closed: bool) -> None:
        contactor = self.contactors.get(connector_id)
        if contactor is None:
            raise HardwareError(f"connector {connector_id} has no contactor")
        if closed:
            why = self._blocked(connector_id)
            if why is not None:  # a hardware interlock, whatever the core decided
                log.error("connector %d: refusing to close the contactor: %s", connector_id, why)
                closed = False
        contactor.set(closed)

    def set_offer(self, connector_id: int, current_a: float | None) -> None:
        self._pilot(connector_id).set_offer(current_a)

    def set_pilot_error(self, connector_id: int) -> None:
        self._pilot(connector_id).set_error()

    def _pilot(self, connector_id: int) -> PilotPort:
        pilot = self.pilots.get(connector_id)
        if pilot is None:
            raise HardwareError(f"connector {connector_id} has no pilot")
        return pilot

    async def lock(self, connector_id: int, locked: bool) -> bool:
        lock = self.locks.get(connector_id)
        if lock is None:
            return True  # nothing to lock (fixed cable): the requested state holds trivially

        def report(event: FaultChanged) -> None:
            if self._emit is not None:
                self._emit(event)

        return await lock.set(locked, report)

    def has_lock(self, connector_id: int) -> bool:
        return connector_id in self.locks

    def set_leds(self, ready: bool, charging: bool, fault: bool) -> None:
        if self.leds is not None:
            self.leds.set(ready=ready, charging=charging, fault=fault)


def build_buses_meters_readers(cfg: Config) -> tuple[dict[str, ModbusBus], dict[int, Meter],
                                                     list[CardReader]]:
    """The parts every real driver shares: one ModbusBus per [buses.NAME] in use (the single
    owner of its line, whatever else talks on it), a meter per connector that names one, and
    the card readers."""
    from ocppd.hw.rfid import make_reader

    buses: dict[str, ModbusBus] = {}
    meters: dict[int, Meter] = {}
    for cid, conn in enumerate(cfg.connectors, start=1):
        if conn.meter is None:
            continue
        mcfg = cfg.meters[conn.meter]
        bus = buses.get(mcfg.bus)
        if bus is None:
            bus = buses[mcfg.bus] = ModbusBus(cfg.buses[mcfg.bus], name=mcfg.bus)
        meters[cid] = ModbusMeter(bus, load_meter_map(mcfg.model), unit_id=mcfg.unit_id,
                                  name=conn.meter)
    readers: list[CardReader] = [make_reader(r) for r in cfg.rfid]
    return buses, meters, readers


def build_real_hardware(cfg: Config, *, pin_factory: Any = None,
                        pwm_root: Path = SYSFS_PWM_ROOT) -> Hardware:
    """Board, meters (one ModbusBus per [buses.NAME]) and card readers from the configuration."""
    buses, meters, readers = build_buses_meters_readers(cfg)
    board = GpioBoard(cfg.connectors, cfg.hardware, pin_factory=pin_factory, pwm_root=pwm_root)
    return Hardware(board=board, meters=meters, readers=readers,
                    extra_closers=[bus.close for bus in buses.values()])


def _build(cfg: Config, options: object) -> Hardware:
    return build_real_hardware(cfg)


DRIVER = Driver(
    name="gpio",
    summary="a Raspberry Pi generating the pilot and switching the contactor on its GPIO",
    build=_build,
    fail_safe=("relays are driven only while ocppd holds the pins: when it stops, the pins "
               "are released and the relay drivers fall back to open (wire them so)"),
)
