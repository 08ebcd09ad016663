"""Meter readings as the Central System and the installer see them: clock-aligned samples
never stamped in the future (§3.16.2), and `ocppctl status` showing the live reading."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from csms import CentralSystem, call
from harness import CP_ID, booted, charge, running, sim, sim_config, wait_until

from ocppd import ctl
from ocppd.station import next_boundary

pytestmark = pytest.mark.asyncio


def clock_stamps(cs: CentralSystem) -> list[datetime]:
    out = []
    for mv in cs.received("MeterValues"):
        for value in mv["meterValue"]:
            if any(v.get("context") == "Sample.Clock" for v in value["sampledValue"]):
                out.append(datetime.fromisoformat(value["timestamp"].replace("Z", "+00:00")))
    return out


async def test_changing_the_sample_interval_never_sends_an_aligned_sample_early(
    cs: CentralSystem, tmp_path: Path
) -> None:
    cfg = sim_config(tmp_path, cs.url, ocpp={"ClockAlignedDataInterval": 900})
    async with running(cfg) as d:
        await booted(cs)
        # the charger's clock (injected offset) stands ten minutes before the quarter hour the
        # aligned sampler waits for
        real = datetime.now(UTC)
        d.wall.offset = next_boundary(real, 900) - timedelta(minutes=10) - real
        for value in ("10", "0", "30"):
            conf = await cs.call(
                CP_ID, call.ChangeConfiguration(key="MeterValueSampleInterval", value=value)
            )
            assert conf.status == "Accepted"
        # a triggered sample marks the point by which an early aligned one would have been sent
        await cs.call(CP_ID, call.TriggerMessage(requested_message="MeterValues", connector_id=1))
        await cs.wait_for("MeterValues")
        now = d.wall()
        assert [t for t in clock_stamps(cs) if t > now] == []
        assert clock_stamps(cs) == []


async def test_aligned_sample_follows_its_boundary_on_the_chargers_clock(
    cs: CentralSystem, tmp_path: Path
) -> None:
    cfg = sim_config(tmp_path, cs.url, ocpp={"ClockAlignedDataInterval": 900})
    async with running(cfg) as d:
        await booted(cs)
        real = datetime.now(UTC)
        boundary = next_boundary(real, 900)
        d.wall.offset = boundary - timedelta(seconds=0.3) - real  # due in 0.3 s
        d.station.retime()
        await cs.wait_for("MeterValues", timeout=5)
        assert clock_stamps(cs) == [boundary]
        assert d.wall() >= boundary


async def test_status_shows_the_live_reading_while_charging(
    cs: CentralSystem, tmp_path: Path
) -> None:
    cfg = sim_config(tmp_path, cs.url, sim={"time_factor": 100.0})
    async with running(cfg) as d:
        await booted(cs)
        await charge(cs, d)
        start_wh = d.station.connectors[1].tx.meter_start_wh
        await wait_until(lambda: sim(d).view(1).energy_wh > start_wh, what="energy flowing")
        st = await asyncio.to_thread(ctl.call, cfg.control.socket, "status", {}, timeout_s=10.0)
        view = sim(d).view(1)
        conn = st["connectors"][0]
        assert conn["status"] == "Charging"
        assert conn["power_w"] == pytest.approx(view.power_w, rel=0.01) and view.power_w > 0
        assert conn["energy_wh"] > 0
        assert conn["register_wh"] <= view.energy_wh


async def test_next_boundary_is_strictly_after_now() -> None:
    at = datetime(2026, 3, 1, 10, 15, tzinfo=UTC)
    assert next_boundary(at, 900) == at + timedelta(minutes=15)
    assert next_boundary(at - timedelta(microseconds=1), 900) == at
