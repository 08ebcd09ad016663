"""BootNotification is sent without a schema check: its fields come from [charge_point], whose
loader enforces the schema's limits. These tests hold the two together."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from harness import sim_config_text

from ocppd import config
from ocppd.config import ChargePointConfig
from ocppd.errors import ConfigError
from ocppd.ocpp.v16.chargepoint import ChargePoint
from ocppd.ocpp.validate import SCHEMAS, Validator

# [charge_point] key -> BootNotification.req field
FIELDS = {
    "vendor": "chargePointVendor",
    "model": "chargePointModel",
    "serial_number": "chargePointSerialNumber",
    "firmware_version": "firmwareVersion",
}


def _schema() -> dict[str, Any]:
    text = (SCHEMAS / "BootNotification.json").read_text(encoding="utf-8-sig")
    return dict(json.loads(text))


def _config(tmp_path: Path, **charge_point: str) -> config.Config:
    data = tomllib.loads(sim_config_text(tmp_path, "ws://127.0.0.1:9/ocpp"))
    data["charge_point"].update(charge_point)
    return config.from_dict(data)


def _payload(cfg: config.Config) -> dict[str, Any]:
    return ChargePoint.boot_payload(SimpleNamespace(cfg=cfg))  # type: ignore[arg-type]


def test_config_limits_are_within_the_schema() -> None:
    props = _schema()["properties"]
    meta = {f.name: f.metadata for f in dataclasses.fields(ChargePointConfig)}
    for key, field in FIELDS.items():
        assert props[field]["type"] == "string"
        assert meta[key]["max_len"] <= props[field]["maxLength"], key


def test_payload_at_the_limits_is_valid(tmp_path: Path) -> None:
    longest = {key: "é" * _schema()["properties"][f]["maxLength"] for key, f in FIELDS.items()}
    payload = _payload(_config(tmp_path, **longest))
    assert set(payload) == set(FIELDS.values())  # only fields the config limits
    Validator().check_request("BootNotification", payload)


@pytest.mark.parametrize("key", sorted(FIELDS))
def test_config_refuses_what_the_schema_would(tmp_path: Path, key: str) -> None:
    too_long = "x" * (_schema()["properties"][FIELDS[key]]["maxLength"] + 1)
    with pytest.raises(ConfigError, match=f"charge_point.{key}"):
        _config(tmp_path, **{key: too_long})
    with pytest.raises(ConfigError, match=f"charge_point.{key}"):
        _config(tmp_path, **{key: ""})
