"""EVSE WB / EVSE DIN controller boards over Modbus RTU: the ``evse_wb`` driver.

(A little above 400 lines: the register map, its quirks and the poll loop that enforces them
are one board's story; split, the quirks would be read apart from the registers they concern.)

On these boards a small MCU generates the control pilot, reads the vehicle state and the cable's
proximity resistor, checks the EV's diode and an optional RCD, and switches the contactor relay
itself. The Pi tells it how much current to offer and whether it may charge at all. Many
Pi-based DIY and small commercial wallboxes (openWB, EVSE-WiFi) are built on them.

Origin of the register map: the maker's datasheet "EVSE Wallbox, DIN, W16" (EVSE-WB-DIN,
evracing.cz, revisions of 2019 and 2020, section "Modbus registers"), the document that
public integrations of these boards cite; the facts below were cross-checked against several
of those independent integrations. Holding registers, read with function 3 and written with
function 16, one unit id per board (1 by default), 9600 baud 8N1:

====  ===  ==================================================================================
1000  R/W  current to offer, whole amperes; volatile; 0 = no PWM (steady +12 V)
1001  R    current the PWM output signals now
1002  R    vehicle state: 1 ready (A), 2 EV present (B), 3 charging (C), 4 charging with
           ventilation (D), 5 failure (diode check, RCD)
1003  R    current limit of the plugged cable (proximity pilot), amperes
1004  R/W  commands: bit0 turn off charging now, bit1 run the RCD test, bit2 clear RCD error
1005  R    firmware revision
1006  R    EVSE state: 1 steady +12 V, 2 PWM on, 3 off
1007  R    status and fails: bit0 relay on, bit1 diode check failed, bit2 ventilation
           required but refused, bit3 waiting for pilot release (error recovery delay),
           bit4 RCD test in progress, bit5 RCD check error
2000  R/W  current offered after the board powers up (EEPROM)
2002  R/W  minimum current the board will offer (EEPROM)
2005  R/W  configuration bits (EEPROM); bit13 disable the EVSE after a charge, bit14 EVSE
           disabled (no charging at all)
====  ===  ==================================================================================

How the contract (hw/base.py) maps onto the board, and the board's quirks:

- ``set_offer``: register 1000. The board cannot offer less than its minimum (2002): an offer
  below it becomes 0 (nothing offered), never rounded up past a limit; fractions are cut, not
  rounded. There is no "pause" duty: an offer of 0 is no PWM, and the EV pauses just the same.
- ``set_contactor``: the board closes its own relay when the EV asks (C/D) while it offers
  current. The core offers current only to a session it will close for, and closes as the EV
  asks; its "open" reaches the board as bit0 of 1004 ("turn off charging now"), set whenever
  nothing is offered or the core holds the contactor open while the EV asks (``off_bit``).
- Enable/disable: a board disabled by 2005 bit14 (set by an installer, or by the board itself
  after a charge when bit13 is set) offers nothing. The driver clears bit14 at start-up and
  whenever the core wants to offer current; it writes the EEPROM registers (2000, 2005) only
  when they differ, so a session costs at most one EEPROM write.
- Faults: 1007 bit1 -> PILOT_FAULT, bit2 -> OTHER, bit5 -> GROUND_FAILURE; vehicle state 5
  ("failure") is pilot state F only when no error bit explains it. The board opens its relay
  on these itself; the driver also sets the off bit at once, before it reports the fault.
  Older firmware reported the RCD error in bit4, where newer firmware reports a test in
  progress; this driver reads the newer layout.
- The board answers 1000 with what it holds: a value other than the one written (the board was
  reset, another master wrote) is written again at the next poll.

Fail-safe (contract obligation 6). The board has no Modbus watchdog. If the line to it dies,
the driver reports ``BOARD_LINK_LOST`` after ``link_timeout_s`` and, when the board answers
again, writes "off" and 0 A before anything else. If ocppd stops: with no session, register 1000
is 0 and the off bit set, so the board starts nothing; the driver sets 2000 (current after a
power cut) to 0, so a reset board comes up offering nothing. A session in progress goes on at
its last offer (which was within every limit when written) until the EV stops or is unplugged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ocppd.config import Config
from ocppd.errors import HardwareError
from ocppd.hw.base import (
    CableRating,
    Emit,
    Fault,
    FaultChanged,
    Hardware,
    PilotChanged,
    PilotState,
)
from ocppd.hw.drivers import Driver, Problems, setting
from ocppd.hw.modbus import ModbusBus
from ocppd.hw.realboard import build_buses_meters_readers
from ocppd.tasks import wait_event, within

log = logging.getLogger(__name__)

# --- the register map (see the module docstring for its origin) ---------------------------------
REG_CURRENT = 1000
REG_VEHICLE_STATE = 1002
REG_COMMANDS = 1004
REG_STATUS = 1007
REG_BOOT_CURRENT = 2000
REG_MIN_CURRENT = 2002
REG_CONFIG = 2005
RUNTIME_BLOCK = (REG_CURRENT, 8)  # 1000..1007 in one read
CONFIG_BLOCK = (REG_BOOT_CURRENT, 6)  # 2000..2005 in one read

EVSE_STATE_PWM = 2  # 1006
CMD_TURN_OFF = 1 << 0
STATUS_RELAY_ON = 1 << 0
STATUS_DIODE_FAIL = 1 << 1
STATUS_VENT_FAIL = 1 << 2
STATUS_RCD_ERROR = 1 << 5
CONFIG_DISABLE_AFTER_CHARGE = 1 << 13
CONFIG_DISABLED = 1 << 14

VEHICLE_STATES = {1: PilotState.A, 2: PilotState.B, 3: PilotState.C, 4: PilotState.D,
                  5: PilotState.F}
# 1007 bit -> (fault, detail). Several bits may name one fault: it is active while any is set.
STATUS_FAULTS = (
    (STATUS_DIODE_FAIL, Fault.PILOT_FAULT, "diode check failed"),
    (STATUS_VENT_FAIL, Fault.OTHER, "EV needs ventilation, charging in state D refused"),
    (STATUS_RCD_ERROR, Fault.GROUND_FAILURE, "RCD check error"),
)
IEC_MIN_CURRENT_A = 6  # IEC 61851-1: the smallest current a PWM duty can offer
MAX_CURRENT_A = 80


@dataclass(frozen=True, slots=True, kw_only=True)
class EvseWbOptions:
    """[hardware.evse_wb]: EVSE WB / DIN boards on a Modbus line, one board per connector."""

    bus: str = setting(doc="name of the [buses.NAME] table the boards are on")
    unit_ids: list[int] = setting([1], doc="Modbus unit id of each connector's board, in order")
    poll_interval_s: float = setting(0.25, lo=0.05, hi=5.0, doc="how often each board is read")
    link_timeout_s: float = setting(3.0, lo=0.5, hi=60.0,
                                    doc="no answer for this long: the board link is lost")
    boot_current_zero: bool = setting(True, doc="set 2000 (current after power-up) to 0")


@dataclass(slots=True)
class _Unit:
    """One board (one connector): what the core wants, what the board was told, what it said."""

    connector_id: int
    unit_id: int
    want_offer_a: float | None = None
    want_off: bool = True
    written: dict[int, int] = field(default_factory=dict)  # register -> value it acknowledged
    configured: bool = False
    min_current_a: int = IEC_MIN_CURRENT_A
    pilot: PilotState | None = None
    cable_a: float | None = None
    cable_known: bool = False
    faults: dict[Fault, str] = field(default_factory=dict)
    relay_on: bool = False
    link_ok: bool | None = None  # None: not heard from yet
    last_ok_s: float = 0.0


class EvseWbBoard:
    """hw.base.EvseBoard for EVSE WB / DIN boards, connectors 1..N, all on one ModbusBus."""

    def __init__(self, bus: ModbusBus, options: EvseWbOptions, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.bus = bus
        self.options = options
        self._clock = clock
        self.units = {cid: _Unit(cid, uid) for cid, uid in enumerate(options.unit_ids, start=1)}
        self._emit: Emit | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    # --- EvseBoard ----------------------------------------------------------------------------

    async def start(self, emit: Emit) -> None:
        self._emit = emit
        self._closing = False
        now = self._clock()
        for u in self.units.values():
            u.last_ok_s = now
        self._task = asyncio.create_task(self._run(), name="ocppd-evse-wb")

    async def close(self) -> None:
        for u in self.units.values():
            u.want_off, u.want_offer_a = True, None
        self._closing = True
        if self._task is not None:
            # pymodbus may turn a cancellation inside a request into its own error: the flag
            # ends the loop even then.
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._emit = None
        # Last words to each board: off, 0 A (best effort: the line may be the thing that died).
        # One bound for all boards, so a dead line cannot eat the daemon's shutdown budget.
        async def last_words() -> None:
            for u in self.units.values():
                u.written.clear()
                with contextlib.suppress(HardwareError):
                    await self._sync(u)

        with contextlib.suppress(TimeoutError):
            await within(last_words(), self.bus.cfg.timeout_s * 2 + 1.0)

    def set_contactor(self, connector_id: int, closed: bool) -> None:
        u = self._unit(connector_id)
        if closed and u.faults:  # an interlock: the board reports a fault, whatever the core says
            log.error("connector %d: refusing to close: %s", connector_id,
                      ", ".join(u.faults.values()))
            closed = False
        u.want_off = not closed
        self._wake.set()

    def set_offer(self, connector_id: int, current_a: float | None) -> None:
        self._unit(connector_id).want_offer_a = current_a
        self._wake.set()

    def set_pilot_error(self, connector_id: int) -> None:
        # The board cannot be told to drive -12 V: stop offering and open instead.
        u = self._unit(connector_id)
        u.want_off, u.want_offer_a = True, None
        self._wake.set()

    async def lock(self, connector_id: int, locked: bool) -> bool:
        self._unit(connector_id)
        return True  # these boards drive no lock: the requested state holds trivially

    def has_lock(self, connector_id: int) -> bool:
        self._unit(connector_id)
        return False

    # --- the I/O task ---------------------------------------------------------------------------

    def _unit(self, connector_id: int) -> _Unit:
        try:
            return self.units[connector_id]
        except KeyError:
            raise HardwareError(f"no EVSE board for connector {connector_id}") from None

    def amps_for(self, u: _Unit) -> int:
        """Register 1000 for the wanted offer: 0, or whole amperes the board can signal."""
        offer = u.want_offer_a
        if offer is None or offer <= 0:
            return 0
        amps = min(math.floor(offer), MAX_CURRENT_A)
        return amps if amps >= max(u.min_current_a, IEC_MIN_CURRENT_A) else 0

    async def _run(self) -> None:
        while not self._closing:
            self._wake.clear()
            for u in self.units.values():
                await self._service(u)
            await wait_event(self._wake, self.options.poll_interval_s)

    async def _service(self, u: _Unit) -> None:
        try:
            await self._sync(u)  # commands first: after a lost link, the safe state goes out first
            if not u.configured:
                await self._configure(u)
            (regs,) = await self.bus.read(u.unit_id, [(3, *RUNTIME_BLOCK)])
        except HardwareError as exc:
            self._failed(u, exc)
            return
        self._answered(u)
        self._interpret(u, regs)
        amps = self.amps_for(u)
        if (amps > 0 and u.written.get(REG_CURRENT) == amps and u.written.get(REG_COMMANDS) == 0
                and regs[6] != EVSE_STATE_PWM and u.pilot is not None and u.pilot.plugged):
            # Told to offer, yet no PWM: the board disabled itself (2005 bit14, after a charge
            # with bit13 set). Read the configuration again and enable it, at the next pass.
            u.configured = False
        try:
            await self._sync(u)  # a fault seen just now sets the off bit: write it at once
        except HardwareError as exc:
            self._failed(u, exc)

    def off_bit(self, u: _Unit) -> bool:
        """Whether 1004 bit0 ("turn off charging now") must be set.

        Set while nothing is offered, and while the core holds the contactor open with the EV
        asking for power. Clear while the core offers current and the EV has not asked yet: the
        bit may also stop the pilot PWM, and an EV that sees no PWM never asks. The core offers
        current only to an authorized session it will close for, and closes as soon as the EV
        asks (core/safety.py), so the board's own close on C is the core's say-so.
        """
        if self.amps_for(u) == 0:
            return True
        return u.want_off and u.pilot is not None and u.pilot.wants_power

    async def _sync(self, u: _Unit) -> None:
        off = self.off_bit(u)
        want = {REG_COMMANDS: CMD_TURN_OFF if off else 0, REG_CURRENT: self.amps_for(u)}
        # Opening: the off bit before the current; closing: the current before clearing it.
        order = (REG_COMMANDS, REG_CURRENT) if off else (REG_CURRENT, REG_COMMANDS)
        for reg in order:
            if u.written.get(reg) != want[reg]:
                await self.bus.write(u.unit_id, reg, [want[reg]])
                u.written[reg] = want[reg]

    async def _configure(self, u: _Unit) -> None:
        (cfg,) = await self.bus.read(u.unit_id, [(3, *CONFIG_BLOCK)])
        boot_a, min_a, config = cfg[0], cfg[2], cfg[5]
        u.min_current_a = min_a or IEC_MIN_CURRENT_A
        if self.options.boot_current_zero and boot_a != 0:
            log.warning("connector %d: board current after power-up was %d A; setting it to 0 "
                        "so a board that restarts offers nothing", u.connector_id, boot_a)
            await self.bus.write(u.unit_id, REG_BOOT_CURRENT, [0])
        if config & CONFIG_DISABLED:
            log.info("connector %d: enabling the board (2005 bit14 was set)", u.connector_id)
            await self.bus.write(u.unit_id, REG_CONFIG, [config & ~CONFIG_DISABLED])
        u.configured = True

    def _answered(self, u: _Unit) -> None:
        u.last_ok_s = self._clock()
        if u.link_ok is False:
            log.warning("connector %d: EVSE board answers again", u.connector_id)
            self._send(FaultChanged(connector_id=u.connector_id, fault=Fault.BOARD_LINK_LOST,
                                    active=False))
        u.link_ok = True

    def _failed(self, u: _Unit, exc: HardwareError) -> None:
        u.written.clear()  # unknown what the board holds now: write everything again
        u.configured = False
        if u.link_ok is False or self._clock() - u.last_ok_s < self.options.link_timeout_s:
            return
        log.error("connector %d: EVSE board (unit %d) lost: %s", u.connector_id, u.unit_id, exc)
        u.link_ok = False
        self._send(FaultChanged(connector_id=u.connector_id, fault=Fault.BOARD_LINK_LOST,
                                active=True, detail=str(exc)))

    def _interpret(self, u: _Unit, regs: list[int]) -> None:
        current, vehicle, cable, commands, status = regs[0], regs[2], regs[3], regs[4], regs[7]
        if current != u.written.get(REG_CURRENT, current):
            u.written.pop(REG_CURRENT, None)  # the board holds something else: write it again
        if bool(commands & CMD_TURN_OFF) != (u.written.get(REG_COMMANDS) == CMD_TURN_OFF):
            u.written.pop(REG_COMMANDS, None)
        u.relay_on = bool(status & STATUS_RELAY_ON)
        # Faults first: the off bit is set before anyone hears of them (obligation 5).
        seen: dict[Fault, str] = {}
        for bit, fault, detail in STATUS_FAULTS:
            if status & bit:
                seen[fault] = detail
        if seen:
            u.want_off, u.want_offer_a = True, None
        for fault in set(u.faults) | set(seen):
            if (fault in seen) != (fault in u.faults):
                self._send(FaultChanged(connector_id=u.connector_id, fault=fault,
                                        active=fault in seen, detail=seen.get(fault, "")))
        u.faults = seen
        state = VEHICLE_STATES.get(vehicle, PilotState.F)
        if vehicle == 5 and seen:
            # "Failure" explained by an error bit: that fault is the news, not a pilot state F
            # (which the core would report as an EV communication error).
            state = u.pilot or PilotState.B
        if state is not u.pilot:
            u.pilot = state
            self._send(PilotChanged(connector_id=u.connector_id, state=state))
        cable_a = float(cable) if cable > 0 else None
        if not u.cable_known or cable_a != u.cable_a:
            u.cable_known, u.cable_a = True, cable_a
            self._send(CableRating(connector_id=u.connector_id, max_current_a=cable_a))

    def _send(self, event: Any) -> None:
        if self._emit is not None:
            self._emit(event)


# --- the driver ---------------------------------------------------------------------------------


def _check(cfg: Config, options: EvseWbOptions) -> Problems:
    problems: Problems = []
    if options.bus not in cfg.buses:
        problems.append(("hardware.evse_wb.bus", f"no [buses.{options.bus}] table"))
    elif cfg.buses[options.bus].type != "rtu":
        problems.append(("hardware.evse_wb.bus", "the boards speak Modbus RTU: use a type = "
                         "'rtu' bus"))
    if len(options.unit_ids) != len(cfg.connectors):
        problems.append(("hardware.evse_wb.unit_ids",
                         f"one unit id per connector: {len(cfg.connectors)} connector(s), "
                         f"{len(options.unit_ids)} id(s)"))
    if len(set(options.unit_ids)) != len(options.unit_ids):
        problems.append(("hardware.evse_wb.unit_ids", "each board needs its own unit id"))
    for uid in options.unit_ids:
        if not 1 <= uid <= 247:
            problems.append(("hardware.evse_wb.unit_ids", f"{uid} is not a unit id (1 to 247)"))
    for name, meter in cfg.meters.items():
        if meter.bus == options.bus and meter.unit_id in options.unit_ids:
            problems.append((f"meters.{name}.unit_id",
                             f"unit {meter.unit_id} is an EVSE board on bus {options.bus}"))
    return problems


def build_evse_wb_hardware(cfg: Config, options: EvseWbOptions) -> Hardware:
    buses, meters, readers = build_buses_meters_readers(cfg)
    bus = buses.get(options.bus)
    if bus is None:  # no meter on that line: the board is its only user
        bus = buses[options.bus] = ModbusBus(cfg.buses[options.bus], name=options.bus)
    board = EvseWbBoard(bus, options)
    return Hardware(board=board, meters=meters, readers=readers,
                    extra_closers=[b.close for b in buses.values()])


DRIVER = Driver(
    name="evse_wb",
    summary="EVSE WB / EVSE DIN controller boards over Modbus RTU (register 1000 = current)",
    build=build_evse_wb_hardware,
    options=EvseWbOptions,
    check=_check,
    fail_safe=("no board watchdog: an idle board holds 0 A and the off bit, so it starts "
               "nothing without ocppd; a session in progress continues at its last offer"),
)
