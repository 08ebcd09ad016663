"""Conversion tables between the core's names and OCPP 1.6 wire strings, and sampled values.

The only place where a core Status becomes "SuspendedEVSE" or a Fault becomes "GroundFailure".
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ocppd.core.auth import Credential
from ocppd.core.evse import Fault, MeterReading
from ocppd.core.model import AuthStatus, Status, StopReason
from ocppd.core.records import TxRecord

STATUS = {
    Status.AVAILABLE: "Available",
    Status.PREPARING: "Preparing",
    Status.CHARGING: "Charging",
    Status.SUSPENDED_EV: "SuspendedEV",
    Status.SUSPENDED_EVSE: "SuspendedEVSE",
    Status.FINISHING: "Finishing",
    Status.RESERVED: "Reserved",
    Status.UNAVAILABLE: "Unavailable",
    Status.FAULTED: "Faulted",
}

STOP_REASON = {
    StopReason.LOCAL: "Local",
    StopReason.REMOTE: "Remote",
    StopReason.EV_DISCONNECTED: "EVDisconnected",
    StopReason.POWER_LOSS: "PowerLoss",
    StopReason.HARD_RESET: "HardReset",
    StopReason.SOFT_RESET: "SoftReset",
    StopReason.UNLOCK_COMMAND: "UnlockCommand",
    StopReason.DEAUTHORIZED: "DeAuthorized",
    StopReason.EMERGENCY_STOP: "EmergencyStop",
    StopReason.REBOOT: "Reboot",
    # 1.6 never ends a transaction at these (its transaction points are fixed, TxPoints)
    StopReason.TIMEOUT: "Other",
    StopReason.EV_STOPPED: "Other",
    StopReason.OTHER: "Other",
}

# ChargePointErrorCode (§7.6) for each hardware fault; vendor detail goes to info.
ERROR_CODE = {
    Fault.GROUND_FAILURE: "GroundFailure",
    Fault.CONTACTOR_WELDED: "OtherError",
    Fault.CONTACTOR_STUCK_OPEN: "OtherError",
    Fault.LOCK_FAILURE: "ConnectorLockFailure",
    Fault.EMERGENCY_STOP: "OtherError",
    Fault.PILOT_FAULT: "EVCommunicationError",
    Fault.METER_FAILURE: "PowerMeterFailure",
    Fault.OVER_TEMPERATURE: "HighTemperature",
    Fault.READER_FAILURE: "ReaderFailure",
    Fault.BOARD_LINK_LOST: "InternalError",
    Fault.OTHER: "OtherError",
}
VENDOR_ERROR = {
    Fault.CONTACTOR_WELDED: "ContactorWelded",
    Fault.CONTACTOR_STUCK_OPEN: "ContactorStuckOpen",
    Fault.EMERGENCY_STOP: "EmergencyStop",
    Fault.BOARD_LINK_LOST: "BoardLinkLost",
}

AUTH_STATUS = {
    "Accepted": AuthStatus.ACCEPTED,
    "Blocked": AuthStatus.BLOCKED,
    "Expired": AuthStatus.EXPIRED,
    "Invalid": AuthStatus.INVALID,
    "ConcurrentTx": AuthStatus.CONCURRENT_TX,
}
AUTH_STATUS_WIRE = {v: k for k, v in AUTH_STATUS.items()}


def transaction_id(tx: TxRecord | None) -> int | None:
    """OCPP 1.6's transactionId (an integer) of a transaction, None before the Central System
    gave one. The station keeps the id as opaque text (``TxRecord.remote_id``)."""
    if tx is None or tx.remote_id is None:
        return None
    return int(tx.remote_id)


def remote_id(transaction_id: int) -> str:
    """The station's text form of a 1.6 transactionId."""
    return str(int(transaction_id))


def iso(at: datetime) -> str:
    """UTC, millisecond precision, 'Z' suffix (§3.14: UTC is strongly recommended)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> datetime:
    """Accept fractional seconds and offsets (§3.14)."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def credential(id_tag_info: dict[str, Any]) -> Credential:
    expiry = id_tag_info.get("expiryDate")
    return Credential(
        status=AUTH_STATUS.get(id_tag_info.get("status", ""), AuthStatus.INVALID),
        expiry=parse_iso(expiry) if expiry else None,
        parent_id_tag=id_tag_info.get("parentIdTag"),
    )


def id_tag_info(cred: Credential) -> dict[str, Any]:
    out: dict[str, Any] = {"status": AUTH_STATUS_WIRE[cred.status]}
    if cred.expiry is not None:
        out["expiryDate"] = iso(cred.expiry)
    if cred.parent_id_tag:
        out["parentIdTag"] = cred.parent_id_tag
    return out


CONTEXT = {
    "periodic": "Sample.Periodic",
    "clock": "Sample.Clock",
    "begin": "Transaction.Begin",
    "end": "Transaction.End",
    "trigger": "Trigger",
}

_L = ("L1", "L2", "L3")
PHASES = ("L1", "L2", "L3", "N", "L1-N", "L2-N", "L3-N", "L1-L2", "L2-L3", "L3-L1")  # §7.34


def _fmt(value: float, digits: int) -> str:
    text = f"{value:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


# The 1.6 schemas spelled the unit "Celcius". The 2025-04 erratum made both spellings valid and
# advises charge points to keep sending the original one, which every Central System accepts,
# including those validating against the first published schemas.
CELSIUS_1_6 = "Celcius"


def sampled_values(
    reading: MeterReading, measurands: list[str], *, context: str, offered_a: float | None
) -> list[dict[str, Any]]:
    """SampledValue entries for the configured measurands (§7.43), from one meter reading.

    Every value carries its unit and, per phase, its phase (§3.16.3: all phases a measurand is
    measured on are reported). Frequency has no unit (errata v4.0 3.84). Values the meter does
    not provide are left out rather than invented.
    """
    ctx = CONTEXT[context]
    out: list[dict[str, Any]] = []

    def add(
        measurand: str,
        value: float,
        unit: str | None,
        phase: str | None = None,
        digits: int = 1,
        location: str = "Outlet",
    ) -> None:
        sv: dict[str, Any] = {
            "value": _fmt(value, digits),
            "context": ctx,
            "measurand": measurand,
            "location": location,
        }
        if unit:
            sv["unit"] = unit
        if phase:
            sv["phase"] = phase
        out.append(sv)

    for item in measurands:
        base, _, want_phase = item.rpartition(".")
        if want_phase not in PHASES:
            base, want_phase = item, ""

        def per_phase(
            values: tuple[float, ...] | None,
            measurand: str,
            unit: str,
            voltage: bool = False,
            want: str = want_phase,
        ) -> None:
            if not values:
                return
            for i, v in enumerate(values[:3]):
                phase = f"{_L[i]}-N" if voltage else _L[i]
                if want and want not in (phase, _L[i]):
                    continue
                add(measurand, v, unit, phase)

        match base:
            case "Energy.Active.Import.Register":
                add(base, reading.energy_import_wh, "Wh", digits=0)
            case "Energy.Active.Export.Register" if reading.energy_export_wh is not None:
                add(base, reading.energy_export_wh, "Wh", digits=0)
            case "Power.Active.Import" if reading.power_w is not None:
                add(base, reading.power_w, "W")
            case "Current.Import":
                per_phase(reading.current_a, base, "A")
            case "Voltage":
                per_phase(reading.voltage_v, base, "V", voltage=True)
            case "Current.Offered" if offered_a is not None:
                add(base, offered_a, "A")
            case "Frequency" if reading.frequency_hz is not None:
                add(base, reading.frequency_hz, None, digits=2)
            case "Power.Factor" if reading.power_factor is not None:
                add(base, reading.power_factor, None, digits=3)
            case "Temperature" if reading.temperature_c is not None:
                add(base, reading.temperature_c, CELSIUS_1_6, location="Body")
            case "SoC" if reading.soc_pct is not None:
                add(base, reading.soc_pct, "Percent", digits=0, location="EV")
            case _:
                pass
    return out
