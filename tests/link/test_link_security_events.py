"""Security events the link observes (Security Whitepaper): an invalid Central System certificate
and a refused password, once per transition (a reconnect loop must not flood the bounded
security log)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from linkkit import CentralSystem, Handlers, SteppedSleep, running, settings_for
from pki import CA

from ocppd import security
from ocppd.ocpp.link import Link
from ocppd.security import SecurityEventType

Seen = list[tuple[SecurityEventType, str | None]]


@pytest.fixture
def seen() -> Iterator[Seen]:
    got: Seen = []

    def record(kind: SecurityEventType, info: str | None, at: datetime) -> None:
        got.append((kind, info))

    security.clear_pending()
    security.attach(record)
    try:
        yield got
    finally:
        security.detach()


async def test_untrusted_central_system_certificate_is_a_security_event(
        handlers: Handlers, tmp_path: Path, seen: Seen) -> None:
    ca = CA()
    server = CentralSystem(password="0123456789abcdef",
                           ssl_context=ca.issue("cs", ips=("127.0.0.1",)).server_context(
                               tmp_path, "cs"))
    await server.start()
    sleep = SteppedSleep()
    link = Link(settings_for(server.url, security_profile=2, password="0123456789abcdef",
                             ca_file=CA("another").write(tmp_path / "other.pem")),
                handler=handlers, sleep=sleep)
    try:
        async with running(link):
            for _ in range(3):  # three failed attempts
                await sleep.next()
                sleep.release()
            await sleep.next()
    finally:
        await server.close()
    kinds = [k for k, _ in seen]
    assert kinds == [SecurityEventType.INVALID_CENTRAL_SYSTEM_CERTIFICATE]  # once, not 3 times
    assert "certificate verify failed" in (seen[0][1] or "")


async def test_refused_password_is_a_security_event(handlers: Handlers, seen: Seen) -> None:
    server = CentralSystem(password="the-right-password-16")
    await server.start()
    sleep = SteppedSleep()
    link = Link(settings_for(server.url, security_profile=1, password="a-wrong-password-16b"),
                handler=handlers, sleep=sleep)
    try:
        async with running(link):
            await sleep.next()
            sleep.release()
            await sleep.next()
    finally:
        await server.close()
    assert [k for k, _ in seen] == [SecurityEventType.FAILED_TO_AUTHENTICATE_AT_CENTRAL_SYSTEM]
