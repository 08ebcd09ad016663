"""GetLog and LogStatusNotification (OCPP 1.6 Security Whitepaper), end to end: OCTT TC_079 (Get
Security Log), the diagnostics log through GetLog, and what they upload holds no idTag and no
URL password."""

from __future__ import annotations

import io
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from csms import CentralSystem, call
from fwpeers import FtpPeer, WebPeer
from harness import CP_ID, booted, running, sim, sim_config

from ocppd import privacy

pytestmark = pytest.mark.asyncio

CARD = "04C0FFEE1234"


@pytest.fixture
async def web() -> AsyncIterator[WebPeer]:
    async with WebPeer() as peer:
        yield peer


def log_statuses(cs: CentralSystem) -> list[tuple[str, int | None]]:
    return [(p["status"], p.get("requestId")) for p in cs.received("LogStatusNotification")]


async def test_tc_079_get_security_log(cs: CentralSystem, web: WebPeer, tmp_path: Path) -> None:
    async with running(sim_config(tmp_path, cs.url)):
        await booted(cs)
        await cs.wait_for("SecurityEventNotification")  # StartupOfTheDevice
        conf = await cs.call(CP_ID, call.GetLog(
            log_type="SecurityLog", request_id=11,
            log={"remoteLocation": f"{web.url}/upload/"}))
        assert conf.status == "Accepted" and conf.filename
        await cs.wait_for("LogStatusNotification", lambda p: p["status"] == "Uploaded")
    assert log_statuses(cs) == [("Uploading", 11), ("Uploaded", 11)]
    text = web.uploads[conf.filename].decode()
    assert "StartupOfTheDevice" in text


async def test_security_log_window_is_honoured(
    cs: CentralSystem, web: WebPeer, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url)):
        await booted(cs)
        conf = await cs.call(CP_ID, call.GetLog(
            log_type="SecurityLog", request_id=12,
            log={"remoteLocation": f"{web.url}/upload/",
                 "oldestTimestamp": "2001-01-01T00:00:00Z",
                 "latestTimestamp": "2001-01-02T00:00:00Z"}))
        await cs.wait_for("LogStatusNotification", lambda p: p["status"] == "Uploaded")
    assert "StartupOfTheDevice" not in web.uploads[conf.filename].decode()


async def test_diagnostics_log_by_get_log_holds_no_personal_data(
    cs: CentralSystem, tmp_path: Path
) -> None:
    root = tmp_path / "ftproot"
    (root / "logs").mkdir(parents=True)
    secret = "Ftp-Pa55-w0rd"
    with FtpPeer(root, user="logs", password=secret) as ftp:
        async with running(sim_config(tmp_path, cs.url)) as d:
            await booted(cs)
            sim(d).plug(1)
            d.station.hw.readers[0].present(CARD)
            await cs.wait_for("StartTransaction")
            conf = await cs.call(CP_ID, call.GetLog(
                log_type="DiagnosticsLog", request_id=13, retries=1,
                log={"remoteLocation": f"{ftp.url}/logs/"}))
            assert conf.status == "Accepted"
            await cs.wait_for("LogStatusNotification", lambda p: p["status"] == "Uploaded")
            pseudonym = privacy.tag(CARD)
    with tarfile.open(fileobj=io.BytesIO((root / "logs" / conf.filename).read_bytes())) as tar:
        names = tar.getnames()
        text = "\n".join(tar.extractfile(m).read().decode()  # type: ignore[union-attr]
                         for m in tar.getmembers())
    assert "security.log" in names and "state.json" in names
    assert CARD.lower() not in text.lower() and secret not in text
    assert pseudonym in text


async def test_upload_failure_is_reported(cs: CentralSystem, web: WebPeer, tmp_path: Path) -> None:
    async with running(sim_config(tmp_path, cs.url)):
        await booted(cs)
        conf = await cs.call(CP_ID, call.GetLog(
            log_type="SecurityLog", request_id=14, retries=2, retry_interval=0,
            log={"remoteLocation": f"{web.url}/fail/"}))
        assert conf.status == "Accepted"
        await cs.wait_for("LogStatusNotification", lambda p: p["status"] == "UploadFailure")
    assert web.count("PUT /fail/") == 2
    assert log_statuses(cs) == [("Uploading", 14), ("UploadFailure", 14)]
