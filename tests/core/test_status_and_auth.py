"""Connector status derivation (OCPP 1.6 §4.9) and local authorization rules (§3.4, §3.5)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from ocppd.core.auth import AuthPolicy, Credential, Decision, decide, same_tag
from ocppd.core.model import AuthStatus, ConnectorFacts, Status, charger_status, derive_status
from ocppd.hw.base import Fault, PilotState

IDLE = ConnectorFacts(
    pilot=PilotState.A,
    faults=frozenset(),
    operative=True,
    tx_active=False,
    authorized_waiting=False,
    finishing=False,
    reserved=False,
    evse_suspended=False,
    contactor_closed=False,
)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, Status.AVAILABLE),
        ({"pilot": PilotState.B}, Status.PREPARING),
        ({"authorized_waiting": True}, Status.PREPARING),
        ({"pilot": PilotState.C, "tx_active": True, "contactor_closed": True}, Status.CHARGING),
        ({"pilot": PilotState.B, "tx_active": True}, Status.SUSPENDED_EV),
        ({"pilot": PilotState.C, "tx_active": True, "evse_suspended": True}, Status.SUSPENDED_EVSE),
        ({"pilot": PilotState.B, "tx_active": True, "evse_suspended": True}, Status.SUSPENDED_EVSE),
        ({"pilot": PilotState.B, "finishing": True}, Status.FINISHING),
        ({"pilot": PilotState.A, "finishing": True}, Status.AVAILABLE),
        ({"reserved": True}, Status.RESERVED),
        ({"operative": False}, Status.UNAVAILABLE),
        (
            {
                "operative": False,
                "pilot": PilotState.C,
                "tx_active": True,
                "contactor_closed": True,
            },
            Status.CHARGING,
        ),
        ({"faults": frozenset({Fault.GROUND_FAILURE}), "tx_active": True}, Status.FAULTED),
        ({"faults": frozenset({Fault.METER_FAILURE})}, Status.AVAILABLE),
    ],
)
def test_status_follows_the_facts(change: dict[str, object], expected: Status) -> None:
    assert derive_status(replace(IDLE, **change)) is expected


def test_when_ev_and_evse_both_suspend_suspended_evse_wins() -> None:
    facts = replace(IDLE, pilot=PilotState.B, tx_active=True, evse_suspended=True)
    assert derive_status(facts) is Status.SUSPENDED_EVSE


def test_connector_zero_is_only_available_unavailable_or_faulted() -> None:
    assert charger_status(operative=True, faults=frozenset()) is Status.AVAILABLE
    assert charger_status(operative=False, faults=frozenset()) is Status.UNAVAILABLE
    assert (
        charger_status(operative=True, faults=frozenset({Fault.EMERGENCY_STOP})) is Status.FAULTED
    )


NOW = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = AuthPolicy(
    local_pre_authorize=False,
    local_authorize_offline=True,
    allow_offline_tx_for_unknown_id=False,
    local_list_enabled=True,
    cache_enabled=True,
)
VALID = Credential(status=AuthStatus.ACCEPTED)
BLOCKED = Credential(status=AuthStatus.BLOCKED)
EXPIRED = Credential(status=AuthStatus.ACCEPTED, expiry=NOW - timedelta(seconds=1))


def test_unknown_tag_online_asks_the_central_system() -> None:
    assert decide(now=NOW, online=True, policy=POLICY, listed=None, cached=None)[0] is Decision.ASK


def test_unknown_tag_offline_follows_allow_offline_tx_for_unknown_id() -> None:
    assert (
        decide(now=NOW, online=False, policy=POLICY, listed=None, cached=None)[0] is Decision.REJECT
    )
    allow = replace(POLICY, allow_offline_tx_for_unknown_id=True)
    assert (
        decide(now=NOW, online=False, policy=allow, listed=None, cached=None)[0] is Decision.ACCEPT
    )


def test_local_pre_authorize_starts_without_asking() -> None:
    pre = replace(POLICY, local_pre_authorize=True)
    assert decide(now=NOW, online=True, policy=pre, listed=None, cached=VALID)[0] is Decision.ACCEPT
    assert decide(now=NOW, online=True, policy=POLICY, listed=None, cached=VALID)[0] is Decision.ASK


def test_local_authorize_offline_uses_the_cache() -> None:
    assert (
        decide(now=NOW, online=False, policy=POLICY, listed=None, cached=VALID)[0]
        is Decision.ACCEPT
    )
    off = replace(POLICY, local_authorize_offline=False)
    assert (
        decide(now=NOW, online=False, policy=off, listed=None, cached=VALID)[0] is Decision.REJECT
    )


def test_local_list_takes_priority_over_the_cache() -> None:
    decision, entry = decide(now=NOW, online=False, policy=POLICY, listed=BLOCKED, cached=VALID)
    assert decision is Decision.REJECT and entry is BLOCKED


def test_expired_or_blocked_entries_are_rejected_offline_and_rechecked_online() -> None:
    for bad in (BLOCKED, EXPIRED):
        assert (
            decide(now=NOW, online=False, policy=POLICY, listed=None, cached=bad)[0]
            is Decision.REJECT
        )
        assert (
            decide(now=NOW, online=True, policy=POLICY, listed=None, cached=bad)[0] is Decision.ASK
        )


def test_disabled_cache_and_list_are_ignored() -> None:
    off = replace(POLICY, cache_enabled=False, local_list_enabled=False)
    assert (
        decide(now=NOW, online=False, policy=off, listed=VALID, cached=VALID)[0] is Decision.REJECT
    )


def test_id_tags_compare_case_insensitively() -> None:
    assert (
        same_tag("04a2b3", "04A2B3")
        and not same_tag("04A2B3", "04A2B4")
        and not same_tag(None, "x")
    )
