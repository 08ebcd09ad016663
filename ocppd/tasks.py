"""Background tasks that are tracked, logged when they fail, and cancelled together.

A long-running daemon must neither lose a task's exception nor leave a task behind at
shutdown; every component that starts tasks keeps them in one of these.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


class TaskSet:
    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log = log
        self._what = what
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Awaitable[Any], *, name: str | None = None) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        if name is not None:
            task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error("%s task %s failed", self._what, task.get_name(),
                            exc_info=task.exception())

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t

    def __len__(self) -> int:
        return len(self._tasks)


async def within(aw: Awaitable[T], timeout: float | None) -> T:  # noqa: ASYNC109
    """``await aw``; TimeoutError once ``timeout`` seconds have passed (None: no limit).

    Use this, never ``asyncio.wait_for``: on Python 3.11 (Debian 12's) ``wait_for`` swallows a
    cancellation that arrives just as the awaited thing completes (CPython issue gh-86296,
    fixed in 3.12). A task that waits in a loop then outlives its cancel, and the daemon cannot
    stop: a sampler woken by a ChangeConfiguration in the same loop turn as the shutdown did.
    ``asyncio.timeout`` cancels only for its own deadline and lets every other cancel through.
    """
    async with asyncio.timeout(timeout):
        return await aw



async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:  # noqa: ASYNC109
    """Wait until ``event`` is set (True) or ``timeout`` seconds have passed (False).

    No cancellation is involved in the timeout (``asyncio.wait`` just stops waiting). With
    ``within`` (``asyncio.timeout``), the EVSE WB driver's poll loop died on Debian 12
    (Python 3.11.2, pymodbus 3.0: the conformance kit's link-loss check failed six runs in
    seven, and passes with this). The likely cause: a library that catches CancelledError
    leaves the task's count of pending cancellations raised, which ``asyncio.timeout`` reads
    to tell its own timeout from a cancel, and that early 3.11 releases read strictly; this
    function does not depend on it.
    """
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    try:
        done, _ = await asyncio.wait({waiter}, timeout=timeout)
    finally:
        if not waiter.done():
            waiter.cancel()
    return bool(done)
