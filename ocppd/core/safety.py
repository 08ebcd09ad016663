"""The safety rules, in one place. Every decision to energise a connector goes through here.

- The contactor closes only when the EV asks for power (pilot C or D) within an authorized,
  running transaction that the EVSE is not withholding, with no fault and no stop in progress,
  and, on a socket outlet with a lock, only once the lock confirmed the plug locked: IEC 61851-1
  (case B connection) requires the plug to be held in the socket before it is live and for as
  long as it is live, so that it can never be pulled under load.
- It opens on anything else: pilot A/B/E/F, a fault, an RCD trip, a stop, shutdown, start-up.
- The pilot never offers more than the smallest of the cable rating, the connector rating and
  the smart-charging limit, which includes the connector's share of the charger-wide limit
  (ChargePointMaxProfile, [hardware] max_current_a; ocppd/core/sharing.py); below the 6 A
  minimum of IEC 61851-1 it offers nothing (the EV pauses) instead of an illegal current.

tests/core/test_safety.py checks these as properties over random event sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

from ocppd.core.evse import Fault, PilotState

# IEC 61851-1: 6 A is the smallest current a PWM pilot may offer; 80 A the largest.
MIN_OFFER_A = 6.0
MAX_OFFER_A = 80.0

# A card reader failure does not touch the power path at all.
_HARMLESS = frozenset({Fault.READER_FAILURE})
# A dead meter is no danger, but energy that cannot be measured cannot be billed: the EV is
# paused (PWM at 0 A offer) rather than the pilot being switched off, and resumes by itself.
_PAUSING = frozenset({Fault.METER_FAILURE})


@dataclass(frozen=True, slots=True, kw_only=True)
class SafetyInputs:
    """Every fact the contactor decision depends on, for one connector."""

    pilot: PilotState
    faults: frozenset[Fault]
    tx_authorized: bool  # a transaction is running with an accepted (or offline-allowed) idTag
    evse_suspended: bool  # the EVSE withholds energy (limit < 6 A, invalid id, energy cap)
    stopping: bool  # a stop, reset or shutdown is under way
    lock_required: bool  # a socket outlet with a lock actuator (IEC 61851-1 case B)
    locked: bool  # the last lock move confirmed the plug locked


def may_close(s: SafetyInputs) -> bool:
    """Whether the contactor may be closed now."""
    return (
        s.pilot.wants_power
        and s.tx_authorized
        and not s.evse_suspended
        and not s.stopping
        and not (s.faults - _HARMLESS)
        and (s.locked or not s.lock_required)
    )


def offer_a(
    *,
    connector_max_a: float,
    cable_max_a: float | None,
    smart_limit_a: float | None,
    tx_authorized: bool,
    evse_suspended: bool,
    faults: frozenset[Fault],
) -> float | None:
    """What the pilot offers: None (+12 V, no PWM), 0 (PWM, pause) or a current in 6..80 A."""
    if not tx_authorized or faults - _HARMLESS - _PAUSING:
        return None
    if evse_suspended or faults & _PAUSING:
        return 0.0
    limit = connector_max_a
    for other in (cable_max_a, smart_limit_a):
        if other is not None:
            limit = min(limit, other)
    limit = min(limit, MAX_OFFER_A)
    if limit < MIN_OFFER_A:
        return 0.0
    return limit
