"""OCPP 1.6 Firmware Management, end to end: the real daemon on the simulator against a real
Central System, with a real web server and a real FTP server on loopback serving firmware and
receiving diagnostics. OCTT TC_044_1/2/3 and TC_045_1/2 (ocpp16-rules.md §2.2), plus the rules
of §5.19 the tool does not check: no installation during a transaction, retries, restarts.
"""

from __future__ import annotations

import contextlib
import io
import json
import stat
import tarfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from csms import CentralSystem, call
from fwpeers import FtpPeer, WebPeer, refused_url
from harness import CP_ID, booted, running, sim, sim_config, status, wait_until

from ocppd.app import Daemon
from ocppd.config import Config
from ocppd.ocpp.v16.firmware import JOB_KEY, FirmwareService, Phase

pytestmark = pytest.mark.asyncio

IMAGE = b"\x7fELF-not-really" * 5000  # 75 kB: several chunks


@pytest.fixture
async def webpeer() -> AsyncIterator[WebPeer]:
    async with WebPeer() as peer:
        peer.files["image.bin"] = IMAGE
        yield peer


@pytest.fixture
def ftp(tmp_path: Path) -> Iterator[FtpPeer]:
    root = tmp_path / "ftproot"
    (root / "diag").mkdir(parents=True)
    (root / "image.bin").write_bytes(IMAGE)
    with FtpPeer(root) as peer:
        yield peer


def script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "installed.bin"


def fw_config(tmp_path: Path, cs: CentralSystem, *, installer: str = "ok") -> Config:
    bodies = {
        "ok": f'cp "$1" "{tmp_path / "installed.bin"}"',
        "fail": 'echo "image rejected" >&2; exit 3',
    }
    cmd = script(tmp_path, f"install-{installer}.sh", bodies[installer])
    # These tests are about the §5.19 sequence, over plain HTTP/FTP with unsigned images: both
    # need the installer's explicit opt-in (the defaults are tested in test_firmware_security).
    return sim_config(
        tmp_path,
        cs.url,
        system={"firmware_install_command": [str(cmd)], "firmware_dir": str(tmp_path / "fw")},
        security={"allow_unsigned_firmware": True, "allow_insecure_firmware_download": True},
    )


@contextlib.asynccontextmanager
async def daemon(cfg: Config) -> AsyncIterator[tuple[Any, FirmwareService]]:
    """The daemon and its Firmware Management profile (loaded now if it was not yet).

    The daemon is yielded as Any: its parts are Optional until run() set them up."""
    d: Daemon
    async with running(cfg) as d:
        yield d, d.firmware_management()


def fw_statuses(cs: CentralSystem) -> list[str]:
    return [p["status"] for p in cs.received("FirmwareStatusNotification")]


def diag_statuses(cs: CentralSystem) -> list[str]:
    return [p["status"] for p in cs.received("DiagnosticsStatusNotification")]


async def wait_fw(cs: CentralSystem, value: str, within_s: float = 10.0) -> None:
    await cs.wait_for(
        "FirmwareStatusNotification", lambda p: p["status"] == value, timeout=within_s
    )


async def wait_diag(cs: CentralSystem, value: str, within_s: float = 10.0) -> None:
    await cs.wait_for(
        "DiagnosticsStatusNotification", lambda p: p["status"] == value, timeout=within_s
    )


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def content(path: Path) -> bytes | None:
    """What the install command left (None: it never ran)."""
    return path.read_bytes() if path.exists() else None


def now_iso(delta_s: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=delta_s)).isoformat().replace("+00:00", "Z")


async def update(cs: CentralSystem, location: str, retries: int = 2) -> None:
    conf = await cs.call(
        CP_ID,
        call.UpdateFirmware(
            location=location, retrieve_date=now_iso(), retries=retries, retry_interval=1
        ),
    )
    assert conf is not None  # §5.19: an empty .conf, at once


def index(cs: CentralSystem, action: str, where: Any = None) -> int:
    ins = [m for m in cs.messages if m.direction == "in"]
    return next(
        i for i, m in enumerate(ins) if m.action == action and (where is None or where(m.payload))
    )


# --- UpdateFirmware -------------------------------------------------------------------------------


async def test_tc_044_1_download_install_and_installed_after_restart(
    cs: CentralSystem, webpeer: WebPeer, tmp_path: Path, marker: Path
) -> None:
    cfg = fw_config(tmp_path, cs)
    async with running(cfg) as d:
        await booted(cs)
        assert d.firmware is None  # loaded on its first message, not at every start
        await update(cs, f"{webpeer.url}/fw/image.bin")
        await wait_fw(cs, "Installing")
        await wait_until(lambda: d.stop_event.is_set(), what="restart into the new firmware")
        assert d.exit_code == cfg.system.soft_reset_exit_code  # systemd restarts the unit
        assert fw_statuses(cs) == ["Downloading", "Downloaded", "Installing"]  # not Installed yet
        assert content(marker) == IMAGE  # the install command got the downloaded file
        assert leftovers(tmp_path / "fw") == []  # the image is removed once installed
        assert status(d) == "unavailable"  # §5.19: no session may start during the install
    cs.messages.clear()
    async with running(cfg) as d:
        assert d.firmware is not None  # a job is pending: loaded at start-up to report it
        await wait_fw(cs, "Installed")
        assert fw_statuses(cs) == ["Installed"]
        await cs.wait_for(
            "StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "Available"
        )
        await wait_until(lambda: d.store.get_setting(JOB_KEY) is None, what="job cleared")
        assert d.cp.firmware_status == "Idle"
    cs.messages.clear()
    async with running(cfg) as d:  # a later restart does not repeat it (SAP simulator #459)
        await booted(cs)
        assert d.firmware is None
        trigger = call.TriggerMessage(requested_message="FirmwareStatusNotification")
        conf = await cs.call(CP_ID, trigger)
        assert conf.status == "Accepted"
        await wait_fw(cs, "Idle")
        assert fw_statuses(cs) == ["Idle"]


@pytest.mark.parametrize("where", ["404", "refused", "truncated"])
async def test_tc_044_2_download_failed_after_retries(
    cs: CentralSystem, webpeer: WebPeer, tmp_path: Path, marker: Path, where: str
) -> None:
    location = {
        "404": f"{webpeer.url}/fw/missing.bin",
        "refused": f"{refused_url()}/fw/image.bin",
        "truncated": f"{webpeer.url}/truncated/image.bin",
    }[where]
    async with daemon(fw_config(tmp_path, cs)) as (d, fw):
        await booted(cs)
        await update(cs, location, retries=2)
        await wait_fw(cs, "DownloadFailed")
        assert fw_statuses(cs) == ["Downloading", "DownloadFailed"]
        if where != "refused":
            assert webpeer.count("GET") == 2  # retries = attempts in all
        assert content(marker) is None and not d.stop_event.is_set()
        assert leftovers(tmp_path / "fw") == []  # no partial file left behind
        assert d.store.get_setting(JOB_KEY) is None and fw.phase is Phase.IDLE
        await wait_until(lambda: d.cp.firmware_status == "Idle", what="firmware idle")
        await cs.call(CP_ID, call.TriggerMessage(requested_message="FirmwareStatusNotification"))
        await wait_fw(cs, "Idle")  # §7.25: Idle once nothing happens


async def test_truncated_download_is_retried_until_complete(
    cs: CentralSystem, webpeer: WebPeer, tmp_path: Path, marker: Path
) -> None:
    webpeer.truncate_times = 1
    async with daemon(fw_config(tmp_path, cs)) as (d, _):
        await booted(cs)
        await update(cs, f"{webpeer.url}/truncated/image.bin", retries=3)
        await wait_fw(cs, "Installing")
        await wait_until(lambda: d.stop_event.is_set(), what="restart")
        assert webpeer.count("GET /truncated") == 2
        assert content(marker) == IMAGE
        assert fw_statuses(cs) == ["Downloading", "Downloaded", "Installing"]


async def test_tc_044_3_installation_failed(
    cs: CentralSystem, webpeer: WebPeer, tmp_path: Path
) -> None:
    async with daemon(fw_config(tmp_path, cs, installer="fail")) as (d, fw):
        await booted(cs)
        await update(cs, f"{webpeer.url}/fw/image.bin")
        await wait_fw(cs, "InstallationFailed")
        assert fw_statuses(cs) == ["Downloading", "Downloaded", "Installing", "InstallationFailed"]
        assert not d.stop_event.is_set()  # no restart into a firmware that is not there
        assert d.store.get_setting(JOB_KEY) is None
        # the connector given back after the failed install (libocpp PR #1058)
        await cs.wait_for(
            "StatusNotification",
            lambda p: p["connectorId"] == 1 and p["status"] == "Available",
            count=2,
        )
        assert status(d) == "available"


async def test_installation_waits_until_the_transaction_ends(
    cs: CentralSystem, webpeer: WebPeer, tmp_path: Path, marker: Path
) -> None:
    async with daemon(fw_config(tmp_path, cs)) as (d, fw):
        await booted(cs)
        sim(d).plug(1)
        await d.station.swipe("TAG1", None)
        await cs.wait_for("StartTransaction")
        await update(cs, f"{webpeer.url}/fw/image.bin")
        await wait_fw(cs, "Downloaded")
        assert fw.phase is Phase.AWAITING_IDLE
        await cs.call(CP_ID, call.TriggerMessage(requested_message="FirmwareStatusNotification"))
        await cs.wait_for("FirmwareStatusNotification", count=3)
        # the triggered one reports the current status
        assert fw_statuses(cs) == ["Downloading", "Downloaded", "Downloaded"]
        assert content(marker) is None
        await d.station.swipe("TAG1", None)  # the driver ends the session
        await wait_fw(cs, "Installing")
        await wait_until(lambda: d.stop_event.is_set(), what="restart")
        assert index(cs, "StopTransaction") < index(
            cs, "FirmwareStatusNotification", lambda p: p["status"] == "Installing"
        )
        assert content(marker) == IMAGE


async def test_restart_during_download_reports_download_failed(
    cs: CentralSystem, webpeer: WebPeer, tmp_path: Path, marker: Path
) -> None:
    cfg = fw_config(tmp_path, cs)
    async with daemon(cfg) as (d, fw):
        await booted(cs)
        await update(cs, f"{webpeer.url}/hold/image.bin")
        await wait_fw(cs, "Downloading")
        await webpeer.holding.wait()
        assert fw.phase is Phase.DOWNLOADING
    webpeer.release.set()
    cs.messages.clear()
    async with daemon(cfg) as (d, _):
        await wait_fw(cs, "DownloadFailed")
        await wait_until(lambda: d.store.get_setting(JOB_KEY) is None, what="job cleared")
        assert fw_statuses(cs) == ["DownloadFailed"]
        assert content(marker) is None


async def test_unsupported_protocol_fails_without_retrying(
    cs: CentralSystem, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with daemon(fw_config(tmp_path, cs)):
        await booted(cs)
        await update(cs, "sftp://127.0.0.1/image.bin", retries=3)
        await wait_fw(cs, "DownloadFailed")
        conf = await cs.call(CP_ID, call.GetDiagnostics(location="gopher://127.0.0.1/", retries=3))
        assert conf.file_name  # answered at once; the failure is reported as a status
        await wait_diag(cs, "UploadFailed")
        attempts = [r.getMessage() for r in caplog.records if "failed (attempt" in r.getMessage()]
        assert len(attempts) == 2 and all("unsupported protocol" in a for a in attempts)


async def test_firmware_over_ftp(
    cs: CentralSystem, ftp: FtpPeer, tmp_path: Path, marker: Path
) -> None:
    async with daemon(fw_config(tmp_path, cs)) as (d, _):
        await booted(cs)
        await update(cs, f"{ftp.url}/image.bin")
        await wait_fw(cs, "Installing")
        await wait_until(lambda: d.stop_event.is_set(), what="restart")
        assert content(marker) == IMAGE


async def test_missing_file_over_ftp_is_download_failed(
    cs: CentralSystem, ftp: FtpPeer, tmp_path: Path
) -> None:
    async with daemon(fw_config(tmp_path, cs)):
        await booted(cs)
        await update(cs, f"{ftp.url}/nope.bin", retries=1)
        await wait_fw(cs, "DownloadFailed")
        assert fw_statuses(cs) == ["Downloading", "DownloadFailed"]


# --- GetDiagnostics -------------------------------------------------------------------------------


def members(archive: bytes) -> dict[str, str]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers()}  # type: ignore[union-attr]


async def test_tc_045_1_get_diagnostics_uploads_the_logs(
    cs: CentralSystem, webpeer: WebPeer, tmp_path: Path
) -> None:
    async with daemon(fw_config(tmp_path, cs)) as (d, _):
        await booted(cs)
        now = d.wall()
        d.store.log_event(now - timedelta(hours=3), "old_event", "outside the window")
        d.store.log_event(now, "meter_backwards", "connector 1")
        conf = await cs.call(
            CP_ID,
            call.GetDiagnostics(
                location=f"{webpeer.url}/upload/",
                retries=1,
                retry_interval=1,
                start_time=now_iso(-3600),
                stop_time=now_iso(60),
            ),
        )
        assert conf.file_name.endswith(".tar.gz")
        await wait_diag(cs, "Uploaded")
        assert diag_statuses(cs) == ["Uploading", "Uploaded"]
        files = members(webpeer.uploads[conf.file_name])
        assert set(files) == {"state.json", "events.log", "security.log", "journal.log"}
        assert "StartupOfTheDevice" in files["security.log"]
        assert "meter_backwards connector 1" in files["events.log"]
        assert "old_event" not in files["events.log"]  # startTime honoured
        state = json.loads(files["state.json"])
        assert state["charge_point_id"] == CP_ID
        assert state["connectors"][0]["status"] == "available"
        assert state["configuration"]["HeartbeatInterval"] == "300"
        assert "AuthorizationKey" not in state["configuration"]  # no secrets
        await wait_until(lambda: d.cp.diagnostics_status == "Idle", what="diagnostics idle")


async def test_diagnostics_fall_back_to_post_when_put_is_refused(
    cs: CentralSystem, webpeer: WebPeer, tmp_path: Path
) -> None:
    async with daemon(fw_config(tmp_path, cs)):
        await booted(cs)
        conf = await cs.call(CP_ID, call.GetDiagnostics(location=f"{webpeer.url}/postonly/"))
        await wait_diag(cs, "Uploaded")
        name = conf.file_name
        assert webpeer.hits == [f"PUT /postonly/{name}", f"POST /postonly/{name}"]
        assert "state.json" in members(webpeer.uploads[conf.file_name])


@pytest.mark.parametrize("where", ["500", "refused"])
async def test_tc_045_2_upload_failed_after_retries(
    cs: CentralSystem, webpeer: WebPeer, tmp_path: Path, where: str
) -> None:
    location = f"{webpeer.url}/fail/" if where == "500" else f"{refused_url()}/upload/"
    async with daemon(fw_config(tmp_path, cs)) as (d, _):
        await booted(cs)
        await cs.call(CP_ID, call.GetDiagnostics(location=location, retries=2, retry_interval=1))
        await wait_diag(cs, "UploadFailed")
        assert diag_statuses(cs) == ["Uploading", "UploadFailed"]
        if where == "500":
            assert webpeer.count("PUT /fail/") == 2
        await wait_until(lambda: d.cp.diagnostics_status == "Idle", what="diagnostics idle")


async def test_diagnostics_over_ftp(cs: CentralSystem, ftp: FtpPeer, tmp_path: Path) -> None:
    async with daemon(fw_config(tmp_path, cs)):
        await booted(cs)
        conf = await cs.call(CP_ID, call.GetDiagnostics(location=f"{ftp.url}/diag/"))
        await wait_diag(cs, "Uploaded")
        uploaded = content(ftp.root / "diag" / conf.file_name)
        assert uploaded is not None and "events.log" in members(uploaded)


async def test_a_clock_set_forward_starts_the_download_at_its_retrieve_date(
    cs: CentralSystem, webpeer: WebPeer, tmp_path: Path
) -> None:
    """retrieveDate an hour ahead, the wait armed on the old clock; NTP sets the clock forward
    past it (a Pi without a real-time clock): the download starts now (ocppd/wallclock.py)."""
    async with daemon(fw_config(tmp_path, cs)) as (d, _):
        await booted(cs)
        conf = await cs.call(CP_ID, call.UpdateFirmware(
            location=f"{webpeer.url}/image.bin", retrieve_date=now_iso(3600), retries=1,
            retry_interval=1))
        assert conf is not None
        await wait_until(lambda: d.firmware.phase is Phase.WAITING, what="waiting")
        assert fw_statuses(cs) == []
        d.wall.offset = timedelta(hours=1, seconds=1)
        assert d.station.clock_steps.check()  # what the station's watch does every 5 s
        await wait_fw(cs, "Downloading")
