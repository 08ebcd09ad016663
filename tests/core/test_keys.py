"""OCPP 1.6 configuration keys: access, validation, persistence (§9, §5.3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ocppd.ocpp.v16.keys import ChangeResult, Keys, standard_keys
from ocppd.storage import Store


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = Store.open(tmp_path / "k.db")
    yield s
    s.close()


def keys(store: Store, **initial: object) -> Keys:
    return Keys(store, standard_keys(connectors=2), initial)


def test_all_34_core_keys_and_profile_keys_are_present(store: Store) -> None:
    names = {d.name for d in keys(store).defs()}
    assert len([d for d in standard_keys(connectors=1) if not d.name.startswith("Ocppd")]) == 50
    assert {
        "ConnectorPhaseRotation",
        "AuthorizationCacheEnabled",
        "LocalAuthListMaxLength",
        "ReserveConnectorZeroSupported",
        "ChargeProfileMaxStackLevel",
        "SecurityProfile",
    } <= names


def test_read_only_key_is_rejected_not_unsupported(store: Store) -> None:
    k = keys(store)
    assert k.change("NumberOfConnectors", "5") is ChangeResult.REJECTED
    assert k.get("NumberOfConnectors") == "2"
    assert k.change("NoSuchKey", "1") is ChangeResult.NOT_SUPPORTED


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("HeartbeatInterval", "-1"),
        ("HeartbeatInterval", "ten"),
        ("LocalPreAuthorize", "yes"),
        ("MeterValuesSampledData", "Energy.Active.Import.Register,Nonsense"),
        ("WebSocketPingInterval", "-5"),
        ("ConnectorPhaseRotation", "1.XYZ"),
        ("LightIntensity", "101"),
        ("AuthorizationKey", "short"),
    ],
)
def test_invalid_values_are_rejected_and_nothing_changes(
    store: Store, key: str, value: str
) -> None:
    k = keys(store)
    before = k.get(key)
    assert k.change(key, value) is ChangeResult.REJECTED
    assert k.get(key) == before


def test_measurand_with_phase_is_accepted(store: Store) -> None:
    assert (
        keys(store).change("MeterValuesSampledData", "Voltage.L1, Current.Import")
        is ChangeResult.ACCEPTED
    )


def test_values_persist_and_win_over_initial_config(store: Store) -> None:
    assert (
        keys(store, HeartbeatInterval=30).change("HeartbeatInterval", "600")
        is ChangeResult.ACCEPTED
    )
    assert keys(store, HeartbeatInterval=30).get("HeartbeatInterval") == "600"


def test_initial_values_from_config_apply(store: Store) -> None:
    assert (
        keys(store, MeterValueSampleInterval=15, LocalPreAuthorize=True).get("LocalPreAuthorize")
        == "true"
    )


def test_authorization_key_is_write_only(store: Store) -> None:
    k = keys(store)
    assert (
        k.change("AuthorizationKey", "0123456789abcdef0123456789abcdef01234567")
        is ChangeResult.ACCEPTED
    )
    assert "AuthorizationKey" not in {d.name for d, _ in k.readable()}


def test_security_profile_may_only_be_raised(store: Store) -> None:
    k = keys(store)
    assert k.change("SecurityProfile", "1") is ChangeResult.ACCEPTED
    assert k.change("SecurityProfile", "0") is ChangeResult.REJECTED
