"""The station: the shell around the session core (ocppd/core/session).

(A little above 400 lines: the effect executor, the lifecycle and the one-step commands stay
together; sessions, metering and recording are its mixins in ocppd/shell.)

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
import inspect
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from ocppd.config import Config
from ocppd.core.auth import Credential
from ocppd.core.evse import Fault
from ocppd.core.model import Status, StopReason
from ocppd.core.session import derive, machine
from ocppd.core.session.restore import rebuild
from ocppd.core.session.state import (
    ArmTimer,
    AvailabilitySet,
    BeginTransaction,
    CableRated,
    CancelTimer,
    ChargerState,
    ConnectorSpec,
    Effect,
    EndTransaction,
    Event,
    FaultSeen,
    ForgetReservation,
    Hold,
    LimitSet,
    LocalLimitSet,
    MoveLock,
    Offer,
    PilotSeen,
    RecordAuthorization,
    RecordStopRequest,
    ReportStatus,
    ReservationCancelled,
    Reserved,
    Rules,
    SetContactor,
    ShuttingDown,
    Started,
    StoreAvailability,
    StoreReservation,
    TimerFired,
    TimerId,
    initial,
)
from ocppd.errors import StorageError
from ocppd.hw.base import (
    BoardEvent,
    CableRating,
    FaultChanged,
    Hardware,
    PilotChanged,
)
from ocppd.ports import CentralPort, Policy, SessionHook
from ocppd.ports import Refused as Refused  # re-exported: callers name it from here
from ocppd.privacy import tag
from ocppd.shell import recovery
from ocppd.shell.authorizing import Authorizer
from ocppd.shell.metering import MeteringMixin
from ocppd.shell.outputs import Outputs
from ocppd.shell.recording import RecordingMixin
from ocppd.shell.sampling import Samplers
from ocppd.shell.sampling import next_boundary as next_boundary  # re-exported
from ocppd.shell.sessions import SessionsMixin
from ocppd.shell.timers import Timers
from ocppd.shell.views import ConnectorView, Live, with_details
from ocppd.storage import Reservation, Store, TxRecord
from ocppd.tasks import TaskSet, wait_event
from ocppd.wallclock import ClockSteps

log = logging.getLogger("ocppd.station")

# How long start-up waits for the first pilot reading of each connector (real boards sample
# and debounce first; the simulator answers at once).
PILOT_SETTLE_S = 1.0

Job = Coroutine[Any, Any, None]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Station(SessionsMixin, MeteringMixin, RecordingMixin):
    """The shell: steps the core, carries out its effects, and offers the commands of
    ``ports.StationApi``. Sessions, meter reading and transaction recording are its mixins."""

    def __init__(
        self,
        *,
        cfg: Config,
        store: Store,
        hw: Hardware,
        policy: Policy,
        wall: Callable[[], datetime] = utcnow,
        mono: Callable[[], float] = time.monotonic,
        clock_steps: ClockSteps | None = None,
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
        self._charger_fault_details: dict[Fault, str] = {}
        self.connectors = {
            s.connector_id: ConnectorView(s.connector_id, cfg.connectors[s.connector_id - 1],
                                          lambda: self.state, self._live[s.connector_id])
            for s in self._specs
        }
        self._on_start: dict[int, SessionHook | None] = {}
        self._outputs = Outputs(hw.board, mono)
        self._timers = Timers(wall, self._timer_fired)
        # the wall clock being set (NTP after boot, the Central System): the core's deadlines
        # follow it (ocppd/wallclock.py); the station runs the check
        self.clock_steps = clock_steps or ClockSteps(wall, mono)
        self.clock_steps.subscribe(self._clock_set)
        self._samplers = Samplers(
            wall=wall,
            sample_interval_s=lambda: self.policy.meter_sample_interval_s,
            aligned_interval_s=lambda: self.policy.clock_aligned_interval_s,
            sample=lambda context: self.sample_now(None, context),
            sample_aligned=self._sample_aligned,
        )
        self._auth = Authorizer(store=store, policy=policy, wall=wall, port=lambda: self.port)
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
        # Resume open transactions at start whatever system.power_loss says: the last run
        # stopped for a restart that keeps the sessions (a package upgrade).
        self.resume_open_transactions = False

    # --- the core ---------------------------------------------------------------------------------

    def _rules(self) -> Rules:
        p = self.policy
        return Rules(
            connection_timeout_s=p.connection_timeout_s,
            tx=p.tx_points,
            unlock_on_ev_disconnect=p.unlock_on_ev_disconnect,
            max_energy_on_invalid_id_wh=p.max_energy_on_invalid_id_wh,
            charger_max_a=self.cfg.hardware.max_current_a,
            resume_after_power_loss=(
                self.cfg.system.power_loss == "resume" or self.resume_open_transactions
            ),
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
                case RecordAuthorization():
                    self._record_authorization(e)
                case RecordStopRequest():
                    self._record_stop_request(e)
                case EndTransaction():
                    jobs.append(self._record_stop(e))
                case MoveLock(connector_id=cid, locked=locked):
                    jobs.append(self._lock_job(cid, locked))
        if self.state.running:  # the board is started by then
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
        await wait_event(self._pilots_known, PILOT_SETTLE_S)
        for reader in self.hw.readers:
            await reader.start(self._on_card)
        for cid in self.connectors:
            await self._read_meter(cid)
        for recovered in self.on_recovered:
            recovered()  # stored limits hold before a resumed session gets its first ampere
        rules = self._rules()
        for cid, live in self._live.items():
            if live.tx is not None and derive.resumes(self.state.connector(cid), rules):
                log.info("connector %d: resuming transaction %d after restart", cid,
                         live.tx.local_id)
                for hook in self.on_tx_started:
                    hook(cid, live.tx)  # limits (smart charging) are set before any offer
        for job in self._step(Started()):
            await job
        self._spawn(self._samplers.periodic(), name="ocppd-sampler")
        self._spawn(self._samplers.aligned(), name="ocppd-aligned")
        self._spawn(self.clock_steps.watch(), name="ocppd-clock")

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
        for closer in self.hw.extra_closers:  # shared parts (a Modbus line), after their users
            with contextlib.suppress(Exception):
                result = closer()
                if inspect.isawaitable(result):
                    await result

    def _spawn(self, coro: Coroutine[Any, Any, Any], *, name: str | None = None) -> None:
        self._tasks.spawn(coro, name=name)

    def _clock_set(self) -> None:
        # (The clock-aligned sampler looks at the wall clock after each sleep, at most one
        # interval long, so it finds its boundary on the new clock by itself.)
        self._timers.rearm()

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
                details = self._live[cid].fault_details if cid else self._charger_fault_details
                if active:
                    details[fault] = detail
                else:
                    details.pop(fault, None)
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

    # --- commands (sessions, stops and locks: shell/sessions.py) ----------------------------------

    def _connector(self, connector_id: int) -> ConnectorView:
        c = self.connectors.get(connector_id)
        if c is None:
            raise Refused(f"no connector {connector_id}")
        return c

    def usable(self, connector_id: int) -> bool:
        """Whether a new session may begin on the connector now."""
        return connector_id in self.connectors and derive.usable(self.state, connector_id)

    def reserved_for(self, connector_id: int, id_tag: str, parent: str | None) -> bool:
        return derive.reserved_for(self.state.connector(connector_id), id_tag, parent)

    def pick_free(self, id_tag: str | None, parent: str | None) -> int | None:
        """The connector a session (or reservation) naming none would get; None: none free."""
        return derive.pick_free(self.state, id_tag, parent)

    def status_of(self, connector_id: int) -> tuple[Status, Fault | None]:
        """The status to report for a connector (0: the charger) and its first fault."""
        if connector_id == 0:
            return self.state.status or Status.AVAILABLE, next(iter(self.state.faults), None)
        c = self.connectors[connector_id]
        return c.status or Status.AVAILABLE, next(iter(c.all_faults()), None)

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

    def set_local_limit(self, connector_id: int, limit_a: float | None) -> None:
        """The installer's limit for a connector (None: none); never raises another limit."""
        self._connector(connector_id)
        self._step_soon(LocalLimitSet(connector_id=connector_id, limit_a=limit_a))

    @property
    def charger_faults(self) -> dict[Fault, str]:
        """The faults of the charger as a whole (connector 0), with their details."""
        return with_details(self.state.faults, self._charger_fault_details)

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

    def note_id_tag_info(self, id_tag: str, cred: Credential) -> None:
        """Every IdTagInfo from the Central System updates the cache (§3.4), unless listed."""
        self._auth.note(id_tag, cred)

    def sim_control(self) -> Any:
        if self.hw.sim is None:
            raise Refused("this charger runs on real hardware: plug and unplug the cable instead")
        return self.hw.sim

    # --- views ------------------------------------------------------------------------------------

    def connector_views(self) -> list[dict[str, object]]:
        """Every connector as plain data (diagnostics, ocppctl)."""
        return [c.as_dict() for c in self.connectors.values()]
