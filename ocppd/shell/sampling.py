"""The two meter samplers: periodic (MeterValueSampleInterval) and clock-aligned
(ClockAlignedDataInterval). Each has its own wake-up, so a change of one interval never eats
the other's (a shared wake-up is consumed by whichever sampler wakes first)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from ocppd.tasks import wait_event


def next_boundary(now: datetime, interval_s: int) -> datetime:
    """The first clock-aligned instant after ``now``: multiples of ``interval_s`` from midnight
    UTC (§9.1.5 ClockAlignedDataInterval)."""
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    elapsed_s = (now - midnight).total_seconds()
    return midnight + timedelta(seconds=(int(elapsed_s // interval_s) + 1) * interval_s)


async def _sleep(wake: asyncio.Event, delay_s: float) -> None:
    """Sleep ``delay_s`` or until ``wake`` is set (then clear it for the next round)."""
    await wait_event(wake, delay_s)
    wake.clear()


class Samplers:
    def __init__(
        self,
        *,
        wall: Callable[[], datetime],
        sample_interval_s: Callable[[], int],
        aligned_interval_s: Callable[[], int],
        sample: Callable[[str], Awaitable[None]],
        sample_aligned: Callable[[datetime], Awaitable[None]],
    ) -> None:
        self._wall = wall
        self._sample_interval_s, self._aligned_interval_s = sample_interval_s, aligned_interval_s
        self._sample, self._sample_aligned = sample, sample_aligned
        self._wake_periodic = asyncio.Event()
        self._wake_aligned = asyncio.Event()

    def retime(self) -> None:
        """An interval changed (ChangeConfiguration): both samplers look again."""
        self._wake_periodic.set()
        self._wake_aligned.set()

    async def periodic(self) -> None:
        # MeterValueSampleInterval (§9.1.19): samples during transactions. With 0 the meters are
        # still read once a minute, to keep the register persisted and see a dead meter.
        while True:
            interval = self._sample_interval_s()
            if await wait_event(self._wake_periodic, interval if interval > 0 else 60):
                self._wake_periodic.clear()
                continue  # the interval changed: start a new period from now
            await self._sample("periodic" if interval > 0 else "poll")

    async def aligned(self) -> None:
        # ClockAlignedDataInterval (§3.16.2, §9.1.5): evenly spaced from midnight UTC, timestamps
        # exactly on the boundary (OCTT TC_071). A sample is taken only once its boundary has
        # passed on the wall clock: a wake-up (interval changed) or a clock set back never
        # sends a value stamped in the future.
        boundary: datetime | None = None
        planned_for = 0
        while True:
            interval = self._aligned_interval_s()
            if interval <= 0:
                boundary = None
                await _sleep(self._wake_aligned, 3600)
                continue
            now = self._wall()
            if boundary is None or interval != planned_for:
                boundary, planned_for = next_boundary(now, interval), interval
            wait_s = (boundary - now).total_seconds()
            if wait_s > 0:
                await _sleep(self._wake_aligned, wait_s)
                continue  # look at the clock again before sampling
            at, boundary = boundary, None
            await self._sample_aligned(at)
