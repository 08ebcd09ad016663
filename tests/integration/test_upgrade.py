"""Issue 15 item 7: `apt upgrade` restarts the service; a car charging at that moment keeps its
session. The package's postinst leaves a marker in the runtime directory before the restart;
the daemon that stops with the marker there leaves its transactions open, and the new one
resumes them when the EV is still plugged in, whatever system.power_loss says."""

from __future__ import annotations

from pathlib import Path

import pytest
from csms import CentralSystem
from harness import charge, running, sim, sim_config, wait_status, wait_until

from ocppd.app import KEEP_SESSIONS_MARKER

pytestmark = pytest.mark.asyncio


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The service's runtime directory, where postinst leaves its marker."""
    path = tmp_path / "run"
    path.mkdir()
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(path))  # systemd sets it (RuntimeDirectory=)
    return path


async def test_restart_for_an_upgrade_keeps_the_session(
    cs: CentralSystem, tmp_path: Path, runtime: Path
) -> None:
    cfg = sim_config(tmp_path, cs.url, sim={"time_factor": 50.0})
    assert cfg.system.power_loss == "stop"  # the default, which used to end the session
    async with running(cfg) as d:
        await wait_status(cs, "Available")
        await charge(cs, d)
        local = d.station.connectors[1].tx.local_id
        (runtime / KEEP_SESSIONS_MARKER).write_text("")  # what postinst does
    assert cs.received("StopTransaction") == []
    assert not (runtime / KEEP_SESSIONS_MARKER).exists()  # used once
    cs.messages.clear()
    async with running(cfg, plugged=(1,)) as d:  # the new version; the car is still there
        await wait_until(lambda: d.station.connectors[1].tx is not None, what="resumed session")
        assert d.station.connectors[1].tx.local_id == local
        await wait_status(cs, "Charging")
        assert cs.received("StopTransaction") == [] and cs.received("StartTransaction") == []


async def test_a_plain_stop_still_ends_the_session(
    cs: CentralSystem, tmp_path: Path, runtime: Path
) -> None:
    cfg = sim_config(tmp_path, cs.url)
    async with running(cfg) as d:
        await wait_status(cs, "Available")
        sim(d).plug(1)
        await d.station.swipe("TAG1", None)
        await cs.wait_for("StartTransaction")
    stop = (await cs.wait_for("StopTransaction"))[0]
    assert stop["reason"] == "Reboot"


async def test_marker_does_not_outlive_the_restart_it_was_meant_for(
    cs: CentralSystem, tmp_path: Path, runtime: Path
) -> None:
    """A session resumed after an upgrade is stopped normally by the next plain stop."""
    cfg = sim_config(tmp_path, cs.url)
    async with running(cfg) as d:
        await wait_status(cs, "Available")
        sim(d).plug(1)
        await d.station.swipe("TAG1", None)
        await cs.wait_for("StartTransaction")
        (runtime / KEEP_SESSIONS_MARKER).write_text("")
    async with running(cfg, plugged=(1,)) as d:
        await wait_until(lambda: d.station.connectors[1].tx is not None, what="resumed session")
        # online before the stop, so the StopTransaction goes out at shutdown, not next start
        await wait_until(lambda: d.cp.online, what="registered again")
    stop = (await cs.wait_for("StopTransaction"))[0]
    assert stop["reason"] == "Reboot"
