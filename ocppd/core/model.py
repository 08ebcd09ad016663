"""The core's own vocabulary: connector statuses, stop reasons, and how a status follows from facts.

Nothing here knows OCPP; the 1.6 adapter maps these names to the wire strings
(ocppd/ocpp/v16/mapping.py). The status is *derived* from what is true about a connector rather
than stored and patched, so it can never disagree with the facts it describes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ocppd.core.evse import Fault, PilotState


class Status(StrEnum):
    """Connector status, following the state model of OCPP 1.6 §4.9 (names are our own)."""

    AVAILABLE = "available"
    PREPARING = "preparing"
    CHARGING = "charging"
    SUSPENDED_EV = "suspended_ev"
    SUSPENDED_EVSE = "suspended_evse"
    FINISHING = "finishing"
    RESERVED = "reserved"
    UNAVAILABLE = "unavailable"
    FAULTED = "faulted"


class StopReason(StrEnum):
    LOCAL = "local"
    REMOTE = "remote"
    EV_DISCONNECTED = "ev_disconnected"
    POWER_LOSS = "power_loss"
    HARD_RESET = "hard_reset"
    SOFT_RESET = "soft_reset"
    UNLOCK_COMMAND = "unlock_command"
    DEAUTHORIZED = "deauthorized"
    EMERGENCY_STOP = "emergency_stop"
    REBOOT = "reboot"
    TIMEOUT = "timeout"  # begun before its EV, which did not come in time (TxPoints)
    EV_STOPPED = "ev_stopped"  # the EV stopped taking energy (TxPoint.ENERGY_TRANSFER end)
    OTHER = "other"


class AuthStatus(StrEnum):
    ACCEPTED = "accepted"
    BLOCKED = "blocked"
    EXPIRED = "expired"
    INVALID = "invalid"
    CONCURRENT_TX = "concurrent_tx"


# Faults that end a running transaction rather than pausing it: the charger cannot safely go on.
STOPPING_FAULTS = frozenset({Fault.EMERGENCY_STOP, Fault.GROUND_FAILURE, Fault.CONTACTOR_WELDED})


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectorFacts:
    """What is true about a connector at one instant."""

    pilot: PilotState
    faults: frozenset[Fault]
    operative: bool
    tx_active: bool
    authorized_waiting: bool  # an idTag was accepted, waiting for the EV (idTag first)
    finishing: bool  # a transaction ended, the EV is still plugged
    reserved: bool
    evse_suspended: bool  # the EVSE withholds energy: limit below 6 A, invalid id, energy cap
    contactor_closed: bool


def derive_status(f: ConnectorFacts) -> Status:
    """The §4.9 status that describes ``f``.

    Precedence follows the spec: a fault wins; a running transaction stays a transaction state
    even when the connector was made unavailable (the change is Scheduled until it ends);
    if both EV and EVSE suspend, SuspendedEVSE wins (§4.9).
    """
    blocking = f.faults - {Fault.METER_FAILURE, Fault.READER_FAILURE}
    if blocking:
        return Status.FAULTED
    if f.tx_active:
        if not f.pilot.plugged:
            return Status.SUSPENDED_EV  # EV side disconnected, transaction kept (§4.9 note)
        if f.evse_suspended:
            return Status.SUSPENDED_EVSE
        if f.pilot.wants_power and f.contactor_closed:
            return Status.CHARGING
        if f.pilot.wants_power:
            return Status.SUSPENDED_EVSE
        return Status.SUSPENDED_EV
    if not f.operative:
        return Status.UNAVAILABLE
    if f.finishing and f.pilot.plugged:
        return Status.FINISHING
    if f.pilot.plugged or f.authorized_waiting:
        return Status.PREPARING
    if f.reserved:
        return Status.RESERVED
    return Status.AVAILABLE


def charger_status(*, operative: bool, faults: frozenset[Fault]) -> Status:
    """Status of connector 0, the charger as a whole: only Available/Unavailable/Faulted (§4.9)."""
    if faults - {Fault.METER_FAILURE, Fault.READER_FAILURE}:
        return Status.FAULTED
    return Status.AVAILABLE if operative else Status.UNAVAILABLE
