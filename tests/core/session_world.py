"""A charger in a test tube: the session core, a synchronous shell and a model of its storage.

The shell does what ocppd/station.py does, without I/O: it carries out every effect at once
(recording a start or an end steps TxStarted/TxEnded right away), keeps what the real shell
stores (availability, reservations, open transactions with their idTag verdict and last
register reading, smart-charging limits) and what the hardware would report again after a
restart (pilot, faults, cable rating, energy register). ``restarted()`` builds a new world from
that alone, by the same path the station takes at start-up (core/session/restore.py).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from ocppd.core.evse import Fault, PilotState
from ocppd.core.session import derive, machine
from ocppd.core.session.restore import Stored, StoredHold, StoredTx, rebuild
from ocppd.core.session.state import (
    BeginTransaction,
    CableRated,
    ChargerState,
    ConnectorSpec,
    Effect,
    EndTransaction,
    EnergyRead,
    Event,
    FaultSeen,
    ForgetReservation,
    Hold,
    IdTagJudged,
    LimitSet,
    LockMoved,
    MoveLock,
    PilotSeen,
    RecordAuthorization,
    RecordStopRequest,
    Rules,
    Started,
    Stop,
    StoreAvailability,
    StoreReservation,
    TimerFired,
    Tx,
    TxEnded,
    TxPoint,
    TxPoints,
    TxStarted,
    initial,
    when_all,
)

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def v16(*, stop_on_ev_disconnect: bool = True, stop_on_invalid_id: bool = True) -> TxPoints:
    """The transaction points OCPP 1.6 fixes (ocppd/ocpp/v16/keys.py V16Policy.tx_points),
    with StopTransactionOnEVSideDisconnect and StopTransactionOnInvalidId."""
    end = {TxPoint.EV_CONNECTED} if stop_on_ev_disconnect else set()
    if stop_on_invalid_id:
        end.add(TxPoint.AUTHORIZED)
    return TxPoints(begin=frozenset({when_all(TxPoint.AUTHORIZED, TxPoint.EV_CONNECTED)}),
                    end=frozenset(end))


@dataclass
class Storage:
    """What the shell wrote: the only thing that survives a restart (with the hardware)."""

    availability: dict[int, tuple[bool, bool | None]] = field(default_factory=dict)
    holds: dict[int, StoredHold] = field(default_factory=dict)
    txs: dict[int, StoredTx] = field(default_factory=dict)
    limits: dict[int, float | None] = field(default_factory=dict)  # stored charging profiles
    next_key: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def stored(self) -> Stored:
        return Stored(availability=dict(self.availability), holds=tuple(self.holds.values()),
                      transactions=tuple(self.txs.values()))


@dataclass
class Hardware:
    pilot: dict[int, PilotState]
    faults: dict[int, set[Fault]]  # 0: the charger
    cable: dict[int, float | None]
    energy_wh: dict[int, float]


class World:
    def __init__(self, n: int, rules: Rules, *, storage: Storage | None = None,
                 hw: Hardware | None = None, now: datetime = START) -> None:
        self.rules, self.now = rules, now
        self.specs = [ConnectorSpec(connector_id=i, evse_id=i, max_current_a=32.0,
                                    lockable=i % 2 == 1) for i in range(1, n + 1)]
        self.storage = storage or Storage()
        self.hw = hw or Hardware(
            pilot=dict.fromkeys(range(1, n + 1), PilotState.A),
            faults={i: set() for i in range(n + 1)},
            cable=dict.fromkeys(range(1, n + 1)),
            energy_wh=dict.fromkeys(range(1, n + 1), 1000.0),
        )
        self.state: ChargerState = initial(self.specs)
        self.step(Started())

    # --- the shell ---------------------------------------------------------------------------

    def step(self, event: Event) -> None:
        match event:  # what the hardware or storage learns before the core hears of it
            case PilotSeen(connector_id=cid, pilot=pilot):
                self.hw.pilot[cid] = pilot
            case FaultSeen(connector_id=cid, fault=fault, active=active):
                (self.hw.faults[cid].add if active else self.hw.faults[cid].discard)(fault)
            case CableRated(connector_id=cid, max_current_a=amps):
                self.hw.cable[cid] = amps
            case EnergyRead(connector_id=cid, energy_wh=wh):
                self.hw.energy_wh[cid] = wh
                if cid in self.storage.txs:
                    t = self.storage.txs[cid]
                    self.storage.txs[cid] = StoredTx(connector_id=cid, tx=t.tx,
                                                     last_meter_wh=int(wh))
            case LimitSet(connector_id=cid, limit_a=limit):
                self.storage.limits[cid] = limit
            case IdTagJudged(connector_id=cid, status=status, parent_id_tag=parent):
                t = self.storage.txs[cid]
                tx = Tx(tx_key=t.tx.tx_key, id_tag=t.tx.id_tag,
                        parent_id_tag=parent if parent is not None else t.tx.parent_id_tag,
                        meter_start_wh=t.tx.meter_start_wh, started_at=t.tx.started_at,
                        id_tag_status=status)
                self.storage.txs[cid] = StoredTx(connector_id=cid, tx=tx,
                                                 last_meter_wh=t.last_meter_wh)
        self.state, effects = machine.step(self.state, event, self.now, self.rules)
        self.execute(effects)

    def execute(self, effects: tuple[Effect, ...] | list[Effect]) -> None:
        for e in effects:
            match e:
                case StoreAvailability(connector_id=cid, operative=op, scheduled=sched):
                    self.storage.availability[cid] = (op, sched)
                case StoreReservation(connector_id=cid, hold=h):
                    self.storage.holds[h.reservation_id] = StoredHold(connector_id=cid, hold=h)
                case ForgetReservation(reservation_id=rid):
                    self.storage.holds.pop(rid, None)
                case BeginTransaction(connector_id=cid, id_tag=tag, parent_id_tag=parent,
                                      reservation_id=rid):
                    if rid is not None:
                        self.storage.holds.pop(rid, None)
                    tx = Tx(tx_key=str(next(self.storage.next_key)), id_tag=tag,
                            parent_id_tag=parent, meter_start_wh=int(self.hw.energy_wh[cid]),
                            started_at=self.now)
                    self.storage.txs[cid] = StoredTx(connector_id=cid, tx=tx, last_meter_wh=None)
                    self.step(TxStarted(connector_id=cid, tx=tx))
                case RecordAuthorization(connector_id=cid, id_tag=tag, parent_id_tag=parent):
                    t = self.storage.txs[cid]
                    self.storage.txs[cid] = replace(t, tx=replace(t.tx, id_tag=tag,
                                                                  parent_id_tag=parent))
                case RecordStopRequest(connector_id=cid, reason=reason, stop_id_tag=stop_tag):
                    t = self.storage.txs[cid]
                    self.storage.txs[cid] = replace(t, stop=Stop(reason=reason,
                                                                 stop_id_tag=stop_tag,
                                                                 unlock=True))
                case EndTransaction(connector_id=cid):
                    del self.storage.txs[cid]
                    self.step(TxEnded(connector_id=cid))
                case MoveLock(connector_id=cid, locked=locked):
                    self.step(LockMoved(connector_id=cid, locked=locked, ok=True))

    def advance(self, seconds: float) -> None:
        """Time passes; the timers that fall due fire, in order."""
        self.now += timedelta(seconds=seconds)
        for timer, at in sorted(derive.wanted_timers(self.state).items(), key=lambda x: x[1]):
            if at <= self.now:
                self.step(TimerFired(timer=timer))

    # --- restart -----------------------------------------------------------------------------

    def restarted(self) -> World:
        """A new charger from storage and hardware alone, started the station's way."""
        w = World.__new__(World)
        w.rules, w.now, w.specs = self.rules, self.now, self.specs
        w.storage, w.hw = self.storage, self.hw
        w.state, effects = rebuild(self.specs, self.storage.stored(), self.now, self.rules)
        w.execute(effects)
        for spec in self.specs:  # the board reports pilots and faults, the meters answer
            cid = spec.connector_id
            w.state, fx = machine.step(w.state, PilotSeen(connector_id=cid,
                                                          pilot=self.hw.pilot[cid]),
                                       w.now, w.rules)
            w.execute(fx)
            for fault in sorted(self.hw.faults[cid] - {Fault.PILOT_FAULT}):
                w._quiet(FaultSeen(connector_id=cid, fault=fault, active=True))
            w._quiet(CableRated(connector_id=cid, max_current_a=self.hw.cable[cid]))
            w._quiet(EnergyRead(connector_id=cid, energy_wh=self.hw.energy_wh[cid]))
        for fault in sorted(self.hw.faults[0]):
            w._quiet(FaultSeen(connector_id=0, fault=fault, active=True))
        for cid, limit in self.storage.limits.items():  # stored profiles come back
            w._quiet(LimitSet(connector_id=cid, limit_a=limit))
        w.step(Started())
        return w

    def _quiet(self, event: Event) -> None:
        self.state, effects = machine.step(self.state, event, self.now, self.rules)
        self.execute(effects)

    # --- what is compared --------------------------------------------------------------------

    def quiet(self) -> bool:
        """A moment whose whole state is stored: no idTag waiting for its EV, no session that
        just ended (Finishing), and every running transaction's EV plugged in."""
        return all(
            c.waiting is None and not c.finishing and (c.tx is None or c.pilot.plugged)
            for c in self.state.connectors.values()
        )

    def decisions(self) -> object:
        s = self.state
        per_connector = tuple(
            (c.offer_a, c.contactor_closed, c.locked, c.status, c.tx, c.invalid_id, c.operative,
             c.scheduled_operative, c.hold, c.waiting, c.share_a, frozenset(c.faults))
            for c in s.connectors.values()
        )
        return per_connector, s.status, s.operative, derive.wanted_timers(s)


def reserve_hold(rid: int, tag: str, now: datetime, expiry_s: int) -> Hold:
    return Hold(reservation_id=rid, id_tag=tag, parent_id_tag=None,
                expiry=now + timedelta(seconds=expiry_s))
