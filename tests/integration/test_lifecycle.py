"""The daemon as a Linux service: sd_notify on a real datagram socket, SIGTERM during a live
session, SIGHUP, ocppctl against the running process."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from csms import CentralSystem
from harness import DaemonProcess, sim_config_text

pytestmark = pytest.mark.asyncio


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(tmp_path / "notify.sock"))
    s.setblocking(False)
    yield s
    s.close()


async def recv_until(
    sock: socket.socket, want: str, seen: list[str], timeout: float = 15.0
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not any(want in m for m in seen):
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"no {want!r} from sd_notify; got {seen}")
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 4096), remaining)
        except TimeoutError:
            continue
        seen.extend(data.decode().split("\n"))


def start_daemon(
    tmp_path: Path, url: str, notify: Path | None = None, **kw: object
) -> DaemonProcess:
    cfg = tmp_path / "ocppd.toml"
    cfg.write_text(sim_config_text(tmp_path, url, **kw))  # type: ignore[arg-type]
    env = {"NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "400000"} if notify else {}
    env["JOURNAL_STREAM"] = ""
    return DaemonProcess(cfg, env=env).start()


async def test_sd_notify_ready_status_watchdog_and_stopping(
    cs: CentralSystem, tmp_path: Path, notify_socket: socket.socket
) -> None:
    d = start_daemon(tmp_path, cs.url, notify=tmp_path / "notify.sock")
    seen: list[str] = []
    try:
        await recv_until(notify_socket, "READY=1", seen)
        await cs.wait_for("StatusNotification", lambda p: p["connectorId"] == 1)
        await recv_until(notify_socket, "STATUS=connected to", seen)
        await recv_until(notify_socket, "WATCHDOG=1", seen)
        d.signal(signal.SIGTERM)
        await recv_until(notify_socket, "STOPPING=1", seen)
        assert await asyncio.to_thread(d.wait, 10) == 0
    finally:
        d.stop()
    assert "READY=1" in seen and any(m.startswith("STATUS=") for m in seen)
    assert any("1 connectors" in m for m in seen if m.startswith("STATUS="))


async def test_watchdog_pings_at_half_the_interval(
    cs: CentralSystem, tmp_path: Path, notify_socket: socket.socket
) -> None:
    d = start_daemon(tmp_path, cs.url, notify=tmp_path / "notify.sock")
    stamps: list[float] = []
    loop = asyncio.get_running_loop()
    try:
        deadline = loop.time() + 15
        while len(stamps) < 6 and loop.time() < deadline:
            try:
                data = await asyncio.wait_for(loop.sock_recv(notify_socket, 4096), 2)
            except TimeoutError:
                continue
            if b"WATCHDOG=1" in data:
                stamps.append(loop.time())
    finally:
        d.stop()
    assert len(stamps) >= 6, stamps
    gaps = [b - a for a, b in zip(stamps[1:], stamps[2:], strict=False)]
    # WATCHDOG_USEC=400000: a ping every 0.2 s; generous bounds, this is a cadence check
    assert all(0.05 < g < 0.6 for g in gaps), gaps


async def test_sigterm_during_a_live_session_stops_it_cleanly(
    cs: CentralSystem, tmp_path: Path
) -> None:
    d = start_daemon(tmp_path, cs.url, sim={"time_factor": 50.0})
    try:
        await cs.wait_for("StatusNotification", lambda p: p["connectorId"] == 1)
        for args in (("plug", "1"), ("swipe", "CARD1")):
            r = await asyncio.to_thread(d.ctl, *args)
            assert r.returncode == 0, r.stdout + r.stderr
        await cs.wait_for("StatusNotification", lambda p: p["status"] == "Charging")
        started = time.monotonic()
        d.signal(signal.SIGTERM)
        code = await asyncio.to_thread(d.wait, 10)
        elapsed = time.monotonic() - started
    finally:
        d.stop()
    assert code == 0 and elapsed < 5.0, (code, elapsed)
    stop = (await cs.wait_for("StopTransaction"))[0]
    assert stop["reason"] == "Reboot"
    start = cs.received("StartTransaction")[0]
    assert stop["meterStop"] >= start["meterStart"]
    # the database was closed cleanly: the transaction is recorded as finished
    import sqlite3

    db = sqlite3.connect(tmp_path / "ocppd.db")
    try:
        assert db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    finally:
        db.close()


async def test_ocppctl_against_a_running_daemon(cs: CentralSystem, tmp_path: Path) -> None:
    d = start_daemon(tmp_path, cs.url)
    try:
        await cs.wait_for("StatusNotification", lambda p: p["connectorId"] == 1)
        r = await asyncio.to_thread(d.ctl, "status", "--json")
        assert r.returncode == 0, r.stderr
        st = json.loads(r.stdout)
        assert st["connection"]["registration"] == "accepted"
        assert st["connectors"][0]["status"] == "Available"
        r = await asyncio.to_thread(d.ctl, "status")
        assert r.returncode == 0 and "Available" in r.stdout
        r = await asyncio.to_thread(d.ctl, "config", "set", "HeartbeatInterval", "-3")
        assert r.returncode == 1 and "Rejected" in r.stdout + r.stderr
        r = await asyncio.to_thread(d.ctl, "config", "set", "HeartbeatInterval", "120")
        assert r.returncode == 0
        r = await asyncio.to_thread(d.ctl, "config", "get", "HeartbeatInterval", "--json")
        assert "120" in r.stdout
        r = await asyncio.to_thread(d.ctl, "ev", "1", "Q")
        assert r.returncode == 2
        r = await asyncio.to_thread(d.ctl, "plug", "9")
        assert r.returncode == 1
    finally:
        d.stop()
    r = await asyncio.to_thread(d.ctl, "status")
    assert r.returncode == 1 and "not running" in (r.stdout + r.stderr)


async def test_sighup_reloads_the_log_level(cs: CentralSystem, tmp_path: Path) -> None:
    d = start_daemon(tmp_path, cs.url)
    try:
        await cs.wait_for("StatusNotification", lambda p: p["connectorId"] == 1)
        text = d.cfg_path.read_text().replace('level = "debug"', 'level = "warning"')
        d.cfg_path.write_text(text)
        d.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "reload" not in d.log.read_text() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert d.proc is not None and d.proc.poll() is None  # still running
    finally:
        d.stop()
    assert "reload" in d.log.read_text()


async def test_corrupt_database_refuses_to_start_with_a_clear_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    cfg = tmp_path / "ocppd.toml"
    cfg.write_text(sim_config_text(tmp_path, "ws://127.0.0.1:9/ocpp"))
    (tmp_path / "ocppd.db").write_bytes(b"SQLite format 3\x00" + b"\x13garbage" * 500)
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "ocppd", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 78, proc.stderr
    assert "ocppd.db" in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "ocppd.db").exists()  # never deleted
    assert not list(tmp_path.glob("ocppd.db.corrupt-*"))  # not moved aside unless configured


async def test_corrupt_database_moved_aside_when_configured(
    cs: CentralSystem, tmp_path: Path
) -> None:
    cfg = tmp_path / "ocppd.toml"
    text = sim_config_text(tmp_path, cs.url).replace(
        "[storage]\n", "[storage]\nmove_aside_corrupt = true\n"
    )
    cfg.write_text(text)
    (tmp_path / "ocppd.db").write_bytes(b"SQLite format 3\x00" + b"\x13garbage" * 500)
    d = DaemonProcess(cfg).start()
    try:
        await cs.wait_for("StatusNotification", lambda p: p["connectorId"] == 1)
    finally:
        d.stop()
    assert len(list(tmp_path.glob("ocppd.db.corrupt-*"))) == 1
