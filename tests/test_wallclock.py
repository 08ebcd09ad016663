"""Wall-clock deadlines follow the clock when it is set (ocppd/wallclock.py): a Pi without a
real-time clock boots in the past and NTP steps it forward later. Injected wall and monotonic
clocks; the event loop is real, and every wait is bounded."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from ocppd.core.session.state import TimerId, TimerKind
from ocppd.shell.timers import Timers
from ocppd.wallclock import ClockSteps

pytestmark = pytest.mark.asyncio

BOOT = datetime(2026, 1, 1, tzinfo=UTC)  # the time the Pi had when it last shut down


class Clocks:
    """A wall clock that can be set, and a monotonic clock that never is."""

    def __init__(self) -> None:
        self.now, self.mono_s = BOOT, 100.0

    def wall(self) -> datetime:
        return self.now

    def mono(self) -> float:
        return self.mono_s

    def elapse(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.mono_s += seconds

    def set_wall(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def test_only_a_step_counts_not_time_passing() -> None:
    c = Clocks()
    steps = ClockSteps(c.wall, c.mono)
    calls: list[int] = []
    steps.subscribe(lambda: calls.append(1))
    c.elapse(3600)
    assert not steps.check() and calls == []
    c.set_wall(0.5)  # below the tolerance: drift, not a step
    assert not steps.check()
    c.set_wall(-7200)
    assert steps.check() and calls == [1]
    assert not steps.check(), "one step is told once"


async def test_the_watch_notices_a_step_by_itself() -> None:
    c = Clocks()
    steps = ClockSteps(c.wall, c.mono)
    told = asyncio.Event()
    steps.subscribe(told.set)
    watch = asyncio.ensure_future(steps.watch(interval_s=0.01))
    try:
        c.set_wall(86400)
        await asyncio.wait_for(told.wait(), 2.0)
    finally:
        watch.cancel()


async def test_a_timer_armed_before_the_clock_is_set_forward_fires_at_its_instant() -> None:
    """A reservation expiring at 12:00, armed while the clock still read 00:00 (boot); NTP then
    sets the clock to 12:00: the timer fires now, not twelve hours later."""
    c = Clocks()
    steps = ClockSteps(c.wall, c.mono)
    fired = asyncio.Event()
    timers = Timers(c.wall, lambda timer: fired.set())
    steps.subscribe(timers.rearm)
    timer = TimerId(kind=TimerKind.RESERVATION, key=7)
    timers.arm(timer, BOOT + timedelta(hours=12))
    c.set_wall(12 * 3600)
    assert steps.check()
    await asyncio.wait_for(fired.wait(), 2.0)
    assert timers.armed() == {}


async def test_a_timer_is_armed_again_for_later_when_the_clock_is_set_back() -> None:
    c = Clocks()
    steps = ClockSteps(c.wall, c.mono)
    timers = Timers(c.wall, lambda timer: None)
    steps.subscribe(timers.rearm)
    at = BOOT + timedelta(minutes=5)
    timers.arm(TimerId(kind=TimerKind.CONNECTION, key=1), at)
    c.set_wall(-3600)
    steps.check()
    assert timers.armed() == {TimerId(kind=TimerKind.CONNECTION, key=1): at}  # the instant kept


async def test_sleep_until_wakes_when_the_clock_reaches_the_instant_by_a_step() -> None:
    c = Clocks()
    steps = ClockSteps(c.wall, c.mono)
    sleeper = asyncio.ensure_future(steps.sleep_until(BOOT + timedelta(days=30)))
    await asyncio.sleep(0)
    c.set_wall(10 * 86400)  # set, but not far enough: sleeps on
    steps.check()
    await asyncio.sleep(0.05)
    assert not sleeper.done()
    c.set_wall(20 * 86400)
    steps.check()
    await asyncio.wait_for(sleeper, 2.0)
