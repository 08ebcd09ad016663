"""The charging session's state, the events that move it and the effects it asks for.

(Above 400 lines on purpose: declarations only, no logic. The whole vocabulary of the core in
one file reads against the rule table in machine.py; split, it would be three lists to keep
in step.)

All values are frozen: ``step`` (machine.py) returns a new state and a tuple of effects; the
shell (ocppd/station.py) carries the effects out and feeds what happened back as events.

The model follows OCPP 2.0.1's shape, which 1.6 is a special case of: a charger has EVSEs,
an EVSE has connectors (``ConnectorSpec.evse_id``); OCPP 1.6 sees one connector per EVSE.
Transaction ids are opaque strings (``Tx.tx_key``): each protocol adapter maps its own.
Where a transaction begins and ends is policy, not a built-in rule: ``Rules.tx`` (``TxPoints``;
its docstring says how the 1.6 adapter fixes it and how a 2.0.1 adapter sets it from
TxStartPoint/TxStopPoint).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from ocppd.core.evse import Fault, PilotState
from ocppd.core.model import AuthStatus, Status, StopReason
from ocppd.core.safety import MIN_OFFER_A
from ocppd.core.sharing import DrawWatch
from ocppd.core.value import value

# --- configuration -------------------------------------------------------------------------------


@value
class ConnectorSpec:
    """What does not change while running: where a connector sits and what it can carry."""

    connector_id: int
    evse_id: int
    max_current_a: float
    lockable: bool = False  # a socket outlet with a lock actuator (IEC 61851-1 case B)


class TxPoint(StrEnum):
    """A point of a charging session where a transaction may begin or end (``TxPoints``)."""

    EV_CONNECTED = "ev_connected"  # a cable joins the EV and the charger (pilot B, C or D)
    AUTHORIZED = "authorized"  # an idTag may charge here (and has not been refused since)
    # Begin: everything the contactor needs holds (authorized, the EV asks for power, no
    # fault, nothing withheld, the plug locked). End: the contactor opened.
    POWER_PATH_CLOSED = "power_path_closed"
    # Begin: as POWER_PATH_CLOSED (energy never flows before the transaction is recorded).
    # End: the EV stopped asking for power while the contactor was closed.
    ENERGY_TRANSFER = "energy_transfer"


def when_all(*points: TxPoint) -> frozenset[TxPoint]:
    return frozenset(points)


@value
class TxPoints:
    """Where a transaction begins and where it ends: policy, given by the protocol adapter.

    ``begin``: the transaction begins as soon as every point of one of these sets holds.
    ``end``: it ends as soon as one of these points no longer holds, once it held within the
    transaction. Asked stops (card, remote, command, stopping fault, power loss) end it
    whatever the points.

    OCPP 1.6 fixes them: begin at ``{AUTHORIZED, EV_CONNECTED}`` (idTag and cable, either
    first); end at ``EV_CONNECTED`` if StopTransactionOnEVSideDisconnect (§9.1.30), and at
    ``AUTHORIZED`` if StopTransactionOnInvalidId (§9.1.29: a refused idTag ends it; otherwise
    its energy is withheld, up to MaxEnergyOnInvalidId). A 2.0.1 adapter builds them from
    TxStartPoint and TxStopPoint (2.0.1 part 2, E: both lists mean "the first of"): each
    TxStartPoint value is a begin set of its own; EVConnected -> EV_CONNECTED, Authorized ->
    AUTHORIZED, PowerPathClosed -> POWER_PATH_CLOSED, EnergyTransfer and DataSigned ->
    POWER_PATH_CLOSED (no energy before a recorded transaction; the charger signs nothing),
    ParkingBayOccupancy -> EV_CONNECTED (no bay sensor: the cable is the first sign); each
    TxStopPoint value goes into ``end`` the same way (EnergyTransfer -> ENERGY_TRANSFER).
    A transaction begun without AUTHORIZED has no idTag yet: the EV gets no energy until
    one is authorized for it (``Authorized`` joins it, ``RecordAuthorization``).
    """

    begin: frozenset[frozenset[TxPoint]] = frozenset(
        {when_all(TxPoint.AUTHORIZED, TxPoint.EV_CONNECTED)})
    end: frozenset[TxPoint] = frozenset({TxPoint.AUTHORIZED, TxPoint.EV_CONNECTED})

    def __post_init__(self) -> None:
        if not self.begin or not all(self.begin):
            raise ValueError("a transaction needs at least one non-empty begin set")


@value
class Rules:
    """Behaviour the operator or the Central System configures, read at every step."""

    connection_timeout_s: int = 60  # idTag first, then plug in within this (§9.1.6)
    tx: TxPoints = TxPoints()  # where transactions begin and end (OCPP 1.6: fixed)
    unlock_on_ev_disconnect: bool = True  # §9.1.35 UnlockConnectorOnEVSideDisconnect
    max_energy_on_invalid_id_wh: int | None = None  # §9.1.15 MaxEnergyOnInvalidId
    charger_max_a: float | None = None  # the site's breaker ([hardware] max_current_a)
    resume_after_power_loss: bool = False  # a transaction open at start-up goes on if plugged


# --- state ---------------------------------------------------------------------------------------


@value
class Tx:
    """A running transaction as the core sees it. ``tx_key`` is opaque (the shell's record id)."""

    tx_key: str
    id_tag: str | None  # None: begun before any idTag (TxPoints.begin without AUTHORIZED)
    parent_id_tag: str | None
    meter_start_wh: int
    started_at: datetime
    id_tag_status: AuthStatus | None = None  # the Central System's verdict, None: not yet


@value
class Waiting:
    """An accepted idTag waiting for the EV to be plugged in (ConnectionTimeOut, §9.1.6)."""

    id_tag: str
    parent_id_tag: str | None
    reservation_id: int | None
    deadline: datetime


@value
class Hold:
    """A reservation held on a connector until ``expiry`` (§5.13)."""

    reservation_id: int
    id_tag: str
    parent_id_tag: str | None
    expiry: datetime


@value
class Stop:
    """A stop under way: the contactor is open, the shell is recording the end."""

    reason: StopReason
    stop_id_tag: str | None
    unlock: bool  # move the lock open once the stop is recorded


@value
class ConnectorState:
    spec: ConnectorSpec
    # facts from the hardware
    pilot: PilotState = PilotState.A
    faults: tuple[Fault, ...] = ()  # in the order they appeared: the first one is reported
    cable_max_a: float | None = None
    energy_wh: float | None = None  # the last good register reading (or the last stored one)
    draw: DrawWatch = DrawWatch()  # does the EV draw less than offered (core/sharing.py)
    # decisions and commands
    operative: bool = True
    scheduled_operative: bool | None = None  # applies when the transaction ends (§5.2)
    waiting: Waiting | None = None
    tx: Tx | None = None
    invalid_id: bool = False  # the idTag was refused: energy withheld, transaction kept
    stop: Stop | None = None
    finishing: bool = False
    hold: Hold | None = None
    begin_asked: bool = False  # BeginTransaction is out for this EV connection (no TxStarted yet)
    connect_by: datetime | None = None  # a transaction begun before the EV: plug in by then
    smart_limit_a: float | None = None
    local_limit_a: float | None = None  # the installer's own limit (ocppctl limit, web page)
    # what was last commanded and reported (outputs change only through effects)
    share_a: float | None = None  # its share of the charger-wide limit (None: no such limit)
    offer_a: float | None = None
    contactor_closed: bool = False
    locked: bool = False  # the last lock move confirmed the plug locked (unknown at start-up)
    locking: bool = False  # a lock move was asked (MoveLock), its outcome not reported yet
    status: Status | None = None

    @property
    def connector_id(self) -> int:
        return self.spec.connector_id

    @property
    def draw_ceiling_a(self) -> float | None:
        """The reduced share of an EV that draws less than offered (None: not reduced)."""
        return self.draw.ceiling_a

    @property
    def own_limit_a(self) -> float | None:
        """The lower of the smart-charging and the local limit (None: neither)."""
        limits = [x for x in (self.smart_limit_a, self.local_limit_a) if x is not None]
        return min(limits) if limits else None

    @property
    def withheld(self) -> bool:
        """Energy withheld for this connector's own reasons: its limit below 6 A, an invalid
        idTag or none yet, or no working meter."""
        low = self.own_limit_a is not None and self.own_limit_a < MIN_OFFER_A
        no_id = self.tx is not None and self.tx.id_tag is None  # no energy before an idTag
        return self.invalid_id or low or no_id or Fault.METER_FAILURE in self.faults


@value
class ChargerState:
    connectors: Mapping[int, ConnectorState]
    faults: tuple[Fault, ...] = ()  # of the whole charger (connector 0)
    operative: bool = True
    limit_a: float | None = None  # charger-wide smart limit (ChargePointMax)
    status: Status | None = None
    running: bool = False  # start-up is over: sessions react, statuses are reported
    shutting_down: bool = False

    def connector(self, connector_id: int) -> ConnectorState:
        try:
            return self.connectors[connector_id]
        except KeyError:
            raise IllegalEvent(f"no connector {connector_id}") from None

    def evse_connectors(self, evse_id: int) -> list[ConnectorState]:
        return [c for c in self.connectors.values() if c.spec.evse_id == evse_id]


class IllegalEvent(ValueError):
    """An event that cannot happen in the current state: a bug in the caller, raised at once."""


# --- timers: identified, so arming one replaces it and the state says which must exist ----------


class TimerKind(StrEnum):
    # ConnectionTimeOut of a waiting idTag or of a transaction begun before its EV (the
    # EVConnectionTimeOut of 2.0.1), key: connector id
    CONNECTION = "connection"
    RESERVATION = "reservation"  # expiry of a reservation, key: reservation id


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class TimerId:
    kind: TimerKind
    key: int


# --- events (the shell tells the core what happened) --------------------------------------------


@value
class PilotSeen:
    connector_id: int
    pilot: PilotState


@value
class FaultSeen:
    connector_id: int  # 0: the whole charger
    fault: Fault
    active: bool


@value
class CableRated:
    connector_id: int
    max_current_a: float | None


@value
class EnergyRead:
    connector_id: int
    energy_wh: float


@value
class CurrentDrawn:
    """What the EV draws: a meter reading's highest phase current, at ``at_s`` seconds of the
    shell's monotonic clock (core/sharing.py DrawWatch judges it)."""

    connector_id: int
    current_a: float
    at_s: float


@value
class LimitSet:
    connector_id: int  # 0: the charger-wide limit
    limit_a: float | None


@value
class LocalLimitSet:
    """The installer's limit for a connector (ocppctl, the web page); it never raises another."""

    connector_id: int
    limit_a: float | None


@value
class Authorized:
    """An idTag may charge on this connector (local decision, Authorize or remote start)."""

    connector_id: int
    id_tag: str
    parent_id_tag: str | None
    reservation_id: int | None


@value
class WaitCancelled:
    connector_id: int


@value
class TxStarted:
    """The shell recorded the start asked for by BeginTransaction."""

    connector_id: int
    tx: Tx


@value
class StopRequested:
    connector_id: int
    reason: StopReason
    stop_id_tag: str | None = None
    unlock: bool = True  # False: the caller moves the lock itself (UnlockConnector, shutdown)


@value
class TxEnded:
    """The shell recorded the end asked for by EndTransaction."""

    connector_id: int


@value
class LockMoved:
    """A lock move the shell made (asked by MoveLock, or by a command), and whether the lock
    reached the position asked."""

    connector_id: int
    locked: bool
    ok: bool


@value
class IdTagJudged:
    """The Central System's verdict on a running transaction's idTag (§3.5.4)."""

    connector_id: int
    status: AuthStatus
    parent_id_tag: str | None = None  # the Central System's word on the parent wins


@value
class Reserved:
    connector_id: int
    hold: Hold


@value
class ReservationCancelled:
    reservation_id: int


@value
class AvailabilitySet:
    connector_id: int  # 0: the charger and every connector
    operative: bool


@value
class TimerFired:
    timer: TimerId


@value
class Started:
    """Start-up is over (pilots read, stored state rebuilt): sessions react from now on."""


@value
class ShuttingDown:
    """Every contactor opens now; no new session starts."""


Event = (
    PilotSeen
    | FaultSeen
    | CableRated
    | EnergyRead
    | CurrentDrawn
    | LimitSet
    | LocalLimitSet
    | Authorized
    | WaitCancelled
    | TxStarted
    | StopRequested
    | TxEnded
    | IdTagJudged
    | LockMoved
    | Reserved
    | ReservationCancelled
    | AvailabilitySet
    | TimerFired
    | Started
    | ShuttingDown
)


# --- effects (the core tells the shell what to do) ----------------------------------------------


@value
class SetContactor:
    connector_id: int
    closed: bool


@value
class Offer:
    connector_id: int
    current_a: float | None  # None: no PWM; 0: pause; else 6..80 A


@value
class ReportStatus:
    connector_id: int  # 0: the charger
    status: Status
    fault: Fault | None


@value
class ArmTimer:
    timer: TimerId
    at: datetime


@value
class CancelTimer:
    timer: TimerId


@value
class BeginTransaction:
    """Record a transaction start (read the meter, store, queue the message); then TxStarted."""

    connector_id: int
    id_tag: str | None  # None: begun before any idTag (TxPoints)
    parent_id_tag: str | None
    reservation_id: int | None


@value
class RecordAuthorization:
    """Record the idTag a transaction begun without one got (2.0.1: TransactionEvent Updated)."""

    connector_id: int
    tx_key: str
    id_tag: str
    parent_id_tag: str | None


class EndPoint(StrEnum):
    """Which reading and time a transaction's end is recorded with."""

    NOW = "now"  # a fresh meter reading, now
    LAST_RECORD = "last_record"  # the power went while it ran: its last stored reading (§4.10)
    AS_ASKED = "as_asked"  # a stop asked before a restart: its stored time, reason and idTag


@value
class RecordStopRequest:
    """Make a stop durable at once, before anything can wait: a stop asked for is never undone
    by a crash (start-up finishes it as asked instead of resuming the session)."""

    connector_id: int
    tx_key: str
    reason: StopReason
    stop_id_tag: str | None


@value
class EndTransaction:
    """Record a transaction's end; then TxEnded."""

    connector_id: int
    tx_key: str
    reason: StopReason
    stop_id_tag: str | None
    end: EndPoint = EndPoint.NOW


@value
class MoveLock:
    """Move the plug lock; then LockMoved with the outcome."""

    connector_id: int
    locked: bool


@value
class StoreAvailability:
    connector_id: int
    operative: bool
    scheduled: bool | None


@value
class StoreReservation:
    connector_id: int
    hold: Hold


@value
class ForgetReservation:
    reservation_id: int
    expired: bool = False


Effect = (
    SetContactor
    | Offer
    | ReportStatus
    | ArmTimer
    | CancelTimer
    | BeginTransaction
    | RecordAuthorization
    | RecordStopRequest
    | EndTransaction
    | MoveLock
    | StoreAvailability
    | StoreReservation
    | ForgetReservation
)


def initial(specs: list[ConnectorSpec]) -> ChargerState:
    """Power-on state: every output safe (open, no offer), nothing known yet."""
    return ChargerState(connectors={s.connector_id: ConnectorState(spec=s) for s in specs})

