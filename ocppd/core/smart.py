"""Smart charging: charging profiles, stacking and the composite schedule.

(Above 400 lines: one algorithm, the composite schedule, with the validity rules it rests on;
pure functions that read top to bottom.)

Pure domain code (OCPP 1.6 §3.13, §5.16, §6.43, §7.7-7.13 in core names): no I/O, no clock.
Every time is an aware UTC ``datetime`` passed in by the caller.

How a limit is found for a connector at an instant (``ProfileSet.limit_at``):

* Each purpose is resolved on its own. Within a purpose the profile with the highest
  ``stack_level`` whose validity (``valid_from <= t < valid_to``) and schedule cover ``t``
  wins; past a schedule's duration, before its start or outside its validity the next lower
  stack level takes over (§3.13.2).
* A TxDefault profile on connector 0 applies to every connector; a connector-specific one at
  the same stack level takes precedence over the connector-0 one.
* A Tx profile, while it covers ``t``, overrules the TxDefault profiles (§3.13.1); it applies
  only to the transaction it was installed for.
* The charge-point-wide ChargePointMax profile caps the result: limit = min(ChargePointMax,
  Tx-or-TxDefault) (§3.13.1). It limits the charger as a whole (§7.8): ``charger_limit_at``
  gives it alone, and ocppd/core/sharing.py splits it between the connectors that charge at
  the same time, so that their sum never exceeds it.
* A Tx profile that came with RemoteStartTransaction (§5.11) is installed when the session
  starts, before the transaction id is known (``add_session_profile``, ``tx_id`` None): it
  applies to whatever transaction runs on its connector, and ``bind_transaction`` gives it the
  id once StartTransaction.conf arrives.
* With no profile at all there is no limit (``None``): charge as the hardware allows.

Limits below 6 A are reported as they are. IEC 61851-1 cannot signal less than 6 A on the
pilot, so the station pauses the EV (state B / 0 A) for such limits; that is not decided here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from itertools import pairwise

# IEC 61851-1 Annex A: the highest current a control pilot PWM duty cycle can signal.
PILOT_MAX_A = 80.0
# OCPP 1.6 §7.13 numberPhases: "numberPhases=3 will be assumed unless another number is given".
DEFAULT_PHASES = 3

_RECURRENCE_S = {"daily": 86_400, "weekly": 7 * 86_400}  # UTC days: no daylight-saving shifts


class Purpose(StrEnum):
    CHARGE_POINT_MAX = "charge_point_max"
    TX_DEFAULT = "tx_default"
    TX = "tx"


class Kind(StrEnum):
    ABSOLUTE = "absolute"
    RECURRING = "recurring"
    RELATIVE = "relative"


class Recurrency(StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"


class RateUnit(StrEnum):
    AMPERES = "amperes"
    WATTS = "watts"


class RejectReason(StrEnum):
    """Why ``ProfileSet.install`` refused a profile (SetChargingProfile.conf Rejected)."""

    WRONG_CONNECTOR = "purpose not allowed on this connector"
    WRONG_PURPOSE = "purpose not allowed here"
    UNKNOWN_CONNECTOR = "no such connector"
    NO_TRANSACTION = "TxProfile without an active transaction"
    WRONG_TRANSACTION = "transaction id does not match the active transaction"
    STACK_LEVEL = "stack level out of range"
    TOO_MANY_PERIODS = "too many schedule periods"
    TOO_MANY_PROFILES = "too many profiles installed"
    RATE_UNIT = "charging rate unit not allowed"
    BAD_PERIODS = "first period must start at 0 and starts must increase"
    BAD_LIMIT = "negative limit or number of phases out of range"
    BAD_DURATION = "negative duration"
    BAD_VALIDITY = "valid_to is not after valid_from"
    MISSING_START = "recurring profile without a schedule start"
    MISSING_RECURRENCY = "recurring profile without a recurrency"


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulePeriod:
    start_s: int  # seconds from the schedule start (§7.13 startPeriod)
    limit: float  # in the schedule's rate unit
    number_phases: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    rate_unit: RateUnit
    periods: tuple[SchedulePeriod, ...]
    duration_s: int | None = None  # None: the last period lasts forever (or to the recurrence)
    start: datetime | None = None  # ignored for relative profiles
    min_rate: float | None = None  # in rate_unit; passed through for the EV side


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    profile_id: int
    connector_id: int
    stack_level: int
    purpose: Purpose
    kind: Kind
    schedule: Schedule
    recurrency: Recurrency | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    tx_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SmartLimits:
    """The station's advertised capacities (§9.4 configuration keys)."""

    max_stack_level: int = 8  # ChargeProfileMaxStackLevel
    max_periods: int = 24  # ChargingScheduleMaxPeriods
    max_profiles: int = 16  # MaxChargingProfilesInstalled
    allowed_units: frozenset[RateUnit] = frozenset(RateUnit)  # ChargingScheduleAllowed...Unit


@dataclass(frozen=True, slots=True, kw_only=True)
class Limit:
    """The effective limit on a connector at one instant, in both units."""

    current_a: float
    power_w: float
    number_phases: int
    min_rate_a: float | None = None
    min_rate_w: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Installed:
    profile: Profile  # as stored (an absolute schedule without start gets one)
    # remove these from persistent storage too (may include profile.profile_id itself)
    replaced_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejected:
    reason: RejectReason


@dataclass(frozen=True, slots=True)
class _Ctx:
    connector_id: int
    tx_id: int | None
    anchor: datetime | None  # start of relative schedules; None: not fixed yet
    in_tx: bool = False  # a transaction runs on the connector (its id may not be known yet)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectorSpec:
    """What the charger-wide composite needs to know about one connector."""

    connector_id: int
    max_current_a: float  # rating (and cable), the most it can ever draw
    phases: int = DEFAULT_PHASES
    tx_start: datetime | None = None
    tx_id: int | None = None


@dataclass(slots=True)
class ProfileSet:
    """The installed charging profiles of one charge point, keyed by profile id."""

    _profiles: dict[int, Profile] = field(default_factory=dict)

    @classmethod
    def of(cls, profiles: Iterable[Profile]) -> ProfileSet:
        """Restore a set from storage (no validation: they were validated on install)."""
        return cls({p.profile_id: p for p in profiles})

    @property
    def profiles(self) -> tuple[Profile, ...]:
        return tuple(sorted(self._profiles.values(), key=lambda p: p.profile_id))

    def __len__(self) -> int:
        return len(self._profiles)

    # -- changes -------------------------------------------------------------------------

    def install(
        self,
        profile: Profile,
        *,
        now: datetime,
        active_tx_ids: Mapping[int, int | None],
        limits: SmartLimits = SmartLimits(),
    ) -> Installed | Rejected:
        """SetChargingProfile (§5.16): validate, then add or replace.

        ``active_tx_ids`` maps every connector id > 0 to its transaction id or None.
        An absolute schedule without a start is accepted and starts at ``now``: real central
        systems omit startSchedule, and rejecting them breaks interoperability.
        """
        reason = check_profile(profile, active_tx_ids=active_tx_ids, limits=limits)
        if reason is not None:
            return Rejected(reason=reason)
        if profile.purpose is Purpose.TX and profile.tx_id is None:
            # bind it to the ongoing transaction so it can never outlive it
            profile = replace(profile, tx_id=active_tx_ids[profile.connector_id])
        return self._put(profile, now, limits)

    def add_session_profile(
        self, profile: Profile, *, now: datetime, limits: SmartLimits = SmartLimits()
    ) -> Installed | Rejected:
        """A RemoteStartTransaction's Tx profile (§5.11), as its session starts.

        The transaction id may not be known yet (offline, or StartTransaction.conf still on
        its way), yet the limit must hold from the first ampere: the profile is installed
        unbound (``tx_id`` None) and applies to the transaction on its connector until
        ``bind_transaction``. It was checked with ``check_remote_start_profile`` before the
        start was accepted; it is checked again here against ``limits``.
        """
        reason = check_remote_start_profile(profile, limits)
        if reason is not None:
            return Rejected(reason=reason)
        # Accepted was answered and energy is about to flow: a full table must not drop the
        # limit. The profile lasts one transaction; it may take one slot beyond the maximum.
        room = replace(limits, max_profiles=limits.max_profiles + 1)
        return self._put(replace(profile, tx_id=None), now, room)

    def bind_transaction(self, connector_id: int, tx_id: int) -> list[Profile]:
        """The transaction id became known: unbound Tx profiles of the connector take it."""
        bound = []
        for p in list(self._profiles.values()):
            if p.purpose is Purpose.TX and p.connector_id == connector_id and p.tx_id is None:
                self._profiles[p.profile_id] = replace(p, tx_id=tx_id)
                bound.append(self._profiles[p.profile_id])
        return bound

    def _put(self, profile: Profile, now: datetime, limits: SmartLimits) -> Installed | Rejected:
        if profile.kind is Kind.ABSOLUTE and profile.schedule.start is None:
            profile = replace(profile, schedule=replace(profile.schedule, start=now))
        # §5.16.2: the same id, or the same stack level and purpose (on the same connector),
        # replaces the existing profile.
        replaced = tuple(
            sorted(
                p.profile_id
                for p in self._profiles.values()
                if p.profile_id == profile.profile_id
                or (
                    p.connector_id == profile.connector_id
                    and p.stack_level == profile.stack_level
                    and p.purpose is profile.purpose
                )
            )
        )
        if len(self._profiles) - len(replaced) + 1 > limits.max_profiles:
            return Rejected(reason=RejectReason.TOO_MANY_PROFILES)
        for pid in replaced:
            del self._profiles[pid]
        self._profiles[profile.profile_id] = profile
        return Installed(profile=profile, replaced_ids=replaced)

    def clear(
        self,
        profile_id: int | None = None,
        connector_id: int | None = None,
        purpose: Purpose | None = None,
        stack_level: int | None = None,
    ) -> list[int]:
        """ClearChargingProfile (§5.5): remove profiles, return their ids (empty: Unknown).

        A given id that exists selects exactly that profile, whatever the other fields say.
        Otherwise every given criterion must match; with no criteria at all, all go.
        """
        if profile_id is not None and profile_id in self._profiles:
            del self._profiles[profile_id]
            return [profile_id]
        criteria_given = (connector_id, purpose, stack_level) != (None, None, None)
        if profile_id is not None and not criteria_given:
            return []
        gone = sorted(
            p.profile_id
            for p in self._profiles.values()
            if (connector_id is None or p.connector_id == connector_id)
            and (purpose is None or p.purpose is purpose)
            and (stack_level is None or p.stack_level == stack_level)
        )
        for pid in gone:
            del self._profiles[pid]
        return gone

    def end_transaction(self, connector_id: int) -> list[int]:
        """A transaction ended: its Tx profiles go (§3.13.1: they last one transaction)."""
        return self.clear(connector_id=connector_id, purpose=Purpose.TX)

    # -- queries -------------------------------------------------------------------------

    def limit_at(
        self,
        connector_id: int,
        at: datetime,
        *,
        tx_start: datetime | None = None,
        tx_id: int | None = None,
        voltage_v: float,
        phases: int = DEFAULT_PHASES,
    ) -> Limit | None:
        """The effective limit on ``connector_id`` at ``at``; None when nothing limits.

        Relative schedules start at ``tx_start``; without a transaction they are evaluated
        as if one started at ``at`` (their first period), which is what a new session gets.
        ``phases`` is the number of phases the connector can use; it caps numberPhases.
        """
        ctx = _Ctx(
            connector_id, tx_id, tx_start if tx_start is not None else at, _in(tx_start, tx_id)
        )
        return self._limit(ctx, at, voltage_v, phases)

    def charger_limit_at(
        self, at: datetime, *, voltage_v: float, phases: int = DEFAULT_PHASES
    ) -> Limit | None:
        """The ChargePointMax limit of the whole charger at ``at`` (§7.8); None: none.

        ``phases`` is the most phases any connector uses: a limit in watts becomes amperes per
        phase as if all of them were loaded, which never allows more than the watts.
        """
        won = _winner(self._candidates(_Ctx(0, None, at))[Purpose.CHARGE_POINT_MAX], at, at)
        if won is None:
            return None
        prof, per = won
        n = min(max(1, phases), per.number_phases or DEFAULT_PHASES)
        amps = _to_amps(per.limit, prof.schedule.rate_unit, voltage_v * n)
        return Limit(current_a=amps, power_w=amps * voltage_v * n, number_phases=n)

    def next_change_after(
        self,
        connector_id: int,
        at: datetime,
        *,
        tx_start: datetime | None = None,
        tx_id: int | None = None,
    ) -> datetime | None:
        """The earliest instant after ``at`` at which the limit may change, or None.

        Candidates are period starts, schedule ends, recurrences and validity bounds of
        every profile that applies to the connector, so the station can re-apply the limit
        exactly at a boundary instead of polling. Without a transaction, relative schedules
        stay at their first period and contribute no boundaries.
        """
        return self._next(_Ctx(connector_id, tx_id, tx_start, _in(tx_start, tx_id)), at)

    def composite(
        self,
        connector_id: int,
        start: datetime,
        duration_s: int,
        unit: RateUnit,
        *,
        tx_start: datetime | None = None,
        tx_id: int | None = None,
        voltage_v: float,
        phases: int = DEFAULT_PHASES,
        connector_max_a: float | None = None,
    ) -> Schedule:
        """GetCompositeSchedule (§6.43): the limit over ``[start, start + duration_s)``.

        Periods are relative to ``start`` (truncated to whole seconds), the first starts at
        0, and equal consecutive periods are merged. The hardware limit ``connector_max_a``
        (default: the pilot maximum, 80 A) caps every period and fills time no profile
        covers. For the charger as a whole (connector 0) use ``charger_composite``.
        ``duration_s == 0`` reports the limit in force at ``start``. Without a transaction,
        relative schedules start at ``start``, as if a transaction began then.
        """
        if duration_s < 0:
            raise ValueError("duration_s must not be negative")
        start = start.replace(microsecond=0)
        end = start + timedelta(seconds=duration_s)
        ctx = _Ctx(
            connector_id, tx_id, tx_start if tx_start is not None else start, _in(tx_start, tx_id)
        )
        cap_a = PILOT_MAX_A if connector_max_a is None else connector_max_a
        periods: list[SchedulePeriod] = []
        min_rate: float | None = None
        t = start
        while True:
            lim = self._limit(ctx, t, voltage_v, phases)
            n = lim.number_phases if lim is not None else min(phases, DEFAULT_PHASES)
            amps = cap_a if lim is None else min(lim.current_a, cap_a)
            if t == start and lim is not None:
                min_rate = lim.min_rate_a if unit is RateUnit.AMPERES else lim.min_rate_w
            value = amps if unit is RateUnit.AMPERES else amps * voltage_v * n
            period = SchedulePeriod(
                start_s=math.floor((t - start).total_seconds()), limit=value, number_phases=n
            )
            if periods and periods[-1].start_s == period.start_s:
                periods.pop()
            if not periods or (periods[-1].limit, periods[-1].number_phases) != (value, n):
                periods.append(period)
            nxt = self._next(ctx, t)
            if nxt is None or nxt >= end:
                break
            t = nxt
        return Schedule(
            rate_unit=unit,
            periods=tuple(periods),
            duration_s=duration_s,
            start=start,
            min_rate=min_rate,
        )

    # -- internals -------------------------------------------------------------------------

    def _candidates(self, ctx: _Ctx) -> dict[Purpose, list[Profile]]:
        """Profiles that apply to the connector, per purpose, in order of precedence."""
        out: dict[Purpose, list[Profile]] = {p: [] for p in Purpose}
        for p in self._profiles.values():
            match p.purpose:
                case Purpose.CHARGE_POINT_MAX:
                    out[p.purpose].append(p)
                case Purpose.TX_DEFAULT:
                    if p.connector_id in (0, ctx.connector_id):
                        out[p.purpose].append(p)
                case Purpose.TX:
                    # an unbound one (tx_id None, §5.11) applies to any running transaction
                    if (
                        ctx.connector_id > 0
                        and p.connector_id == ctx.connector_id
                        and ctx.in_tx
                        and (p.tx_id is None or p.tx_id == ctx.tx_id)
                    ):
                        out[p.purpose].append(p)
        for profiles in out.values():
            # highest stack first; at equal stack a connector-specific profile beats connector 0
            profiles.sort(key=lambda p: (-p.stack_level, p.connector_id == 0))
        return out

    def _limit(self, ctx: _Ctx, at: datetime, voltage_v: float, phases: int) -> Limit | None:
        cands = self._candidates(ctx)
        tx_level = _winner(cands[Purpose.TX], at, ctx.anchor) or _winner(
            cands[Purpose.TX_DEFAULT], at, ctx.anchor
        )
        cp_max = _winner(cands[Purpose.CHARGE_POINT_MAX], at, ctx.anchor)
        active = [w for w in (tx_level, cp_max) if w is not None]
        if not active:
            return None
        n = min([max(1, phases)] + [per.number_phases or DEFAULT_PHASES for _, per in active])
        volts_phases = voltage_v * n
        current_a = min(
            _to_amps(per.limit, prof.schedule.rate_unit, volts_phases) for prof, per in active
        )
        min_rate_a = None
        for prof, _ in active:  # the tx-level schedule's minimum comes first
            if prof.schedule.min_rate is not None:
                min_rate_a = _to_amps(prof.schedule.min_rate, prof.schedule.rate_unit, volts_phases)
                break
        return Limit(
            current_a=current_a,
            power_w=current_a * volts_phases,
            number_phases=n,
            min_rate_a=min_rate_a,
            min_rate_w=None if min_rate_a is None else min_rate_a * volts_phases,
        )

    def _next(self, ctx: _Ctx, at: datetime) -> datetime | None:
        best: datetime | None = None
        for profiles in self._candidates(ctx).values():
            for p in profiles:
                t = _next_boundary(p, at, ctx.anchor)
                if t is not None and (best is None or t < best):
                    best = t
        return best

    def charger_composite(
        self,
        start: datetime,
        duration_s: int,
        unit: RateUnit,
        *,
        connectors: Sequence[ConnectorSpec],
        voltage_v: float,
        site_max_a: float | None = None,
    ) -> Schedule:
        """GetCompositeSchedule for connector 0 (§6.43): what the charger as a whole may draw.

        At each instant the smallest of the ChargePointMax limit, the site's breaker
        ``site_max_a`` and the sum of what each connector may draw on its own (its rating
        capped by its own profiles). Amperes per phase, summed over connectors as the sharing
        does (ocppd/core/sharing.py); watts use the most phases any connector has.
        """
        if duration_s < 0:
            raise ValueError("duration_s must not be negative")
        start = start.replace(microsecond=0)
        end = start + timedelta(seconds=duration_s)
        n = max([c.phases for c in connectors] or [DEFAULT_PHASES])
        ctxs = [
            (
                c,
                _Ctx(
                    c.connector_id,
                    c.tx_id,
                    c.tx_start if c.tx_start is not None else start,
                    _in(c.tx_start, c.tx_id),
                ),
            )
            for c in connectors
        ]
        periods: list[SchedulePeriod] = []
        t = start
        while True:
            amps = 0.0
            for c, ctx in ctxs:
                own = self._limit(ctx, t, voltage_v, c.phases)
                amps += c.max_current_a if own is None else min(own.current_a, c.max_current_a)
            whole = self.charger_limit_at(t, voltage_v=voltage_v, phases=n)
            for cap in (None if whole is None else whole.current_a, site_max_a):
                if cap is not None:
                    amps = min(amps, cap)
            value = amps if unit is RateUnit.AMPERES else amps * voltage_v * n
            offset_s = math.floor((t - start).total_seconds())
            if periods and periods[-1].start_s == offset_s:
                periods.pop()
            if not periods or periods[-1].limit != value:
                periods.append(SchedulePeriod(start_s=offset_s, limit=value, number_phases=n))
            nexts = [x for _, ctx in ctxs if (x := self._next(ctx, t)) is not None]
            whole_next = self._next(_Ctx(0, None, None), t)
            if whole_next is not None:
                nexts.append(whole_next)
            if not nexts or min(nexts) >= end:
                break
            t = min(nexts)
        return Schedule(rate_unit=unit, periods=tuple(periods), duration_s=duration_s, start=start)


def _in(tx_start: datetime | None, tx_id: int | None) -> bool:
    return tx_start is not None or tx_id is not None


# -- schedule evaluation ---------------------------------------------------------------------


def _to_amps(value: float, unit: RateUnit, volts_phases: float) -> float:
    return value if unit is RateUnit.AMPERES else value / volts_phases


def _winner(
    profiles: list[Profile], at: datetime, anchor: datetime | None
) -> tuple[Profile, SchedulePeriod] | None:
    for p in profiles:
        period = _period_at(p, at, anchor)
        if period is not None:
            return p, period
    return None


def _instance_start(p: Profile, at: datetime, anchor: datetime | None) -> datetime | None:
    """Start of the schedule run that is relevant at ``at`` (None: none yet)."""
    match p.kind:
        case Kind.ABSOLUTE:
            return p.schedule.start
        case Kind.RELATIVE:
            return anchor
        case Kind.RECURRING:
            base = p.schedule.start
            if base is None or p.recurrency is None or at < base:
                return base
            every = timedelta(seconds=_RECURRENCE_S[p.recurrency.value])
            return base + ((at - base) // every) * every


def _period_at(p: Profile, at: datetime, anchor: datetime | None) -> SchedulePeriod | None:
    if (p.valid_from is not None and at < p.valid_from) or (
        p.valid_to is not None and at >= p.valid_to
    ):
        return None
    start = _instance_start(p, at, anchor)
    if start is None or at < start:
        return None
    offset_s = (at - start).total_seconds()
    if p.schedule.duration_s is not None and offset_s >= p.schedule.duration_s:
        return None
    found = None
    for period in p.schedule.periods:
        if period.start_s > offset_s:
            break
        found = period
    return found


def _next_boundary(p: Profile, at: datetime, anchor: datetime | None) -> datetime | None:
    cands = [t for t in (p.valid_from, p.valid_to) if t is not None]
    start = _instance_start(p, at, anchor)
    if start is not None:
        runs = [start]
        if p.kind is Kind.RECURRING and p.recurrency is not None:
            runs.append(start + timedelta(seconds=_RECURRENCE_S[p.recurrency.value]))
        for run in runs:
            cands.extend(run + timedelta(seconds=per.start_s) for per in p.schedule.periods)
            cands.append(run)
            if p.schedule.duration_s is not None:
                cands.append(run + timedelta(seconds=p.schedule.duration_s))
    later = [t for t in cands if t > at]
    return min(later) if later else None


# -- validation --------------------------------------------------------------------------------


def check_profile(
    profile: Profile,
    *,
    active_tx_ids: Mapping[int, int | None],
    limits: SmartLimits = SmartLimits(),
) -> RejectReason | None:
    """The §3.13/§5.16 rules a profile must satisfy to be installed (None: fine)."""
    cid = profile.connector_id
    if cid != 0 and cid not in active_tx_ids:
        return RejectReason.UNKNOWN_CONNECTOR
    match profile.purpose:
        case Purpose.CHARGE_POINT_MAX:
            if cid != 0:  # §7.8: "can only be set at Charge Point ConnectorId 0"
                return RejectReason.WRONG_CONNECTOR
        case Purpose.TX:
            if cid == 0:
                return RejectReason.WRONG_CONNECTOR
            # §3.13.1 / OCTT TC_058_1,2: only for the ongoing transaction
            active = active_tx_ids.get(cid)
            if active is None:
                return RejectReason.NO_TRANSACTION
            if profile.tx_id is not None and profile.tx_id != active:
                return RejectReason.WRONG_TRANSACTION
        case Purpose.TX_DEFAULT:
            pass
    return check_schedule(profile, limits)


def check_schedule(profile: Profile, limits: SmartLimits = SmartLimits()) -> RejectReason | None:
    s = profile.schedule
    if not 0 <= profile.stack_level <= limits.max_stack_level:
        return RejectReason.STACK_LEVEL
    if s.rate_unit not in limits.allowed_units:
        return RejectReason.RATE_UNIT
    if len(s.periods) > limits.max_periods:
        return RejectReason.TOO_MANY_PERIODS
    starts = [per.start_s for per in s.periods]
    # §7.13: "The startPeriod of the first period ... SHALL always be 0"
    if not starts or starts[0] != 0 or any(b <= a for a, b in pairwise(starts)):
        return RejectReason.BAD_PERIODS
    if any(
        per.limit < 0 or (per.number_phases is not None and not 1 <= per.number_phases <= 3)
        for per in s.periods
    ) or (s.min_rate is not None and s.min_rate < 0):
        return RejectReason.BAD_LIMIT
    if s.duration_s is not None and s.duration_s < 0:
        return RejectReason.BAD_DURATION
    if (
        profile.valid_from is not None
        and profile.valid_to is not None
        and profile.valid_to <= profile.valid_from
    ):
        return RejectReason.BAD_VALIDITY
    if profile.kind is Kind.RECURRING:
        if profile.recurrency is None:
            return RejectReason.MISSING_RECURRENCY
        if s.start is None:
            return RejectReason.MISSING_START
    return None


def check_remote_start_profile(
    profile: Profile, limits: SmartLimits = SmartLimits()
) -> RejectReason | None:
    """§5.11: a profile inside RemoteStartTransaction must be a Tx profile without tx id
    ("ChargingProfilePurpose MUST be set to TxProfile"), with a valid schedule."""
    if profile.purpose is not Purpose.TX:
        return RejectReason.WRONG_PURPOSE
    if profile.tx_id is not None:
        return RejectReason.WRONG_TRANSACTION
    return check_schedule(profile, limits)
