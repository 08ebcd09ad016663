"""The EVSE's own vocabulary: control pilot states, faults and meter readings, in the core's
words.

Drivers (ocppd/hw) report them, the session core (ocppd/core/session) decides on them, and
protocol adapters map them to wire codes (ocppd/ocpp/v16/mapping.py). They live here so that
the core needs nothing from the hardware layer.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any


class PilotState(StrEnum):
    """IEC 61851-1 control pilot states, as seen by the EVSE."""

    A = "A"  # +12 V: no vehicle
    B = "B"  # +9 V: vehicle connected, not ready
    C = "C"  # +6 V: vehicle ready to charge
    D = "D"  # +3 V: ready, ventilation required
    E = "E"  # 0 V: no power / short to PE
    F = "F"  # -12 V: EVSE fault or missing diode

    @property
    def plugged(self) -> bool:
        return self in (PilotState.B, PilotState.C, PilotState.D)

    @property
    def wants_power(self) -> bool:
        return self in (PilotState.C, PilotState.D)


class Fault(StrEnum):
    """Hardware faults, in the core's own words (mapped to OCPP error codes in the adapter)."""

    GROUND_FAILURE = "ground_failure"  # RCD / ground-fault monitor tripped
    CONTACTOR_WELDED = "contactor_welded"  # feedback says closed while commanded open
    CONTACTOR_STUCK_OPEN = "contactor_stuck_open"  # feedback says open while commanded closed
    LOCK_FAILURE = "lock_failure"
    EMERGENCY_STOP = "emergency_stop"
    PILOT_FAULT = "pilot_fault"  # state E/F, or the diode check failed
    METER_FAILURE = "meter_failure"
    OVER_TEMPERATURE = "over_temperature"
    READER_FAILURE = "reader_failure"
    BOARD_LINK_LOST = "board_link_lost"  # the driver cannot reach its board (serial/Modbus line)
    OTHER = "other"


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterReading:
    """One reading of an energy meter. Fields a meter does not provide are None.

    Per-phase tuples are (L1, L2, L3); a single-phase meter gives one-element tuples.
    """

    energy_import_wh: float
    power_w: float | None = None
    current_a: tuple[float, ...] | None = None
    voltage_v: tuple[float, ...] | None = None
    frequency_hz: float | None = None
    energy_export_wh: float | None = None
    power_factor: float | None = None
    temperature_c: float | None = None
    soc_pct: float | None = None  # from the EV, when it can tell (simulator, ISO 15118)


def reading_to_data(reading: MeterReading, offered_a: float | None = None) -> dict[str, Any]:
    """A reading as a stored transaction event's data: the fields it has, nothing else (plain
    JSON values; ``offered_a`` is what the EVSE offered at that moment). Values are kept to
    ``DATA_DECIMALS`` places: finer than any meter resolves (1 mWh, 1 mA), and a sample's row
    stays small (SD-card wear: rows per page)."""
    values: dict[str, Any] = {}
    for name in _READING_FIELDS:
        value = getattr(reading, name)
        if isinstance(value, tuple):
            values[name] = [round(v, DATA_DECIMALS) for v in value]
        elif value is not None:
            values[name] = round(value, DATA_DECIMALS)
    data: dict[str, Any] = {"reading": values}
    if offered_a is not None:
        data["offered_a"] = offered_a
    return data


def reading_from_data(data: dict[str, Any] | None) -> tuple[MeterReading | None, float | None]:
    """The reading and the offered current back from ``reading_to_data``'s output."""
    if not data or "reading" not in data:
        return None, None
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                              for k, v in data["reading"].items() if k in _READING_FIELDS}
    offered = data.get("offered_a")
    return MeterReading(**values), None if offered is None else float(offered)


_READING_FIELDS = tuple(f.name for f in fields(MeterReading))
DATA_DECIMALS = 3
