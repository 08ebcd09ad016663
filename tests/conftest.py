"""Fixtures every test shares.

The autouse ``no_leaks`` fixture fails a test that leaves a thread or an asyncio task running:
for a long-running daemon a forgotten task is a real bug, not a cosmetic one.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

# The example driver package has its own tests, run with the package importable by
# tests/hw/test_driver_plugins.py, as its author would run them.
collect_ignore = ["driver_example"]


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive()}


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    before = _threads()
    yield
    deadline = time.monotonic() + 2.0
    while True:
        extra = {t for t in _threads() - before if not t.daemon or t.name.startswith("ocppd")}
        # asyncio's default executor threads and pytest's own helpers are not ours
        extra = {t for t in extra if not t.name.startswith(("asyncio_", "ThreadPoolExecutor"))}
        if not extra or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not extra, f"test left threads running: {sorted(t.name for t in extra)}"


@pytest.fixture(autouse=True)
async def no_task_leaks() -> None:  # type: ignore[misc]
    """Fail an async test that leaves tasks behind on its loop."""
    loop = asyncio.get_running_loop()
    yield  # type: ignore[misc]
    current = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks(loop) if t is not current and not t.done()]
    if pending:
        await asyncio.sleep(0.05)  # let tasks that are already finishing finish
        pending = [t for t in pending if not t.done()]
    for t in pending:
        t.cancel()
    assert not pending, f"test left tasks running: {[t.get_coro() for t in pending]}"


@pytest.fixture(autouse=True)
def no_stray_security_events() -> Iterator[None]:
    """Security events are buffered process-wide until a daemon attaches its security log
    (ocppd.security): one test's events must not land in the next test's daemon."""
    from ocppd import security

    security.detach()
    security.clear_pending()
    yield
    security.detach()
    security.clear_pending()
