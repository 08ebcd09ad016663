"""Warm-up in idle time after the boot, so that the first call after a start is not slower.

Start-up stays lean because much is deferred to first use: each OCPP message's JSON schema is
compiled when the first such message is checked, and the DataTransfer plugins are looked for at
the first DataTransfer. Left alone, that cost lands on the first call of each kind after a
start: the first DataTransfer took about 20 ms, the first GetConfiguration 4.5 ms, the first
swipe -> contactor two to three times the later ones. Once the Central System has accepted the
BootNotification, this task does that work in the background instead, one piece per event-loop
turn, so a call that arrives meanwhile waits for one small piece at most. Only the messages of
the Core profile's daily work are compiled: a charger that never sees the others never pays for
them (see the start-up figures in the README).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

# Calls from the Central System a charger answers in normal operation (request and response
# schemas are both checked), and its own messages (OCPP 1.6 §4, §5). Not here, on purpose:
# RemoteStartTransaction (its charging-profile schema compiles to about 2 MiB) and
# StopTransaction (about 1.5 MiB): compiled together they would grow an idle charger's memory
# by a tenth, and neither is on a path that waits for it (a StopTransaction is queued after the
# contactor opened; a RemoteStartTransaction is compiled once, at the first one).
FROM_CENTRAL_SYSTEM = (
    "GetConfiguration", "DataTransfer", "ChangeConfiguration", "RemoteStopTransaction",
    "TriggerMessage", "ChangeAvailability", "Reset", "UnlockConnector", "ClearCache",
)
FROM_CHARGE_POINT = (
    "Authorize", "StartTransaction", "MeterValues", "StatusNotification", "Heartbeat",
)


class Compiles(Protocol):
    def warm(self, action: str) -> None: ...


async def warm_up(validator: Compiles, *, load_plugins: Callable[[], object] | None = None,
                  others: tuple[Callable[[], object], ...] = ()) -> None:
    """Compile the everyday schemas, run ``others`` and ``load_plugins``, one per loop turn."""
    for action in FROM_CENTRAL_SYSTEM + FROM_CHARGE_POINT:
        await asyncio.sleep(0)  # yield: a call that arrived is served first
        try:
            validator.warm(action)
        except Exception:  # a warm-up failing is no reason to stop: the call compiles later
            log.debug("warm-up of %s failed", action, exc_info=True)
    for step in (*others, *((load_plugins,) if load_plugins is not None else ())):
        await asyncio.sleep(0)
        try:
            step()
        except Exception:
            log.debug("warm-up step failed", exc_info=True)
