"""The station: connectors, sessions and transactions, driven by hardware events and commands.

This is the protocol-neutral heart of ocppd. It speaks to the hardware through ocppd.hw.base,
to storage through ocppd.storage.Store, and to the Central System only through the
``CentralPort`` protocol below, which the OCPP 1.6 adapter implements (a 2.0.1 adapter would
implement it again). Policies that OCPP configures (timeouts, what to do on EV disconnect, ...)
arrive through ``Policy``.

Safety-critical reactions happen synchronously inside the board's event callback: when the
pilot drops or a fault appears, outputs are recomputed (``_apply``) before anything else runs,
and never wait behind a network call. Transaction starts and stops are serialized by a lock,
and each one writes the transaction and its queued message in one SQLite transaction, so a
power cut leaves either both or neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from ocppd.config import Config, ConnectorConfig
from ocppd.core import safety, sharing
from ocppd.core.auth import AuthPolicy, Credential, Decision, decide, same_tag
from ocppd.core.model import (
    STOPPING_FAULTS,
    AuthStatus,
    ConnectorFacts,
    Status,
    StopReason,
    charger_status,
    derive_status,
)
from ocppd.errors import MeterError, OcppdError, StorageError
from ocppd.hw.base import (
    BoardEvent,
    CableRating,
    Fault,
    FaultChanged,
    Hardware,
    MeterReading,
    PilotChanged,
    PilotState,
)
from ocppd.privacy import tag
from ocppd.storage import AuthEntry, Reservation, Store, TxRecord
from ocppd.tasks import TaskSet

log = logging.getLogger("ocppd.station")

# How long start-up waits for the first pilot reading of each connector (real boards sample
# and debounce first; the simulator answers at once).
PILOT_SETTLE_S = 1.0


class Refused(OcppdError):
    """A command the station understood but will not carry out (the message says why)."""


class Policy(Protocol):
    """Behaviour the Central System configures. Read on every use, so changes apply at once."""

    @property
    def connection_timeout_s(self) -> int: ...
    @property
    def stop_on_ev_disconnect(self) -> bool: ...
    @property
    def unlock_on_ev_disconnect(self) -> bool: ...
    @property
    def meter_sample_interval_s(self) -> int: ...
    @property
    def clock_aligned_interval_s(self) -> int: ...
    @property
    def stop_on_invalid_id(self) -> bool: ...
    @property
    def max_energy_on_invalid_id_wh(self) -> int | None: ...
    @property
    def authorize_remote_tx(self) -> bool: ...
    @property
    def auth(self) -> AuthPolicy: ...
    @property
    def auth_cache_max_entries(self) -> int: ...


class CentralPort(Protocol):
    """What the station needs from the Central System adapter."""

    @property
    def online(self) -> bool: ...

    async def authorize(self, id_tag: str) -> Credential | None:
        """Ask the Central System. None when it cannot be asked (offline, timeout)."""

    def enqueue_start(self, tx: TxRecord) -> None:
        """Queue the start message. Called inside a Store.atomic() block."""

    def enqueue_stop(self, tx: TxRecord) -> None:
        """Queue the stop message (tx is finished). Called inside a Store.atomic() block."""

    def meter_sample(
        self,
        *,
        connector_id: int,
        tx: TxRecord | None,
        reading: MeterReading,
        at: datetime,
        context: str,
        offered_a: float | None,
    ) -> None:
        """A meter sample. context: periodic, clock, begin, end, trigger."""

    def status_changed(self, connector_id: int, status: Status, fault: Fault | None) -> None: ...


# Runs as a session's transaction is recorded, before the contactor may close (a limit that
# came with the start command is installed here, so it holds from the first ampere).
SessionHook = Callable[[int, TxRecord], None]


@dataclass(slots=True)
class _Waiting:
    """An authorization waiting for an EV to be plugged in (ConnectionTimeOut)."""

    id_tag: str
    parent_id_tag: str | None
    reservation_id: int | None
    handle: asyncio.TimerHandle | None = None
    on_start: SessionHook | None = None


@dataclass(slots=True)
class Connector:
    """One connector's live state: pilot, contactor, session, availability."""

    id: int
    cfg: ConnectorConfig
    pilot: PilotState = PilotState.A
    faults: dict[Fault, str] = field(default_factory=dict)
    operative: bool = True
    scheduled_operative: bool | None = None
    waiting: _Waiting | None = None
    tx: TxRecord | None = None
    tx_parent_id_tag: str | None = None
    invalid_id: bool = False  # StartTransaction.conf refused the idTag, energy withheld
    stopping: bool = False
    finishing: bool = False
    reservation_id: int | None = None
    reservation_tag: tuple[str, str | None] | None = None
    cable_max_a: float | None = None
    smart_limit_a: float | None = None
    local_limit_a: float | None = None  # the installer's own limit (ocppctl limit, web page)
    share_a: float | None = None  # its share of the charger-wide limit (None: no such limit)
    draw: sharing.DrawWatch = field(default_factory=sharing.DrawWatch)
    offer_a: float | None = None
    contactor_closed: bool = False
    lock_fitted: bool = False  # a socket outlet with a lock actuator (IEC 61851-1 case B)
    locked: bool = False  # the last lock move confirmed the plug locked (unknown at start-up)
    status: Status | None = None
    last_reading: MeterReading | None = None
    last_good_energy_wh: float | None = None
    last_read_s: float | None = None  # monotonic time of last_reading
    switched_s: float | None = None  # monotonic time the contactor last moved

    def all_faults(self, charger_faults: dict[Fault, str]) -> frozenset[Fault]:
        return frozenset(self.faults) | frozenset(charger_faults)

    def facts(self, charger_faults: dict[Fault, str]) -> ConnectorFacts:
        return ConnectorFacts(
            pilot=self.pilot,
            faults=self.all_faults(charger_faults),
            operative=self.operative,
            tx_active=self.tx is not None,
            authorized_waiting=self.waiting is not None,
            finishing=self.finishing,
            reserved=self.reservation_id is not None,
            evse_suspended=self.evse_suspended,
            contactor_closed=self.contactor_closed,
        )

    @property
    def own_limit_a(self) -> float | None:
        """The lower of the smart-charging and the local limit (None: neither)."""
        limits = [x for x in (self.smart_limit_a, self.local_limit_a) if x is not None]
        return min(limits) if limits else None

    @property
    def withheld(self) -> bool:
        """Energy withheld for this connector's own reasons: its limit below 6 A, an invalid
        idTag, or no working meter."""
        low_limit = self.own_limit_a is not None and self.own_limit_a < safety.MIN_OFFER_A
        return self.invalid_id or low_limit or Fault.METER_FAILURE in self.faults

    @property
    def evse_suspended(self) -> bool:
        """The EVSE withholds energy: withheld, or no room left in the charger-wide limit."""
        no_share = self.share_a is not None and self.share_a < safety.MIN_OFFER_A
        return self.withheld or no_share

    @property
    def session_energy_wh(self) -> float | None:
        if self.tx is None or self.last_good_energy_wh is None:
            return None
        return max(0.0, self.last_good_energy_wh - self.tx.meter_start_wh)


def utcnow() -> datetime:
    return datetime.now(UTC)


def next_boundary(now: datetime, interval_s: int) -> datetime:
    """The first clock-aligned instant after ``now``: multiples of ``interval_s`` from midnight
    UTC (§9.1.5 ClockAlignedDataInterval)."""
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    elapsed_s = (now - midnight).total_seconds()
    return midnight + timedelta(seconds=(int(elapsed_s // interval_s) + 1) * interval_s)


class Station:
    def __init__(
        self,
        *,
        cfg: Config,
        store: Store,
        hw: Hardware,
        policy: Policy,
        wall: Callable[[], datetime] = utcnow,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.hw = hw
        self.policy = policy
        self.wall = wall
        self.mono = mono
        self.port: CentralPort | None = None
        self.connectors = {i + 1: Connector(id=i + 1, cfg=c) for i, c in enumerate(cfg.connectors)}
        for c in self.connectors.values():
            c.lock_fitted = c.cfg.cable == "socket" and hw.board.has_lock(c.id)
        self.charger_faults: dict[Fault, str] = {}
        self.charger_operative = True
        self.charger_status: Status | None = None
        self._lock = asyncio.Lock()
        self._tasks = TaskSet(log, "station")
        # one wake-up per sampler: a shared one is consumed by whichever sampler wakes first
        self._wake_periodic = asyncio.Event()
        self._wake_aligned = asyncio.Event()
        # §5.13: one expiry timer per reservation, owned here, re-armed from storage at start-up
        self._reservation_timers: dict[int, asyncio.TimerHandle] = {}
        self._started = False
        self._pilot_seen: set[int] = set()
        self._pilots_known = asyncio.Event()
        self.storage_error: str | None = None  # last write failure (full disk), for ocppctl
        # hooks of other features (smart charging): (connector id, transaction)
        self.on_tx_started: list[Callable[[int, TxRecord], None]] = []
        self.on_tx_confirmed: list[Callable[[int, TxRecord], None]] = []
        self.on_tx_ended: list[Callable[[int, TxRecord], None]] = []
        # after recovery, before any output is applied: restore limits from storage
        self.on_recovered: list[Callable[[], None]] = []
        self.charger_limit_a: float | None = None  # ChargePointMax (smart charging), A/phase
        # Resume open transactions at start whatever system.power_loss says: the last run
        # stopped for a restart that keeps the sessions (a package upgrade).
        self.resume_open_transactions = False

    # --- lifecycle ------------------------------------------------------------------------------

    def attach(self, port: CentralPort) -> None:
        self.port = port

    async def start(self) -> None:
        """Outputs safe first, then availability, then recover what a power cut interrupted."""
        for c in self.connectors.values():
            stored = self.store.get_availability(c.id)
            if stored is not None:
                c.operative, c.scheduled_operative = stored
        stored0 = self.store.get_availability(0)
        if stored0 is not None:
            self.charger_operative = stored0[0]
        self._restore_reservations()
        await self.hw.board.start(self._emit)
        # Recovery depends on whether an EV is still plugged in: wait (briefly) for the board's
        # first pilot reading of every connector.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._pilots_known.wait(), PILOT_SETTLE_S)
        for reader in self.hw.readers:
            await reader.start(self._on_card)
        await self._read_all_meters()
        await self._recover()
        for recovered in self.on_recovered:
            recovered()  # stored limits hold before a resumed session gets its first ampere
        for c in self.connectors.values():
            if c.tx is not None:  # resumed: limits (smart charging) are set before any offer
                for hook in self.on_tx_started:
                    hook(c.id, c.tx)
            elif c.scheduled_operative is not None:  # its transaction ended with the power
                self._set_operative(c, c.scheduled_operative)
        for c in self.connectors.values():
            if c.lock_fitted and c.tx is not None:
                # A resumed session gets no energy before its plug is locked again: what the
                # lock did while the daemon was down is unknown (_relock explains a failure).
                await self._relock(c)
            elif c.lock_fitted:
                # No session holds this plug (ended by the recovery, or stopped at shutdown
                # without its unlock): release it, as at the end of any session, or a lock
                # left engaged keeps the driver's cable.
                await self._move_lock(c, locked=False)
        self._started = True
        for c in self.connectors.values():
            self._apply(c)
        self._report_charger()
        self._spawn(self._sampler(), name="ocppd-sampler")
        self._spawn(self._aligned_sampler(), name="ocppd-aligned")

    async def close(self, *, stop_transactions: StopReason | None) -> None:
        """Shut down: stop transactions if asked, open every contactor, release hardware."""
        for c in self.connectors.values():
            c.stopping = True
            self._apply(c)  # contactors open before anything that can wait
        if stop_transactions is not None:
            for c in self.connectors.values():
                if c.tx is not None:
                    await self.stop_transaction(c.id, stop_transactions, force=True)
        for handle in self._reservation_timers.values():
            handle.cancel()  # the reservations stay stored: the next start-up re-arms them
        self._reservation_timers.clear()
        await self._tasks.cancel_all()
        for reader in self.hw.readers:
            with contextlib.suppress(Exception):
                await reader.close()
        await self.hw.board.close()
        for meter in self.hw.meters.values():
            with contextlib.suppress(Exception):
                await meter.close()
        for closer in self.hw.extra_closers:  # shared parts (a Modbus line), after their users
            with contextlib.suppress(Exception):
                result = closer()
                if inspect.isawaitable(result):
                    await result

    def _spawn(self, coro: Coroutine[Any, Any, Any], *, name: str | None = None) -> None:
        self._tasks.spawn(coro, name=name)

    def retime(self) -> None:
        """Sampling intervals changed (ChangeConfiguration): recompute the timers."""
        self._wake_periodic.set()
        self._wake_aligned.set()

    # --- outputs ----------------------------------------------------------------------------------

    def _apply(self, c: Connector) -> None:
        """Recompute outputs of ``c``, and of every connector whose share of the charger-wide
        limit changed with it: lowered offers first, then raised ones, so that the sum of the
        offers never exceeds the limit, not even for an instant (ocppd/core/sharing.py)."""
        lowered, raised = self._reshare()
        for other in lowered:
            if other is not c:
                self._apply_one(other)
        self._apply_one(c)
        for other in raised:
            if other is not c:
                self._apply_one(other)

    # --- the charger-wide limit (ChargePointMaxProfile, [hardware] max_current_a) ----------------

    def set_charger_limit(self, limit_a: float | None) -> None:
        """The ChargePointMax limit of the whole charger, A per phase (None: none)."""
        if limit_a != self.charger_limit_a:
            self.charger_limit_a = limit_a
            for c in self.connectors.values():
                self._apply(c)

    def _charger_total_a(self) -> float | None:
        limits = [
            x for x in (self.cfg.hardware.max_current_a, self.charger_limit_a) if x is not None
        ]
        return min(limits) if limits else None

    def _reshare(self) -> tuple[list[Connector], list[Connector]]:
        """New shares for every connector; returns those whose share went down, and up."""
        total = self._charger_total_a()
        demands = []
        for c in self.connectors.values():
            if c.tx is None:
                c.draw.reset()  # a new session is judged afresh
            c.draw.note_asking(c.pilot.wants_power)  # an EV that starts asking gets its share
            own = self._own_offer_a(c)
            # an unplugged EV (transaction kept, §4.9 SuspendedEV) cannot draw: no share
            if total is not None and own is not None and own > 0 and c.pilot.plugged:
                ceiling = own if c.draw.ceiling_a is None else min(own, c.draw.ceiling_a)
                since = c.tx.started_at.timestamp() if c.tx is not None else 0.0
                demands.append(
                    sharing.Demand(
                        connector_id=c.id,
                        ceiling_a=ceiling,
                        asking=c.pilot.wants_power,
                        since=since,
                    )
                )
        shares = sharing.share(total, demands) if total is not None else {}
        lowered: list[Connector] = []
        raised: list[Connector] = []
        for c in self.connectors.values():
            new = None if total is None else shares.get(c.id, 0.0)
            old = c.share_a
            if new == old:
                continue
            c.share_a = new
            went_down = old is None or (new is not None and new < old)
            (lowered if went_down else raised).append(c)
        return lowered, raised

    def _own_offer_a(self, c: Connector) -> float | None:
        """What the pilot would offer without the charger-wide limit."""
        return safety.offer_a(
            connector_max_a=c.cfg.max_current_a,
            cable_max_a=c.cable_max_a,
            smart_limit_a=c.own_limit_a,
            tx_authorized=c.tx is not None and not c.stopping,
            evse_suspended=c.withheld,
            faults=c.all_faults(self.charger_faults),
        )

    def _note_draw(self, c: Connector, reading: MeterReading) -> None:
        """An EV that draws clearly less than offered frees its share (core/sharing.py)."""
        if c.share_a is None or not reading.current_a:
            return
        if c.draw.observe(max(reading.current_a), c.offer_a, self.mono()):
            self._apply(c)

    def _apply_one(self, c: Connector) -> None:
        """Recompute pilot offer, contactor and status from the facts. Synchronous on purpose."""
        faults = c.all_faults(self.charger_faults)
        authorized = c.tx is not None and not c.stopping
        limits = [x for x in (c.own_limit_a, c.share_a) if x is not None]
        offer = safety.offer_a(
            connector_max_a=c.cfg.max_current_a,
            cable_max_a=c.cable_max_a,
            smart_limit_a=min(limits) if limits else None,
            tx_authorized=authorized,
            evse_suspended=c.evse_suspended,
            faults=faults,
        )
        close = safety.may_close(
            safety.SafetyInputs(
                pilot=c.pilot,
                faults=faults,
                tx_authorized=authorized,
                evse_suspended=c.evse_suspended,
                stopping=c.stopping,
                lock_required=c.lock_fitted,
                locked=c.locked,
            )
        )
        if c.contactor_closed and not close:  # open first, then change the offer
            self.hw.board.set_contactor(c.id, False)
            c.contactor_closed, c.switched_s = False, self.mono()
        if offer != c.offer_a:
            self.hw.board.set_offer(c.id, offer)
            c.offer_a = offer
        if close and not c.contactor_closed:
            self.hw.board.set_contactor(c.id, True)
            c.contactor_closed, c.switched_s = True, self.mono()
        self._report(c)

    def _report(self, c: Connector) -> None:
        status = derive_status(c.facts(self.charger_faults))
        if c.stopping and c.tx is not None and status is not Status.FAULTED:
            # While a stop is under way (contactor open, meter being read) the connector is in
            # no state worth reporting: the next status is Finishing/Available, after the stop.
            return
        if status is not c.status:
            c.status = status
            fault = next(iter(c.all_faults(self.charger_faults)), None)
            log.info("connector %d: %s", c.id, status.value, extra={"CONNECTOR_ID": c.id})
            if self.port is not None and self._started:
                self.port.status_changed(c.id, status, fault)
        leds = getattr(self.hw.board, "set_leds", None)
        if leds is not None:
            statuses = [x.status for x in self.connectors.values()]
            leds(
                ready=Status.FAULTED not in statuses,
                charging=Status.CHARGING in statuses,
                fault=Status.FAULTED in statuses,
            )

    def _report_charger(self) -> None:
        status = charger_status(
            operative=self.charger_operative, faults=frozenset(self.charger_faults)
        )
        if status is not self.charger_status:
            self.charger_status = status
            if self.port is not None and self._started:
                self.port.status_changed(0, status, next(iter(self.charger_faults), None))

    # --- hardware events --------------------------------------------------------------------------

    def _emit(self, ev: BoardEvent) -> None:
        match ev:
            case PilotChanged(connector_id=cid, state=state):
                c = self.connectors.get(cid)
                if c is None:
                    return
                self._pilot_seen.add(cid)
                if len(self._pilot_seen) == len(self.connectors):
                    self._pilots_known.set()
                if c.pilot is state:
                    return
                old, c.pilot = c.pilot, state
                if state in (PilotState.E, PilotState.F):
                    c.faults[Fault.PILOT_FAULT] = f"pilot state {state.value}"
                else:
                    c.faults.pop(Fault.PILOT_FAULT, None)
                if (state is PilotState.A) != (old is PilotState.A):
                    # A cable left or entered the socket: whatever a failed lock move left
                    # behind is gone. Without lock feedback nothing else would ever tell.
                    self._lock_fault(c, None)
                self._apply(c)
                if self._started:
                    self._spawn(self._after_pilot(c, old, state))
            case FaultChanged(connector_id=cid, fault=fault, active=active, detail=detail):
                if cid != 0 and cid not in self.connectors:
                    return
                targets = self.connectors.values() if cid == 0 else [self.connectors[cid]]
                book = self.charger_faults if cid == 0 else self.connectors[cid].faults
                if active:
                    book[fault] = detail
                    log.warning("fault %s on %s: %s", fault.value, cid or "charger", detail)
                else:
                    book.pop(fault, None)
                    log.info("fault %s on %s cleared", fault.value, cid or "charger")
                for c in targets:
                    self._apply(c)
                    if active and fault in STOPPING_FAULTS and c.tx is not None and self._started:
                        reason = (
                            StopReason.EMERGENCY_STOP
                            if fault is Fault.EMERGENCY_STOP
                            else StopReason.OTHER
                        )
                        self._stop_soon(c, reason)
                self._report_charger()
            case CableRating(connector_id=cid, max_current_a=amps):
                c = self.connectors.get(cid)
                if c is not None:
                    c.cable_max_a = amps
                    self._apply(c)

    async def _after_pilot(self, c: Connector, old: PilotState, new: PilotState) -> None:
        if new.plugged and not old.plugged:
            c.finishing = False
            if c.waiting is not None and c.tx is None:
                w = c.waiting
                self._clear_waiting(c)
                try:
                    await self._start(c, w.id_tag, w.parent_id_tag, w.reservation_id, w.on_start)
                except Refused as exc:
                    log.warning("connector %d: %s", c.id, exc)
            elif c.tx is not None and c.lock_fitted and not c.locked:
                async with self._lock:  # never across a stop, which releases the plug
                    if c.tx is not None and not c.locked:
                        await self._relock(c)  # the EV is back for a session whose lock failed
        elif new is PilotState.A and old is not PilotState.A:
            c.finishing = False
            if c.tx is not None and self.policy.stop_on_ev_disconnect:
                await self.stop_transaction(c.id, StopReason.EV_DISCONNECTED)
                if self.policy.unlock_on_ev_disconnect and self.hw.board.has_lock(c.id):
                    await self._move_lock(c, locked=False)
            self._apply(c)

    def _on_card(self, id_tag: str) -> None:
        self._spawn(self._card(id_tag), name="ocppd-card")

    async def _card(self, id_tag: str) -> None:
        try:
            msg = await self.swipe(id_tag, None)
            log.info("card %s: %s", tag(id_tag), msg)
        except Refused as exc:
            log.info("card %s refused: %s", tag(id_tag), exc)

    # --- sessions ---------------------------------------------------------------------------------

    def _connector(self, connector_id: int) -> Connector:
        c = self.connectors.get(connector_id)
        if c is None:
            raise Refused(f"no connector {connector_id}")
        return c

    def _usable(self, c: Connector) -> bool:
        return (
            c.operative
            and self.charger_operative
            and c.tx is None
            and not c.waiting
            and not (set(c.faults) | set(self.charger_faults)) - {Fault.READER_FAILURE}
        )

    def _reserved_for(self, c: Connector, id_tag: str, parent: str | None) -> bool:
        if c.reservation_tag is None:
            return True
        tag, rparent = c.reservation_tag
        return same_tag(tag, id_tag) or (rparent is not None and same_tag(rparent, parent))

    def _pick_free(self, id_tag: str | None, parent: str | None) -> Connector | None:
        free = [c for c in self.connectors.values() if self._usable(c)]
        if id_tag is not None:  # a reservation for this tag wins
            for c in free:
                if c.reservation_tag is not None and self._reserved_for(c, id_tag, parent):
                    return c
        free = [c for c in free if c.reservation_tag is None]
        plugged = [c for c in free if c.pilot.plugged]
        candidates = plugged or free
        return candidates[0] if candidates else None

    async def swipe(self, id_tag: str, connector_id: int | None) -> str:
        """A card was presented (reader or ocppctl). Returns what happened, in words."""
        id_tag = id_tag.strip()
        if not 1 <= len(id_tag) <= 20:
            raise Refused("an idTag has 1 to 20 characters")
        # Stopping: the same idTag needs no Authorize (§3.4, §4.1)
        running = [c for c in self.connectors.values() if c.tx is not None]
        if connector_id is not None:
            running = [c for c in running if c.id == connector_id]
        for c in running:
            assert c.tx is not None
            if same_tag(c.tx.id_tag, id_tag):
                await self.stop_transaction(c.id, StopReason.LOCAL, stop_id_tag=id_tag)
                return f"stopped transaction on connector {c.id}"
        for c in self.connectors.values():  # cancel a waiting authorization with the same card
            if (
                c.waiting is not None
                and same_tag(c.waiting.id_tag, id_tag)
                and connector_id in (None, c.id)
            ):
                self._clear_waiting(c)
                self._apply(c)
                return f"cancelled the waiting session on connector {c.id}"
        ok, cred = await self._authorize(id_tag)
        parent = cred.parent_id_tag if cred else None
        # TC_069: another card with the same parentIdTag stops the session, whether the card
        # came with a connector (ocppctl --connector) or from a reader that names none. A stop
        # wins over starting a second session elsewhere.
        for c in running:
            if (
                ok
                and c.tx is not None
                and c.tx_parent_id_tag is not None
                and same_tag(parent, c.tx_parent_id_tag)
            ):
                await self.stop_transaction(c.id, StopReason.LOCAL, stop_id_tag=id_tag)
                return f"stopped transaction on connector {c.id} (same parent id)"
        if connector_id is not None and running:
            raise Refused(f"connector {connector_id} is busy with another card")
        if not ok:
            raise Refused("the card is not authorized")  # no idTag: this text is logged
        if connector_id is not None:
            c = self._connector(connector_id)
            if not self._usable(c) or not self._reserved_for(c, id_tag, parent):
                raise Refused(f"connector {c.id} is not available")
        else:
            picked = self._pick_free(id_tag, parent)
            if picked is None:
                raise Refused("no connector is available")
            c = picked
        return await self._begin_session(c, id_tag, parent, c.reservation_id)

    async def _begin_session(
        self,
        c: Connector,
        id_tag: str,
        parent: str | None,
        reservation_id: int | None,
        on_start: SessionHook | None = None,
    ) -> str:
        if c.pilot.plugged:
            await self._start(c, id_tag, parent, reservation_id, on_start)
            return f"started a transaction on connector {c.id}"
        loop = asyncio.get_running_loop()
        c.waiting = _Waiting(
            id_tag=id_tag, parent_id_tag=parent, reservation_id=reservation_id, on_start=on_start
        )
        timeout = max(1, self.policy.connection_timeout_s)
        c.waiting.handle = loop.call_later(timeout, self._connection_timeout, c)
        self._apply(c)
        return f"authorized; plug in on connector {c.id} within {timeout} s"

    def _connection_timeout(self, c: Connector) -> None:
        # §9.1.6 ConnectionTimeOut: the EV was not plugged in time, back to Available
        if c.waiting is not None:
            log.info("connector %d: no EV within ConnectionTimeOut, session cancelled", c.id)
            self._clear_waiting(c)
            self._apply(c)

    def _clear_waiting(self, c: Connector) -> None:
        if c.waiting is not None and c.waiting.handle is not None:
            c.waiting.handle.cancel()
        c.waiting = None

    async def _authorize(self, id_tag: str) -> tuple[bool, Credential | None]:
        now = self.wall()
        policy = self.policy.auth
        listed = (
            self._entry(self.store.local_list_get(id_tag)) if policy.local_list_enabled else None
        )
        cached = self._entry(self.store.cache_get(id_tag)) if policy.cache_enabled else None
        online = self.port is not None and self.port.online
        decision, entry = decide(
            now=now, online=online, policy=policy, listed=listed, cached=cached
        )
        if decision is Decision.ASK:
            assert self.port is not None
            answer = await self.port.authorize(id_tag)
            if answer is None:  # could not ask after all: decide as offline
                decision, entry = decide(
                    now=now, online=False, policy=policy, listed=listed, cached=cached
                )
            else:
                self.note_id_tag_info(id_tag, answer)
                return answer.valid_at(now), answer
        return decision is Decision.ACCEPT, entry

    @staticmethod
    def _entry(e: AuthEntry | None) -> Credential | None:
        if e is None:
            return None
        return Credential(
            status=AuthStatus(e.status), expiry=e.expiry, parent_id_tag=e.parent_id_tag
        )

    def note_id_tag_info(self, id_tag: str, cred: Credential) -> None:
        """Every IdTagInfo from the Central System updates the cache (§3.4), unless listed."""
        policy = self.policy.auth
        if not policy.cache_enabled:
            return
        if policy.local_list_enabled and self.store.local_list_get(id_tag) is not None:
            return  # list ids are never cached (§3.5.2)
        self.store.cache_put(
            AuthEntry(
                id_tag=id_tag,
                status=cred.status.value,
                expiry=cred.expiry,
                parent_id_tag=cred.parent_id_tag,
            ),
            max_entries=self.policy.auth_cache_max_entries,
        )

    async def _read_meter(self, c: Connector) -> MeterReading | None:
        meter = self.hw.meters.get(c.id)
        if meter is None:
            return None
        try:
            reading = await meter.read()
        except MeterError as exc:
            if Fault.METER_FAILURE not in c.faults:
                log.error("connector %d: meter failure: %s", c.id, exc)
                c.faults[Fault.METER_FAILURE] = str(exc)
                self._apply(c)
            return None
        if Fault.METER_FAILURE in c.faults:
            log.info("connector %d: meter answers again", c.id)
            del c.faults[Fault.METER_FAILURE]
            self._apply(c)
        if c.last_good_energy_wh is not None and reading.energy_import_wh < c.last_good_energy_wh:
            # §7.31: registers are monotonic. A register going backwards (swapped meter) is
            # reported; we never turn it into negative energy.
            log.error(
                "connector %d: energy register went backwards (%.0f -> %.0f Wh); ignoring",
                c.id,
                c.last_good_energy_wh,
                reading.energy_import_wh,
            )
            self.store.log_event(self.wall(), "meter_backwards", f"connector {c.id}")
            return None
        c.last_reading = reading
        c.last_good_energy_wh = reading.energy_import_wh
        c.last_read_s = self.mono()
        self._note_draw(c, reading)
        return reading

    async def refresh_readings(self, max_age_s: float = 1.0) -> None:
        """Read the meters whose reading is older than ``max_age_s`` or than the last contactor
        move (for status views).

        Nothing is sent or stored: the samples the Central System gets follow their own
        intervals. The age limit keeps a script polling the status off the meter bus.
        """
        now_s = self.mono()
        for c in self.connectors.values():
            stale = c.last_read_s is None or now_s - c.last_read_s >= max_age_s
            if stale or (c.switched_s is not None and c.switched_s >= (c.last_read_s or 0.0)):
                await self._read_meter(c)
                self._check_energy_cap(c)

    def _energy_wh(self, c: Connector) -> int:
        if c.last_good_energy_wh is not None:
            return int(round(c.last_good_energy_wh))
        if c.tx is not None:
            return c.tx.last_meter_wh if c.tx.last_meter_wh is not None else c.tx.meter_start_wh
        return 0

    async def _start(
        self,
        c: Connector,
        id_tag: str,
        parent: str | None,
        reservation_id: int | None,
        on_start: SessionHook | None = None,
    ) -> None:
        async with self._lock:
            if c.tx is not None:
                return
            # IEC 61851-1 case B: the plug is locked before the session may have energy.
            # OCTT TC_024 (Start Charging Session - Lock Failure): when the lock fails, the
            # Charge Point reports ConnectorLockFailure (StatusNotification Faulted, §4.9) and
            # does not start a transaction. So the lock comes before anything is recorded: no
            # StartTransaction is queued, the authorization is used up, and the fault clears
            # when the cable leaves the socket (or a later lock move works).
            if c.lock_fitted and not await self._move_lock(c, locked=True):
                raise Refused(f"connector {c.id}: the plug could not be locked, no transaction")
            reading = await self._read_meter(c)
            now = self.wall()
            meter_start = self._energy_wh(c)
            plugged = c.pilot.plugged
            try:
                with self.store.atomic():
                    local_id = self.store.begin_transaction(
                        connector_id=c.id,
                        id_tag=id_tag,
                        meter_start_wh=meter_start,
                        started_at=now,
                        reservation_id=reservation_id,
                        parent_id_tag=parent,
                    )
                    if reservation_id is not None:
                        self.store.reservation_delete(reservation_id)
                    tx = self.store.transaction(local_id)
                    assert tx is not None
                    if self.port is not None:
                        self.port.enqueue_start(tx)
                # the contactor closes on a recorded transaction only (storage/durability.py)
                await self.store.durable()
            except StorageError as exc:
                # A transaction that cannot be recorded cannot be billed: no energy for it,
                # and no session holds the plug.
                self._storage_failed(exc)
                if c.lock_fitted:
                    await self._move_lock(c, locked=False)
                raise Refused(f"cannot record the transaction: {exc}") from None
            self.storage_error = None
            c.tx, c.tx_parent_id_tag, c.invalid_id, c.finishing = tx, parent, False, False
            if c.reservation_id is not None:  # used up (or another card took a reserved one)
                self._disarm_reservation(c.reservation_id)
                c.reservation_id = c.reservation_tag = None
            log.info(
                "connector %d: transaction %d started for %s at %d Wh",
                c.id,
                local_id,
                tag(id_tag),
                meter_start,
                extra={"CONNECTOR_ID": c.id},
            )
            if reading is not None and self.port is not None:
                self.port.meter_sample(
                    connector_id=c.id,
                    tx=tx,
                    reading=reading,
                    at=now,
                    context="begin",
                    offered_a=c.offer_a,
                )
            if on_start is not None:
                on_start(c.id, tx)  # first: its limit must hold before anything applies outputs
            for hook in self.on_tx_started:
                hook(c.id, tx)
            self._apply(c)
            if plugged and not c.pilot.plugged and self.policy.stop_on_ev_disconnect:
                self._stop_soon(c, StopReason.EV_DISCONNECTED)  # left while it was recorded

    async def stop_transaction(
        self,
        connector_id: int,
        reason: StopReason,
        *,
        stop_id_tag: str | None = None,
        force: bool = False,
    ) -> bool:
        c = self._connector(connector_id)
        if c.tx is None:
            return False
        self._begin_stop(c, reason, stop_id_tag)
        async with self._lock:
            tx = c.tx
            if tx is None:
                c.stopping = False
                return False
            reading = await self._read_meter(c)
            now = self.wall()
            meter_stop = max(self._energy_wh(c), tx.meter_start_wh)
            try:
                with self.store.atomic():
                    self.store.finish_transaction(
                        tx.local_id,
                        meter_stop_wh=meter_stop,
                        stopped_at=now,
                        reason=reason.value,
                        stop_id_tag=stop_id_tag,
                    )
                    done = self.store.transaction(tx.local_id)
                    assert done is not None
                    if self.port is not None:
                        if reading is not None:
                            self.port.meter_sample(
                                connector_id=c.id,
                                tx=done,
                                reading=reading,
                                at=now,
                                context="end",
                                offered_a=c.offer_a,
                            )
                        self.port.enqueue_stop(done)
            except StorageError as exc:
                # The contactor is already open. The transaction stays open in the database and
                # is stopped at the next start-up (power-loss rules) with its last reading.
                self._storage_failed(exc)
                done = tx
            log.info(
                "connector %d: transaction %d stopped (%s) at %d Wh",
                c.id,
                tx.local_id,
                reason.value,
                meter_stop,
                extra={"CONNECTOR_ID": c.id},
            )
            c.tx, c.tx_parent_id_tag, c.invalid_id = None, None, False
            c.stopping = False
            c.finishing = c.pilot.plugged
            for hook in self.on_tx_ended:
                hook(c.id, done)
            if c.scheduled_operative is not None:
                self._set_operative(c, c.scheduled_operative)
            if not force and c.cfg.cable == "socket" and self.hw.board.has_lock(c.id):
                await self._move_lock(c, locked=False)
            self._apply(c)
            return True

    def _stop_soon(self, c: Connector, reason: StopReason) -> None:
        """Stop from a synchronous caller (a fault, a command being answered): the contactor
        opens and the stop is durable now; reading the meter and recording follow in a task."""
        self._begin_stop(c, reason, None)
        self._spawn(self.stop_transaction(c.id, reason))

    def _begin_stop(self, c: Connector, reason: StopReason, stop_id_tag: str | None) -> None:
        """The synchronous start of every stop: open the contactor, then make the stop durable
        before anything can wait (the lock, the meter).

        A stop that was asked for is never undone: if the daemon dies before the stop is
        recorded, start-up finishes the transaction with this reason, idTag and time instead
        of resuming it with energy (``_recover``). The first stop asked is the one kept.
        """
        if c.tx is None:
            return
        c.stopping = True
        self._apply(c)  # the contactor opens before the meter is read, or the disk written
        try:
            self.store.request_stop(
                c.tx.local_id, reason=reason.value, stop_id_tag=stop_id_tag, at=self.wall()
            )
        except StorageError as exc:
            self._storage_failed(exc)  # the stop goes on; only its crash-safety is lost

    def _storage_failed(self, exc: StorageError) -> None:
        if self.storage_error != str(exc):
            log.error("storage write failed: %s", exc)
        self.storage_error = str(exc)

    def on_start_confirmed(self, local_id: int, tx_id: int, cred: Credential) -> None:
        """StartTransaction.conf arrived (possibly long after an offline start)."""
        with self.store.atomic():
            self.store.set_transaction_id(local_id, tx_id)
            self.store.set_id_tag_status(local_id, cred.status.value)
            if cred.parent_id_tag is not None:  # the Central System's word on the parent wins
                self.store.set_parent_id_tag(local_id, cred.parent_id_tag)
        for c in self.connectors.values():
            if c.tx is not None and c.tx.local_id == local_id:
                c.tx = self.store.transaction(local_id)
                if c.tx is None:
                    continue
                c.tx_parent_id_tag = c.tx.parent_id_tag
                for hook in self.on_tx_confirmed:
                    hook(c.id, c.tx)
                if cred.status is not AuthStatus.ACCEPTED:
                    log.warning(
                        "connector %d: idTag %s rejected by the Central System (%s)",
                        c.id,
                        tag(c.tx.id_tag if c.tx else None),
                        cred.status.value,
                    )
                self._judge_id_tag(c)
                self._apply(c)

    def _judge_id_tag(self, c: Connector) -> None:
        """What a rejected idTag (§3.5.4) means for the session, from the stored idTagInfo.

        The one rule for a StartTransaction.conf just received and for a transaction resumed
        after a restart, so a suspended session can never come back with energy.
        """
        if c.tx is None or c.tx.id_tag_status in (None, AuthStatus.ACCEPTED.value):
            return
        if self.policy.stop_on_invalid_id:
            self._stop_soon(c, StopReason.DEAUTHORIZED)
        elif self.policy.max_energy_on_invalid_id_wh is None:
            c.invalid_id = True  # suspend energy, keep the transaction
        else:
            self._check_energy_cap(c)

    def _check_energy_cap(self, c: Connector) -> None:
        """MaxEnergyOnInvalidId (§9.1.15): energy allowed after the idTag turned invalid."""
        cap = self.policy.max_energy_on_invalid_id_wh
        if c.tx is None or c.tx.id_tag_status in (None, AuthStatus.ACCEPTED.value) or cap is None:
            return
        # without a fresh reading (dead meter at start-up) the last stored register counts
        used = max(0, self._energy_wh(c) - c.tx.meter_start_wh)
        if used >= cap and not c.invalid_id:
            log.info("connector %d: MaxEnergyOnInvalidId reached (%d Wh)", c.id, cap)
            c.invalid_id = True
            self._apply(c)

    async def _recover(self) -> None:
        """Transactions a power cut or crash left open (OCPP 1.6 §4.10, TC_032)."""
        for tx in self.store.active_transactions():
            c = self.connectors.get(tx.connector_id)
            if c is None:
                continue
            if tx.stop_requested:
                self._finish_asked_stop(c, tx)
                continue
            resume = self.cfg.system.power_loss == "resume" or self.resume_open_transactions
            if resume and c.pilot.plugged:
                # Everything that decides the contactor comes back from storage: the session,
                # its parentIdTag, the idTag verdict (and energy cap); availability and
                # reservations were restored in start().
                c.tx, c.tx_parent_id_tag, c.invalid_id = tx, tx.parent_id_tag, False
                self._judge_id_tag(c)
                log.info("connector %d: resuming transaction %d after restart", c.id, tx.local_id)
                continue
            meter_stop = max(tx.last_meter_wh or tx.meter_start_wh, tx.meter_start_wh)
            at = tx.last_meter_at or tx.started_at
            with self.store.atomic():
                self.store.finish_transaction(
                    tx.local_id,
                    meter_stop_wh=meter_stop,
                    stopped_at=at,
                    reason=StopReason.POWER_LOSS.value,
                    stop_id_tag=None,
                )
                done = self.store.transaction(tx.local_id)
                assert done is not None
                if self.port is not None:
                    self.port.enqueue_stop(done)
            c.finishing = c.pilot.plugged
            log.info(
                "connector %d: transaction %d stopped after power loss at %d Wh",
                c.id,
                tx.local_id,
                meter_stop,
            )

    def _finish_asked_stop(self, c: Connector, tx: TxRecord) -> None:
        """A stop was asked for, and the daemon died before recording it: finish it now as it
        was asked (reason, idTag, time), whatever ``power_loss`` says.

        The contactor was open from the moment the stop was asked, so the register read at
        start-up is the one at the stop (the stored one if the meter does not answer).
        """
        assert tx.stop_reason is not None and tx.stopped_at is not None
        meter_stop = max(
            tx.meter_start_wh,
            tx.last_meter_wh or 0,
            int(round(c.last_good_energy_wh or 0)),
        )
        with self.store.atomic():
            self.store.finish_transaction(
                tx.local_id,
                meter_stop_wh=meter_stop,
                stopped_at=tx.stopped_at,
                reason=tx.stop_reason,
                stop_id_tag=tx.stop_id_tag,
            )
            done = self.store.transaction(tx.local_id)
            assert done is not None
            if self.port is not None:
                self.port.enqueue_stop(done)
        c.finishing = c.pilot.plugged
        log.info(
            "connector %d: transaction %d stopped (%s, asked before the restart) at %d Wh",
            c.id,
            tx.local_id,
            tx.stop_reason,
            meter_stop,
        )

    # --- commands from the Central System ---------------------------------------------------------

    def remote_start(
        self, id_tag: str, connector_id: int | None, *, on_start: SessionHook | None = None
    ) -> Connector | None:
        """Pick the connector for RemoteStartTransaction; None means Rejected.

        ``on_start`` runs when the transaction is recorded, before the contactor may close.
        """
        if connector_id is not None:
            c = self.connectors.get(connector_id)
            if c is None or not self._usable(c) or not self._reserved_for(c, id_tag, None):
                return None
        else:
            c = self._pick_free(id_tag, None)
            if c is None:
                return None
        self._spawn(self._remote_start(c, id_tag, on_start), name="ocppd-remote-start")
        return c

    async def _remote_start(self, c: Connector, id_tag: str, on_start: SessionHook | None) -> None:
        parent = None
        if self.policy.authorize_remote_tx:  # §5.11: behave like a local start
            ok, cred = await self._authorize(id_tag)
            if not ok:
                log.info("remote start for %s refused by authorization", tag(id_tag))
                return
            parent = cred.parent_id_tag if cred else None
        if self._usable(c):
            try:
                await self._begin_session(c, id_tag, parent, c.reservation_id, on_start)
            except Refused as exc:
                log.warning("remote start on connector %d: %s", c.id, exc)

    def remote_stop(self, tx_id: int) -> bool:
        for c in self.connectors.values():
            if c.tx is not None and c.tx.tx_id == tx_id:
                self._stop_soon(c, StopReason.REMOTE)
                return True
        return False

    async def unlock(self, connector_id: int) -> str:
        """UnlockConnector (§5.18): 'unlocked', 'failed' or 'not_supported'."""
        c = self.connectors.get(connector_id)
        if c is None or c.cfg.cable == "fixed" or not self.hw.board.has_lock(connector_id):
            return "not_supported"
        if c.tx is not None:
            await self.stop_transaction(c.id, StopReason.UNLOCK_COMMAND, force=True)
        ok = await self._move_lock(c, locked=False)
        return "unlocked" if ok else "failed"

    async def _move_lock(self, c: Connector, *, locked: bool) -> bool:
        """Every lock move goes through here: its outcome sets or clears ConnectorLockFailure,
        and only a lock move that worked lets the contactor close (core/safety.py)."""
        ok = await self.hw.board.lock(c.id, locked)
        c.locked = ok and locked  # after a failed move the lock's position is not known
        self._lock_fault(c, None if ok else ("lock failed" if locked else "unlock failed"))
        self._apply(c)
        return ok

    async def _relock(self, c: Connector) -> None:
        """Lock the plug of a running session that is not confirmed locked: one resumed after a
        restart, or one whose EV comes back after its lock had failed."""
        if await self._move_lock(c, locked=True):
            return
        # OCPP 1.6 §4.9: a fault during a transaction makes the connector Faulted (and back
        # when it clears); it does not end the transaction by itself. The session is kept,
        # without energy (the contactor needs the lock), and ends the usual ways: the EV
        # leaving (StopTransactionOnEVSideDisconnect), a local or remote stop, UnlockConnector.
        # The EV leaving also clears the fault, and its return tries the lock again.
        log.warning("connector %d: the plug could not be locked; session suspended", c.id)

    def _lock_fault(self, c: Connector, detail: str | None) -> None:
        if detail is None:
            if c.faults.pop(Fault.LOCK_FAILURE, None) is not None:
                log.info("connector %d: lock fault cleared", c.id)
                self._apply(c)
        elif c.faults.get(Fault.LOCK_FAILURE) != detail:
            c.faults[Fault.LOCK_FAILURE] = detail
            self._apply(c)

    def change_availability(self, connector_id: int, operative: bool) -> str:
        """ChangeAvailability (§5.2): 'accepted', 'scheduled' or 'rejected'. Persisted."""
        if connector_id == 0:
            targets = list(self.connectors.values())
            self.charger_operative = operative
            self.store.set_availability(0, operative)
            self._report_charger()
        elif connector_id in self.connectors:
            targets = [self.connectors[connector_id]]
        else:
            return "rejected"
        scheduled = False
        for c in targets:
            if c.tx is not None:
                c.scheduled_operative = operative
                self.store.set_availability(c.id, c.operative, operative)
                scheduled = True
            else:
                self._set_operative(c, operative)
        return "scheduled" if scheduled else "accepted"

    def _set_operative(self, c: Connector, operative: bool) -> None:
        c.operative, c.scheduled_operative = operative, None
        self.store.set_availability(c.id, operative, None)
        if not operative:
            self._clear_waiting(c)
        self._apply(c)

    def set_limit(self, connector_id: int, limit_a: float | None) -> None:
        """The smart-charging limit for a connector (None: unconstrained)."""
        c = self.connectors.get(connector_id)
        if c is not None and c.smart_limit_a != limit_a:
            c.smart_limit_a = limit_a
            self._apply(c)

    def set_local_limit(self, connector_id: int, limit_a: float | None) -> None:
        """The installer's limit for a connector (None: none); never raises another limit."""
        c = self._connector(connector_id)
        if c.local_limit_a != limit_a:
            c.local_limit_a = limit_a
            self._apply(c)

    # --- reservations (§5.13): stored, held on a connector, one expiry timer each ---------------

    def reserve(self, r: Reservation) -> None:
        """Hold ``r.connector_id`` for ``r.id_tag`` until ``r.expiry``; the same id replaces."""
        self.cancel_reservation(r.reservation_id)
        self.store.reservation_put(r)
        self._hold(r)

    def cancel_reservation(self, reservation_id: int) -> bool:
        """Forget a reservation (cancelled, replaced or expired). False when none was held."""
        self._disarm_reservation(reservation_id)
        for c in self.connectors.values():
            if c.reservation_id == reservation_id:
                c.reservation_id = c.reservation_tag = None
                self.store.reservation_delete(reservation_id)
                self._apply(c)
                return True
        return False

    def _restore_reservations(self) -> None:
        now = self.wall()
        for r in self.store.reservations():
            if r.connector_id in self.connectors and r.expiry > now:
                self._hold(r)
            else:  # expired while the charger was off (or the connector is gone)
                log.info("reservation %d expired while stopped", r.reservation_id)
                self.store.reservation_delete(r.reservation_id)

    def _hold(self, r: Reservation) -> None:
        c = self.connectors[r.connector_id]
        c.reservation_id, c.reservation_tag = r.reservation_id, (r.id_tag, r.parent_id_tag)
        self._arm_reservation(r.reservation_id, r.expiry)
        self._apply(c)

    def _arm_reservation(self, reservation_id: int, expiry: datetime) -> None:
        self._disarm_reservation(reservation_id)
        delay_s = max(0.0, (expiry - self.wall()).total_seconds())
        self._reservation_timers[reservation_id] = asyncio.get_running_loop().call_later(
            delay_s, self._reservation_due, reservation_id, expiry
        )

    def _disarm_reservation(self, reservation_id: int) -> None:
        handle = self._reservation_timers.pop(reservation_id, None)
        if handle is not None:
            handle.cancel()

    def _reservation_due(self, reservation_id: int, expiry: datetime) -> None:
        self._reservation_timers.pop(reservation_id, None)
        if self.wall() < expiry:  # the wall clock was set back meanwhile: not yet
            self._arm_reservation(reservation_id, expiry)
            return
        try:
            if self.cancel_reservation(reservation_id):
                log.info("reservation %d expired", reservation_id)
        except StorageError as exc:
            self._storage_failed(exc)

    async def stop_all(self, reason: StopReason) -> None:
        for c in self.connectors.values():
            if c.tx is not None:
                await self.stop_transaction(c.id, reason)

    # --- simulator controls -----------------------------------------------------------------------

    def sim_control(self) -> Any:
        if self.hw.sim is None:
            raise Refused("this charger runs on real hardware: plug and unplug the cable instead")
        return self.hw.sim

    # --- meter sampling ---------------------------------------------------------------------------

    async def _read_all_meters(self) -> None:
        for c in self.connectors.values():
            await self._read_meter(c)

    async def sample_now(self, connector_id: int | None, context: str) -> None:
        """Read meters and pass samples on (periodic ticks and TriggerMessage)."""
        now = self.wall()
        for c in self.connectors.values():
            if connector_id not in (None, 0, c.id):
                continue
            reading = await self._read_meter(c)
            if reading is None:
                continue
            try:
                # one commit per sample: register, transaction sample and queued MeterValues
                with self.store.atomic():
                    if c.tx is not None:
                        self.store.update_meter(
                            c.tx.local_id, int(round(reading.energy_import_wh)), now
                        )
                    if self.port is not None and (c.tx is not None or context != "periodic"):
                        self.port.meter_sample(
                            connector_id=c.id,
                            tx=c.tx,
                            reading=reading,
                            at=now,
                            context=context,
                            offered_a=c.offer_a,
                        )
                self._check_energy_cap(c)
            except StorageError as exc:
                self._storage_failed(exc)

    @staticmethod
    async def _sleep(wake: asyncio.Event, delay_s: float) -> None:
        """Sleep ``delay_s`` or until ``wake`` is set (then clear it for the next round)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=delay_s)
        wake.clear()

    async def _sampler(self) -> None:
        # MeterValueSampleInterval (§9.1.19): samples during transactions. With 0 the meters are
        # still read once a minute, to keep the register persisted and see a dead meter.
        while True:
            interval = self.policy.meter_sample_interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wake_periodic.wait(), timeout=interval if interval > 0 else 60
                )
                self._wake_periodic.clear()
                continue  # the interval changed: start a new period from now
            await self.sample_now(None, "periodic" if interval > 0 else "poll")

    async def _aligned_sampler(self) -> None:
        # ClockAlignedDataInterval (§3.16.2, §9.1.5): evenly spaced from midnight UTC, timestamps
        # exactly on the boundary (OCTT TC_071). A sample is taken only once its boundary has
        # passed on the wall clock: a wake-up (interval changed) or a clock set back never
        # sends a value stamped in the future.
        boundary: datetime | None = None
        planned_for = 0
        while True:
            interval = self.policy.clock_aligned_interval_s
            if interval <= 0:
                boundary = None
                await self._sleep(self._wake_aligned, 3600)
                continue
            now = self.wall()
            if boundary is None or interval != planned_for:
                boundary, planned_for = next_boundary(now, interval), interval
            wait_s = (boundary - now).total_seconds()
            if wait_s > 0:
                await self._sleep(self._wake_aligned, wait_s)
                continue  # look at the clock again before sampling
            at, boundary = boundary, None
            for c in self.connectors.values():
                reading = await self._read_meter(c)
                if reading is not None and self.port is not None:
                    with self.store.atomic():  # one commit per sample
                        self.port.meter_sample(
                            connector_id=c.id,
                            tx=c.tx,
                            reading=reading,
                            at=at,
                            context="clock",
                            offered_a=c.offer_a,
                        )

    # --- views ------------------------------------------------------------------------------------

    def connector_view(self, c: Connector) -> dict[str, Any]:
        r = c.last_reading
        return {
            "id": c.id,
            "status": c.status.value if c.status else None,
            "fault": next(iter(c.faults), None),
            "transaction_id": c.tx.tx_id if c.tx else None,
            "local_tx_id": c.tx.local_id if c.tx else None,
            "id_tag": c.tx.id_tag if c.tx else (c.waiting.id_tag if c.waiting else None),
            "energy_wh": c.session_energy_wh,
            "register_wh": c.last_good_energy_wh,
            "power_w": r.power_w if r else None,
            "limit_a": c.offer_a,
            "pilot": c.pilot.value,
            "contactor": "closed" if c.contactor_closed else "open",
        }
