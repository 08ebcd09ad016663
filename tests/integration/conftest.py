"""The Central System every end-to-end test talks to: real, on loopback (tests/csms.py).

csms is imported inside the fixture: where the `ocpp` package is missing (Debian ships none),
each test module that needs it is skipped by its own import of csms. A module-level skip raised
here, in a conftest, would end the whole session on pytest 7 (Debian 12's).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from csms import CentralSystem


@pytest.fixture
async def cs() -> AsyncIterator[CentralSystem]:
    from csms import CentralSystem

    async with CentralSystem() as server:
        yield server
