"""Whether an idTag may charge: local list and cache first (core/auth.py decides), the Central
System when the decision says ask; every answer it gives updates the cache (§3.4)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from ocppd.core.auth import Credential, Decision, decide
from ocppd.core.model import AuthStatus
from ocppd.ports import CentralPort, Policy
from ocppd.storage import AuthEntry, Store


def _credential(e: AuthEntry | None) -> Credential | None:
    if e is None:
        return None
    return Credential(status=AuthStatus(e.status), expiry=e.expiry, parent_id_tag=e.parent_id_tag)


class Authorizer:
    def __init__(self, *, store: Store, policy: Policy, wall: Callable[[], datetime],
                 port: Callable[[], CentralPort | None]) -> None:
        self._store, self._policy, self._wall, self._port = store, policy, wall, port

    async def authorize(self, id_tag: str) -> tuple[bool, Credential | None]:
        """Whether ``id_tag`` may charge now, and the credential that says so (its parent)."""
        now = self._wall()
        policy = self._policy.auth
        listed = (
            _credential(self._store.local_list_get(id_tag)) if policy.local_list_enabled else None
        )
        cached = _credential(self._store.cache_get(id_tag)) if policy.cache_enabled else None
        port = self._port()
        online = port is not None and port.online
        decision, entry = decide(
            now=now, online=online, policy=policy, listed=listed, cached=cached
        )
        if decision is Decision.ASK:
            assert port is not None
            answer = await port.authorize(id_tag)
            if answer is None:  # could not ask after all: decide as offline
                decision, entry = decide(
                    now=now, online=False, policy=policy, listed=listed, cached=cached
                )
            else:
                self.note(id_tag, answer)
                return answer.valid_at(now), answer
        return decision is Decision.ACCEPT, entry

    def note(self, id_tag: str, cred: Credential) -> None:
        """Every IdTagInfo from the Central System updates the cache (§3.4), unless listed."""
        policy = self._policy.auth
        if not policy.cache_enabled:
            return
        if policy.local_list_enabled and self._store.local_list_get(id_tag) is not None:
            return  # list ids are never cached (§3.5.2)
        self._store.cache_put(
            AuthEntry(
                id_tag=id_tag,
                status=cred.status.value,
                expiry=cred.expiry,
                parent_id_tag=cred.parent_id_tag,
            ),
            max_entries=self._policy.auth_cache_max_entries,
        )
