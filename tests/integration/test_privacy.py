"""Secrets and personal data (issue 14, item 2), end to end: a card used at the charger and a
location with a password in it must not show up in the daemon's log nor in anything GetDiagnostics
uploads; the card shows as a keyed pseudonym that is the same wherever it appears.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from csms import CentralSystem, call
from fwpeers import FtpPeer
from harness import CP_ID, booted, charge, running, sim, sim_config, wait_until

from ocppd import ctl, privacy
from ocppd.config import LoggingConfig
from ocppd.systemd import setup_logging

pytestmark = pytest.mark.asyncio

CARD = "CAFE0042BEEF"
PASSWORD = "Upl0ad-Secret-99"


@contextlib.contextmanager
def log_output() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = setup_logging("debug", log_frames=True, stream=out)
    try:
        yield out
    finally:
        logging.getLogger().removeHandler(handler)


def unpack(archive: bytes) -> dict[str, str]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read().decode()  # type: ignore[union-attr]
                for m in tar.getmembers()}


async def test_diagnostics_and_logs_hold_no_id_tag_and_no_url_password(
    cs: CentralSystem, tmp_path: Path
) -> None:
    root = tmp_path / "ftproot"
    (root / "diag").mkdir(parents=True)
    # TransactionMessageAttempts = 1 and a refused StartTransaction: the discarded message (with
    # the idTag in it) lands in the events table, which GetDiagnostics exports
    cfg = sim_config(tmp_path, cs.url, ocpp={"TransactionMessageAttempts": 1},
                     security={"allow_insecure_firmware_download": True})
    cfg = dataclasses.replace(cfg, logging=LoggingConfig(level="debug", log_frames=True))
    cs.behaviour.fail_actions["StartTransaction"] = 1
    with FtpPeer(root, user="diag", password=PASSWORD) as ftp, log_output() as out:
        async with running(cfg) as d:
            await booted(cs)
            sim(d).plug(1)
            d.station.hw.readers[0].present(CARD)
            await cs.wait_for("StartTransaction")
            await wait_until(lambda: any(k == "outbox_discarded" for _, k, _ in d.store.events()),
                             what="the refused StartTransaction discarded")
            # an UpdateFirmware with the password in its location (refused: unsigned)
            await cs.call(CP_ID, call.UpdateFirmware(location=f"{ftp.url}/image.bin",
                                                     retrieve_date="2020-01-01T00:00:00Z"))
            await cs.wait_for("FirmwareStatusNotification")
            conf = await cs.call(CP_ID, call.GetDiagnostics(location=f"{ftp.url}/diag/"))
            await cs.wait_for("DiagnosticsStatusNotification",
                              lambda p: p["status"] == "Uploaded")
            pseudonym = privacy.tag(CARD)
    files = unpack((root / "diag" / conf.file_name).read_bytes())
    everything = "\n".join(files.values())
    assert CARD.lower() not in everything.lower()
    assert PASSWORD not in everything
    # still recognisable: the same pseudonym in the state and in the events
    assert pseudonym in files["state.json"] and pseudonym in files["events.log"]
    assert pseudonym.startswith("tag:") and len(pseudonym) == 12
    log_text = "\n".join(line for line in out.getvalue().splitlines() if " ocppd" in line)
    assert CARD.lower() not in log_text.lower()
    assert PASSWORD not in log_text
    assert f"card {pseudonym}" in log_text  # INFO lines name the card by its pseudonym


async def test_a_refused_card_leaves_no_id_tag_in_the_log(
    cs: CentralSystem, tmp_path: Path
) -> None:
    cs.behaviour.tag_status["BADC0FFEE42"] = "Blocked"
    with log_output() as out:
        async with running(sim_config(tmp_path, cs.url)) as d:
            await booted(cs)
            sim(d).plug(1)
            d.station.hw.readers[0].present("BADC0FFEE42")
            await cs.wait_for("Authorize")
            pseudonym = privacy.tag("BADC0FFEE42")
            await wait_until(lambda: f"card {pseudonym} refused" in out.getvalue(),
                             what="the refusal logged")
    assert "badc0ffee42" not in out.getvalue().lower()


async def test_reveal_id_tags_shows_them_in_clear(cs: CentralSystem, tmp_path: Path) -> None:
    cfg = sim_config(tmp_path, cs.url, security={"reveal_id_tags": True})
    with log_output() as out:
        async with running(cfg) as d:
            await booted(cs)
            sim(d).plug(1)
            d.station.hw.readers[0].present(CARD)
            await cs.wait_for("StartTransaction")
    assert f"card {CARD}" in out.getvalue()


async def test_pseudonym_key_is_private_and_stable_across_restarts(
    cs: CentralSystem, tmp_path: Path
) -> None:
    cfg = sim_config(tmp_path, cs.url)
    async with running(cfg):
        first = privacy.tag(CARD)
    key = cfg.storage.path.parent / privacy.KEY_FILE
    assert key.stat().st_mode & 0o777 == 0o600
    async with running(cfg):
        assert privacy.tag(CARD) == first
    assert privacy.tag(CARD.lower()) == first  # IdToken is case-insensitive
    assert privacy.tag("CAFE0042BEEE") != first


async def test_ocppctl_status_and_tx_show_the_pseudonym_unless_asked(
    cs: CentralSystem, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = sim_config(tmp_path, cs.url)

    async def ocppctl(*argv: str) -> str:
        code = await asyncio.to_thread(ctl.main, ["--socket", str(cfg.control.socket), *argv])
        out, err = capsys.readouterr()
        assert (code, err) == (0, "")
        return out

    async with running(cfg) as d:
        await booted(cs)
        await charge(cs, d, CARD)
        pseudonym = privacy.tag(CARD)
        for verb in (["status"], ["status", "--json"], ["tx"], ["tx", "--json"]):
            out = await ocppctl(*verb)
            assert pseudonym in out and CARD.lower() not in out.lower(), verb
            out = await ocppctl(*verb, "--show-id-tags")  # the test runs as the socket's owner
            assert CARD in out and pseudonym not in out, verb
