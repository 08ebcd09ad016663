"""GPIO parts of a Raspberry Pi charger: contactor relays with feedback, connector lock,
RCD and emergency-stop inputs, status LEDs. All through gpiozero with a ``pin_factory``
argument (None: gpiozero's default), so tests run on gpiozero's MockFactory.

gpiozero calls input callbacks on its own thread. Safety reactions (opening a contactor on an
RCD trip or an emergency stop) happen right there, in the driver, without a round trip through
the event loop; the event that tells the core is handed over with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from gpiozero import LED, DigitalInputDevice, OutputDevice

from ocppd.config import ContactorConfig, InputConfig, LedConfig, LockConfig
from ocppd.hw.base import Fault, FaultChanged

log = logging.getLogger(__name__)

Report = Callable[[FaultChanged], None]  # thread-safe: hands the event to the loop


def _kw(pin_factory: Any) -> dict[str, Any]:
    return {} if pin_factory is None else {"pin_factory": pin_factory}


def _input(pin: int, active_high: bool, pin_factory: Any) -> DigitalInputDevice:
    # The internal pull holds the pin at its inactive level when the contact is open.
    return DigitalInputDevice(pin, pull_up=not active_high, **_kw(pin_factory))


class Contactor:
    """One connector's contactor: one or more relays switched together, optional feedback.

    A feedback contact that disagrees with the command for longer than feedback_delay_ms is a
    welded contact (closed while commanded open) or a stuck-open one (the reverse).
    """

    def __init__(self, connector_id: int, cfg: ContactorConfig, *, pin_factory: Any = None
                 ) -> None:
        self.connector_id = connector_id
        self.cfg = cfg
        self.relays = [OutputDevice(p, active_high=cfg.active_high, initial_value=False,
                                    **_kw(pin_factory)) for p in cfg.pins]
        self.feedback = (None if cfg.feedback_pin is None else
                         _input(cfg.feedback_pin, cfg.feedback_active_high, pin_factory))
        self.commanded_closed = False
        self.fault: Fault | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._report: Report | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._mutex = threading.Lock()  # relays are switched from loop and gpiozero threads

    def start(self, loop: asyncio.AbstractEventLoop, report: Report) -> None:
        self._loop, self._report = loop, report
        if self.feedback is not None:
            self.feedback.when_activated = self._feedback_changed
            self.feedback.when_deactivated = self._feedback_changed
        self._arm_threadsafe()

    def set(self, closed: bool) -> None:
        with self._mutex:
            self.commanded_closed = closed
            for relay in self.relays:
                relay.value = closed
        self._arm_threadsafe()

    @property
    def feedback_closed(self) -> bool | None:
        return None if self.feedback is None else bool(self.feedback.is_active)

    def _feedback_changed(self) -> None:  # gpiozero thread
        self._arm_threadsafe()

    def _arm_threadsafe(self) -> None:
        if self._loop is not None and self.feedback is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._arm)

    def _arm(self) -> None:  # loop thread: (re)start the feedback delay
        if self._timer is not None:
            self._timer.cancel()
        assert self._loop is not None
        self._timer = self._loop.call_later(self.cfg.feedback_delay_ms / 1000.0, self._check)

    def _check(self) -> None:
        self._timer = None
        seen = self.feedback_closed
        if seen is None or self._report is None:
            return
        new: Fault | None = None
        if seen != self.commanded_closed:
            new = Fault.CONTACTOR_WELDED if seen else Fault.CONTACTOR_STUCK_OPEN
        if new == self.fault:
            return
        if self.fault is not None:
            self._report(FaultChanged(connector_id=self.connector_id, fault=self.fault,
                                      active=False))
        if new is not None:
            state = "closed" if seen else "open"
            want = "closed" if self.commanded_closed else "open"
            log.error("connector %d: contactor feedback says %s, commanded %s",
                      self.connector_id, state, want)
            self._report(FaultChanged(connector_id=self.connector_id, fault=new, active=True,
                                      detail=f"feedback {state}, commanded {want}"))
        self.fault = new

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.set(False)
        for dev in [*self.relays, self.feedback]:
            if dev is not None:
                dev.close()


class ConnectorLock:
    """Socket lock actuator.

    With ``unlock_pin``: a motor (or bistable solenoid) driven by a ``pulse_ms`` pulse on the
    lock or the unlock pin. Without it: a monostable solenoid held energised on ``lock_pin``
    while locked; ``pulse_ms`` is then its travel time. ``feedback_pin``, when present, must
    report the requested state after the pulse, or the lock failed.
    """

    def __init__(self, connector_id: int, cfg: LockConfig, *, pin_factory: Any = None) -> None:
        self.connector_id = connector_id
        self.cfg = cfg
        kw = _kw(pin_factory)
        self.lock_out = OutputDevice(cfg.lock_pin, active_high=cfg.active_high,
                                     initial_value=False, **kw)
        self.unlock_out = (None if cfg.unlock_pin is None else
                           OutputDevice(cfg.unlock_pin, active_high=cfg.active_high,
                                        initial_value=False, **kw))
        self.feedback = (None if cfg.feedback_pin is None else
                         _input(cfg.feedback_pin, cfg.feedback_active_high, pin_factory))
        self.failed = False

    async def set(self, locked: bool, report: Report | None) -> bool:
        pulse_s = self.cfg.pulse_ms / 1000.0
        if self.unlock_out is None:
            self.lock_out.value = locked
            await asyncio.sleep(pulse_s)
        else:
            out = self.lock_out if locked else self.unlock_out
            other = self.unlock_out if locked else self.lock_out
            other.off()  # never drive the motor both ways
            out.on()
            try:
                await asyncio.sleep(pulse_s)
            finally:
                out.off()
        ok = self.feedback is None or bool(self.feedback.is_active) == locked
        if ok != (not self.failed) and report is not None:
            detail = "" if ok else f"feedback did not reach {'locked' if locked else 'unlocked'}"
            report(FaultChanged(connector_id=self.connector_id, fault=Fault.LOCK_FAILURE,
                                active=not ok, detail=detail))
        self.failed = not ok
        return ok

    def close(self) -> None:
        for dev in (self.lock_out, self.unlock_out, self.feedback):
            if dev is not None:
                dev.close()


class FaultInput:
    """An RCD / ground-fault monitor or emergency-stop input.

    ``on_trip`` runs on the gpiozero thread the moment the input activates: it must only do
    thread-safe, immediate things (open relays). The FaultChanged event follows via ``report``.
    """

    def __init__(self, connector_id: int, fault: Fault, cfg: InputConfig, *,
                 on_trip: Callable[[], None], pin_factory: Any = None) -> None:
        self.connector_id = connector_id
        self.fault = fault
        self.device = _input(cfg.pin, cfg.active_high, pin_factory)
        self._on_trip = on_trip
        self._report: Report | None = None
        self._active = False
        self._mutex = threading.Lock()

    @property
    def tripped(self) -> bool:
        return bool(self.device.is_active)

    def start(self, report: Report) -> None:
        self._report = report
        self.device.when_activated = self._changed
        self.device.when_deactivated = self._changed
        self._changed()  # a fault already present at start counts

    def _changed(self) -> None:
        active = self.tripped
        if active:
            self._on_trip()  # first, before anything else
        with self._mutex:
            if active == self._active:
                return
            self._active = active
        if active:
            log.error("connector %d: %s input tripped", self.connector_id, self.fault.value)
        else:
            log.warning("connector %d: %s input cleared", self.connector_id, self.fault.value)
        if self._report is not None:
            self._report(FaultChanged(connector_id=self.connector_id, fault=self.fault,
                                      active=active))

    def close(self) -> None:
        self.device.close()


class StatusLeds:
    """Ready / charging / fault lamps; pins that are not configured are skipped."""

    def __init__(self, cfg: LedConfig, *, pin_factory: Any = None) -> None:
        kw = _kw(pin_factory)
        self.leds = {name: LED(pin, active_high=cfg.active_high, **kw)
                     for name, pin in (("ready", cfg.ready_pin), ("charging", cfg.charging_pin),
                                       ("fault", cfg.fault_pin)) if pin is not None}

    def set(self, *, ready: bool, charging: bool, fault: bool) -> None:
        for name, on in (("ready", ready), ("charging", charging), ("fault", fault)):
            led = self.leds.get(name)
            if led is not None:
                led.value = on

    def close(self) -> None:
        for led in self.leds.values():
            led.close()
