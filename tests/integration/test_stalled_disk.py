"""The contactor never waits for storage, and nothing is sent before it is durable.

The daemon runs with a small LD_PRELOAD library (scripts/bench/slowfsync.c, compiled here with
gcc) in front of fsync/fdatasync: while the test holds its "gate" closed, every flush to the
disk hangs, as an SD card can for hundreds of milliseconds. A device-mapper delay target or a
FUSE file system under the state directory would do the same with more privileges; the library
slows exactly the calls SQLite and Python make to reach the disk.

While a flush is stuck, an unplug must still open the contactor (safety actions never queue
behind a commit), and no queued MeterValues may reach the Central System (a message is sent
only once a power cut could no longer undo it). Once the disk answers again, everything queued
is delivered. The test waits on events, never on time: the disk stays stuck until the test has
seen the contactor open.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest
from csms import CentralSystem
from harness import DaemonProcess, sim_config_text, wait_until

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

SHIM = Path(__file__).resolve().parents[2] / "scripts" / "bench" / "slowfsync.c"


def build_shim(tmp_path: Path) -> Path:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("needs a C compiler for the fsync-delaying library")
    lib = tmp_path / "slowfsync.so"
    subprocess.run([gcc, "-shared", "-fPIC", "-o", str(lib), str(SHIM), "-ldl"], check=True)
    return lib


async def test_contactor_opens_and_nothing_is_sent_while_the_disk_is_stuck(
    cs: CentralSystem, tmp_path: Path
) -> None:
    lib = build_shim(tmp_path)
    gate = tmp_path / "disk-answers"
    held = Path(f"{gate}.held")
    gate.touch()
    cfg = tmp_path / "ocppd.toml"
    cfg.write_text(sim_config_text(tmp_path, cs.url, ocpp={"MeterValueSampleInterval": 1}))
    d = DaemonProcess(cfg, env={"LD_PRELOAD": str(lib), "FSYNC_GATE": str(gate),
                                "SLOW_FSYNC_MS": "0"}).start()

    def log_has(text: str, after: int = 0) -> bool:
        return text in d.log.read_text(errors="replace")[after:]

    try:
        await cs.wait_for("BootNotification", timeout=30)
        await asyncio.to_thread(d.ctl, "plug", "1")
        await asyncio.to_thread(d.ctl, "swipe", "STUCK1")
        await wait_until(lambda: log_has("sim connector 1: contactor closed"), 15, "charging")
        await cs.wait_for("MeterValues", timeout=15)

        gate.unlink()  # from now on every flush hangs
        await wait_until(held.exists, 15, "a flush stuck on the disk")
        sent_before = len(cs.received("MeterValues"))
        mark = len(d.log.read_text(errors="replace"))
        unplug = asyncio.ensure_future(asyncio.to_thread(d.ctl, "unplug", "1"))
        await wait_until(lambda: log_has("sim connector 1: contactor open", mark), 15,
                         "the contactor to open while the disk is stuck")
        assert held.exists(), "the disk answered meanwhile: the test proved nothing"
        assert (await unplug).returncode == 0
        # samples were committed meanwhile, but not one was sent: none was durable yet (one
        # may have passed the barrier just before the disk got stuck)
        assert len(cs.received("MeterValues")) <= sent_before + 1
        assert not cs.received("StopTransaction")

        gate.touch()  # the disk answers again: everything queued goes out
        (stop,) = await cs.wait_for("StopTransaction", timeout=30)
        assert stop["reason"] == "EVDisconnected"
    finally:
        gate.touch()
        assert d.stop() == 0


async def test_contactor_closes_only_once_the_session_is_durable(
    cs: CentralSystem, tmp_path: Path
) -> None:
    """A swipe while the disk is stuck: the session is recorded, but the contactor stays open
    until the record is durable (the durability promise). The EV leaving meanwhile still ends
    the session (StopTransactionOnEVSideDisconnect), and no energy was ever given."""
    lib = build_shim(tmp_path)
    gate = tmp_path / "disk-answers"
    held = Path(f"{gate}.held")
    gate.touch()
    cfg = tmp_path / "ocppd.toml"
    cfg.write_text(sim_config_text(tmp_path, cs.url))
    d = DaemonProcess(cfg, env={"LD_PRELOAD": str(lib), "FSYNC_GATE": str(gate),
                                "SLOW_FSYNC_MS": "0"}).start()
    try:
        await cs.wait_for("BootNotification", timeout=30)
        await asyncio.to_thread(d.ctl, "plug", "1")
        gate.unlink()
        swipe = asyncio.ensure_future(asyncio.to_thread(d.ctl, "swipe", "STUCK2"))
        await wait_until(held.exists, 15, "the session's flush stuck on the disk")
        await asyncio.to_thread(d.ctl, "unplug", "1")
        assert held.exists()
        assert "contactor closed" not in d.log.read_text(errors="replace")
        assert not cs.received("StartTransaction")  # not sent before it is durable
        gate.touch()
        await swipe
        (stop,) = await cs.wait_for("StopTransaction", timeout=30)
        assert stop["reason"] == "EVDisconnected"
        assert "contactor closed" not in d.log.read_text(errors="replace")
    finally:
        gate.touch()
        assert d.stop() == 0
