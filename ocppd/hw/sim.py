"""The built-in simulator: a charger and an EV per connector, behind the same seam as real drivers.

(Above 400 lines: the board, the EV and its battery form one physical model per connector.)

What it models, per connector:

- **The EV.** Plugging makes it a fresh car at ``SimConfig.initial_soc_pct`` in state B. It
  reacts to the pilot at once (no reaction delay, so runs are deterministic): while the EVSE
  offers at least 6 A it asks for power (C, or D after ``ev N D``); when the offer drops below
  6 A, to 0 (PWM "pause") or to None (no PWM), it goes back to B. IEC 61851-1 forbids A -> C
  directly, so a plug always passes through B. When the battery reaches
  ``target_soc_pct`` the EV stops drawing and goes from C to B, like a real car that finished.
- **Direct states** (``ocppctl ev N STATE``): A unplugs; B holds the EV in B (paused, not
  ready) whatever the offer; C/D put it in C/D now and let it follow the offer again; E/F
  force a pilot fault until another state is set or the EV is unplugged. A full EV refuses C/D.
- **Contactor, pilot, lock** record what they are told. Current flows only while the contactor
  is closed, the EV is in C/D, the offer is at least 6 A and the battery is not full:
  ``min(offer, ev_max_current_a)`` on ``min(ev_phases, connector phases)`` phases at
  ``nominal_voltage_v``. Safety is the core's job; the simulator only refuses to invent current.
- **The meter** integrates that power lazily from the injected clock on every read and every
  state change, scaled by ``time_factor``, so tests drive time and no polling rate matters. A
  loop timer wakes the board when a battery is due to fill, so the EV finishes on time even if
  nobody reads the meter.

Test hooks: ``lock_fails`` (connectors whose lock does not move), ``inject_fault`` (opens the
contactor, then reports) and ``meter_fails``. Everything runs on the event loop thread; events
are handed to ``emit`` with ``call_soon_threadsafe`` so they never re-enter the caller (the core
calls ``set_offer`` while handling an event, and the EV's answer must arrive as a new event, as
on real hardware).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ocppd.config import Config, ConnectorConfig, SimConfig
from ocppd.errors import HardwareError, MeterError
from ocppd.hw.base import (
    BoardEvent,
    CardCallback,
    Emit,
    Fault,
    FaultChanged,
    Hardware,
    Meter,
    MeterReading,
    PilotChanged,
    PilotState,
)
from ocppd.hw.drivers import Driver
from ocppd.privacy import tag

log = logging.getLogger(__name__)

Clock = Callable[[], float]

# IEC 61851-1: below a 6 A offer (PWM duty < 10 %) the EV must not draw current.
MIN_CHARGE_OFFER_A = 6.0
FREQUENCY_HZ = 50.0
# Small fixed per-phase offsets so the three voltages look like a real grid. They sum to zero
# and L1 (where a single-phase EV charges) has none, so power stays current × nominal × phases.
_VOLTAGE_OFFSET_V = (0.0, 0.6, -0.6)
# Floating-point slack when deciding that a battery is full, in watt-hours.
_FULL_EPS_WH = 1e-6


@dataclass(frozen=True, slots=True, kw_only=True)
class SimView:
    """What one simulated connector is doing right now (for tests and ``ocppctl status``)."""

    ev_state: PilotState
    contactor_closed: bool
    offer_a: float | None
    pilot_error: bool
    locked: bool
    current_a: float
    power_w: float
    energy_wh: float
    soc_pct: float | None
    battery_full: bool
    offer_at_close_a: float | None  # what the pilot offered when the contactor last closed


@dataclass(slots=True, kw_only=True)
class _Port:
    """Mutable state of one connector and the EV plugged into it."""

    cfg: ConnectorConfig
    energy_wh: float  # the meter's import register
    last_s: float  # clock reading up to which energy_wh is integrated
    contactor_closed: bool = False
    offer_a: float | None = None
    offer_at_close_a: float | None = None
    pilot_error: bool = False
    locked: bool = False
    state: PilotState = PilotState.A
    connected: bool = False  # an EV is attached (also true while it shows E/F)
    hold_b: bool = False  # ``ev N B``: stays in B whatever the offer
    wanted: PilotState = PilotState.C  # C, or D after ``ev N D``
    battery_wh: float = 0.0
    full: bool = False
    meter_failing: bool = False


class SimBoard:
    """EvseBoard and SimulatorControls for connectors numbered 1..N."""

    def __init__(
        self,
        connectors: Sequence[ConnectorConfig],
        sim: SimConfig,
        *,
        nominal_voltage_v: float = 230.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._sim = sim
        self._voltage_v = nominal_voltage_v
        self._clock = clock
        now = clock()
        self._ports = {
            i: _Port(cfg=c, energy_wh=sim.meter_start_wh, last_s=now)
            for i, c in enumerate(connectors, start=1)
        }
        self._emit: Emit | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.TimerHandle | None = None
        self.lock_fails: set[int] = set()  # test hook: these connectors' locks do not move
        # The highest sum of what all pilots offered at one instant since start: what a shared
        # supply (a ChargePointMaxProfile, the site's breaker) would have had to carry.
        self.peak_total_offer_a = 0.0

    # --- EvseBoard ------------------------------------------------------------------------

    async def start(self, emit: Emit) -> None:
        self._loop = asyncio.get_running_loop()
        self._emit = emit
        for cid, port in self._ports.items():
            self._send(PilotChanged(connector_id=cid, state=port.state))
        self._reschedule()

    async def close(self) -> None:
        for cid in self._ports:
            self.set_contactor(cid, False)
        if self._wakeup is not None:
            self._wakeup.cancel()
            self._wakeup = None
        self._emit = None
        self._loop = None

    def set_contactor(self, connector_id: int, closed: bool) -> None:
        port = self._advance(connector_id)
        if port.contactor_closed != closed:
            log.info("sim connector %d: contactor %s", connector_id, "closed" if closed else "open")
            if closed:
                port.offer_at_close_a = port.offer_a
        port.contactor_closed = closed
        self._reschedule()

    def set_offer(self, connector_id: int, current_a: float | None) -> None:
        port = self._advance(connector_id)
        port.offer_a = current_a
        port.pilot_error = False
        total_a = sum(p.offer_a or 0.0 for p in self._ports.values())
        self.peak_total_offer_a = max(self.peak_total_offer_a, total_a)
        self._react(connector_id, port)
        self._reschedule()

    def set_pilot_error(self, connector_id: int) -> None:
        port = self._advance(connector_id)
        port.pilot_error = True
        port.offer_a = None  # -12 V constant: no PWM, nothing offered
        self._react(connector_id, port)
        self._reschedule()

    async def lock(self, connector_id: int, locked: bool) -> bool:
        port = self._port(connector_id)
        if not self.has_lock(connector_id):
            return not locked  # a fixed cable is never locked
        if connector_id in self.lock_fails:
            log.warning("sim connector %d: lock did not move (injected)", connector_id)
            return False
        port.locked = locked
        return True

    def has_lock(self, connector_id: int) -> bool:
        return self._port(connector_id).cfg.cable == "socket"

    def diagnostics(self, connector_id: int) -> dict[str, tuple[str, str, str]]:
        """The set-up check's raw inputs, as a real board's would read them (IEC 61851-1
        Table A.4 plateaus; the simulated EV always has its diode)."""
        port = self._port(connector_id)
        high_v = {PilotState.A: 12.0, PilotState.B: 9.0, PilotState.C: 6.0, PilotState.D: 3.0,
                  PilotState.E: 0.0, PilotState.F: -12.0}[port.state]
        out = {"pilot high level": (f"{high_v:+.1f} V", "ok", "simulated: on a nominal level")}
        if port.offer_a is not None and port.state.plugged:
            out["pilot low level"] = ("-12.0 V", "ok", "simulated: the EV's diode is there")
        out["contactor feedback input"] = ("closed" if port.contactor_closed else "open", "ok",
                                           "simulated: follows the command")
        return out

    # --- SimulatorControls ----------------------------------------------------------------

    def plug(self, connector_id: int) -> None:
        port = self._advance(connector_id)
        if port.connected:
            return
        # A fresh car arrives each time, so a demo can repeat sessions.
        port.connected = True
        port.hold_b = False
        port.wanted = PilotState.C
        port.battery_wh = self._sim.battery_capacity_wh * self._sim.initial_soc_pct / 100.0
        port.full = port.battery_wh >= self._target_wh() - _FULL_EPS_WH
        self._set_state(connector_id, port, PilotState.B)
        self._react(connector_id, port)
        self._reschedule()

    def unplug(self, connector_id: int) -> None:
        port = self._advance(connector_id)
        port.connected = False
        port.hold_b = False
        port.full = False
        self._set_state(connector_id, port, PilotState.A)
        self._reschedule()

    def set_ev_state(self, connector_id: int, state: PilotState) -> None:
        port = self._advance(connector_id)
        if state is PilotState.A:
            self.unplug(connector_id)
            return
        if not port.connected:
            self.plug(connector_id)  # passes through B, as IEC 61851-1 requires
        if state is PilotState.B:
            port.hold_b = True
            self._set_state(connector_id, port, PilotState.B)
        elif state in (PilotState.C, PilotState.D):
            port.hold_b = False
            port.wanted = state
            if port.full:
                log.info("sim connector %d: battery full, EV stays in B", connector_id)
                self._set_state(connector_id, port, PilotState.B)
            else:
                self._set_state(connector_id, port, state)
        else:  # E, F: a pilot fault on the vehicle side, until told otherwise
            self._set_state(connector_id, port, state)
        self._reschedule()

    # --- test and demo hooks ----------------------------------------------------------------

    def inject_fault(self, connector_id: int, fault: Fault, active: bool, detail: str = "") -> None:
        """A fault appears or clears (connector 0: the whole charger).

        Like a real board (hw/base.py, obligation 5), the simulator opens the affected
        contactors itself before it reports the fault; closing again is the core's call.
        """
        if connector_id != 0:
            self._port(connector_id)
        if active:
            for cid in self._ports if connector_id == 0 else (connector_id,):
                self.set_contactor(cid, False)
        event = FaultChanged(connector_id=connector_id, fault=fault, active=active, detail=detail)
        self._send(event)

    def meter_fails(self, connector_id: int, failing: bool) -> None:
        """Make the connector's meter raise MeterError on read (energy keeps flowing)."""
        self._port(connector_id).meter_failing = failing

    def restore_register(self, connector_id: int, energy_wh: float) -> None:
        """Carry the meter register over a daemon restart, as a real meter's would be."""
        port = self._advance(connector_id)
        port.energy_wh = max(port.energy_wh, energy_wh)

    def advance(self) -> None:
        """Integrate every connector up to the clock's now (a read does this too)."""
        for cid in self._ports:
            self._advance(cid)
        self._reschedule()

    def view(self, connector_id: int) -> SimView:
        port = self._advance(connector_id)
        current_a = self._current_a(port)
        return SimView(
            ev_state=port.state,
            contactor_closed=port.contactor_closed,
            offer_a=port.offer_a,
            pilot_error=port.pilot_error,
            locked=port.locked,
            current_a=current_a,
            power_w=current_a * self._voltage_v * self._phases(port),
            energy_wh=port.energy_wh,
            soc_pct=self._soc_pct(port),
            battery_full=port.full,
            offer_at_close_a=port.offer_at_close_a,
        )

    def reading(self, connector_id: int) -> MeterReading:
        """What the connector's meter shows now. Raises MeterError when failure is injected."""
        port = self._advance(connector_id)
        self._reschedule()
        if port.meter_failing:
            raise MeterError(f"simulated meter {connector_id} does not answer")
        current_a = self._current_a(port)
        phases = self._phases(port)
        wired = port.cfg.phases  # a three-phase meter shows all three, used or not
        return MeterReading(
            energy_import_wh=port.energy_wh,
            power_w=current_a * self._voltage_v * phases,
            current_a=tuple(current_a if i < phases else 0.0 for i in range(wired)),
            voltage_v=tuple(self._voltage_v + _VOLTAGE_OFFSET_V[i] for i in range(wired)),
            frequency_hz=FREQUENCY_HZ,
            energy_export_wh=0.0,
            power_factor=1.0,
            soc_pct=self._soc_pct(port),
        )

    # --- internals ------------------------------------------------------------------------

    def _port(self, connector_id: int) -> _Port:
        try:
            return self._ports[connector_id]
        except KeyError:
            raise HardwareError(f"no simulated connector {connector_id}") from None

    def _target_wh(self) -> float:
        return self._sim.battery_capacity_wh * self._sim.target_soc_pct / 100.0

    def _phases(self, port: _Port) -> int:
        return min(self._sim.ev_phases, port.cfg.phases)

    def _soc_pct(self, port: _Port) -> float | None:
        if not port.connected:
            return None
        return 100.0 * port.battery_wh / self._sim.battery_capacity_wh

    def _current_a(self, port: _Port) -> float:
        offer = port.offer_a
        if (
            not port.contactor_closed
            or not port.state.wants_power
            or port.full
            or offer is None
            or offer < MIN_CHARGE_OFFER_A
        ):
            return 0.0
        return min(offer, self._sim.ev_max_current_a)

    def _advance(self, connector_id: int) -> _Port:
        """Integrate energy from the last instant to now with the state that held meanwhile."""
        port = self._port(connector_id)
        now = self._clock()
        dt_s = max(0.0, now - port.last_s) * self._sim.time_factor
        port.last_s = now
        power_w = self._current_a(port) * self._voltage_v * self._phases(port)
        if power_w <= 0.0 or dt_s <= 0.0:
            return port
        energy_wh = power_w * dt_s / 3600.0
        room_wh = max(0.0, self._target_wh() - port.battery_wh)
        becomes_full = energy_wh >= room_wh - _FULL_EPS_WH
        if becomes_full:
            energy_wh = room_wh
        port.energy_wh += energy_wh
        port.battery_wh += energy_wh
        if becomes_full:
            port.full = True
            log.info("sim connector %d: battery reached target, EV stops drawing", connector_id)
            self._react(connector_id, port)
        return port

    def _react(self, connector_id: int, port: _Port) -> None:
        """The EV follows the pilot: C/D while offered >= 6 A and it wants energy, else B."""
        if not port.connected or port.state in (PilotState.E, PilotState.F):
            return
        offer = port.offer_a
        offered = offer is not None and offer >= MIN_CHARGE_OFFER_A and not port.pilot_error
        wants = offered and not port.hold_b and not port.full
        self._set_state(connector_id, port, port.wanted if wants else PilotState.B)

    def _set_state(self, connector_id: int, port: _Port, state: PilotState) -> None:
        if port.state is state:
            return
        log.info("sim connector %d: EV %s -> %s", connector_id, port.state, state)
        port.state = state
        self._send(PilotChanged(connector_id=connector_id, state=state))

    def _send(self, event: BoardEvent) -> None:
        # Before start() nothing is sent: start() reports the state as it is then.
        if self._emit is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._emit, event)

    def _reschedule(self) -> None:
        """Wake up when the first charging battery is due to be full."""
        if self._wakeup is not None:
            self._wakeup.cancel()
            self._wakeup = None
        if self._loop is None:
            return
        delays_s = []
        for port in self._ports.values():
            power_w = self._current_a(port) * self._voltage_v * self._phases(port)
            if power_w > 0.0:
                room_wh = max(0.0, self._target_wh() - port.battery_wh)
                delays_s.append(room_wh * 3600.0 / power_w / self._sim.time_factor)
        if delays_s:
            # A little late rather than early, so the wake-up finds the battery full.
            self._wakeup = self._loop.call_later(min(delays_s) + 0.001, self._on_wakeup)

    def _on_wakeup(self) -> None:
        self._wakeup = None
        self.advance()


class SimMeter:
    """Meter of one simulated connector: reads the board's register."""

    def __init__(self, board: SimBoard, connector_id: int) -> None:
        self._board = board
        self._connector_id = connector_id

    async def read(self) -> MeterReading:
        return self._board.reading(self._connector_id)

    async def close(self) -> None:
        return None


class SimCardReader:
    """A card reader that reads whatever ``present()`` is given (``ocppctl swipe``)."""

    def __init__(self) -> None:
        self._on_card: CardCallback | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, on_card: CardCallback) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_card = on_card

    async def close(self) -> None:
        self._on_card = None
        self._loop = None

    def present(self, id_tag: str) -> None:
        """A card is held to the reader: ``on_card(id_tag)`` runs on the loop, soon."""
        if self._on_card is None or self._loop is None:
            raise HardwareError("simulated card reader is not started")
        log.info("sim card reader: card %s presented", tag(id_tag))
        self._loop.call_soon_threadsafe(self._on_card, id_tag)


def build_sim_hardware(cfg: Config, *, clock: Clock = time.monotonic) -> Hardware:
    """The whole simulated charger for ``cfg``: one board, a meter per connector, a reader."""
    board = SimBoard(
        cfg.connectors, cfg.sim, nominal_voltage_v=cfg.hardware.nominal_voltage_v, clock=clock
    )
    meters: dict[int, Meter] = {
        cid: SimMeter(board, cid) for cid in range(1, len(cfg.connectors) + 1)
    }
    return Hardware(board=board, meters=meters, readers=[SimCardReader()], sim=board)


def _build(cfg: Config, options: object) -> Hardware:
    return build_sim_hardware(cfg)


DRIVER = Driver(
    name="sim",
    summary="the built-in simulator: a charger and an EV per connector ([sim] table)",
    build=_build,
    fail_safe="no hardware: the simulated contactor opens with the daemon",
)
