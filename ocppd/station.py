"""The station: the shell around the session core (ocppd/core/session).

The core decides; this module carries its effects out and tells it what happened. It speaks
to the hardware through ocppd.hw.base, to storage through ocppd.storage.Store, and to the
Central System only through ``CentralPort`` (ocppd/ports.py), which the OCPP 1.6 adapter
implements (a 2.0.1 adapter implements it again). Adapters see the station as
``ports.StationApi``: the public methods under "commands" and the connector views.

Safety-critical reactions happen synchronously inside the board's event callback: a pilot or
fault event is stepped through the core at once, and the contactor and pilot effects it returns
are applied before anything that can wait. Transaction starts and stops are serialized by a
lock, and each one writes the transaction and its queued message in one SQLite transaction,
so a power cut leaves either both or neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from ocppd.config import Config
from ocppd.core import sharing
from ocppd.core.auth import Credential, Decision, decide, same_tag
from ocppd.core.evse import Fault
from ocppd.core.model import AuthStatus, Status, StopReason
from ocppd.core.session import machine
from ocppd.core.session.restore import rebuild
from ocppd.core.session.state import (
    ArmTimer,
    Authorized,
    AvailabilitySet,
    BeginTransaction,
    CableRated,
    CancelTimer,
    ChargerState,
    ConnectorSpec,
    DrawCeiling,
    Effect,
    EndPoint,
    EndTransaction,
    EnergyRead,
    Event,
    FaultSeen,
    ForgetDraw,
    ForgetReservation,
    Hold,
    IdTagJudged,
    LimitSet,
    LockMoved,
    MoveLock,
    Offer,
    PilotSeen,
    RecordStopRequest,
    ReportStatus,
    ReservationCancelled,
    Reserved,
    Rules,
    SetContactor,
    ShuttingDown,
    Started,
    StopRequested,
    StoreAvailability,
    StoreReservation,
    TimerFired,
    TimerId,
    TxEnded,
    TxStarted,
    WaitCancelled,
    initial,
)
from ocppd.errors import MeterError, StorageError
from ocppd.hw.base import (
    BoardEvent,
    CableRating,
    FaultChanged,
    Hardware,
    MeterReading,
    PilotChanged,
)
from ocppd.ports import CentralPort, Policy, SessionHook
from ocppd.ports import Refused as Refused  # re-exported: callers name it from here
from ocppd.privacy import tag
from ocppd.shell import recovery
from ocppd.shell.outputs import Outputs
from ocppd.shell.sampling import Samplers
from ocppd.shell.sampling import next_boundary as next_boundary  # re-exported
from ocppd.shell.timers import Timers
from ocppd.shell.views import ConnectorView, Live
from ocppd.storage import AuthEntry, Reservation, Store, TxRecord
from ocppd.tasks import TaskSet

log = logging.getLogger("ocppd.station")

# How long start-up waits for the first pilot reading of each connector (real boards sample
# and debounce first; the simulator answers at once).
PILOT_SETTLE_S = 1.0

Job = Coroutine[Any, Any, None]


def utcnow() -> datetime:
    return datetime.now(UTC)


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
        self._specs = [
            ConnectorSpec(
                connector_id=i + 1,
                evse_id=i + 1,  # OCPP 1.6: one connector per EVSE
                max_current_a=c.max_current_a,
                lockable=c.cable == "socket" and hw.board.has_lock(i + 1),
            )
            for i, c in enumerate(cfg.connectors)
        ]
        self.state: ChargerState = initial(self._specs)  # outputs safe until start() rebuilds
        self._live = {s.connector_id: Live() for s in self._specs}
        self.connectors = {
            s.connector_id: ConnectorView(s.connector_id, cfg.connectors[s.connector_id - 1],
                                          lambda: self.state, self._live[s.connector_id])
            for s in self._specs
        }
        self._draw = {s.connector_id: sharing.DrawWatch() for s in self._specs}
        self._on_start: dict[int, SessionHook | None] = {}
        self._outputs = Outputs(hw.board, mono)
        self._timers = Timers(wall, self._timer_fired)
        self._samplers = Samplers(
            wall=wall,
            sample_interval_s=lambda: self.policy.meter_sample_interval_s,
            aligned_interval_s=lambda: self.policy.clock_aligned_interval_s,
            sample=lambda context: self.sample_now(None, context),
            sample_aligned=self._sample_aligned,
        )
        self._lock = asyncio.Lock()
        self._tasks = TaskSet(log, "station")
        self._pilot_seen: set[int] = set()
        self._pilots_known = asyncio.Event()
        self.storage_error: str | None = None  # last write failure (full disk), for ocppctl
        # hooks of other features (smart charging): (connector id, transaction)
        self.on_tx_started: list[Callable[[int, TxRecord], None]] = []
        self.on_tx_confirmed: list[Callable[[int, TxRecord], None]] = []
        self.on_tx_ended: list[Callable[[int, TxRecord], None]] = []
        # after recovery, before any output is applied: restore limits from storage
        self.on_recovered: list[Callable[[], None]] = []

    # --- the core ---------------------------------------------------------------------------------

    def _rules(self) -> Rules:
        p = self.policy
        return Rules(
            connection_timeout_s=p.connection_timeout_s,
            stop_on_ev_disconnect=p.stop_on_ev_disconnect,
            stop_on_invalid_id=p.stop_on_invalid_id,
            max_energy_on_invalid_id_wh=p.max_energy_on_invalid_id_wh,
            charger_max_a=self.cfg.hardware.max_current_a,
            resume_after_power_loss=self.cfg.system.power_loss == "resume",
        )

    def _step(self, event: Event) -> list[Job]:
        """Step the core; carry out its effects at once, return those that must be awaited."""
        self.state, effects = machine.step(self.state, event, self.wall(), self._rules())
        return self._execute(effects)

    def _step_soon(self, event: Event) -> None:
        """Step from a callback: what must be awaited runs as a task."""
        for job in self._step(event):
            self._spawn(self._logged(job))

    @staticmethod
    async def _logged(job: Job) -> None:
        """A job nobody awaits: a refusal (a plug that would not lock, a full disk) is logged."""
        try:
            await job
        except Refused as exc:
            log.warning("%s", exc)

    def _execute(self, effects: list[Effect] | tuple[Effect, ...]) -> list[Job]:
        jobs: list[Job] = []
        for e in effects:
            match e:
                case SetContactor() | Offer():
                    self._outputs.apply(e)
                case ReportStatus(connector_id=cid, status=status, fault=fault):
                    log.info("connector %d: %s", cid, status.value, extra={"CONNECTOR_ID": cid})
                    if self.port is not None:
                        self.port.status_changed(cid, status, fault)
                case ArmTimer(timer=timer, at=at):
                    self._timers.arm(timer, at)
                case CancelTimer(timer=timer):
                    self._timers.cancel(timer)
                case StoreAvailability(connector_id=cid, operative=op, scheduled=scheduled):
                    self.store.set_availability(cid, op, scheduled)
                case StoreReservation(connector_id=cid, hold=h):
                    self.store.reservation_put(Reservation(
                        reservation_id=h.reservation_id, connector_id=cid, id_tag=h.id_tag,
                        parent_id_tag=h.parent_id_tag, expiry=h.expiry))
                case ForgetReservation(reservation_id=rid, expired=expired):
                    if expired:
                        log.info("reservation %d expired", rid)
                    self.store.reservation_delete(rid)
                case BeginTransaction():
                    jobs.append(self._record_start(e))
                case RecordStopRequest():
                    self._record_stop_request(e)
                case EndTransaction():
                    jobs.append(self._record_stop(e))
                case ForgetDraw(connector_id=cid):
                    self._draw[cid].reset()
                case MoveLock(connector_id=cid, locked=locked):
                    jobs.append(self._lock_job(cid, locked))
        self._outputs.show(c.status for c in self.state.connectors.values())
        return jobs

    def _timer_fired(self, timer: TimerId) -> None:
        try:
            self._step_soon(TimerFired(timer=timer))
        except StorageError as exc:
            self._storage_failed(exc)

    # --- lifecycle ------------------------------------------------------------------------------

    def attach(self, port: CentralPort) -> None:
        self.port = port

    @property
    def started(self) -> bool:
        return self.state.running

    async def start(self) -> None:
        """Outputs safe first, then rebuild from storage, then recover what a power cut left."""
        stored, records = recovery.load(self.store, self.connectors)
        self.state, effects = rebuild(self._specs, stored, self.wall(), self._rules())
        for cid, tx in records.items():
            if cid in self._live:
                self._live[cid].tx = tx
        self._execute(effects)
        await self.hw.board.start(self._emit)
        # Recovery depends on whether an EV is still plugged in: wait (briefly) for the board's
        # first pilot reading of every connector.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._pilots_known.wait(), PILOT_SETTLE_S)
        for reader in self.hw.readers:
            await reader.start(self._on_card)
        for cid in self.connectors:
            await self._read_meter(cid)
        for recovered in self.on_recovered:
            recovered()  # stored limits hold before a resumed session gets its first ampere
        resumed = self.cfg.system.power_loss == "resume"
        for cid, live in self._live.items():
            if live.tx is not None and resumed and self.state.connector(cid).pilot.plugged:
                log.info("connector %d: resuming transaction %d after restart", cid,
                         live.tx.local_id)
                for hook in self.on_tx_started:
                    hook(cid, live.tx)  # limits (smart charging) are set before any offer
        for job in self._step(Started()):
            await job
        self._spawn(self._samplers.periodic(), name="ocppd-sampler")
        self._spawn(self._samplers.aligned(), name="ocppd-aligned")

    async def close(self, *, stop_transactions: StopReason | None) -> None:
        """Shut down: stop transactions if asked, open every contactor, release hardware."""
        self._step(ShuttingDown())  # contactors open before anything that can wait
        if stop_transactions is not None:
            for cid, c in self.state.connectors.items():
                if c.tx is not None:
                    await self.stop_transaction(cid, stop_transactions, force=True)
        self._timers.cancel_all()  # what they stand for is stored: the next start re-arms them
        await self._tasks.cancel_all()
        for reader in self.hw.readers:
            with contextlib.suppress(Exception):
                await reader.close()
        await self.hw.board.close()
        for meter in self.hw.meters.values():
            with contextlib.suppress(Exception):
                await meter.close()

    def _spawn(self, coro: Coroutine[Any, Any, Any], *, name: str | None = None) -> None:
        self._tasks.spawn(coro, name=name)

    def retime(self) -> None:
        """Sampling intervals changed (ChangeConfiguration): recompute the timers."""
        self._samplers.retime()

    def armed_timers(self) -> dict[TimerId, datetime]:
        """The timers on the event loop now (reservation expiries, ConnectionTimeOut)."""
        return self._timers.armed()

    # --- hardware events --------------------------------------------------------------------------

    def _emit(self, ev: BoardEvent) -> None:
        match ev:
            case PilotChanged(connector_id=cid, state=state):
                if cid not in self.connectors:
                    return
                self._pilot_seen.add(cid)
                if len(self._pilot_seen) == len(self.connectors):
                    self._pilots_known.set()
                self._step_soon(PilotSeen(connector_id=cid, pilot=state))
            case FaultChanged(connector_id=cid, fault=fault, active=active, detail=detail):
                if cid != 0 and cid not in self.connectors:
                    return
                if active:
                    log.warning("fault %s on %s: %s", fault.value, cid or "charger", detail)
                else:
                    log.info("fault %s on %s cleared", fault.value, cid or "charger")
                self._step_soon(FaultSeen(connector_id=cid, fault=fault, active=active))
            case CableRating(connector_id=cid, max_current_a=amps):
                if cid in self.connectors:
                    self._step_soon(CableRated(connector_id=cid, max_current_a=amps))

    def _on_card(self, id_tag: str) -> None:
        self._spawn(self._card(id_tag), name="ocppd-card")

    async def _card(self, id_tag: str) -> None:
        try:
            msg = await self.swipe(id_tag, None)
            log.info("card %s: %s", tag(id_tag), msg)
        except Refused as exc:
            log.info("card %s refused: %s", tag(id_tag), exc)

    # --- commands ---------------------------------------------------------------------------------

    def _connector(self, connector_id: int) -> ConnectorView:
        c = self.connectors.get(connector_id)
        if c is None:
            raise Refused(f"no connector {connector_id}")
        return c

    def usable(self, connector_id: int) -> bool:
        """Whether a new session may begin on the connector now."""
        return connector_id in self.connectors and machine.usable(self.state, connector_id)

    def reserved_for(self, connector_id: int, id_tag: str, parent: str | None) -> bool:
        return machine.reserved_for(self.state.connector(connector_id), id_tag, parent)

    def pick_free(self, id_tag: str | None, parent: str | None) -> int | None:
        """The connector a session (or reservation) naming none would get; None: none free."""
        return machine.pick_free(self.state, id_tag, parent)

    def status_of(self, connector_id: int) -> tuple[Status, Fault | None]:
        """The status to report for a connector (0: the charger) and its first fault."""
        if connector_id == 0:
            return self.state.status or Status.AVAILABLE, next(iter(self.state.faults), None)
        c = self.connectors[connector_id]
        return c.status or Status.AVAILABLE, next(iter(c.all_faults()), None)

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
                self._step(WaitCancelled(connector_id=c.id))
                return f"cancelled the waiting session on connector {c.id}"
        ok, cred = await self._authorize(id_tag)
        parent = cred.parent_id_tag if cred else None
        # TC_069: another card with the same parentIdTag stops the session, whether the card
        # came with a connector (ocppctl --connector) or from a reader that names none. A stop
        # wins over starting a second session elsewhere.
        for c in running:
            tx = self.state.connector(c.id).tx
            if ok and tx is not None and tx.parent_id_tag is not None and same_tag(
                parent, tx.parent_id_tag
            ):
                await self.stop_transaction(c.id, StopReason.LOCAL, stop_id_tag=id_tag)
                return f"stopped transaction on connector {c.id} (same parent id)"
        if connector_id is not None and running:
            raise Refused(f"connector {connector_id} is busy with another card")
        if not ok:
            raise Refused(f"idTag {id_tag} not authorized")
        if connector_id is not None:
            cid = self._connector(connector_id).id
            if not self.usable(cid) or not self.reserved_for(cid, id_tag, parent):
                raise Refused(f"connector {cid} is not available")
        else:
            picked = self.pick_free(id_tag, parent)
            if picked is None:
                raise Refused("no connector is available")
            cid = picked
        return await self._begin_session(cid, id_tag, parent)

    async def _begin_session(
        self, cid: int, id_tag: str, parent: str | None, on_start: SessionHook | None = None
    ) -> str:
        if not self.usable(cid):  # taken while the idTag was being authorized
            raise Refused(f"connector {cid} is not available")
        hold = self.state.connector(cid).hold
        self._on_start[cid] = on_start
        jobs = self._step(Authorized(
            connector_id=cid, id_tag=id_tag, parent_id_tag=parent,
            reservation_id=hold.reservation_id if hold is not None else None))
        for job in jobs:
            await job
        if jobs:
            return f"started a transaction on connector {cid}"
        timeout_s = max(1, self.policy.connection_timeout_s)
        return f"authorized; plug in on connector {cid} within {timeout_s} s"

    def remote_start(
        self, id_tag: str, connector_id: int | None, *, on_start: SessionHook | None = None
    ) -> int | None:
        """Pick the connector for RemoteStartTransaction; None means Rejected.

        ``on_start`` runs when the transaction is recorded, before the contactor may close.
        """
        if connector_id is not None:
            if not self.usable(connector_id) or not self.reserved_for(connector_id, id_tag, None):
                return None
            cid = connector_id
        else:
            picked = self.pick_free(id_tag, None)
            if picked is None:
                return None
            cid = picked
        self._spawn(self._remote_start(cid, id_tag, on_start), name="ocppd-remote-start")
        return cid

    async def _remote_start(self, cid: int, id_tag: str, on_start: SessionHook | None) -> None:
        parent = None
        if self.policy.authorize_remote_tx:  # §5.11: behave like a local start
            ok, cred = await self._authorize(id_tag)
            if not ok:
                log.info("remote start for %s refused by authorization", tag(id_tag))
                return
            parent = cred.parent_id_tag if cred else None
        if self.usable(cid):
            try:
                await self._begin_session(cid, id_tag, parent, on_start)
            except Refused as exc:
                log.warning("remote start on connector %d: %s", cid, exc)

    def remote_stop(self, tx_id: int) -> bool:
        for c in self.connectors.values():
            if c.tx is not None and c.tx.tx_id == tx_id:
                # the contactor opens and the stop is durable before the command is answered
                self._step_soon(StopRequested(connector_id=c.id, reason=StopReason.REMOTE))
                return True
        return False

    async def stop_all(self, reason: StopReason) -> None:
        for cid, c in self.state.connectors.items():
            if c.tx is not None:
                await self.stop_transaction(cid, reason)

    async def stop_transaction(
        self,
        connector_id: int,
        reason: StopReason,
        *,
        stop_id_tag: str | None = None,
        force: bool = False,
    ) -> bool:
        """Stop the connector's transaction; ``force``: leave the lock alone. False: none."""
        self._connector(connector_id)
        if self.state.connector(connector_id).tx is None:
            return False
        jobs = self._step(StopRequested(connector_id=connector_id, reason=reason,
                                        stop_id_tag=stop_id_tag, unlock=not force))
        for job in jobs:
            await job
        return bool(jobs)

    async def unlock(self, connector_id: int) -> str:
        """UnlockConnector (§5.18): 'unlocked', 'failed' or 'not_supported'."""
        c = self.connectors.get(connector_id)
        if c is None or c.cfg.cable == "fixed" or not self.hw.board.has_lock(connector_id):
            return "not_supported"
        if c.tx is not None:
            await self.stop_transaction(c.id, StopReason.UNLOCK_COMMAND, force=True)
        ok = await self._move_lock(c.id, locked=False)
        return "unlocked" if ok else "failed"

    async def _move_lock(self, cid: int, *, locked: bool) -> bool:
        """Every lock move goes through here and its outcome goes to the core, which lets the
        contactor close only on a plug confirmed locked and sets ConnectorLockFailure."""
        ok = await self.hw.board.lock(cid, locked)
        if ok and Fault.LOCK_FAILURE in self.state.connector(cid).faults:
            log.info("connector %d: lock fault cleared", cid)
        self._step_soon(LockMoved(connector_id=cid, locked=locked, ok=ok))
        return ok

    async def _lock_job(self, cid: int, locked: bool) -> None:
        """A lock move the core asked for: released after a session, or locked again for a
        running one (resumed after a restart, or whose EV came back after a failed lock)."""
        if not locked:
            await self._move_lock(cid, locked=False)
            return
        async with self._lock:  # never across a stop, which releases the plug
            c = self.state.connector(cid)
            if c.tx is None or c.stop is not None or c.locked:
                return
            if not await self._move_lock(cid, locked=True):
                # OCPP 1.6 §4.9: a fault during a transaction makes the connector Faulted; it
                # does not end the transaction by itself. The session is kept without energy
                # and ends the usual ways; the EV leaving clears the fault, its return retries.
                log.warning("connector %d: the plug could not be locked; session suspended", cid)

    def change_availability(self, connector_id: int, operative: bool) -> str:
        """ChangeAvailability (§5.2): 'accepted', 'scheduled' or 'rejected'. Persisted."""
        if connector_id != 0 and connector_id not in self.connectors:
            return "rejected"
        targets = [connector_id] if connector_id else list(self.connectors)
        scheduled = any(self.state.connector(cid).tx is not None for cid in targets)
        self._step_soon(AvailabilitySet(connector_id=connector_id, operative=operative))
        return "scheduled" if scheduled else "accepted"

    def set_limit(self, connector_id: int, limit_a: float | None) -> None:
        """The smart-charging limit for a connector (None: unconstrained)."""
        if connector_id in self.connectors:
            self._step_soon(LimitSet(connector_id=connector_id, limit_a=limit_a))

    def set_charger_limit(self, limit_a: float | None) -> None:
        """The ChargePointMax limit of the whole charger, A per phase (None: none)."""
        self._step_soon(LimitSet(connector_id=0, limit_a=limit_a))

    @property
    def charger_limit_a(self) -> float | None:
        return self.state.limit_a

    def reserve(self, r: Reservation) -> None:
        """Hold ``r.connector_id`` for ``r.id_tag`` until ``r.expiry``; the same id replaces."""
        self._step_soon(Reserved(connector_id=r.connector_id, hold=Hold(
            reservation_id=r.reservation_id, id_tag=r.id_tag, parent_id_tag=r.parent_id_tag,
            expiry=r.expiry)))

    def cancel_reservation(self, reservation_id: int) -> bool:
        """Forget a reservation (cancelled or replaced). False when none was held."""
        held = any(c.hold is not None and c.hold.reservation_id == reservation_id
                   for c in self.state.connectors.values())
        self._step_soon(ReservationCancelled(reservation_id=reservation_id))
        return held

    def sim_control(self) -> Any:
        if self.hw.sim is None:
            raise Refused("this charger runs on real hardware: plug and unplug the cable instead")
        return self.hw.sim

    # --- authorization ----------------------------------------------------------------------------

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

    # --- meters -----------------------------------------------------------------------------------

    async def _read_meter(self, cid: int) -> MeterReading | None:
        meter = self.hw.meters.get(cid)
        if meter is None:
            return None
        c = self.state.connector(cid)
        try:
            reading = await meter.read()
        except MeterError as exc:
            if Fault.METER_FAILURE not in c.faults:
                log.error("connector %d: meter failure: %s", cid, exc)
                self._step_soon(FaultSeen(connector_id=cid, fault=Fault.METER_FAILURE,
                                          active=True))
            return None
        if Fault.METER_FAILURE in c.faults:
            log.info("connector %d: meter answers again", cid)
            self._step_soon(FaultSeen(connector_id=cid, fault=Fault.METER_FAILURE, active=False))
        live = self._live[cid]
        last_wh = c.energy_wh if live.last_reading is not None else None
        if last_wh is not None and reading.energy_import_wh < last_wh:
            # §7.31: registers are monotonic. A register going backwards (swapped meter) is
            # reported; we never turn it into negative energy.
            log.error(
                "connector %d: energy register went backwards (%.0f -> %.0f Wh); ignoring",
                cid,
                last_wh,
                reading.energy_import_wh,
            )
            self.store.log_event(self.wall(), "meter_backwards", f"connector {cid}")
            return None
        live.last_reading, live.last_read_s = reading, self.mono()
        self._step_soon(EnergyRead(connector_id=cid, energy_wh=reading.energy_import_wh))
        # an EV that draws clearly less than offered frees its share (core/sharing.py)
        c = self.state.connector(cid)
        if c.share_a is not None and reading.current_a:
            watch = self._draw[cid]
            if watch.observe(max(reading.current_a), c.offer_a, self.mono()):
                self._step_soon(DrawCeiling(connector_id=cid, ceiling_a=watch.ceiling_a))
        return reading

    def _energy_wh(self, cid: int) -> int:
        c = self.state.connector(cid)
        if c.energy_wh is not None:
            return int(round(c.energy_wh))
        return c.tx.meter_start_wh if c.tx is not None else 0

    async def sample_now(self, connector_id: int | None, context: str) -> None:
        """Read meters and pass samples on (periodic ticks and TriggerMessage)."""
        now = self.wall()
        for cid in self.connectors:
            if connector_id not in (None, 0, cid):
                continue
            reading = await self._read_meter(cid)
            if reading is None:
                continue
            tx = self._live[cid].tx
            try:
                if tx is not None:
                    self.store.update_meter(tx.local_id, int(round(reading.energy_import_wh)), now)
                if self.port is not None and (tx is not None or context != "periodic"):
                    self.port.meter_sample(connector_id=cid, tx=tx, reading=reading, at=now,
                                           context=context,
                                           offered_a=self.state.connector(cid).offer_a)
            except StorageError as exc:
                self._storage_failed(exc)

    async def _sample_aligned(self, at: datetime) -> None:
        for cid in self.connectors:
            reading = await self._read_meter(cid)
            if reading is not None and self.port is not None:
                self.port.meter_sample(connector_id=cid, tx=self._live[cid].tx, reading=reading,
                                       at=at, context="clock",
                                       offered_a=self.state.connector(cid).offer_a)

    async def refresh_readings(self, max_age_s: float = 1.0) -> None:
        """Read the meters whose reading is older than ``max_age_s`` or than the last contactor
        move (for status views).

        Nothing is sent or stored: the samples the Central System gets follow their own
        intervals. The age limit keeps a script polling the status off the meter bus.
        """
        now_s = self.mono()
        for cid, live in self._live.items():
            switched_s = self._outputs.switched_s.get(cid)
            stale = live.last_read_s is None or now_s - live.last_read_s >= max_age_s
            if stale or (switched_s is not None and switched_s >= (live.last_read_s or 0.0)):
                await self._read_meter(cid)

    # --- recording transactions (the effects BeginTransaction and EndTransaction) -----------------

    async def _record_start(self, e: BeginTransaction) -> None:
        cid = e.connector_id
        on_start = self._on_start.pop(cid, None)
        async with self._lock:
            if self.state.connector(cid).tx is not None:
                return
            # IEC 61851-1 case B: the plug is locked before the session may have energy.
            # OCTT TC_024 (Start Charging Session - Lock Failure): when the lock fails, the
            # Charge Point reports ConnectorLockFailure (StatusNotification Faulted, §4.9) and
            # does not start a transaction. So the lock comes before anything is recorded: no
            # StartTransaction is queued, the authorization is used up, and the fault clears
            # when the cable leaves the socket (or a later lock move works).
            lockable = self._specs[cid - 1].lockable
            if lockable and not await self._move_lock(cid, locked=True):
                raise Refused(f"connector {cid}: the plug could not be locked, no transaction")
            reading = await self._read_meter(cid)
            now = self.wall()
            meter_start = self._energy_wh(cid)
            try:
                with self.store.atomic():
                    local_id = self.store.begin_transaction(
                        connector_id=cid,
                        id_tag=e.id_tag,
                        meter_start_wh=meter_start,
                        started_at=now,
                        reservation_id=e.reservation_id,
                        parent_id_tag=e.parent_id_tag,
                    )
                    if e.reservation_id is not None:
                        self.store.reservation_delete(e.reservation_id)
                    tx = self.store.transaction(local_id)
                    assert tx is not None
                    if self.port is not None:
                        self.port.enqueue_start(tx)
            except StorageError as exc:
                # A transaction that cannot be recorded cannot be billed: no energy for it,
                # and no session holds the plug.
                self._storage_failed(exc)
                if lockable:
                    await self._move_lock(cid, locked=False)
                raise Refused(f"cannot record the transaction: {exc}") from None
            self.storage_error = None
            self._live[cid].tx = tx
            log.info(
                "connector %d: transaction %d started for %s at %d Wh",
                cid,
                local_id,
                tag(e.id_tag),
                meter_start,
                extra={"CONNECTOR_ID": cid},
            )
            if reading is not None and self.port is not None:
                self.port.meter_sample(connector_id=cid, tx=tx, reading=reading, at=now,
                                       context="begin",
                                       offered_a=self.state.connector(cid).offer_a)
            if on_start is not None:
                on_start(cid, tx)  # first: its limit must hold before the contactor may close
            for hook in self.on_tx_started:
                hook(cid, tx)
            jobs = self._step(TxStarted(connector_id=cid, tx=recovery.core_tx(tx)))
        for job in jobs:  # a refused idTag may stop it at once: outside the lock
            await job

    async def _record_stop(self, e: EndTransaction) -> None:
        cid = e.connector_id
        tx = self._live[cid].tx
        assert tx is not None and str(tx.local_id) == e.tx_key
        async with self._lock:
            reading = await self._read_meter(cid) if e.end is EndPoint.NOW else None
            match e.end:
                case EndPoint.NOW:
                    meter_stop, now = max(self._energy_wh(cid), tx.meter_start_wh), self.wall()
                case EndPoint.LAST_RECORD:  # the power went: its last stored reading is all
                    meter_stop = max(tx.last_meter_wh or tx.meter_start_wh, tx.meter_start_wh)
                    now = tx.last_meter_at or tx.started_at
                case EndPoint.AS_ASKED:
                    # asked before a restart: the contactor was open since, so the register
                    # read at start-up is the one at the stop (the stored one if the meter
                    # does not answer)
                    live_wh = self._energy_wh(cid) if self._live[cid].last_reading else 0
                    meter_stop = max(tx.meter_start_wh, tx.last_meter_wh or 0, live_wh)
                    now = tx.stopped_at or self.wall()
            try:
                with self.store.atomic():
                    self.store.finish_transaction(
                        tx.local_id,
                        meter_stop_wh=meter_stop,
                        stopped_at=now,
                        reason=e.reason.value,
                        stop_id_tag=e.stop_id_tag,
                    )
                    done = self.store.transaction(tx.local_id)
                    assert done is not None
                    if self.port is not None:
                        if reading is not None:
                            self.port.meter_sample(connector_id=cid, tx=done, reading=reading,
                                                   at=now, context="end",
                                                   offered_a=self.state.connector(cid).offer_a)
                        self.port.enqueue_stop(done)
            except StorageError as exc:
                # The contactor is already open. The transaction stays open in the database and
                # is stopped at the next start-up (power-loss rules) with its last reading.
                self._storage_failed(exc)
                done = tx
            log.info(
                "connector %d: transaction %d stopped (%s%s) at %d Wh",
                cid,
                tx.local_id,
                e.reason.value,
                ", asked before the restart" if e.end is EndPoint.AS_ASKED else "",
                meter_stop,
                extra={"CONNECTOR_ID": cid},
            )
            self._live[cid].tx = None
            for hook in self.on_tx_ended:
                hook(cid, done)
            jobs = self._step(TxEnded(connector_id=cid))
        for job in jobs:
            await job

    def _record_stop_request(self, e: RecordStopRequest) -> None:
        tx = self._live[e.connector_id].tx
        if tx is None:
            return
        try:
            self.store.request_stop(tx.local_id, reason=e.reason.value,
                                    stop_id_tag=e.stop_id_tag, at=self.wall())
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
        for cid, live in self._live.items():
            if live.tx is None or live.tx.local_id != local_id:
                continue
            tx = self.store.transaction(local_id)
            if tx is None:
                continue
            live.tx = tx
            for hook in self.on_tx_confirmed:
                hook(cid, tx)
            if cred.status is not AuthStatus.ACCEPTED:
                log.warning("connector %d: idTag %s rejected by the Central System (%s)",
                            cid, tag(tx.id_tag), cred.status.value)
            if self.state.connector(cid).tx is not None:
                self._step_soon(IdTagJudged(connector_id=cid, status=cred.status,
                                            parent_id_tag=cred.parent_id_tag))

    # --- views ------------------------------------------------------------------------------------

    def connector_views(self) -> list[dict[str, object]]:
        """Every connector as plain data (diagnostics, ocppctl)."""
        return [self.connector_view(c) for c in self.connectors.values()]

    def connector_view(self, c: ConnectorView) -> dict[str, Any]:
        r = c.last_reading
        waiting = c.waiting
        return {
            "id": c.id,
            "status": c.status.value if c.status else None,
            "fault": next(iter(c.faults), None),
            "transaction_id": c.tx.tx_id if c.tx else None,
            "local_tx_id": c.tx.local_id if c.tx else None,
            "id_tag": c.tx.id_tag if c.tx else (waiting.id_tag if waiting else None),
            "energy_wh": c.session_energy_wh,
            "register_wh": c.register_wh,
            "power_w": r.power_w if r else None,
            "limit_a": c.offer_a,
            "pilot": c.pilot.value,
            "contactor": "closed" if c.contactor_closed else "open",
        }
