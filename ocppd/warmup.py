"""Warm-up in idle time after the boot, so that the first call after a start is not slower.

Start-up stays lean because much is deferred to first use: each OCPP message's JSON schema is
compiled when the first such message is checked, and the DataTransfer plugins are looked for at
the first DataTransfer. Left alone, that cost lands on the first call of each kind after a
start: the first DataTransfer took about 20 ms, the first GetConfiguration 4.5 ms, the first
swipe -> contactor two to three times the later ones. Once the Central System has accepted the
BootNotification, this task does that work in the background instead, one piece per event-loop
turn, so a call that arrives meanwhile waits for one small piece at most. Only the messages of
the paths that wait are compiled (see below), so an idle charger's memory grows little.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

# What the first call of each kind would otherwise compile on its way (request and response
# schemas are both checked): the Central System's everyday calls, and the messages between a
# card swipe and the contactor (Authorize, StartTransaction queued before it closes, the status
# change). A compiled schema costs memory, and three cost megabytes in the daemon (measured with
# `make bench`: MeterValues about 2.6 MiB, RemoteStartTransaction's charging profile about
# 2 MiB, StopTransaction about 1.5 MiB): those compile at their first use, off the paths that
# wait (MeterValues and StopTransaction are queued after the fact; a charger that never sees a
# RemoteStartTransaction never pays for its schema). The warm-up costs about 0.5 MiB.
FROM_CENTRAL_SYSTEM = ("GetConfiguration", "DataTransfer", "ChangeConfiguration",
                       "RemoteStopTransaction", "TriggerMessage")
FROM_CHARGE_POINT = ("Authorize", "StartTransaction", "StatusNotification")


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
