"""The local event stream: what happens on the charger, pushed to whoever follows it.

``ocppctl watch`` and the web page subscribe here; a display, an LED controller or a
home-automation bridge can do the same over the control socket (ocppd.control, ``watch``).

One source of truth: connector and connection events are differences between two successive
answers of the control socket's ``status`` command, the dict ``ocppctl status`` prints. The bus
takes a new snapshot when the charge point reports a change (connection, registration, a
connector status) and, while anybody is subscribed and a session runs, once a second for live
readings (every 10 s otherwise). Sessions
come from the station's transaction hooks, the moment they happen; OCPP frames from the link, to
subscribers that asked for them.

Every event is a flat JSON object::

    {"seq": int, "at": ISO 8601 str, "kind": str, ...}

=================  ==============================================================================
kind               further fields
=================  ==============================================================================
snapshot           "status": the whole status dict (first event of every subscription)
connection         "state", "registration", "last_error", "url" (any of them changed)
status             "connector_id", "status", "error", "pilot", "contactor", "limit_a"
fault              "connector_id", "error" (OCPP ChargePointErrorCode), "active": bool
reading            "connector_id", "energy_wh" (session), "power_w", "limit_a", "register_wh"
session_started    "connector_id", "local_tx_id", "id_tag", "meter_start_wh"
session_confirmed  "connector_id", "local_tx_id", "transaction_id"
session_stopped    "connector_id", "local_tx_id", "transaction_id", "energy_wh", "reason"
ocpp               "direction": "out" | "in", "frame": str (only with frames=True; secrets
                   and idTags masked as in the journal)
overflow           "lost": int (the subscriber was too slow; events were dropped)
=================  ==============================================================================

idTags are personal data: every event carries them as ``display_id_tag`` shows them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from ocppd import privacy
from ocppd.tasks import wait_event

log = logging.getLogger("ocppd.events")

READING_INTERVAL_S = 1.0  # live values for the page and watchers, meters read at most this often
# with no session running, changes arrive through changed(); a slow look keeps nothing stale
IDLE_INTERVAL_S = 10.0
QUEUE_MAX = 1000  # events held for one slow subscriber before it loses some

# connector fields whose change is a "status" event
_STATUS_FIELDS = ("status", "error", "pilot", "contactor", "limit_a")


def display_id_tag(id_tag: str | None) -> str | None:
    """An idTag as shown outside the daemon's own storage: its pseudonym (ocppd.privacy), the
    one the journal shows too, unless the installer chose to reveal idTags."""
    return None if id_tag is None else privacy.tag(id_tag)


def safe_status(status: dict[str, Any]) -> dict[str, Any]:
    """The status dict with every idTag as ``display_id_tag`` shows it."""
    connectors = [{**c, "id_tag": display_id_tag(c.get("id_tag"))}
                  for c in status.get("connectors", [])]
    return {**status, "connectors": connectors}


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Subscription:
    """One follower's queue. Iterate with ``await sub.get()``; ``close()`` when done."""

    def __init__(self, bus: EventBus, *, frames: bool) -> None:
        self._bus = bus
        self.frames = frames
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_MAX)
        self._lost = 0

    def put(self, event: dict[str, Any]) -> None:
        if self._queue.full():
            self._lost += 1  # reported with the next event that fits
            return
        if self._lost and self._queue.qsize() < QUEUE_MAX - 1:
            self._queue.put_nowait({**event, "kind": "overflow", "lost": self._lost})
            self._lost = 0
        self._queue.put_nowait(event)

    async def get(self) -> dict[str, Any]:
        return await self._queue.get()

    def get_nowait(self) -> dict[str, Any] | None:
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def close(self) -> None:
        self._bus._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """Turns status snapshots and hooks into events for subscribers.

    ``snapshot`` is the control socket's status command (async, reads the meters at most once a
    second). ``redact`` masks registered secrets in OCPP frames.
    """

    def __init__(
        self,
        snapshot: Callable[[], Awaitable[dict[str, Any]]],
        *,
        redact: Callable[[str], str] = privacy.scrub,
        reading_interval_s: float = READING_INTERVAL_S,
    ) -> None:
        self._snapshot = snapshot
        self._redact = redact
        self._interval_s = reading_interval_s
        self._subs: set[Subscription] = set()
        self._seq = 0
        self._last: dict[str, Any] | None = None
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- subscribers ------------------------------------------------------------------------

    async def subscribe(self, *, frames: bool = False) -> Subscription:
        """A new subscription; its first event is a snapshot of the whole status."""
        sub = Subscription(self, frames=frames)
        status = await self._snapshot()
        sub.put(self._event("snapshot", {"status": safe_status(status)}))
        self._subs.add(sub)
        if self._last is None:
            self._last = status
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ocppd-events")
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        if not self._subs and self._task is not None:
            self._task.cancel()  # nobody listens: no meter reads on our account
            self._task = None
            self._last = None

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    async def close(self) -> None:
        self._subs.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    # --- publishing -------------------------------------------------------------------------

    def _event(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        self._seq += 1
        return {"seq": self._seq, "at": _now_iso(), "kind": kind, **data}

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        if not self._subs:
            return
        event = self._event(kind, data)
        for sub in list(self._subs):
            sub.put(event)

    def changed(self) -> None:
        """Something in the status may have changed: take a snapshot soon (coalesced)."""
        self._dirty.set()

    def frame(self, direction: str, text: str) -> None:
        """An OCPP frame went ``out`` or came ``in``: for subscribers that asked for frames."""
        wanted = [s for s in self._subs if s.frames]
        if not wanted:
            return
        event = self._event("ocpp", {"direction": direction, "frame": self._redact(text)})
        for sub in wanted:
            sub.put(event)

    def session_started(self, connector_id: int, tx: Any) -> None:
        self.publish("session_started", {
            "connector_id": connector_id, "local_tx_id": tx.local_id,
            "id_tag": display_id_tag(tx.id_tag), "meter_start_wh": tx.meter_start_wh,
        })
        self.changed()

    def session_confirmed(self, connector_id: int, tx: Any) -> None:
        self.publish("session_confirmed", {
            "connector_id": connector_id, "local_tx_id": tx.local_id,
            "transaction_id": tx.remote_id,
        })

    def session_stopped(self, connector_id: int, tx: Any) -> None:
        stop = tx.meter_stop_wh
        self.publish("session_stopped", {
            "connector_id": connector_id, "local_tx_id": tx.local_id,
            "transaction_id": tx.remote_id,
            "energy_wh": None if stop is None else stop - tx.meter_start_wh,
            "reason": tx.stop_reason,
        })
        self.changed()

    # --- the snapshot loop ------------------------------------------------------------------

    async def _run(self) -> None:
        while self._subs:
            interval_s = self._interval_s if self._charging() else IDLE_INTERVAL_S
            await wait_event(self._dirty, interval_s)
            self._dirty.clear()
            try:
                status = await self._snapshot()
            except Exception:
                log.exception("event stream: status snapshot failed")
                continue
            self._diff(self._last, status)
            self._last = status

    def _charging(self) -> bool:
        """A session runs or power flows: readings once a second are worth the meter reads."""
        return any(c.get("local_tx_id") is not None or c.get("power_w")
                   for c in (self._last or {}).get("connectors", []))

    def _diff(self, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
        old = old or {}
        conn_old, conn_new = old.get("connection") or {}, new.get("connection") or {}
        if any(conn_old.get(k) != conn_new.get(k) for k in ("state", "registration",
                                                            "last_error")):
            self.publish("connection", {k: conn_new.get(k) for k in (
                "state", "registration", "last_error", "url")})
        before = {c["id"]: c for c in old.get("connectors", [])}
        for c in new.get("connectors", []):
            prev = before.get(c["id"], {})
            cid = c["id"]
            if prev.get("error", "NoError") != c.get("error", "NoError"):
                active = c.get("error", "NoError") != "NoError"
                self.publish("fault", {"connector_id": cid, "active": active,
                                       "error": c.get("error") if active else prev.get("error")})
            if any(prev.get(k) != c.get(k) for k in _STATUS_FIELDS):
                self.publish("status", {"connector_id": cid,
                                        **{k: c.get(k) for k in _STATUS_FIELDS}})
            if c.get("local_tx_id") is not None or c.get("power_w"):
                self.publish("reading", {"connector_id": cid, **{k: c.get(k) for k in (
                    "energy_wh", "power_w", "limit_a", "register_wh", "local_tx_id")}})
