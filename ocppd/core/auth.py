"""Local authorization decisions (OCPP 1.6 §3.4 authorization cache, §3.5 local list, §3.5.4).

``decide`` says, from what the charger knows locally, whether an idTag may start now, must be
refused, or must be asked of the Central System. It is a pure function: the station looks the
entries up, calls it, and acts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from ocppd.core.model import AuthStatus


class Decision(StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"
    ASK = "ask"  # send Authorize and do what the Central System says


@dataclass(frozen=True, slots=True, kw_only=True)
class Credential:
    """What is known about an id tag: its status, expiry and parent."""

    status: AuthStatus
    expiry: datetime | None = None
    parent_id_tag: str | None = None

    def valid_at(self, now: datetime) -> bool:
        return self.status is AuthStatus.ACCEPTED and (self.expiry is None or self.expiry > now)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthPolicy:
    """The authorization settings that decide offline and cached starts."""

    local_pre_authorize: bool
    local_authorize_offline: bool
    allow_offline_tx_for_unknown_id: bool
    local_list_enabled: bool
    cache_enabled: bool


def same_tag(a: str | None, b: str | None) -> bool:
    """idTags are CiString20: compared case-insensitively (§3.9)."""
    return a is not None and b is not None and a.casefold() == b.casefold()


def decide(
    *,
    now: datetime,
    online: bool,
    policy: AuthPolicy,
    listed: Credential | None,
    cached: Credential | None,
) -> tuple[Decision, Credential | None]:
    """Decide for one presentation of an idTag.

    ``listed``/``cached`` are the local list and cache entries (None when absent or disabled).
    Returns the decision and the credential it rests on (for parentIdTag), if any.
    """
    # The local list takes priority over the cache (§3.5.2).
    entry = listed if policy.local_list_enabled and listed is not None else None
    if entry is None and policy.cache_enabled:
        entry = cached
    if entry is not None:
        if entry.valid_at(now):
            if not online:
                return (
                    Decision.ACCEPT if policy.local_authorize_offline else Decision.REJECT
                ), entry
            # Online: LocalPreAuthorize lets a locally valid id start without waiting (§9.1.13).
            return (Decision.ACCEPT if policy.local_pre_authorize else Decision.ASK), entry
        # Known but not valid (blocked, invalid, expired). Offline such entries MUST be
        # rejected (§3.5.4); online, a not-valid cached id SHOULD be re-checked (§3.4).
        return (Decision.ASK if online else Decision.REJECT), entry
    if online:
        return Decision.ASK, None
    # Unknown and offline: AllowOfflineTxForUnknownId decides (§3.5.4), only if local
    # authorization offline is allowed at all.
    if policy.allow_offline_tx_for_unknown_id:
        return Decision.ACCEPT, None
    return Decision.REJECT, None
