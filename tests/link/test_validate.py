"""Schema validation: the vendored 1.6 schemas, and which CALLERROR code each failure maps to."""

from __future__ import annotations

from importlib import resources
from typing import Any

import pytest

from ocppd.ocpp.rpc import CallErrorCode, OcppCallError
from ocppd.ocpp.validate import Validator


def _code(check: Any, action: str, payload: Any) -> CallErrorCode | None:
    try:
        check(action, payload)
    except OcppCallError as exc:
        return exc.code
    return None


def test_all_78_vendored_schemas_are_packaged_and_compile() -> None:
    folder = resources.files("ocppd.ocpp").joinpath("schemas", "v16")
    names = [p.name for p in folder.iterdir() if p.name.endswith(".json")]
    assert len(names) == 78
    v = Validator()
    assert len(v.actions) == 39
    for action in v.actions:  # every schema compiles
        v._checker(action)
        v._checker(f"{action}Response")
    assert resources.files("ocppd.ocpp").joinpath("schemas", "README.md").is_file()


def test_compiles_lazily_once_per_schema() -> None:
    v = Validator()
    assert v.knows("Heartbeat") and not v.knows("Nope") and not v.knows("../x")
    assert v._compiled == {}  # knowing actions compiles nothing
    v.check_request("Heartbeat", {})
    v.check_request("Heartbeat", {})
    assert list(v._compiled) == ["Heartbeat"]


REQUESTS = [
    ("NoSuchAction", {}, CallErrorCode.NotImplemented),
    ("BootNotification", {"chargePointModel": "m"}, CallErrorCode.OccurenceConstraintViolation),
    ("BootNotification", {"chargePointVendor": 1, "chargePointModel": "m"},
     CallErrorCode.TypeConstraintViolation),
    ("BootNotification", {"chargePointVendor": "v" * 21, "chargePointModel": "m"},
     CallErrorCode.PropertyConstraintViolation),
    ("BootNotification", {"chargePointVendor": "v", "chargePointModel": "m", "x": 1},
     CallErrorCode.FormationViolation),
    ("BootNotification", ["v", "m"], CallErrorCode.FormationViolation),
    ("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Open"},
     CallErrorCode.PropertyConstraintViolation),
    ("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available",
                            "timestamp": "yesterday"}, CallErrorCode.PropertyConstraintViolation),
    ("StatusNotification", {"connectorId": True, "errorCode": "NoError", "status": "Available"},
     CallErrorCode.TypeConstraintViolation),
    ("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available"},
     None),
    ("Heartbeat", {}, None),
]


@pytest.mark.parametrize(("action", "payload", "code"), REQUESTS)
def test_request_failure_maps_to_the_ocppj_error_code(action: str, payload: Any,
                                                      code: CallErrorCode | None) -> None:
    assert _code(Validator().check_request, action, payload) == code


def test_response_is_checked_against_the_response_schema() -> None:
    v = Validator()
    assert _code(v.check_response, "Heartbeat", {"currentTime": "2024-01-01T00:00:00Z"}) is None
    assert _code(v.check_response, "Heartbeat", {}) is (
        CallErrorCode.OccurenceConstraintViolation)
    assert _code(v.check_response, "Reset", {"status": "Maybe"}) is (
        CallErrorCode.PropertyConstraintViolation)


@pytest.mark.parametrize("unit", ["Celcius", "Celsius"])
def test_temperature_unit_spellings_as_shipped(unit: str) -> None:
    payload = {"connectorId": 1, "meterValue": [{"timestamp": "2024-01-01T00:00:00Z",
                                                  "sampledValue": [{"value": "21",
                                                                    "measurand": "Temperature",
                                                                    "unit": unit}]}]}
    Validator().check_request("MeterValues", payload)


def test_description_names_the_field_but_not_the_value() -> None:
    with pytest.raises(OcppCallError) as info:
        Validator().check_request("Authorize", {"idTag": "SECRET-TAG-VALUE-IS-TOO-LONG-X"})
    assert "idTag" in info.value.description
    assert "SECRET" not in info.value.description
