"""Outbox speed: replaying a backlog must run at the speed of the link, not of the disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from ocppd.storage.bench import outbox_replay, outbox_roundtrip


@pytest.mark.slow
def test_replay_of_10000_meter_values_is_fast(tmp_path: Path) -> None:
    # a bare OCPP-J client on loopback manages a few thousand CALL/CALLRESULT pairs per second;
    # reading and confirming a queued MeterValues must cost a small fraction of that round trip
    rate = outbox_replay(tmp_path / "replay.db", 10_000)
    assert rate > 2_000, f"replay at {rate:.0f} msg/s"


@pytest.mark.slow
def test_online_roundtrip_rate(tmp_path: Path) -> None:
    rate = outbox_roundtrip(tmp_path / "online.db", 2_000)
    assert rate > 200, f"put+head+remove at {rate:.0f} msg/s"
