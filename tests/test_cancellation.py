"""A task that is cancelled stops, even when what it waits for completes in the same loop turn.

On Python 3.11 (Debian 12's) ``asyncio.wait_for`` swallows such a cancellation (CPython issue
gh-86296): a sampler woken by a ChangeConfiguration in the loop turn of the shutdown went on
sampling, and the daemon could not stop. ocppd waits with ``ocppd.tasks.within`` instead, which
lets every cancellation but its own deadline through.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ocppd.shell.sampling import Samplers
from ocppd.tasks import wait_event, within

pytestmark = pytest.mark.asyncio
OCPPD = Path(__file__).resolve().parents[1] / "ocppd"


async def _cancelled_as_woken(run: Callable[[], Coroutine[Any, Any, Any]],
                              wake: Callable[[], None]) -> bool:
    """Start ``run``, then wake it and cancel it in the same loop turn; True if it stopped."""
    task = asyncio.create_task(run())
    await asyncio.sleep(0.01)  # it waits now
    wake()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2.0)
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=2.0)
    return bool(done) and task.cancelled()


async def _nothing(_: object) -> None:
    return None


@pytest.mark.parametrize("sampler", ["periodic", "aligned"])
async def test_a_sampler_woken_as_it_is_cancelled_stops(sampler: str) -> None:
    samplers = Samplers(wall=lambda: datetime.now(UTC), sample_interval_s=lambda: 3600,
                        aligned_interval_s=lambda: 0, sample=_nothing,
                        sample_aligned=_nothing)
    assert await _cancelled_as_woken(getattr(samplers, sampler), samplers.retime)


async def test_within_lets_an_outside_cancellation_through() -> None:
    event = asyncio.Event()

    async def loop_on_the_event() -> None:
        while True:
            try:
                await within(event.wait(), 3600)
            except TimeoutError:
                pass
            event.clear()

    assert await _cancelled_as_woken(loop_on_the_event, event.set)


async def test_within_times_out() -> None:
    with pytest.raises(TimeoutError):
        await within(asyncio.Event().wait(), 0.01)
    assert await within(asyncio.sleep(0, "done"), 1) == "done"


async def test_wait_event_lets_an_outside_cancellation_through() -> None:
    event = asyncio.Event()

    async def loop_on_the_event() -> None:
        while True:
            await wait_event(event, 3600)
            event.clear()

    assert await _cancelled_as_woken(loop_on_the_event, event.set)


async def test_wait_event_says_whether_the_event_came() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    event.set()
    assert await wait_event(event, 0.01) is True


async def test_wait_event_times_out_in_a_task_that_swallowed_a_cancel() -> None:
    """A library that catches CancelledError and goes on leaves the task's count of pending
    cancellations raised; asyncio.timeout reads that count, wait_event involves no
    cancellation at all. (The EVSE WB driver's poll loop on asyncio.timeout died on Debian 12,
    Python 3.11.2 with pymodbus 3.0: make deb-check runs this suite there.)"""
    async def body() -> bool:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass  # swallowed, no uncancel(): as such a library does
        return await wait_event(asyncio.Event(), 0.01)

    task = asyncio.create_task(body())
    await asyncio.sleep(0)
    task.cancel()
    assert await asyncio.wait_for(task, 5) is False


def test_no_module_waits_with_asyncio_wait_for() -> None:
    """The class, not the instance: every wait in ocppd goes through ``within`` or
    ``wait_event``."""
    found = [f"{path.relative_to(OCPPD.parent)}:{n}"
             for path in sorted(OCPPD.rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if re.search(r"\bwait_for\(", line) and "asyncio" in line]
    assert found == []
