"""Issue 15: what a fresh `apt install` does before anyone edited /etc/ocppd.toml, and the unit
settings a real Pi needs. The daemon runs as a real process with sd_notify on a real socket."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import DaemonProcess

from ocppd import config
from ocppd.errors import HardwareError

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "ocppd.service"
DEBIAN = ROOT / "debian"
SHIPPED = ROOT / "etc" / "ocppd.toml"

pytestmark = pytest.mark.skipif(not DEBIAN.is_dir(), reason="no debian/ next to the tests")


def unit_values(key: str) -> list[str]:
    found = []
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        name, sep, value = raw.strip().partition("=")
        if sep and not raw.lstrip().startswith("#") and name.strip() == key:
            found.append(value.strip())
    return found


def control_paragraph() -> str:
    text = (DEBIAN / "control").read_text(encoding="utf-8")
    return text.split("\nPackage: ocppd\n", 1)[1]


def control_field(name: str) -> str:
    m = re.search(rf"^{name}:(.*(?:\n[ \t].*)*)", control_paragraph(), re.M)
    return " ".join(m.group(1).split()) if m else ""


# --- the unit -----------------------------------------------------------------------------------


def test_unit_has_a_writable_working_directory() -> None:
    """lgpio (gpiozero's factory on a Pi 5) creates its notification pipes in the working
    directory; under ProtectSystem=strict "/" is read-only."""
    (wd,) = unit_values("WorkingDirectory")
    (state,) = unit_values("StateDirectory")
    assert wd in (f"/var/lib/{state}", f"%S/{state}"), wd


def test_unit_does_not_restart_loop_on_config_or_hardware_set_up_errors() -> None:
    prevent = " ".join(unit_values("RestartPreventExitStatus")).split()
    assert str(os.EX_CONFIG) in prevent and str(HardwareError.exit_code) in prevent
    assert HardwareError.exit_code != os.EX_CONFIG  # the journal tells them apart


def test_config_check_knows_the_directories_the_package_creates() -> None:
    (state,) = unit_values("StateDirectory")
    (runtime,) = unit_values("RuntimeDirectory")
    assert set(config.PACKAGE_DIRS) == {Path("/var/lib") / state, Path("/run") / runtime}
    tmpfiles = (DEBIAN / "ocppd.tmpfiles").read_text(encoding="utf-8")
    for d in config.PACKAGE_DIRS:  # there after install, also while the service is stopped
        assert re.search(rf"^d\s+{re.escape(str(d))}\s+0750\s+ocppd\s+ocppd", tmpfiles, re.M), d


# --- the package relations (Debian 12/13 and Raspberry Pi OS) ----------------------------------


def test_depends_on_hardware_spi() -> None:
    names = {item.split()[0] for item in control_field("Depends").replace("|", ",").split(",")
             if item.strip()}
    assert "python3-spidev" in names  # else gpiozero bit-bangs SPI for the pilot ADC


def test_recommends_a_pin_library_that_exists_somewhere() -> None:
    """Raspberry Pi OS ships python3-lgpio (the Pi 5 needs it); Debian has none of the lgpio
    family, where gpiozero falls back to its native factory (Pi 1-4)."""
    recommends = control_field("Recommends")
    first = recommends.split(",")[0].split("|")
    assert first[0].strip().startswith("python3-lgpio"), recommends
    assert any(a.strip().startswith("python3-rpi-lgpio") for a in first), recommends


# --- apt upgrade keeps sessions ------------------------------------------------------------------


def test_postinst_asks_the_running_daemon_to_keep_sessions_over_the_upgrade_restart() -> None:
    from ocppd.app import KEEP_SESSIONS_MARKER

    text = (DEBIAN / "ocppd.postinst").read_text(encoding="utf-8")
    marker_at = text.find(f"/run/ocppd/{KEEP_SESSIONS_MARKER}")
    assert marker_at != -1, "postinst does not write the marker"
    # before the debhelper snippet that restarts the unit
    assert marker_at < text.find("#DEBHELPER#")


# --- the placeholder config ---------------------------------------------------------------------


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(tmp_path / "notify.sock"))
    s.setblocking(False)
    yield s
    s.close()


async def collect(sock: socket.socket, want: str, seen: list[str], timeout_s: float = 15.0
                  ) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not any(want in m for m in seen):
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"no {want!r} from sd_notify; got {seen}")
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 4096), remaining)
        except TimeoutError:
            continue
        seen.extend(data.decode().split("\n"))


@pytest.mark.asyncio
async def test_shipped_config_runs_as_not_configured_without_pretending(
    tmp_path: Path, notify: socket.socket
) -> None:
    """Fresh install: active (no restart loop), STATUS= says what to do, the watchdog is fed,
    and nothing of a charger starts: no database, no control socket, no connection."""
    text = SHIPPED.read_text(encoding="utf-8")
    text = text.replace("/var/lib/ocppd/ocppd.db", str(tmp_path / "ocppd.db"))
    text = text.replace("/run/ocppd/control.sock", str(tmp_path / "control.sock"))
    cfg = tmp_path / "ocppd.toml"
    cfg.write_text(text, encoding="utf-8")
    d = DaemonProcess(cfg, env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
                                "WATCHDOG_USEC": "400000", "JOURNAL_STREAM": ""}).start()
    seen: list[str] = []
    try:
        await collect(notify, "READY=1", seen)
        await collect(notify, "WATCHDOG=1", seen)
        d.signal(signal.SIGTERM)
        code = await asyncio.to_thread(d.wait, 10)
    finally:
        d.stop()
    status = [m for m in seen if m.startswith("STATUS=")]
    assert status and "not configured" in status[-1], seen
    assert "charge_point.id" in status[-1] and "central_system.url" in status[-1]
    assert code == 0
    assert not (tmp_path / "ocppd.db").exists() and not (tmp_path / "control.sock").exists()
    log = d.log.read_text()
    assert "not configured" in log and "ws://" not in log, log
