"""ocppd.privacy: the text forms in which URL credentials and idTags are found and replaced."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from ocppd import privacy
from ocppd.systemd import setup_logging


def test_url_password_is_redacted_user_and_host_kept() -> None:
    assert privacy.redact_url("ftp://fw:pa55@host:21/a/b.bin") == "ftp://fw:***@host:21/a/b.bin"
    assert privacy.redact_url("https://host/x?a=b") == "https://host/x?a=b"
    assert privacy.redact_url("ftp://user@host/") == "ftp://user@host/"  # no password: as is
    line = 'x [2,"1","UpdateFirmware",{"location":"ftps://u:p%40ss@h/f"}] and ftp://a:b@c/'
    clean = privacy.scrub(line)
    assert "p%40ss" not in clean and ":b@" not in clean and clean.count("***") == 2


def test_id_tags_in_json_and_repr_become_pseudonyms() -> None:
    tag = privacy.tag("04A1B2C3")
    frame = '[2,"7","Authorize",{"idTag":"04A1B2C3"}]'
    assert privacy.scrub(frame) == f'[2,"7","Authorize",{{"idTag":"{tag}"}}]'
    rec = "TxRecord(local_id=1, id_tag='04a1b2c3', stop_id_tag='04A1B2C3')"
    assert privacy.scrub(rec) == f"TxRecord(local_id=1, id_tag='{tag}', stop_id_tag='{tag}')"
    payload = "{'idTag': '04A1B2C3', 'parentIdTag': 'GROUP1'}"
    assert "04A1B2C3" not in privacy.scrub(payload) and "GROUP1" not in privacy.scrub(payload)
    assert privacy.scrub(privacy.scrub(frame)) == privacy.scrub(frame)  # idempotent
    tree = privacy.scrub_tree({"connectors": [{"id_tag": "04A1B2C3", "n": 1}]})
    assert tree == {"connectors": [{"id_tag": tag, "n": 1}]}


def test_key_file_created_0600_and_reused(tmp_path: Path) -> None:
    key = privacy.load_or_create_key(tmp_path / "k")
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    (tmp_path / "k").chmod(0o644)
    assert privacy.load_or_create_key(tmp_path / "k") == key
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600  # tightened


def test_log_handler_scrubs_tracebacks_too() -> None:
    out = io.StringIO()
    handler = setup_logging("info", log_frames=False, stream=out)
    try:
        try:
            raise RuntimeError("GET ftp://fw:hunter22@h/x failed for {'idTag': 'ABCDEF01'}")
        except RuntimeError:
            logging.getLogger("ocppd.test").exception("transfer failed")
    finally:
        logging.getLogger().removeHandler(handler)
    text = out.getvalue()
    assert "hunter22" not in text and "ABCDEF01" not in text and "fw:***@h" in text


def test_known_id_tags_are_replaced_wherever_they_stand() -> None:
    journal = ("Jan 01 ocppd[1]: card 04a1b2c3 accepted\n"
               "Jan 01 ocppd[1]: meter 1204A1B2C399 Wh; tag 1234 at 12:34\n")
    clean = privacy.scrub_known(journal, {"04A1B2C3", "1234", "12"})
    assert "04a1b2c3" not in clean.lower().replace("1204a1b2c399", "")
    assert f"card {privacy.tag('04A1B2C3')} accepted" in clean
    assert "1204A1B2C399" in clean  # inside a longer word: not a card
    assert f"tag {privacy.tag('1234')} at 12:34" in clean  # too short ones ("12") left alone
