"""The Central System every end-to-end test talks to: real, on loopback (tests/csms.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from csms import CentralSystem


@pytest.fixture
async def cs() -> AsyncIterator[CentralSystem]:
    async with CentralSystem() as server:
        yield server
