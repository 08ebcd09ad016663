"""OCPP 1.6 smart-charging messages <-> the core smart-charging model.

Conversion tables between the 1.6 JSON spellings (§7.7-7.13) and ``ocppd.core.smart``, plus
request parsing and result building for SetChargingProfile (§6.45), ClearChargingProfile
(§6.9) and GetCompositeSchedule (§6.43). Payloads are assumed to have passed JSON-schema
validation already; what is checked here is what the schema cannot express. Rules about
which profile may be installed live in the core (``ProfileSet.install``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ocppd.core.smart import (
    Installed,
    Kind,
    Profile,
    Purpose,
    RateUnit,
    Recurrency,
    Rejected,
    Schedule,
    SchedulePeriod,
)
from ocppd.errors import OcppdError

PURPOSE = {
    "ChargePointMaxProfile": Purpose.CHARGE_POINT_MAX,
    "TxDefaultProfile": Purpose.TX_DEFAULT,
    "TxProfile": Purpose.TX,
}
KIND = {"Absolute": Kind.ABSOLUTE, "Recurring": Kind.RECURRING, "Relative": Kind.RELATIVE}
RECURRENCY = {"Daily": Recurrency.DAILY, "Weekly": Recurrency.WEEKLY}
RATE_UNIT = {"A": RateUnit.AMPERES, "W": RateUnit.WATTS}

_PURPOSE_JSON = {v: k for k, v in PURPOSE.items()}
_KIND_JSON = {v: k for k, v in KIND.items()}
_RECURRENCY_JSON = {v: k for k, v in RECURRENCY.items()}
_RATE_UNIT_JSON = {v: k for k, v in RATE_UNIT.items()}


class ProfileFormatError(OcppdError, ValueError):
    """A smart-charging payload the schema let through but that makes no sense."""


# -- time ------------------------------------------------------------------------------------


def parse_datetime(text: str) -> datetime:
    """ISO 8601 as §3.14 allows it: ``Z`` or an offset, any number of fraction digits.

    A time without an offset is taken as UTC (the spec recommends UTC everywhere).
    """
    if not isinstance(text, str):
        raise ProfileFormatError(f"not a date-time: {text!r}")
    raw = text.strip()
    # ISO 8601 allows a lower-case z and any number of fraction digits; keep microseconds.
    if raw[-1:] in ("z", "Z"):
        raw = raw[:-1] + "+00:00"
    head, dot, rest = raw.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        frac, tail = rest[:digits], rest[digits:]
        raw = f"{head}.{(frac + '000000')[:6]}{tail}" if frac else head + tail
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ProfileFormatError(f"not an ISO 8601 date-time: {text!r}") from None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def format_datetime(value: datetime) -> str:
    """UTC with ``Z``, milliseconds only when there are any."""
    value = value.astimezone(UTC)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- profile conversion -------------------------------------------------------------------------


def _enum(table: Mapping[str, Any], value: object, name: str) -> Any:
    try:
        return table[value]  # type: ignore[index]
    except (KeyError, TypeError):
        raise ProfileFormatError(f"{name}: unknown value {value!r}") from None


def _opt_int(d: Mapping[str, Any], key: str) -> int | None:
    value = d.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ProfileFormatError(f"{key}: not an integer: {value!r}")
    return int(value)


def _int(d: Mapping[str, Any], key: str) -> int:
    value = _opt_int(d, key)
    if value is None:
        raise ProfileFormatError(f"{key} is required")
    return value


def _number(d: Mapping[str, Any], key: str) -> float | None:
    value = d.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProfileFormatError(f"{key}: not a number: {value!r}")
    return float(value)


def _time(d: Mapping[str, Any], key: str) -> datetime | None:
    value = d.get(key)
    return None if value is None else parse_datetime(value)


def schedule_from_json(d: Mapping[str, Any]) -> Schedule:
    """§7.12 ChargingSchedule."""
    if not isinstance(d, Mapping):
        raise ProfileFormatError("chargingSchedule is required")
    raw_periods = d.get("chargingSchedulePeriod")
    if not isinstance(raw_periods, list) or not raw_periods:
        raise ProfileFormatError("chargingSchedulePeriod needs at least one period")
    periods = []
    for raw in raw_periods:
        if not isinstance(raw, Mapping):
            raise ProfileFormatError("chargingSchedulePeriod entries must be objects")
        limit = _number(raw, "limit")
        if limit is None:
            raise ProfileFormatError("limit is required")
        periods.append(
            SchedulePeriod(
                start_s=_int(raw, "startPeriod"),
                limit=limit,
                number_phases=_opt_int(raw, "numberPhases"),
            )
        )
    return Schedule(
        rate_unit=_enum(RATE_UNIT, d.get("chargingRateUnit"), "chargingRateUnit"),
        periods=tuple(periods),
        duration_s=_opt_int(d, "duration"),
        start=_time(d, "startSchedule"),
        min_rate=_number(d, "minChargingRate"),
    )


def profile_from_json(cs_charging_profiles: Mapping[str, Any], connector_id: int) -> Profile:
    """§7.7 ChargingProfile (``csChargingProfiles``) on ``connector_id``.

    A missing stackLevel is refused: it is required, and guessing 0 would silently replace
    whatever profile sits at level 0.
    """
    d = cs_charging_profiles
    if not isinstance(d, Mapping):
        raise ProfileFormatError("csChargingProfiles must be an object")
    kind = _enum(KIND, d.get("chargingProfileKind"), "chargingProfileKind")
    recurrency = d.get("recurrencyKind")
    return Profile(
        profile_id=_int(d, "chargingProfileId"),
        connector_id=connector_id,
        stack_level=_int(d, "stackLevel"),
        purpose=_enum(PURPOSE, d.get("chargingProfilePurpose"), "chargingProfilePurpose"),
        kind=kind,
        recurrency=None if recurrency is None else _enum(RECURRENCY, recurrency, "recurrencyKind"),
        valid_from=_time(d, "validFrom"),
        valid_to=_time(d, "validTo"),
        tx_id=_opt_int(d, "transactionId"),
        schedule=schedule_from_json(d.get("chargingSchedule")),  # type: ignore[arg-type]
    )


def _limit_json(value: float) -> float | int:
    # §7.13 limit: "multipleOf 0.1"; round down so the reported limit is never exceeded
    tenths = math.floor(round(value * 10, 6)) / 10
    return int(tenths) if tenths == int(tenths) else tenths


def schedule_to_json(s: Schedule, start: datetime | None = None) -> dict[str, Any]:
    """§7.12 ChargingSchedule; ``start`` overrides ``s.start`` as startSchedule."""
    periods: list[dict[str, Any]] = []
    for per in s.periods:
        item: dict[str, Any] = {"startPeriod": per.start_s, "limit": _limit_json(per.limit)}
        if per.number_phases is not None:
            item["numberPhases"] = per.number_phases
        if periods and {k: v for k, v in periods[-1].items() if k != "startPeriod"} == {
            k: v for k, v in item.items() if k != "startPeriod"
        }:
            continue  # equal after rounding to 0.1: one period, as the spec expects
        periods.append(item)
    out: dict[str, Any] = {
        "chargingRateUnit": _RATE_UNIT_JSON[s.rate_unit],
        "chargingSchedulePeriod": periods,
    }
    if s.duration_s is not None:
        out["duration"] = s.duration_s
    when = start if start is not None else s.start
    if when is not None:
        out["startSchedule"] = format_datetime(when)
    if s.min_rate is not None:
        out["minChargingRate"] = _limit_json(s.min_rate)
    return out


def profile_to_json(p: Profile) -> dict[str, Any]:
    """§7.7 ChargingProfile, e.g. for persistence or diagnostics."""
    out: dict[str, Any] = {
        "chargingProfileId": p.profile_id,
        "stackLevel": p.stack_level,
        "chargingProfilePurpose": _PURPOSE_JSON[p.purpose],
        "chargingProfileKind": _KIND_JSON[p.kind],
        "chargingSchedule": schedule_to_json(p.schedule),
    }
    if p.tx_id is not None:
        out["transactionId"] = p.tx_id
    if p.recurrency is not None:
        out["recurrencyKind"] = _RECURRENCY_JSON[p.recurrency]
    if p.valid_from is not None:
        out["validFrom"] = format_datetime(p.valid_from)
    if p.valid_to is not None:
        out["validTo"] = format_datetime(p.valid_to)
    return out


# -- requests and results ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ClearRequest:
    profile_id: int | None = None
    connector_id: int | None = None
    purpose: Purpose | None = None
    stack_level: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CompositeRequest:
    connector_id: int
    duration_s: int
    unit: RateUnit


def parse_set_charging_profile(payload: Mapping[str, Any]) -> Profile:
    """SetChargingProfile.req (§6.45) -> the profile to install on its connector."""
    connector_id = _int(payload, "connectorId")
    if connector_id < 0:
        raise ProfileFormatError("connectorId must not be negative")
    return profile_from_json(payload.get("csChargingProfiles"), connector_id)  # type: ignore[arg-type]


def set_charging_profile_conf(outcome: Installed | Rejected) -> dict[str, str]:
    """SetChargingProfile.conf: Accepted or Rejected (§7.16 ChargingProfileStatus)."""
    return {"status": "Accepted" if isinstance(outcome, Installed) else "Rejected"}


def parse_clear_charging_profile(payload: Mapping[str, Any]) -> ClearRequest:
    """ClearChargingProfile.req (§6.9); every field is optional."""
    purpose = payload.get("chargingProfilePurpose")
    return ClearRequest(
        profile_id=_opt_int(payload, "id"),
        connector_id=_opt_int(payload, "connectorId"),
        purpose=None if purpose is None else _enum(PURPOSE, purpose, "chargingProfilePurpose"),
        stack_level=_opt_int(payload, "stackLevel"),
    )


def clear_charging_profile_conf(removed_ids: list[int]) -> dict[str, str]:
    """ClearChargingProfile.conf: Accepted when something was removed, else Unknown."""
    return {"status": "Accepted" if removed_ids else "Unknown"}


def parse_get_composite_schedule(
    payload: Mapping[str, Any], *, connector_count: int, default_unit: RateUnit = RateUnit.AMPERES
) -> CompositeRequest | None:
    """GetCompositeSchedule.req (§6.43); None when it must be answered Rejected.

    Without chargingRateUnit the answer is in ``default_unit`` (amperes: what the pilot
    signals). An unknown connector or a negative duration is Rejected.
    """
    connector_id = _int(payload, "connectorId")
    duration_s = _int(payload, "duration")
    if not 0 <= connector_id <= connector_count or duration_s < 0:
        return None
    unit = payload.get("chargingRateUnit")
    return CompositeRequest(
        connector_id=connector_id,
        duration_s=duration_s,
        unit=default_unit if unit is None else _enum(RATE_UNIT, unit, "chargingRateUnit"),
    )


def get_composite_schedule_conf(connector_id: int, schedule: Schedule | None) -> dict[str, Any]:
    """GetCompositeSchedule.conf: the schedule with scheduleStart, or Rejected."""
    if schedule is None or schedule.start is None:
        return {"status": "Rejected"}
    return {
        "status": "Accepted",
        "connectorId": connector_id,
        "scheduleStart": format_datetime(schedule.start),
        "chargingSchedule": schedule_to_json(schedule),
    }
