"""Smart-charging rules (OCPP 1.6 §3.13, §5.16) and the OCTT smart-charging scenarios."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

from ocppd.core.smart import (
    Installed,
    Kind,
    Profile,
    ProfileSet,
    Purpose,
    RateUnit,
    Recurrency,
    Rejected,
    RejectReason,
    Schedule,
    SchedulePeriod,
    SmartLimits,
    check_remote_start_profile,
)

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
V = 230.0
NO_TX = {1: None, 2: None}


def sec(n: float) -> datetime:
    return T0 + timedelta(seconds=n)


def prof(
    pid: int,
    *periods: tuple[int, float] | tuple[int, float, int],
    connector: int = 1,
    stack: int = 0,
    purpose: Purpose = Purpose.TX_DEFAULT,
    kind: Kind = Kind.ABSOLUTE,
    start: datetime | None = T0,
    duration_s: int | None = None,
    unit: RateUnit = RateUnit.AMPERES,
    recurrency: Recurrency | None = None,
    valid_from: datetime | None = None,
    valid_to: datetime | None = None,
    tx_id: int | None = None,
    min_rate: float | None = None,
) -> Profile:
    return Profile(
        profile_id=pid,
        connector_id=connector,
        stack_level=stack,
        purpose=purpose,
        kind=kind,
        recurrency=recurrency,
        valid_from=valid_from,
        valid_to=valid_to,
        tx_id=tx_id,
        schedule=Schedule(
            rate_unit=unit,
            periods=tuple(
                SchedulePeriod(start_s=p[0], limit=p[1], number_phases=(p[2:] or (None,))[0])
                for p in periods
            ),
            duration_s=duration_s,
            start=start,
            min_rate=min_rate,
        ),
    )


def installed(*profiles: Profile, tx: Mapping[int, int | None] | None = None) -> ProfileSet:
    ps = ProfileSet()
    for p in profiles:
        out = ps.install(p, now=T0, active_tx_ids=tx or NO_TX)
        assert isinstance(out, Installed), out
    return ps


def amps(ps: ProfileSet, at: datetime, connector: int = 1, **kw: object) -> float | None:
    lim = ps.limit_at(connector, at, voltage_v=V, **kw)  # type: ignore[arg-type]
    return None if lim is None else round(lim.current_a, 6)


def periods(s: Schedule) -> list[tuple[int, float]]:
    return [(p.start_s, round(p.limit, 3)) for p in s.periods]


# -- installing ----------------------------------------------------------------------------------


def test_charge_point_max_profile_only_on_connector_zero() -> None:
    ps = ProfileSet()
    bad = prof(1, (0, 16), connector=1, purpose=Purpose.CHARGE_POINT_MAX)
    assert ps.install(bad, now=T0, active_tx_ids=NO_TX) == Rejected(
        reason=RejectReason.WRONG_CONNECTOR
    )
    good = prof(1, (0, 16), connector=0, purpose=Purpose.CHARGE_POINT_MAX)
    assert isinstance(ps.install(good, now=T0, active_tx_ids=NO_TX), Installed)


def test_tx_profile_never_on_connector_zero() -> None:
    out = ProfileSet().install(
        prof(1, (0, 16), connector=0, purpose=Purpose.TX), now=T0, active_tx_ids={1: 7}
    )
    assert out == Rejected(reason=RejectReason.WRONG_CONNECTOR)


def test_unknown_connector_is_rejected() -> None:
    out = ProfileSet().install(prof(1, (0, 16), connector=3), now=T0, active_tx_ids=NO_TX)
    assert out == Rejected(reason=RejectReason.UNKNOWN_CONNECTOR)


def test_tc_058_1_tx_profile_without_transaction_is_rejected() -> None:
    ps = ProfileSet()
    out = ps.install(prof(1, (0, 10), purpose=Purpose.TX), now=T0, active_tx_ids=NO_TX)
    assert out == Rejected(reason=RejectReason.NO_TRANSACTION)
    assert len(ps) == 0


def test_tc_058_2_tx_profile_with_wrong_transaction_id_is_rejected() -> None:
    ps = ProfileSet()
    p = prof(1, (0, 10), purpose=Purpose.TX, tx_id=99)
    out = ps.install(p, now=T0, active_tx_ids={1: 7, 2: None})
    assert out == Rejected(reason=RejectReason.WRONG_TRANSACTION)
    assert len(ps) == 0


def test_tx_profile_without_transaction_id_is_bound_to_the_ongoing_one() -> None:
    ps = ProfileSet()
    out = ps.install(prof(1, (0, 10), purpose=Purpose.TX), now=T0, active_tx_ids={1: 7, 2: None})
    assert isinstance(out, Installed) and out.profile.tx_id == 7
    assert amps(ps, sec(1), tx_id=7, tx_start=T0) == 10
    assert amps(ps, sec(1), tx_id=8, tx_start=T0) is None  # another transaction: not its profile


def test_same_stack_level_and_purpose_replaces_the_old_profile() -> None:
    ps = installed(prof(1, (0, 10), stack=2))
    out = ps.install(prof(5, (0, 12), stack=2), now=T0, active_tx_ids=NO_TX)
    assert isinstance(out, Installed) and out.replaced_ids == (1,)
    assert [p.profile_id for p in ps.profiles] == [5]
    assert amps(ps, sec(1)) == 12


def test_same_stack_level_on_another_connector_does_not_replace() -> None:
    ps = installed(prof(1, (0, 10), stack=2, connector=1), prof(2, (0, 12), stack=2, connector=2))
    assert [p.profile_id for p in ps.profiles] == [1, 2]


def test_same_profile_id_replaces_even_with_other_stack_level() -> None:
    ps = installed(prof(1, (0, 10), stack=1))
    out = ps.install(prof(1, (0, 12), stack=3), now=T0, active_tx_ids=NO_TX)
    assert isinstance(out, Installed) and out.replaced_ids == (1,)
    assert [(p.profile_id, p.stack_level) for p in ps.profiles] == [(1, 3)]


@pytest.mark.parametrize(
    ("profile", "limits", "reason"),
    [
        (prof(1, (0, 10), stack=9), SmartLimits(max_stack_level=8), RejectReason.STACK_LEVEL),
        (prof(1, (0, 10), stack=-1), SmartLimits(), RejectReason.STACK_LEVEL),
        (
            prof(1, (0, 1), (10, 2), (20, 3)),
            SmartLimits(max_periods=2),
            RejectReason.TOO_MANY_PERIODS,
        ),
        (
            prof(1, (0, 7000), unit=RateUnit.WATTS),
            SmartLimits(allowed_units=frozenset({RateUnit.AMPERES})),
            RejectReason.RATE_UNIT,
        ),
        (prof(1, (5, 10)), SmartLimits(), RejectReason.BAD_PERIODS),
        (prof(1, (0, 10), (60, 8), (60, 6)), SmartLimits(), RejectReason.BAD_PERIODS),
        (prof(1, (0, 10), (60, 8), (30, 6)), SmartLimits(), RejectReason.BAD_PERIODS),
        (prof(1), SmartLimits(), RejectReason.BAD_PERIODS),
        (prof(1, (0, -1)), SmartLimits(), RejectReason.BAD_LIMIT),
        (prof(1, (0, 10, 4)), SmartLimits(), RejectReason.BAD_LIMIT),
        (prof(1, (0, 10), duration_s=-5), SmartLimits(), RejectReason.BAD_DURATION),
        (
            prof(1, (0, 10), valid_from=sec(10), valid_to=sec(10)),
            SmartLimits(),
            RejectReason.BAD_VALIDITY,
        ),
        (
            prof(1, (0, 10), kind=Kind.RECURRING, start=None, recurrency=Recurrency.DAILY),
            SmartLimits(),
            RejectReason.MISSING_START,
        ),
        (prof(1, (0, 10), kind=Kind.RECURRING), SmartLimits(), RejectReason.MISSING_RECURRENCY),
    ],
)
def test_profiles_breaking_a_rule_are_rejected(
    profile: Profile, limits: SmartLimits, reason: RejectReason
) -> None:
    ps = ProfileSet()
    assert ps.install(profile, now=T0, active_tx_ids=NO_TX, limits=limits) == Rejected(
        reason=reason
    )
    assert len(ps) == 0


def test_max_profiles_installed_counts_replacements_as_free() -> None:
    limits = SmartLimits(max_profiles=2)
    ps = ProfileSet()
    for p in (prof(1, (0, 10), stack=0), prof(2, (0, 10), stack=1)):
        assert isinstance(ps.install(p, now=T0, active_tx_ids=NO_TX, limits=limits), Installed)
    third = prof(3, (0, 10), stack=2)
    assert ps.install(third, now=T0, active_tx_ids=NO_TX, limits=limits) == Rejected(
        reason=RejectReason.TOO_MANY_PROFILES
    )
    swap = prof(3, (0, 9), stack=1)  # replaces profile 2
    assert isinstance(ps.install(swap, now=T0, active_tx_ids=NO_TX, limits=limits), Installed)
    assert [p.profile_id for p in ps.profiles] == [1, 3]


def test_absolute_profile_without_start_schedule_starts_when_installed() -> None:
    ps = ProfileSet()
    out = ps.install(prof(1, (0, 10), (60, 6), start=None), now=sec(100), active_tx_ids=NO_TX)
    assert isinstance(out, Installed) and out.profile.schedule.start == sec(100)
    assert amps(ps, sec(150)) == 10
    assert amps(ps, sec(160)) == 6


def test_remote_start_profile_must_be_a_tx_profile_without_transaction_id() -> None:
    assert check_remote_start_profile(prof(1, (0, 10), purpose=Purpose.TX)) is None
    assert check_remote_start_profile(prof(1, (0, 10))) is RejectReason.WRONG_PURPOSE
    assert (
        check_remote_start_profile(prof(1, (0, 10), purpose=Purpose.TX, tx_id=3))
        is RejectReason.WRONG_TRANSACTION
    )


# -- clearing --------------------------------------------------------------------------------------


def _three() -> ProfileSet:
    return installed(
        prof(1, (0, 32), connector=0, purpose=Purpose.CHARGE_POINT_MAX),
        prof(2, (0, 16), connector=1, stack=0),
        prof(3, (0, 10), connector=2, stack=1),
    )


def test_clear_by_id_ignores_the_other_criteria() -> None:
    ps = _three()
    assert ps.clear(profile_id=2, connector_id=2, purpose=Purpose.CHARGE_POINT_MAX) == [2]
    assert [p.profile_id for p in ps.profiles] == [1, 3]


def test_clear_unknown_id_without_criteria_removes_nothing() -> None:
    ps = _three()
    assert ps.clear(profile_id=42) == []
    assert len(ps) == 3


def test_clear_by_criteria_needs_every_criterion_to_match() -> None:
    ps = _three()
    assert ps.clear(connector_id=1, purpose=Purpose.TX_DEFAULT, stack_level=1) == []
    assert ps.clear(purpose=Purpose.TX_DEFAULT, stack_level=1) == [3]
    assert ps.clear(connector_id=0) == [1]
    assert [p.profile_id for p in ps.profiles] == [2]


def test_clear_without_anything_removes_all() -> None:
    ps = _three()
    assert ps.clear() == [1, 2, 3]
    assert len(ps) == 0


def test_ending_a_transaction_removes_its_tx_profiles_only() -> None:
    tx = {1: 7, 2: 8}
    ps = installed(
        prof(1, (0, 16)),
        prof(2, (0, 10), purpose=Purpose.TX),
        prof(3, (0, 12), purpose=Purpose.TX, connector=2),
        tx=tx,
    )
    assert ps.end_transaction(1) == [2]
    assert [p.profile_id for p in ps.profiles] == [1, 3]


def test_profile_set_restores_from_stored_profiles() -> None:
    stored = _three().profiles
    assert ProfileSet.of(stored).profiles == stored


# -- limit at an instant -----------------------------------------------------------------------


def test_no_profile_means_no_limit() -> None:
    assert ProfileSet().limit_at(1, T0, voltage_v=V) is None


def test_highest_valid_stack_level_wins() -> None:
    ps = installed(prof(1, (0, 16), stack=0), prof(2, (0, 10), stack=3), prof(3, (0, 12), stack=1))
    assert amps(ps, sec(5)) == 10


def test_past_duration_falls_back_to_lower_stack_level() -> None:
    ps = installed(prof(1, (0, 16), stack=0), prof(2, (0, 10), stack=1, duration_s=60))
    assert amps(ps, sec(59)) == 10
    assert amps(ps, sec(60)) == 16


def test_top_stack_without_duration_never_falls_back() -> None:
    ps = installed(prof(1, (0, 16), stack=0), prof(2, (0, 10), (100, 8), stack=1))
    assert amps(ps, sec(10_000_000)) == 8


def test_absolute_schedule_not_started_yet_leaves_lower_stack_in_force() -> None:
    ps = installed(prof(1, (0, 16)), prof(2, (0, 10), stack=1, start=sec(100)))
    assert amps(ps, sec(99)) == 16
    assert amps(ps, sec(100)) == 10


def test_valid_from_and_valid_to_bound_a_profile() -> None:
    ps = installed(
        prof(1, (0, 16)), prof(2, (0, 10), stack=1, valid_from=sec(10), valid_to=sec(20))
    )
    assert [amps(ps, sec(t)) for t in (9, 10, 19, 20)] == [16, 10, 10, 16]


def test_connector_tx_default_beats_connector_zero_at_the_same_stack_level() -> None:
    ps = installed(prof(1, (0, 16), connector=0), prof(2, (0, 10), connector=1))
    assert amps(ps, sec(1), connector=1) == 10
    assert amps(ps, sec(1), connector=2) == 16  # connector 0's default still covers the others


def test_higher_stack_on_connector_zero_beats_a_lower_connector_default() -> None:
    ps = installed(prof(1, (0, 16), connector=0, stack=2), prof(2, (0, 10), connector=1, stack=1))
    assert amps(ps, sec(1), connector=1) == 16


def test_tx_profile_overrules_tx_default_and_charge_point_max_caps_both() -> None:
    tx = {1: 7, 2: None}
    ps = installed(
        prof(1, (0, 20), connector=0, purpose=Purpose.CHARGE_POINT_MAX),
        prof(2, (0, 10), stack=5),
        prof(3, (0, 16), (60, 32), purpose=Purpose.TX, duration_s=120),
        tx=tx,
    )
    assert amps(ps, sec(10), tx_id=7, tx_start=T0) == 16  # Tx above TxDefault's lower 10 A
    assert amps(ps, sec(70), tx_id=7, tx_start=T0) == 20  # capped by ChargePointMax
    assert amps(ps, sec(130), tx_id=7, tx_start=T0) == 10  # Tx schedule over: TxDefault again
    assert amps(ps, sec(10)) == 10  # no transaction: the Tx profile does not apply


def test_relative_schedule_starts_at_the_transaction_start() -> None:
    ps = installed(prof(1, (0, 6), (60, 16), kind=Kind.RELATIVE, start=None))
    assert amps(ps, sec(1000), tx_start=sec(950)) == 6
    assert amps(ps, sec(1010), tx_start=sec(950)) == 16
    assert amps(ps, sec(1010)) == 6  # no transaction yet: a new one would start at period 0


def test_recurring_daily_schedule_crosses_midnight() -> None:
    night = datetime(2024, 3, 1, 22, 0, tzinfo=UTC)
    # 22:00-06:00 16 A, then 6 A until 22:00 the next day
    ps = installed(
        prof(
            1, (0, 16), (8 * 3600, 6), kind=Kind.RECURRING, recurrency=Recurrency.DAILY, start=night
        )
    )
    assert amps(ps, datetime(2024, 3, 1, 21, 59, tzinfo=UTC)) is None  # before the first run
    assert amps(ps, datetime(2024, 3, 2, 1, 0, tzinfo=UTC)) == 16
    assert amps(ps, datetime(2024, 3, 2, 6, 0, tzinfo=UTC)) == 6
    assert amps(ps, datetime(2024, 3, 9, 23, 30, tzinfo=UTC)) == 16
    assert amps(ps, datetime(2024, 3, 10, 12, 0, tzinfo=UTC)) == 6


def test_recurring_weekly_schedule_with_duration_repeats_each_week() -> None:
    monday = datetime(2024, 3, 4, 0, 0, tzinfo=UTC)
    ps = installed(
        prof(
            1,
            (0, 16),
            stack=1,
            kind=Kind.RECURRING,
            recurrency=Recurrency.WEEKLY,
            start=monday,
            duration_s=86_400,
        ),
        prof(2, (0, 32), stack=0, start=monday),
    )
    assert amps(ps, monday + timedelta(days=7, hours=3)) == 16  # a Monday
    assert amps(ps, monday + timedelta(days=8, hours=3)) == 32  # the Tuesday after


def test_watts_convert_to_amps_with_voltage_and_phases() -> None:
    ps = installed(prof(1, (0, 11_040), unit=RateUnit.WATTS))
    lim = ps.limit_at(1, sec(1), voltage_v=V, phases=3)
    assert lim is not None and lim.number_phases == 3
    assert lim.current_a == pytest.approx(16.0) and lim.power_w == pytest.approx(11_040)
    one = ps.limit_at(1, sec(1), voltage_v=V, phases=1)  # a single-phase connector
    assert one is not None and one.number_phases == 1 and one.current_a == pytest.approx(48.0)


def test_number_phases_of_the_period_is_used_for_conversion() -> None:
    ps = installed(prof(1, (0, 3_680, 1), unit=RateUnit.WATTS))
    lim = ps.limit_at(1, sec(1), voltage_v=V, phases=3)
    assert lim is not None and lim.number_phases == 1
    assert lim.current_a == pytest.approx(16.0)
    assert lim.power_w == pytest.approx(3_680)


def test_min_charging_rate_is_passed_through_in_both_units() -> None:
    ps = installed(prof(1, (0, 16), min_rate=6))
    lim = ps.limit_at(1, sec(1), voltage_v=V)
    assert lim is not None and lim.min_rate_a == 6 and lim.min_rate_w == pytest.approx(6 * V * 3)


def test_limit_below_six_amps_is_reported_as_is() -> None:
    ps = installed(prof(1, (0, 0), (60, 4.5)))
    assert amps(ps, sec(1)) == 0
    assert amps(ps, sec(61)) == 4.5


# -- next change ---------------------------------------------------------------------------------


def test_next_change_is_the_next_period_boundary_or_validity_end() -> None:
    ps = installed(
        prof(1, (0, 16), (60, 8), valid_to=sec(90)),
        prof(2, (0, 6), stack=1, start=sec(30), duration_s=10),
    )
    assert [ps.next_change_after(1, sec(t)) for t in (0, 30, 40, 60)] == [
        sec(30),
        sec(40),
        sec(60),
        sec(90),
    ]
    assert ps.next_change_after(1, sec(90)) is None


def test_next_change_of_a_daily_schedule_is_the_next_recurrence() -> None:
    ps = installed(prof(1, (0, 16), (3600, 8), kind=Kind.RECURRING, recurrency=Recurrency.DAILY))
    assert ps.next_change_after(1, sec(4000)) == sec(86_400)


def test_relative_schedule_has_no_boundaries_until_a_transaction_starts() -> None:
    ps = installed(prof(1, (0, 6), (60, 16), kind=Kind.RELATIVE, start=None))
    assert ps.next_change_after(1, sec(5)) is None
    assert ps.next_change_after(1, sec(5), tx_start=sec(0)) == sec(60)


# -- composite schedule ------------------------------------------------------------------------


def composite(ps: ProfileSet, connector: int = 1, duration_s: int = 300, **kw: object) -> Schedule:
    args: dict[str, object] = {"voltage_v": V, "connector_max_a": 32.0} | kw
    unit = args.pop("unit", RateUnit.AMPERES)
    start = args.pop("start", T0)
    return ps.composite(connector, start, duration_s, unit, **args)  # type: ignore[arg-type]


def test_tc_056_tx_default_profile_limits_the_next_transaction() -> None:
    ps = installed(prof(1, (0, 10), kind=Kind.RELATIVE, start=None))
    assert periods(composite(ps)) == [(0, 10)]
    assert amps(ps, sec(5), tx_start=sec(4), tx_id=1) == 10


def test_tc_057_tx_profile_limits_the_ongoing_transaction() -> None:
    tx = {1: 7, 2: None}
    ps = installed(prof(1, (0, 16)), prof(2, (0, 6), (60, 10), purpose=Purpose.TX, tx_id=7), tx=tx)
    s = composite(ps, tx_id=7, tx_start=T0)
    assert periods(s) == [(0, 6), (60, 10)]


def test_tc_066_composite_is_the_minimum_of_the_purposes() -> None:
    tx = {1: 7, 2: None}
    ps = installed(
        prof(1, (0, 20), (100, 12), connector=0, purpose=Purpose.CHARGE_POINT_MAX),
        prof(2, (0, 16), (200, 25)),
        prof(3, (0, 14), (50, 30), purpose=Purpose.TX, duration_s=250),
        tx=tx,
    )
    s = composite(ps, tx_id=7, tx_start=T0, duration_s=400)
    # Tx 14 | Tx 30 capped by CPMax 20 | CPMax 12 | past Tx duration: TxDefault 25, CPMax 12
    assert periods(s) == [(0, 14), (50, 20), (100, 12)]
    assert s.start == T0 and s.duration_s == 400 and s.rate_unit is RateUnit.AMPERES


def test_tc_067_clearing_a_profile_changes_the_composite() -> None:
    ps = installed(prof(1, (0, 16)), prof(2, (0, 8), stack=1))
    assert periods(composite(ps)) == [(0, 8)]
    assert ps.clear(profile_id=2) == [2]
    assert periods(composite(ps)) == [(0, 16)]
    assert ps.clear(profile_id=1) == [1]
    assert periods(composite(ps)) == [(0, 32)]  # nothing left: the connector's own maximum


def test_tc_072_higher_stack_level_wins_while_valid() -> None:
    ps = installed(
        prof(1, (0, 6), (100, 8), (200, 10), stack=0),
        prof(2, (0, 7), stack=1, duration_s=150),
    )
    assert periods(composite(ps, duration_s=300)) == [(0, 7), (150, 8), (200, 10)]


def test_tc_082_tx_default_installed_during_a_transaction_applies_to_it() -> None:
    tx = {1: 7, 2: None}
    ps = ProfileSet()
    assert amps(ps, sec(10), tx_id=7, tx_start=T0) is None
    p = prof(1, (0, 8), kind=Kind.RELATIVE, start=None)
    assert isinstance(ps.install(p, now=sec(10), active_tx_ids=tx), Installed)
    assert amps(ps, sec(10), tx_id=7, tx_start=T0) == 8


def test_composite_for_connector_zero_is_not_a_sum_over_connectors() -> None:
    ps = installed(
        prof(1, (0, 32), connector=0, purpose=Purpose.CHARGE_POINT_MAX),
        prof(2, (0, 16), connector=1),
        prof(3, (0, 16), connector=2),
    )
    assert periods(composite(ps, connector=0, connector_max_a=None)) == [(0, 32)]


def test_composite_with_zero_duration_reports_the_active_profile() -> None:
    ps = installed(prof(1, (0, 10), (60, 6)))
    s = composite(ps, duration_s=0, start=sec(70))
    assert periods(s) == [(0, 6)] and s.duration_s == 0


def test_composite_periods_are_relative_to_the_requested_start() -> None:
    ps = installed(prof(1, (0, 10), (60, 6), (120, 12)))
    assert periods(composite(ps, start=sec(90), duration_s=100)) == [(0, 6), (30, 12)]


def test_composite_merges_equal_consecutive_periods() -> None:
    ps = installed(prof(1, (0, 10), (60, 10), (120, 12)), prof(2, (0, 10), stack=1, duration_s=30))
    assert periods(composite(ps)) == [(0, 10), (120, 12)]


def test_composite_in_watts_converts_amps_with_phases() -> None:
    ps = installed(prof(1, (0, 16), (60, 10, 1)))
    s = composite(ps, unit=RateUnit.WATTS, duration_s=120)
    assert periods(s) == [(0, 16 * V * 3), (60, 10 * V * 1)]
    assert [p.number_phases for p in s.periods] == [3, 1]


def test_composite_caps_at_the_connector_maximum() -> None:
    ps = installed(prof(1, (0, 40), (60, 10)))
    assert periods(composite(ps, connector_max_a=32.0)) == [(0, 32), (60, 10)]


def test_composite_without_transaction_runs_relative_profiles_from_the_start() -> None:
    ps = installed(prof(1, (0, 6), (60, 16), kind=Kind.RELATIVE, start=None))
    assert periods(composite(ps, start=sec(1000))) == [(0, 6), (60, 16)]


def test_composite_reports_min_charging_rate_in_the_asked_unit() -> None:
    ps = installed(prof(1, (0, 16), min_rate=6))
    assert composite(ps).min_rate == 6
    assert composite(ps, unit=RateUnit.WATTS).min_rate == pytest.approx(6 * V * 3)


def test_composite_drops_sub_second_part_of_the_start() -> None:
    s = composite(installed(prof(1, (0, 10))), start=T0.replace(microsecond=500_000))
    assert s.start == T0


def test_composite_refuses_negative_duration() -> None:
    with pytest.raises(ValueError):
        composite(ProfileSet(), duration_s=-1)


# --- the charger as a whole (§7.8) and remote-start profiles (§5.11) -----------------------------


def test_charger_limit_is_the_charge_point_max_profile_alone() -> None:
    ps = ProfileSet.of(
        [
            prof(1, (0, 16), connector=0, purpose=Purpose.CHARGE_POINT_MAX),
            prof(2, (0, 10), connector=0, purpose=Purpose.TX_DEFAULT),
        ]
    )
    lim = ps.charger_limit_at(sec(1), voltage_v=V)
    assert lim is not None and lim.current_a == 16
    assert ProfileSet().charger_limit_at(sec(1), voltage_v=V) is None
    # watts for the charger: amperes per phase as if every phase were loaded
    ps = ProfileSet.of(
        [prof(3, (0, 11040), connector=0, purpose=Purpose.CHARGE_POINT_MAX, unit=RateUnit.WATTS)]
    )
    lim = ps.charger_limit_at(sec(1), voltage_v=V, phases=3)
    assert lim is not None and lim.current_a == pytest.approx(16)


def test_charger_composite_is_the_smallest_of_max_profile_site_and_sum_of_connectors() -> None:
    from ocppd.core.smart import ConnectorSpec

    conns = [
        ConnectorSpec(connector_id=1, max_current_a=32),
        ConnectorSpec(connector_id=2, max_current_a=32),
    ]
    ps = ProfileSet.of([prof(1, (0, 12), connector=2)])  # TxDefault 12 A on connector 2
    whole = ps.charger_composite(T0, 600, RateUnit.AMPERES, connectors=conns, voltage_v=V)
    assert [(p.start_s, p.limit) for p in whole.periods] == [(0, 44)]
    capped = ps.charger_composite(
        T0, 600, RateUnit.AMPERES, connectors=conns, voltage_v=V, site_max_a=40
    )
    assert [(p.start_s, p.limit) for p in capped.periods] == [(0, 40)]
    ps.install(
        prof(2, (0, 20), (300, 16), connector=0, purpose=Purpose.CHARGE_POINT_MAX),
        now=T0,
        active_tx_ids=NO_TX,
    )
    sched = ps.charger_composite(
        T0, 600, RateUnit.AMPERES, connectors=conns, voltage_v=V, site_max_a=40
    )
    assert [(p.start_s, p.limit) for p in sched.periods] == [(0, 20), (300, 16)]


def test_remote_start_profile_applies_before_the_transaction_id_and_is_bound_later() -> None:
    ps = ProfileSet()
    tx_profile = prof(3, (0, 10), purpose=Purpose.TX, kind=Kind.RELATIVE, start=None)
    assert isinstance(ps.add_session_profile(tx_profile, now=T0), Installed)
    # the session has started (tx_start known), its id not yet
    lim = ps.limit_at(1, sec(1), tx_start=T0, voltage_v=V)
    assert lim is not None and lim.current_a == 10
    assert ps.limit_at(1, sec(1), voltage_v=V) is None  # no transaction: no Tx profile
    assert [p.tx_id for p in ps.bind_transaction(1, 77)] == [77]
    lim = ps.limit_at(1, sec(1), tx_start=T0, tx_id=77, voltage_v=V)
    assert lim is not None and lim.current_a == 10
    assert ps.limit_at(1, sec(1), tx_start=T0, tx_id=78, voltage_v=V) is None  # another tx
    wrong = prof(4, (0, 10), purpose=Purpose.TX_DEFAULT, kind=Kind.RELATIVE, start=None)
    assert isinstance(ps.add_session_profile(wrong, now=T0), Rejected)
    deep = prof(5, (0, 10), purpose=Purpose.TX, kind=Kind.RELATIVE, start=None, stack=9)
    assert (
        check_remote_start_profile(deep, SmartLimits(max_stack_level=8)) is RejectReason.STACK_LEVEL
    )


def test_a_full_profile_table_does_not_drop_an_accepted_remote_start_limit() -> None:
    limits = SmartLimits(max_profiles=1)
    ps = ProfileSet()
    assert isinstance(
        ps.install(prof(1, (0, 20), connector=0), now=T0, active_tx_ids=NO_TX, limits=limits),
        Installed,
    )
    tx_profile = prof(3, (0, 10), purpose=Purpose.TX, kind=Kind.RELATIVE, start=None)
    assert isinstance(ps.add_session_profile(tx_profile, now=T0, limits=limits), Installed)
    lim = ps.limit_at(1, sec(1), tx_start=T0, voltage_v=V)
    assert lim is not None and lim.current_a == 10
