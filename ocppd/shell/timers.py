"""The core's timers on the event loop: one handle per timer identity (core/session/state.py).

Arming an identity replaces its handle; cancel_all at shutdown leaves nothing behind. Timers are
due at wall-clock instants (a reservation expires at a date) but the event loop counts delays
on the monotonic clock: when the wall clock is set (ocppd/wallclock.py), ``rearm`` arms every
timer again from its instant. A timer that fires early anyway is re-armed by the core itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from ocppd.core.session.state import TimerId


class Timers:
    def __init__(self, wall: Callable[[], datetime], fire: Callable[[TimerId], None]) -> None:
        self._wall, self._fire = wall, fire
        self._handles: dict[TimerId, tuple[asyncio.TimerHandle, datetime]] = {}

    def arm(self, timer: TimerId, at: datetime) -> None:
        self.cancel(timer)
        delay_s = max(0.0, (at - self._wall()).total_seconds())
        handle = asyncio.get_running_loop().call_later(delay_s, self._due, timer)
        self._handles[timer] = (handle, at)

    def cancel(self, timer: TimerId) -> None:
        entry = self._handles.pop(timer, None)
        if entry is not None:
            entry[0].cancel()

    def rearm(self) -> None:
        """The wall clock was set: every timer again, from its instant on the new clock."""
        for timer, (_, at) in list(self._handles.items()):
            self.arm(timer, at)

    def cancel_all(self) -> None:
        for timer in list(self._handles):
            self.cancel(timer)

    def armed(self) -> dict[TimerId, datetime]:
        """Every armed timer and when it is due."""
        return {t: at for t, (_, at) in self._handles.items()}

    def _due(self, timer: TimerId) -> None:
        self._handles.pop(timer, None)
        self._fire(timer)
