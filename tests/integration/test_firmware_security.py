"""Firmware and file transfers are safe by default (issue 14, item 1), end to end: the real
daemon against a real Central System, with real HTTPS and FTPS servers on loopback whose
certificates come from a CA made in the test.

- UpdateFirmware carries no signature: refused unless security.allow_unsigned_firmware, and
  then every install is a WARNING and a security event.
- http:// and ftp:// firmware locations are refused unless
  security.allow_insecure_firmware_download.
- https:// and ftps:// verify the server's certificate and host name against the configured CA
  (central_system.ca_file, or security.transfer_ca_file), like the OCPP link does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from csms import CentralSystem, call
from fwpeers import FtpPeer, WebPeer
from harness import CP_ID, booted, running, sim_config, wait_until
from pki import CA

from ocppd import config
from ocppd.config import Config, LoggingConfig
from ocppd.ocpp.v16.firmware import JOB_KEY
from ocppd.storage import Store
from ocppd.systemd import setup_logging

pytestmark = pytest.mark.asyncio

IMAGE = b"\x7fELF-not-really" * 5000


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA()


@pytest.fixture
async def https(ca: CA, tmp_path: Path) -> AsyncIterator[WebPeer]:
    ctx = ca.issue("files", ips=("127.0.0.1",)).server_context(tmp_path, "https")
    async with WebPeer(ssl=ctx) as peer:
        peer.files["image.bin"] = IMAGE
        yield peer


@pytest.fixture
async def http() -> AsyncIterator[WebPeer]:
    async with WebPeer() as peer:
        peer.files["image.bin"] = IMAGE
        yield peer


def ftp_root(tmp_path: Path) -> Path:
    root = tmp_path / "ftproot"
    (root / "diag").mkdir(parents=True, exist_ok=True)
    (root / "image.bin").write_bytes(IMAGE)
    return root


@pytest.fixture
def ftps(ca: CA, tmp_path: Path) -> Iterator[FtpPeer]:
    cert_key = ca.issue("ftps", ips=("127.0.0.1",)).write(tmp_path, "ftps")
    with FtpPeer(ftp_root(tmp_path), tls=cert_key) as peer:
        yield peer


def fw_config(tmp_path: Path, cs: CentralSystem, *, ca: CA | None = None,
              security: dict[str, Any] | None = None) -> Config:
    """The daemon with a firmware install command that copies the image to installed.bin."""
    cmd = tmp_path / "install.sh"
    cmd.write_text(f'#!/bin/sh\ncp "$1" "{tmp_path / "installed.bin"}"\n')
    cmd.chmod(cmd.stat().st_mode | stat.S_IXUSR)
    central = {"ca_file": str(ca.write(tmp_path / "ca.pem"))} if ca else None
    return sim_config(tmp_path, cs.url, central=central, security=security, system={
        "firmware_install_command": [str(cmd)], "firmware_dir": str(tmp_path / "fw")})


def installed(tmp_path: Path) -> bytes | None:
    path = tmp_path / "installed.bin"
    return path.read_bytes() if path.exists() else None


def fw_statuses(cs: CentralSystem) -> list[str]:
    return [p["status"] for p in cs.received("FirmwareStatusNotification")]


async def update(cs: CentralSystem, location: str, retries: int = 1) -> None:
    await cs.call(CP_ID, call.UpdateFirmware(location=location, retries=retries,
                                             retrieve_date="2020-01-01T00:00:00Z",
                                             retry_interval=1))


async def final_status(cs: CentralSystem) -> str:
    done = ("InstallationFailed", "DownloadFailed", "Installing")
    msgs = await cs.wait_for("FirmwareStatusNotification", lambda p: p["status"] in done)
    return str(msgs[-1]["status"])


@contextlib.contextmanager
def log_output() -> Iterator[io.StringIO]:
    """Everything the daemon's log handler writes (with its filters), at debug level."""
    out = io.StringIO()
    handler = setup_logging("debug", log_frames=True, stream=out)
    try:
        yield out
    finally:
        logging.getLogger().removeHandler(handler)


ALLOW_UNSIGNED = {"allow_unsigned_firmware": True}


# --- unsigned firmware ----------------------------------------------------------------------------


async def test_unsigned_firmware_is_refused_by_default(
    cs: CentralSystem, https: WebPeer, ca: CA, tmp_path: Path
) -> None:
    async with running(fw_config(tmp_path, cs, ca=ca)) as d:
        await booted(cs)
        await update(cs, f"{https.url}/fw/image.bin")
        assert await final_status(cs) == "InstallationFailed"
        assert fw_statuses(cs) == ["InstallationFailed"]
        assert https.count("GET") == 0  # not even downloaded
        assert installed(tmp_path) is None and not d.stop_event.is_set()
        assert d.store.get_setting(JOB_KEY) is None
        refused = [e for e in d.store.seclog_entries() if e.kind == "InvalidFirmwareSignature"]
        assert len(refused) == 1 and "unsigned firmware refused" in (refused[0].tech_info or "")


async def test_unsigned_firmware_when_allowed_is_installed_with_a_warning(
    cs: CentralSystem, https: WebPeer, ca: CA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(fw_config(tmp_path, cs, ca=ca, security=ALLOW_UNSIGNED)) as d:
        await booted(cs)
        await update(cs, f"{https.url}/fw/image.bin")
        assert await final_status(cs) == "Installing"
        await wait_until(lambda: d.stop_event.is_set(), what="restart into the new firmware")
        assert installed(tmp_path) == IMAGE
        warnings = [r.getMessage() for r in caplog.records
                    if r.levelno == logging.WARNING and "UNSIGNED" in r.getMessage()]
        assert len(warnings) == 1 and "allow_unsigned_firmware" in warnings[0]
    with Store.open(tmp_path / "ocppd.db") as store:  # a security event every time
        events = [e.tech_info or "" for e in store.seclog_entries()
                  if e.kind == "InvalidFirmwareSignature"]
    assert len(events) == 1 and "unsigned firmware installed" in events[0]


# --- transports -----------------------------------------------------------------------------------


async def test_http_firmware_is_refused_by_default(
    cs: CentralSystem, http: WebPeer, tmp_path: Path
) -> None:
    async with running(fw_config(tmp_path, cs, security=ALLOW_UNSIGNED)) as d:
        await booted(cs)
        await update(cs, f"{http.url}/fw/image.bin")
        assert await final_status(cs) == "DownloadFailed"
        assert fw_statuses(cs) == ["DownloadFailed"]
        assert http.count("GET") == 0
        assert installed(tmp_path) is None and not d.stop_event.is_set()


async def test_plain_ftp_firmware_is_refused_by_default(cs: CentralSystem, tmp_path: Path) -> None:
    with FtpPeer(ftp_root(tmp_path)) as ftp:
        async with running(fw_config(tmp_path, cs, security=ALLOW_UNSIGNED)):
            await booted(cs)
            await update(cs, f"{ftp.url}/image.bin")
            assert await final_status(cs) == "DownloadFailed"
            assert installed(tmp_path) is None


async def test_http_firmware_with_the_installer_opt_in(
    cs: CentralSystem, http: WebPeer, tmp_path: Path
) -> None:
    opt_in = {**ALLOW_UNSIGNED, "allow_insecure_firmware_download": True}
    async with running(fw_config(tmp_path, cs, security=opt_in)) as d:
        await booted(cs)
        await update(cs, f"{http.url}/fw/image.bin")
        assert await final_status(cs) == "Installing"
        await wait_until(lambda: d.stop_event.is_set(), what="restart")
        assert installed(tmp_path) == IMAGE


async def test_https_server_with_an_unknown_ca_is_refused(
    cs: CentralSystem, https: WebPeer, tmp_path: Path
) -> None:
    other = CA("someone else")  # the daemon trusts this CA, not the server's
    async with running(fw_config(tmp_path, cs, ca=other, security=ALLOW_UNSIGNED)):
        await booted(cs)
        await update(cs, f"{https.url}/fw/image.bin", retries=2)
        assert await final_status(cs) == "DownloadFailed"
        assert fw_statuses(cs) == ["Downloading", "DownloadFailed"]
        assert https.count("GET") == 0  # the handshake failed: no request was sent
        assert installed(tmp_path) is None


async def test_https_server_with_the_wrong_host_name_is_refused(
    cs: CentralSystem, ca: CA, tmp_path: Path
) -> None:
    ctx = ca.issue("elsewhere", dns=("files.example",)).server_context(tmp_path, "wrong")
    async with WebPeer(ssl=ctx) as peer:
        peer.files["image.bin"] = IMAGE
        async with running(fw_config(tmp_path, cs, ca=ca, security=ALLOW_UNSIGNED)):
            await booted(cs)
            await update(cs, f"{peer.url}/fw/image.bin")
            assert await final_status(cs) == "DownloadFailed"
            assert peer.count("GET") == 0 and installed(tmp_path) is None


async def test_transfer_ca_file_trusts_file_servers_apart_from_the_central_system(
    cs: CentralSystem, https: WebPeer, ca: CA, tmp_path: Path
) -> None:
    own = {**ALLOW_UNSIGNED, "transfer_ca_file": str(ca.write(tmp_path / "files-ca.pem"))}
    async with running(fw_config(tmp_path, cs, ca=CA("cs only"), security=own)) as d:
        await booted(cs)
        await update(cs, f"{https.url}/fw/image.bin")
        assert await final_status(cs) == "Installing"
        await wait_until(lambda: d.stop_event.is_set(), what="restart")
        assert installed(tmp_path) == IMAGE


async def test_ftps_verifies_the_server_certificate(
    cs: CentralSystem, ftps: FtpPeer, ca: CA, tmp_path: Path
) -> None:
    async with running(fw_config(tmp_path, cs, ca=CA("not the ftps one"),
                                 security=ALLOW_UNSIGNED)):
        await booted(cs)
        await update(cs, f"{ftps.url}/image.bin")
        assert await final_status(cs) == "DownloadFailed"
        assert installed(tmp_path) is None
    cs.messages.clear()
    async with running(fw_config(tmp_path, cs, ca=ca, security=ALLOW_UNSIGNED)) as d:
        await booted(cs)
        await update(cs, f"{ftps.url}/image.bin")
        assert await final_status(cs) == "Installing"
        await wait_until(lambda: d.stop_event.is_set(), what="restart")
        assert installed(tmp_path) == IMAGE


async def test_ftps_checks_the_host_name(cs: CentralSystem, ca: CA, tmp_path: Path) -> None:
    cert_key = ca.issue("elsewhere", dns=("files.example",)).write(tmp_path, "ftps-wrong")
    with FtpPeer(ftp_root(tmp_path), tls=cert_key) as peer:
        async with running(fw_config(tmp_path, cs, ca=ca, security=ALLOW_UNSIGNED)):
            await booted(cs)
            await update(cs, f"{peer.url}/image.bin")
            assert await final_status(cs) == "DownloadFailed"
            assert installed(tmp_path) is None


async def test_downloaded_image_is_private_and_not_executable(
    cs: CentralSystem, https: WebPeer, ca: CA, tmp_path: Path
) -> None:
    cmd = tmp_path / "inspect.sh"  # the install command records the file's mode
    cmd.write_text(f'#!/bin/sh\nstat -c %a "$1" > "{tmp_path / "mode"}"\n'
                   f'stat -c %a "$(dirname "$1")" > "{tmp_path / "dirmode"}"\n')
    cmd.chmod(0o755)
    cfg = fw_config(tmp_path, cs, ca=ca, security=ALLOW_UNSIGNED)
    path = cfg.source
    assert path is not None
    text = path.read_text().replace(str(tmp_path / "install.sh"), str(cmd))
    path.write_text(text)
    async with running(config.load(path)) as d:
        await booted(cs)
        await update(cs, f"{https.url}/fw/image.bin")
        await wait_until(lambda: d.stop_event.is_set(), what="install ran")
    assert (tmp_path / "mode").read_text().strip() == "600"
    assert (tmp_path / "dirmode").read_text().strip() == "700"


# --- credentials in locations ---------------------------------------------------------------------


async def test_ftp_credentials_never_reach_the_log_or_the_stored_job(
    cs: CentralSystem, ca: CA, tmp_path: Path
) -> None:
    secret = "s3cr3t-Pa55word"
    cert_key = ca.issue("ftps", ips=("127.0.0.1",)).write(tmp_path, "ftps")
    seen_jobs: list[str] = []
    cfg = fw_config(tmp_path, cs, ca=ca, security=ALLOW_UNSIGNED)
    # every frame logged too: the UpdateFirmware frame holds the location
    cfg = dataclasses.replace(cfg, logging=LoggingConfig(level="debug", log_frames=True))
    with FtpPeer(ftp_root(tmp_path), tls=cert_key, user="fwuser", password=secret) as peer, \
            log_output() as out:
        async with running(cfg) as d:
            await booted(cs)
            await update(cs, f"{peer.url}/image.bin")

            def job_seen() -> bool:
                if d.stop_event.is_set():
                    return True
                job = d.store.get_setting(JOB_KEY)
                if job is not None:
                    seen_jobs.append(job)
                return False

            await wait_until(job_seen, what="installed")
            assert installed(tmp_path) == IMAGE  # the password did work for the login
    with Store.open(cfg.storage.path) as store:  # the job kept for the report after restart
        seen_jobs.append(store.get_setting(JOB_KEY) or "")
    # the daemon's lines only: the test's Central System logs its own frames
    text = "\n".join(line for line in out.getvalue().splitlines() if " ocppd" in line)
    assert '"UpdateFirmware"' in text
    assert "fwuser:***@127.0.0.1" in text  # the location is logged, redacted
    assert secret not in text
    assert seen_jobs and all(secret not in j for j in seen_jobs)
    assert any("fwuser:***@" in j for j in seen_jobs)


# --- uploads --------------------------------------------------------------------------------------


async def test_diagnostics_upload_verifies_the_https_server(
    cs: CentralSystem, https: WebPeer, ca: CA, tmp_path: Path
) -> None:
    async with running(fw_config(tmp_path, cs, ca=CA("not the server's"))):
        await booted(cs)
        await cs.call(CP_ID, call.GetDiagnostics(location=f"{https.url}/upload/", retries=1))
        await cs.wait_for("DiagnosticsStatusNotification",
                          lambda p: p["status"] == "UploadFailed")
        assert https.count("PUT") == 0 and https.uploads == {}
    cs.messages.clear()
    async with running(fw_config(tmp_path, cs, ca=ca)):
        await booted(cs)
        conf = await cs.call(CP_ID, call.GetDiagnostics(location=f"{https.url}/upload/"))
        await cs.wait_for("DiagnosticsStatusNotification", lambda p: p["status"] == "Uploaded")
        assert conf.file_name in https.uploads
