"""Fixtures of the link tests; the pieces live in linkkit.py (importable by other suites)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from linkkit import CentralSystem, Handlers, Pair, running, settings_for

from ocppd.ocpp.link import Link
from ocppd.ocpp.validate import Validator


@pytest.fixture
async def cs() -> AsyncIterator[CentralSystem]:
    server = CentralSystem()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
def handlers() -> Handlers:
    return Handlers()


@pytest.fixture(scope="session")
def validator() -> Validator:
    return Validator()


@pytest.fixture
async def pair(cs: CentralSystem, handlers: Handlers, validator: Validator
               ) -> AsyncIterator[Pair]:
    """A connected Link (with validation) and its Central System connection."""
    events: list[str] = []

    def down(reason: str) -> None:
        events.append(f"down: {reason}")

    link = Link(settings_for(cs.url), handler=handlers, validator=validator,
                on_disconnected=down)
    async with running(link):
        conn = await cs.connection(1)
        await asyncio.wait_for(link.wait_connected(), 5)
        yield Pair(cs=cs, conn=conn, link=link, handlers=handlers, events=events)


