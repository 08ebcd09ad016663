"""The hardware seam: what the station needs from a charger, whatever drives it.

Every driver (the simulator in ``sim.py``, the Raspberry Pi drivers in ``gpio.py``/``pilot.py``,
the EVSE controller board in ``evsewb.py``, meters in ``modbus.py``, card readers in ``rfid.py``)
implements these protocols, so everything above this line runs unchanged on real hardware and on
the simulator. A driver shipped as its own package registers through ``ocppd.hw.drivers``.

``EvseBoard`` is the contract between the core and a board. The model is a board-support
interface with named commands, variables and errors: commands go down (``set_offer``,
``set_contactor``, ``set_pilot_error``, ``lock``), variables and errors come up as events
(``PilotChanged``, ``CableRating``, ``FaultChanged``), meter readings come through ``Meter``.

Obligations of every implementation (``ocppd.hw.conformance`` checks each one):

1. **Safe from the start.** A contactor is open and the pilot offers nothing (+12 V) from the
   moment the driver object exists until the core says otherwise, and again after ``close()``.
2. **Events.** Delivered through the ``emit`` callback given to ``start()``, always on the event
   loop thread, never from inside a command (a driver whose library calls back on another thread
   hands the event over with ``loop.call_soon_threadsafe``). ``start()`` reports the pilot state
   of every connector within ``EVENT_DEADLINE_S``; later changes arrive within the same bound.
3. **Commands return at once** (never block the loop) and take effect on the hardware within
   their deadline: ``CONTACTOR_OPEN_DEADLINE_S`` to open, ``COMMAND_DEADLINE_S`` for the rest.
4. **Nothing closes without the core's say-so.** The contactor closes only after
   ``set_contactor(id, True)``; a driver may refuse a close (a hardware interlock) but never
   closes on its own, not even after a reset of the board or the link.
5. **Open on every fault.** When a board sees a fault it reports (ground fault, emergency stop,
   pilot fault, welded contact, ...) it opens the affected contactors by itself, at once, and
   then reports ``FaultChanged``; it does not wait for the core's command.
6. **Fail safe on loss of communication.** Two links can fail:
   - *driver to board* (a serial or Modbus line): the driver reports
     ``Fault.BOARD_LINK_LOST`` (connector 0, or each connector on that board) within
     ``LINK_LOSS_DEADLINE_S`` of the last good exchange, and when the line answers again it
     first writes the safe state (contactor open, no offer) and only then clears the fault;
   - *ocppd to board* (the daemon or the Pi stopped): the board must not start charging on its
     own. A board with a watchdog arms it; a board without one keeps its offer at 0 whenever
     no session is authorized, so a dead daemon leaves an idle board idle. What remains (a
     session in progress continuing at its last offer) is written in the driver's
     ``Driver.fail_safe`` text, which ocppd logs at start-up.
7. Nothing here knows OCPP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

# The pilot and fault vocabulary belongs to the core (ocppd/core/evse.py); drivers speak it.
# Re-exported (``as``): drivers and older imports name them from here.
from ocppd.core.evse import Fault as Fault
from ocppd.core.evse import MeterReading as MeterReading
from ocppd.core.evse import PilotState as PilotState

# --- deadlines of the contract (seconds; the conformance kit measures against them) ------------
# IEC 61851-1 gives the board 100 ms to open after the EV leaves state C; a board that does that
# itself (an MCU, the EVSE WB) meets it on its own. The deadlines below are for commands that
# cross a bus from the Pi, polled at a few Hz, and leave room for a loaded 2-core machine.
CONTACTOR_OPEN_DEADLINE_S = 1.0
COMMAND_DEADLINE_S = 2.0  # offer changes, closing: the EV itself gets 5 s to follow the pilot
EVENT_DEADLINE_S = 2.0  # a change on the hardware is reported within this
LINK_LOSS_DEADLINE_S = 5.0  # a dead driver-to-board line is reported as a fault within this


# --- events a board sends up ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PilotChanged:
    """The control pilot moved to another state (A-F) on a connector."""

    connector_id: int
    state: PilotState


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultChanged:
    """A fault became active (``active=True``) or cleared."""

    connector_id: int  # 0 = the whole charger (emergency stop, RCD shared by all connectors)
    fault: Fault
    active: bool
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CableRating:
    """The proximity pilot resistor says how much the plugged cable can carry (None: unknown)."""

    connector_id: int
    max_current_a: float | None


BoardEvent = PilotChanged | FaultChanged | CableRating
Emit = Callable[[BoardEvent], None]


@runtime_checkable
class EvseBoard(Protocol):
    """Pilot, contactor, lock and fault inputs of one or more connectors (numbered 1..N).

    Variables reported (events, see the module docstring for when):
      - ``PilotChanged``: the IEC 61851-1 pilot state A-F of each connector (plug, EV ready);
      - ``CableRating``: the proximity pilot's cable rating, when the board can read it;
      - ``FaultChanged``: faults (``Fault``), per connector or for the whole charger (id 0);
      - meter readings, when the board has a meter, through a ``Meter`` in ``Hardware.meters``.
    Commands: ``set_offer``, ``set_contactor``, ``set_pilot_error``, ``lock``.
    Optional: ``diagnostics(connector_id) -> dict[str, tuple[str, str, str]]``, the board's raw
    inputs for the installer's set-up check (name -> reading, verdict "ok" | "problem" |
    "unknown", why); without it the check shows what the daemon knows (ocppd.installer).
    """

    async def start(self, emit: Emit) -> None:
        """Open the devices (contactors open, no offer) and begin sending events.

        Sends the current pilot state of every connector within ``EVENT_DEADLINE_S``. A board
        that cannot be reached does not raise: it reports ``Fault.BOARD_LINK_LOST`` and keeps
        trying (a charger must come up and say Faulted, not crash-loop).
        """

    async def close(self) -> None:
        """Open every contactor, stop the pilot (+12 V), release the devices. Idempotent."""

    def set_contactor(self, connector_id: int, closed: bool) -> None:
        """Command the contactor; returns at once.

        Opening takes effect within ``CONTACTOR_OPEN_DEADLINE_S``, closing within
        ``COMMAND_DEADLINE_S``. Only the safety rules (core/safety.py) decide to close it; the
        driver may refuse (an interlock such as a tripped RCD) but never closes by itself.
        """

    def set_offer(self, connector_id: int, current_a: float | None) -> None:
        """What the pilot offers the EV; returns at once, in effect within COMMAND_DEADLINE_S.

        None: constant +12 V, nothing offered (state A/B without PWM).
        0: PWM at a duty that signals "no charging allowed now" (EV pauses). A board that
           cannot signal that offers nothing instead (the EV pauses just the same).
        6..80: PWM duty per IEC 61851-1 for this many amperes. A board whose smallest
           setting is above the offer offers nothing: it never rounds up past a limit.
        """

    def set_pilot_error(self, connector_id: int) -> None:
        """Drive the pilot to -12 V (state F), used on faults. A board that cannot do that
        stops offering and opens the contactor instead."""

    async def lock(self, connector_id: int, locked: bool) -> bool:
        """Lock or unlock the connector. True when the lock reached the requested state."""

    def has_lock(self, connector_id: int) -> bool:
        """Whether this connector has a lock actuator at all (a fixed cable has none)."""


# --- meters -----------------------------------------------------------------------------------


@runtime_checkable
class Meter(Protocol):
    async def read(self) -> MeterReading:
        """Read once. Raises ocppd.errors.MeterError on timeout, CRC error or implausible data."""

    async def close(self) -> None: ...


# --- card readers -----------------------------------------------------------------------------

CardCallback = Callable[[str], None]


@runtime_checkable
class CardReader(Protocol):
    async def start(self, on_card: CardCallback) -> None:
        """Begin reading; call ``on_card(id_tag)`` once per presentation (debounced).

        id_tag is the UID as uppercase hex, byte 0 first (OCPP 1.6 §3.9).
        """

    async def close(self) -> None: ...


# --- the simulator's extra controls ---------------------------------------------------------------


class SimulatorControls(Protocol):
    """Controls only the simulator has: ``ocppctl plug/unplug/ev`` use them."""

    def plug(self, connector_id: int) -> None: ...

    def unplug(self, connector_id: int) -> None: ...

    def set_ev_state(self, connector_id: int, state: PilotState) -> None: ...


@dataclass(slots=True, kw_only=True)
class Hardware:
    """Everything app.py wires into the station: one board, a meter per connector, readers."""

    board: EvseBoard
    meters: dict[int, Meter]
    readers: list[CardReader] = field(default_factory=list)
    sim: SimulatorControls | None = None
    extra_closers: list[Callable[[], object]] = field(default_factory=list)
