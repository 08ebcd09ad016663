"""Deadlines at wall-clock instants, and the clock being set under them.

A reservation expires at a date (OCPP 1.6 §5.13), a charging schedule changes at one (§3.13),
a firmware download starts at its retrieveDate (§5.19), a ConnectionTimeOut ends at one: wall-
clock instants. The event loop's timers run on the monotonic clock, so a delay worked out from
the wall clock goes wrong when the clock is set: a Raspberry Pi has no real-time clock, boots
with the time it had when it last shut down, and NTP steps it forward minutes or months later;
the Central System's currentTime corrects it too (app.WallClock). A deadline armed before such a
step fires far too late (set forward) or too early (set back).

``ClockSteps`` notices a step (the wall clock moved against the monotonic clock) and tells the
ones that armed wall-clock deadlines, which arm them again from their instants
(shell/timers.py Timers.rearm, the smart-charging schedule, the firmware waits).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime

from ocppd.tasks import wait_event

log = logging.getLogger("ocppd.clock")

# A running clock drifts by far less than this between two checks (NTP slews small errors
# instead of stepping, below 128 ms); a step is larger.
STEP_TOLERANCE_S = 1.0
CHECK_INTERVAL_S = 5.0


class ClockSteps:
    def __init__(self, wall: Callable[[], datetime], mono: Callable[[], float] = time.monotonic,
                 *, tolerance_s: float = STEP_TOLERANCE_S) -> None:
        self._wall, self._mono, self._tolerance_s = wall, mono, tolerance_s
        self._offset_s = self._offset()
        self._listeners: list[Callable[[], None]] = []

    def _offset(self) -> float:
        return self._wall().timestamp() - self._mono()

    def subscribe(self, on_step: Callable[[], None]) -> Callable[[], None]:
        """Call ``on_step`` after every step; returns what unsubscribes it."""
        self._listeners.append(on_step)
        return lambda: self._listeners.remove(on_step) if on_step in self._listeners else None

    def check(self) -> bool:
        """Whether the wall clock was set since the last check; if so, tell the listeners."""
        offset_s = self._offset()
        step_s = offset_s - self._offset_s
        if abs(step_s) <= self._tolerance_s:
            return False
        self._offset_s = offset_s
        log.info("wall clock set %+.1f s: wall-clock deadlines armed again", step_s)
        for on_step in list(self._listeners):
            on_step()
        return True

    async def watch(self, interval_s: float = CHECK_INTERVAL_S) -> None:
        """Check every ``interval_s`` seconds, for ever (the station runs it)."""
        while True:
            await asyncio.sleep(interval_s)
            self.check()

    async def sleep_until(self, at: datetime) -> None:
        """Sleep until the wall clock reads ``at``, following the clock when it is set."""
        while (left_s := (at - self._wall()).total_seconds()) > 0:
            stepped = asyncio.Event()
            unsubscribe = self.subscribe(stepped.set)
            try:
                await wait_event(stepped, left_s)
            finally:
                unsubscribe()
