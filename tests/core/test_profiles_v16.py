"""OCPP 1.6 smart-charging payloads <-> core profiles (§6.9, §6.43, §6.45, §7.7-7.13)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from ocppd.core.smart import (
    Installed,
    Kind,
    ProfileSet,
    Purpose,
    RateUnit,
    Recurrency,
    Rejected,
    RejectReason,
    SchedulePeriod,
)
from ocppd.errors import OcppdError
from ocppd.ocpp.v16.profiles import (
    ClearRequest,
    CompositeRequest,
    ProfileFormatError,
    clear_charging_profile_conf,
    format_datetime,
    get_composite_schedule_conf,
    parse_clear_charging_profile,
    parse_datetime,
    parse_get_composite_schedule,
    parse_set_charging_profile,
    profile_from_json,
    profile_to_json,
    set_charging_profile_conf,
)

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)

TX_DEFAULT: dict[str, Any] = {
    "chargingProfileId": 10,
    "stackLevel": 0,
    "chargingProfilePurpose": "TxDefaultProfile",
    "chargingProfileKind": "Absolute",
    "validFrom": "2024-03-01T00:00:00Z",
    "validTo": "2024-03-02T00:00:00.000Z",
    "chargingSchedule": {
        "duration": 300,
        "startSchedule": "2024-03-01T12:00:00Z",
        "chargingRateUnit": "A",
        "chargingSchedulePeriod": [
            {"startPeriod": 0, "limit": 6.0},
            {"startPeriod": 100, "limit": 8.0, "numberPhases": 1},
            {"startPeriod": 200, "limit": 10.0},
        ],
        "minChargingRate": 6.0,
    },
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-01T12:00:00Z", T0),
        ("2024-03-01T12:00:00z", T0),
        ("2024-03-01T12:00:00.5Z", T0 + timedelta(milliseconds=500)),
        ("2024-03-01T12:00:00.123456789Z", T0 + timedelta(microseconds=123456)),
        ("2024-03-01T14:00:00+02:00", T0),
        ("2024-03-01T07:30:00.250-04:30", T0 + timedelta(milliseconds=250)),
        ("2024-03-01T12:00:00", T0),  # no offset: UTC
    ],
)
def test_datetimes_with_z_offsets_and_fractions_parse_to_utc(text: str, expected: datetime) -> None:
    got = parse_datetime(text)
    assert got == expected and got.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["yesterday", "2024-13-01T00:00:00Z", "", 17])
def test_bad_datetime_is_a_profile_format_error(text: Any) -> None:
    with pytest.raises(ProfileFormatError):
        parse_datetime(text)


def test_format_datetime_is_utc_with_z() -> None:
    plus2 = timezone(timedelta(hours=2))
    assert format_datetime(datetime(2024, 3, 1, 14, 0, tzinfo=plus2)) == "2024-03-01T12:00:00Z"
    assert format_datetime(T0 + timedelta(microseconds=250_999)) == "2024-03-01T12:00:00.250Z"


def test_profile_from_json_maps_every_field() -> None:
    p = profile_from_json(TX_DEFAULT, 1)
    assert (p.profile_id, p.connector_id, p.stack_level) == (10, 1, 0)
    assert (p.purpose, p.kind, p.recurrency, p.tx_id) == (
        Purpose.TX_DEFAULT,
        Kind.ABSOLUTE,
        None,
        None,
    )
    assert p.valid_from == datetime(2024, 3, 1, tzinfo=UTC)
    assert p.valid_to == datetime(2024, 3, 2, tzinfo=UTC)
    s = p.schedule
    assert (s.rate_unit, s.duration_s, s.start, s.min_rate) == (RateUnit.AMPERES, 300, T0, 6.0)
    assert s.periods[1] == SchedulePeriod(start_s=100, limit=8.0, number_phases=1)


def test_profile_round_trips_through_json() -> None:
    p = profile_from_json(TX_DEFAULT, 2)
    assert profile_from_json(profile_to_json(p), 2) == p


def test_recurring_tx_profile_in_watts_converts() -> None:
    d = {
        "chargingProfileId": 3,
        "transactionId": 77,
        "stackLevel": 2,
        "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Recurring",
        "recurrencyKind": "Weekly",
        "chargingSchedule": {
            "startSchedule": "2024-03-04T00:00:00Z",
            "chargingRateUnit": "W",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11000}],
        },
    }
    p = profile_from_json(d, 1)
    assert (p.purpose, p.kind, p.recurrency, p.tx_id) == (
        Purpose.TX,
        Kind.RECURRING,
        Recurrency.WEEKLY,
        77,
    )
    assert p.schedule.rate_unit is RateUnit.WATTS and p.schedule.duration_s is None
    assert profile_to_json(p)["recurrencyKind"] == "Weekly"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"stackLevel": None}, "stackLevel"),
        ({"chargingProfilePurpose": "ChargingStationMaxProfile"}, "chargingProfilePurpose"),
        ({"chargingProfileKind": "Sometimes"}, "chargingProfileKind"),
        ({"recurrencyKind": "Monthly"}, "recurrencyKind"),
        ({"validFrom": "soon"}, "date-time"),
        ({"chargingSchedule": None}, "chargingSchedule"),
        ({"chargingProfileId": 1.5}, "chargingProfileId"),
    ],
)
def test_malformed_profile_is_refused_with_a_reason(change: dict[str, Any], message: str) -> None:
    d = {k: v for k, v in (TX_DEFAULT | change).items() if v is not None}
    with pytest.raises(ProfileFormatError, match=message) as err:
        profile_from_json(d, 1)
    assert isinstance(err.value, OcppdError) and isinstance(err.value, ValueError)


@pytest.mark.parametrize(
    "schedule_change",
    [
        {"chargingSchedulePeriod": []},
        {"chargingRateUnit": "kW"},
        {"chargingSchedulePeriod": [{"startPeriod": 0}]},
        {"chargingSchedulePeriod": [{"startPeriod": 0, "limit": "6"}]},
        {"chargingSchedulePeriod": [{"limit": 6}]},
    ],
)
def test_malformed_schedule_is_refused(schedule_change: dict[str, Any]) -> None:
    d = TX_DEFAULT | {"chargingSchedule": TX_DEFAULT["chargingSchedule"] | schedule_change}
    with pytest.raises(ProfileFormatError):
        profile_from_json(d, 1)


def test_set_charging_profile_installs_and_answers() -> None:
    p = parse_set_charging_profile({"connectorId": 1, "csChargingProfiles": TX_DEFAULT})
    ps = ProfileSet()
    out = ps.install(p, now=T0, active_tx_ids={1: None})
    assert set_charging_profile_conf(out) == {"status": "Accepted"}
    tx = parse_set_charging_profile(
        {
            "connectorId": 1,
            "csChargingProfiles": TX_DEFAULT | {"chargingProfilePurpose": "TxProfile"},
        }
    )
    out = ps.install(tx, now=T0, active_tx_ids={1: None})
    assert out == Rejected(reason=RejectReason.NO_TRANSACTION)
    assert set_charging_profile_conf(out) == {"status": "Rejected"}


def test_set_charging_profile_with_negative_connector_is_refused() -> None:
    with pytest.raises(ProfileFormatError):
        parse_set_charging_profile({"connectorId": -1, "csChargingProfiles": TX_DEFAULT})


def test_clear_charging_profile_request_and_answer() -> None:
    req = parse_clear_charging_profile(
        {"connectorId": 1, "chargingProfilePurpose": "TxDefaultProfile", "stackLevel": 0}
    )
    assert req == ClearRequest(connector_id=1, purpose=Purpose.TX_DEFAULT, stack_level=0)
    assert parse_clear_charging_profile({}) == ClearRequest()
    assert parse_clear_charging_profile({"id": 4}).profile_id == 4
    ps = ProfileSet()
    assert isinstance(
        ps.install(profile_from_json(TX_DEFAULT, 1), now=T0, active_tx_ids={1: None}), Installed
    )
    removed = ps.clear(req.profile_id, req.connector_id, req.purpose, req.stack_level)
    assert clear_charging_profile_conf(removed) == {"status": "Accepted"}
    assert clear_charging_profile_conf(ps.clear(profile_id=10)) == {"status": "Unknown"}


def test_get_composite_schedule_request_validation() -> None:
    assert parse_get_composite_schedule(
        {"connectorId": 1, "duration": 300}, connector_count=2
    ) == CompositeRequest(connector_id=1, duration_s=300, unit=RateUnit.AMPERES)
    assert parse_get_composite_schedule(
        {"connectorId": 0, "duration": 0, "chargingRateUnit": "W"}, connector_count=2
    ) == CompositeRequest(connector_id=0, duration_s=0, unit=RateUnit.WATTS)
    assert (
        parse_get_composite_schedule({"connectorId": 3, "duration": 60}, connector_count=2) is None
    )
    assert (
        parse_get_composite_schedule({"connectorId": 1, "duration": -1}, connector_count=2) is None
    )
    with pytest.raises(ProfileFormatError):
        parse_get_composite_schedule({"connectorId": 1}, connector_count=2)


def test_tc_066_get_composite_schedule_conf_lists_the_stacked_periods() -> None:
    ps = ProfileSet()
    for d in (
        TX_DEFAULT,
        {
            "chargingProfileId": 11,
            "stackLevel": 1,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": {
                "duration": 150,
                "startSchedule": "2024-03-01T12:00:00Z",
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 7}],
            },
        },
    ):
        out = ps.install(profile_from_json(d, 1), now=T0, active_tx_ids={1: None})
        assert isinstance(out, Installed)
    req = parse_get_composite_schedule({"connectorId": 1, "duration": 300}, connector_count=1)
    assert req is not None
    s = ps.composite(
        req.connector_id, T0, req.duration_s, req.unit, voltage_v=230, phases=3, connector_max_a=32
    )
    assert get_composite_schedule_conf(req.connector_id, s) == {
        "status": "Accepted",
        "connectorId": 1,
        "scheduleStart": "2024-03-01T12:00:00Z",
        "chargingSchedule": {
            "chargingRateUnit": "A",
            "duration": 300,
            "startSchedule": "2024-03-01T12:00:00Z",
            "chargingSchedulePeriod": [
                {"startPeriod": 0, "limit": 7, "numberPhases": 3},
                {"startPeriod": 150, "limit": 8, "numberPhases": 1},
                {"startPeriod": 200, "limit": 10, "numberPhases": 3},
            ],
        },
    }


def test_composite_limits_are_rounded_down_to_a_tenth_and_remerged() -> None:
    ps = ProfileSet()
    d = TX_DEFAULT | {
        "chargingSchedule": {
            "startSchedule": "2024-03-01T12:00:00Z",
            "chargingRateUnit": "W",
            "chargingSchedulePeriod": [
                {"startPeriod": 0, "limit": 11000},
                {"startPeriod": 60, "limit": 11001},
            ],
        }
    }
    assert isinstance(
        ps.install(profile_from_json(d, 1), now=T0, active_tx_ids={1: None}), Installed
    )
    s = ps.composite(1, T0, 120, RateUnit.AMPERES, voltage_v=230, phases=3)
    body = get_composite_schedule_conf(1, s)["chargingSchedule"]
    # 11000 W / (230 V * 3) = 15.94 A -> 15.9; 11001 W also -> 15.9: one period
    assert body["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 15.9, "numberPhases": 3}]


def test_get_composite_schedule_conf_rejected_without_schedule() -> None:
    assert get_composite_schedule_conf(1, None) == {"status": "Rejected"}
