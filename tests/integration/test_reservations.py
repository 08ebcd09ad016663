"""Reservations (OCPP 1.6 §5.13): one expiry timer per reservation, replaced with it, re-armed
from storage at start-up, gone at shutdown. The real daemon against a real Central System."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from csms import CentralSystem, call
from harness import CP_ID, booted, running, sim_config, status, wait_status

from ocppd.storage import Reservation, Store

pytestmark = pytest.mark.asyncio


def expiry_in(seconds: float) -> str:
    at = datetime.now(UTC) + timedelta(seconds=seconds)
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def reserve(cs: CentralSystem, rid: int, cid: int, seconds: float) -> str:
    conf = await cs.call(
        CP_ID,
        call.ReserveNow(
            connector_id=cid, expiry_date=expiry_in(seconds), id_tag="RES", reservation_id=rid
        ),
    )
    return str(conf.status)


async def test_replacing_a_reservation_disarms_the_old_expiry(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url, connectors=2)) as d:
        await booted(cs, 2)
        assert await reserve(cs, 5, 1, 0.5) == "Accepted"
        assert await reserve(cs, 5, 1, 600) == "Accepted"  # same id: replaces (§5.13)
        # a later reservation elsewhere expires after the first expiry would have: once it has,
        # the replaced timer would have fired too
        assert await reserve(cs, 6, 2, 1.0) == "Accepted"
        await wait_status(cs, "Available", cid=2, count=2)
        assert status(d, 1) == "reserved"
        assert [r.reservation_id for r in d.store.reservations()] == [5]
        conf = await cs.call(CP_ID, call.CancelReservation(reservation_id=5))
        assert conf.status == "Accepted"
        await wait_status(cs, "Available", cid=1, count=2)


async def test_a_restored_reservation_expires_at_its_expiry(
    cs: CentralSystem, tmp_path: Path
) -> None:
    cfg = sim_config(tmp_path, cs.url)
    async with running(cfg) as d:
        await booted(cs)
        assert await reserve(cs, 7, 1, 1.5) == "Accepted"
        await wait_status(cs, "Reserved")
    async with running(cfg) as d:
        assert d.station.connectors[1].reservation_id == 7  # held again after the restart
        await wait_status(cs, "Available", count=2)  # ... and released at its expiry
        assert d.store.reservations() == []


async def test_a_reservation_that_expired_while_stopped_is_dropped(
    cs: CentralSystem, tmp_path: Path
) -> None:
    cfg = sim_config(tmp_path, cs.url)
    with Store.open(cfg.storage.path) as store:
        store.reservation_put(
            Reservation(
                reservation_id=9,
                connector_id=1,
                id_tag="RES",
                parent_id_tag=None,
                expiry=datetime.now(UTC) - timedelta(minutes=1),
            )
        )
    async with running(cfg) as d:
        await booted(cs)
        assert status(d) == "available"
        assert d.store.reservations() == []


async def test_expiry_timers_do_not_outlive_shutdown(cs: CentralSystem, tmp_path: Path) -> None:
    cfg = sim_config(tmp_path, cs.url)
    async with running(cfg) as d:
        await booted(cs)
        assert await reserve(cs, 3, 1, 600) == "Accepted"
        station = d.station
        assert {t.key for t in station.armed_timers() if t.kind == "reservation"} == {3}
    assert station.armed_timers() == {}
    with Store.open(cfg.storage.path) as store:  # still reserved: re-armed at the next start
        assert [r.reservation_id for r in store.reservations()] == [3]


async def test_a_clock_set_back_does_not_end_a_reservation_early(
    cs: CentralSystem, tmp_path: Path
) -> None:
    """The expiry is a wall-clock instant (§5.13 expiryDate): the timer checks it on firing."""
    async with running(sim_config(tmp_path, cs.url, connectors=2)) as d:
        await booted(cs, 2)
        assert await reserve(cs, 1, 1, 0.5) == "Accepted"
        d.wall.offset = -timedelta(hours=1)  # the charger's clock is set back an hour
        # a reservation due one second from the charger's (new) now, to wait on
        conf = await cs.call(
            CP_ID,
            call.ReserveNow(
                connector_id=2,
                expiry_date=expiry_in(1.0 - 3600),
                id_tag="RES",
                reservation_id=2,
            ),
        )
        assert conf.status == "Accepted"
        await wait_status(cs, "Available", cid=2, count=2)
        assert status(d, 1) == "reserved"  # its expiry is still an hour away on this clock


async def test_a_clock_set_forward_ends_a_reservation_at_its_expiry_on_the_new_clock(
    cs: CentralSystem, tmp_path: Path
) -> None:
    """A Raspberry Pi has no real-time clock: NTP may set the clock forward after a reservation's
    expiry timer was armed. The reservation ends at its expiry on the new clock, now, not an
    hour later (ocppd/wallclock.py)."""
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        assert await reserve(cs, 1, 1, 3600) == "Accepted"
        await wait_status(cs, "Reserved")
        d.wall.offset = timedelta(hours=1, seconds=1)  # the clock is set forward
        assert d.station.clock_steps.check()  # what the station's watch does every 5 s
        await wait_status(cs, "Available", count=2)
