"""Property tests: the composite schedule and next_change_after agree with a second-by-second
evaluation, and limit_at agrees with a brute-force stacking reference."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocppd.core.smart import (
    Installed,
    Kind,
    Profile,
    ProfileSet,
    Purpose,
    RateUnit,
    Recurrency,
    Schedule,
    SchedulePeriod,
)

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
V = 230.0
TX = {1: 7, 2: None}
FAST = settings(deadline=None, max_examples=150)


def sec(n: int) -> datetime:
    return T0 + timedelta(seconds=n)


@st.composite
def schedules(draw: st.DrawFn, unit: RateUnit | None = None) -> Schedule:
    unit = unit or draw(st.sampled_from(RateUnit))
    gaps = draw(st.lists(st.integers(1, 150), max_size=3))
    starts = [0]
    for g in gaps:
        starts.append(starts[-1] + g)
    top = 40 if unit is RateUnit.AMPERES else 25_000
    periods = tuple(
        SchedulePeriod(
            start_s=s,
            limit=draw(st.integers(0, top * 2)) / 2,
            number_phases=draw(st.sampled_from([None, 1, 3])) if unit is RateUnit.WATTS else None,
        )
        for s in starts
    )
    return Schedule(
        rate_unit=unit,
        periods=periods,
        duration_s=draw(st.none() | st.integers(1, 500)),
        start=sec(draw(st.integers(-300, 400))),
        min_rate=draw(st.none() | st.integers(0, 6)),
    )


@st.composite
def profiles(draw: st.DrawFn, pid: int) -> Profile:
    purpose = draw(st.sampled_from(Purpose))
    connector = {
        Purpose.CHARGE_POINT_MAX: 0,
        Purpose.TX: 1,
        Purpose.TX_DEFAULT: draw(st.sampled_from([0, 1, 2])),
    }[purpose]
    kind = draw(st.sampled_from(Kind))
    schedule = draw(schedules())
    recurrency = None
    if kind is Kind.RECURRING:
        recurrency = Recurrency.DAILY
        # a daily run that began yesterday or begins during the window
        schedule = Schedule(
            rate_unit=schedule.rate_unit,
            periods=schedule.periods,
            duration_s=schedule.duration_s,
            start=sec(draw(st.sampled_from([-86_400 + 200, -86_400 - 100, 150]))),
            min_rate=schedule.min_rate,
        )
    valid_from = draw(st.none() | st.integers(-100, 300))
    valid_to = draw(st.none() | st.integers(1, 400))
    if valid_from is not None and valid_to is not None and valid_to <= valid_from:
        valid_to = valid_from + 1
    return Profile(
        profile_id=pid,
        connector_id=connector,
        stack_level=draw(st.integers(0, 3)),
        purpose=purpose,
        kind=kind,
        recurrency=recurrency,
        valid_from=None if valid_from is None else sec(valid_from),
        valid_to=None if valid_to is None else sec(valid_to),
        tx_id=None,
        schedule=schedule,
    )


@st.composite
def profile_sets(draw: st.DrawFn) -> ProfileSet:
    ps = ProfileSet()
    for pid in range(draw(st.integers(0, 5))):
        out = ps.install(draw(profiles(pid + 1)), now=T0, active_tx_ids=TX)
        assert isinstance(out, Installed)
    return ps


tx_starts = st.none() | st.integers(-200, 200)


def expected_at(
    ps: ProfileSet,
    connector: int,
    t: datetime,
    unit: RateUnit,
    *,
    anchor: datetime,
    tx_id: int | None,
    phases: int,
    cap_a: float,
) -> tuple[float, int]:
    lim = ps.limit_at(connector, t, tx_start=anchor, tx_id=tx_id, voltage_v=V, phases=phases)
    n = lim.number_phases if lim is not None else phases
    amps = cap_a if lim is None else min(lim.current_a, cap_a)
    return (amps if unit is RateUnit.AMPERES else amps * V * n), n


@FAST
@given(
    ps=profile_sets(),
    connector=st.sampled_from([0, 1, 2]),
    start=st.integers(-100, 300),
    duration_s=st.integers(0, 600),
    unit=st.sampled_from(RateUnit),
    tx_start=tx_starts,
    phases=st.sampled_from([1, 3]),
)
def test_composite_matches_the_limit_at_every_second(
    ps: ProfileSet,
    connector: int,
    start: int,
    duration_s: int,
    unit: RateUnit,
    tx_start: int | None,
    phases: int,
) -> None:
    tx_id = 7 if tx_start is not None and connector == 1 else None
    begin = sec(start)
    anchor = begin if tx_start is None else sec(tx_start)
    s = ps.composite(
        connector,
        begin,
        duration_s,
        unit,
        tx_start=None if tx_start is None else anchor,
        tx_id=tx_id,
        voltage_v=V,
        phases=phases,
        connector_max_a=32.0,
    )
    starts = [p.start_s for p in s.periods]
    assert starts[0] == 0
    assert all(a < b for a, b in zip(starts, starts[1:], strict=False))
    assert all(b < max(duration_s, 1) for b in starts)
    assert all(
        (a.limit, a.number_phases) != (b.limit, b.number_phases)
        for a, b in zip(s.periods, s.periods[1:], strict=False)
    )
    i = 0
    for offset in range(max(duration_s, 1)):
        while i + 1 < len(s.periods) and s.periods[i + 1].start_s <= offset:
            i += 1
        want, n = expected_at(
            ps,
            connector,
            begin + timedelta(seconds=offset),
            unit,
            anchor=anchor,
            tx_id=tx_id,
            phases=phases,
            cap_a=32.0,
        )
        got = s.periods[i]
        assert got.number_phases == n, offset
        assert got.limit == pytest.approx(want), offset


@FAST
@given(
    ps=profile_sets(),
    connector=st.sampled_from([0, 1, 2]),
    at=st.integers(-200, 400),
    tx_start=tx_starts,
)
def test_limit_is_constant_until_next_change(
    ps: ProfileSet, connector: int, at: int, tx_start: int | None
) -> None:
    tx_id = 7 if tx_start is not None else None
    anchor = None if tx_start is None else sec(tx_start)
    nxt = ps.next_change_after(connector, sec(at), tx_start=anchor, tx_id=tx_id)
    assert nxt is None or nxt > sec(at)
    horizon = 600 if nxt is None else int((nxt - sec(at)).total_seconds())
    first = ps.limit_at(connector, sec(at), tx_start=anchor, tx_id=tx_id, voltage_v=V)
    for k in range(1, min(horizon, 600)):
        t = sec(at + k)
        assert ps.limit_at(connector, t, tx_start=anchor, tx_id=tx_id, voltage_v=V) == first, k


def reference_amps(profiles: list[Profile], t: datetime) -> float | None:
    """Brute-force stacking for absolute amp schedules on one connector's TxDefault."""
    best: tuple[int, float] | None = None
    for p in profiles:
        assert p.schedule.start is not None
        if p.valid_from is not None and t < p.valid_from:
            continue
        if p.valid_to is not None and t >= p.valid_to:
            continue
        offset = (t - p.schedule.start).total_seconds()
        if offset < 0 or (p.schedule.duration_s is not None and offset >= p.schedule.duration_s):
            continue
        limit = [per.limit for per in p.schedule.periods if per.start_s <= offset][-1]
        if best is None or p.stack_level > best[0]:
            best = (p.stack_level, limit)
    return None if best is None else best[1]


@FAST
@given(
    schedules_=st.lists(schedules(unit=RateUnit.AMPERES), max_size=4),
    valid=st.lists(
        st.tuples(st.none() | st.integers(-50, 200), st.none() | st.integers(201, 500)),
        min_size=4,
        max_size=4,
    ),
    at=st.integers(-400, 900),
)
def test_limit_at_matches_brute_force_stacking(
    schedules_: list[Schedule], valid: list[tuple[int | None, int | None]], at: int
) -> None:
    # distinct stack levels: equal ones would replace each other on install
    bounds = [tuple(None if b is None else sec(b) for b in pair) for pair in valid]
    profs = [
        Profile(
            profile_id=i + 1,
            connector_id=1,
            stack_level=i,
            purpose=Purpose.TX_DEFAULT,
            kind=Kind.ABSOLUTE,
            valid_from=bounds[i][0],
            valid_to=bounds[i][1],
            schedule=s,
        )
        for i, s in enumerate(schedules_)
    ]
    ps = ProfileSet()
    for p in profs:
        assert isinstance(ps.install(p, now=T0, active_tx_ids=TX), Installed)
    lim = ps.limit_at(1, sec(at), voltage_v=V)
    want = reference_amps(profs, sec(at))
    assert (None if lim is None else lim.current_a) == want
