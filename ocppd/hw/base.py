"""The hardware seam: what the station needs from a charger, whatever drives it.

Every driver (the simulator in ``sim.py``, the Raspberry Pi drivers in ``gpio.py``/``pilot.py``,
meters in ``modbus.py``, card readers in ``rfid.py``) implements these protocols, so everything
above this line runs unchanged on real hardware and on the simulator.

Obligations of every implementation:

- Outputs are safe by default: a contactor is open and the pilot offers nothing (+12 V) from
  the moment the device is created until told otherwise.
- Events are delivered through the ``emit`` callback given to ``start()``, always on the event
  loop thread. A driver whose library calls back on another thread (gpiozero, pyserial) hands
  the event over with ``loop.call_soon_threadsafe``.
- ``set_contactor`` and ``set_offer`` return at once; they never block the event loop.
- Nothing here knows OCPP.
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
    """Pilot, contactor, lock and fault inputs of one or more connectors."""

    async def start(self, emit: Emit) -> None:
        """Open the devices (contactors open, no offer) and begin sending events.

        Sends the current pilot state of every connector once started.
        """

    async def close(self) -> None:
        """Open every contactor, stop the pilot, release the devices."""

    def set_contactor(self, connector_id: int, closed: bool) -> None:
        """Command the contactor. Only the safety rules (core/safety.py) decide to close it."""

    def set_offer(self, connector_id: int, current_a: float | None) -> None:
        """What the pilot offers the EV.

        None: constant +12 V, nothing offered (state A/B without PWM).
        0: PWM at a duty that signals "no charging allowed now" (EV pauses).
        6..80: PWM duty per IEC 61851-1 for this many amperes.
        """

    def set_pilot_error(self, connector_id: int) -> None:
        """Drive the pilot to -12 V (state F), used on faults."""

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
