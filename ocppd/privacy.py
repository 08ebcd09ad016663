"""Secrets and personal data in what ocppd writes down: log lines, the events table, exports.

Two kinds of text must never leave the charger as they are:

- Credentials inside a URL (``ftp://user:password@host/...``, a firmware or diagnostics
  location): the password is replaced by ``***`` (``redact_url``). The user name stays: it is
  not a secret and helps an installer see which account was used.
- idTags (RFID card UIDs): personal data (GDPR Art. 4(1): an identifier of a person's card).
  They are shown as ``tag:`` and the first 8 hex digits of HMAC-SHA256 under a key that is
  random per installation (``tag``). The same card gives the same pseudonym, so a log can still
  be followed; without the key the UID cannot be recovered, not even by trying every possible
  UID, and two chargers give different pseudonyms for the same card. An installer with a legal
  basis may turn this off (``security.reveal_id_tags``).

``tag()`` is for log calls that print an idTag (``log.info("card %s", tag(id_tag))``);
``scrub()`` is the safety net the log handler and the exports apply to whole texts: URL
credentials, and idTags in JSON or Python-repr form (OCPP frames, payloads, dataclass reprs).

The key lives in ``privacy.key`` in the state directory, mode 0600, created at the first start.
Before ``configure()`` (unit tests, tools) a random key per process is used: pseudonyms then
differ between processes, but are never the UID.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger("ocppd.privacy")

KEY_FILE = "privacy.key"
KEY_BYTES = 32
PREFIX_HEX = 8  # 32 bits: distinct for the cards one charger sees, short enough to read
REDACTED = "***"
MIN_KNOWN_TAG_LEN = 4

_key: bytes = secrets.token_bytes(KEY_BYTES)
_reveal = False

# scheme://user:password@  (RFC 3986 userinfo; a password cannot contain an unescaped "@" or "/")
_URL_CREDENTIALS = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@'\"]*:)[^@\s/'\"]+@")
# "idTag": "X" in JSON, 'id_tag': 'X' or id_tag='X' in Python reprs; the OCPP 1.6 field names
# holding an IdToken (§7.28, §7.18) and ocppd's own attribute names for them
_TAG_NAMES = r"(?:idTag|parentIdTag|id_tag|parent_id_tag|stop_id_tag|idtag)"
_TAG_JSON = re.compile(r'(?P<head>"' + _TAG_NAMES + r'"\s*:\s*")(?P<tag>[^"\\]*)"')
_TAG_REPR = re.compile(r"(?P<head>'" + _TAG_NAMES + r"'\s*:\s*'|\b" + _TAG_NAMES
                       + r"\s*=\s*')(?P<tag>[^'\\]*)'")
_PSEUDONYM = re.compile(rf"tag:[0-9a-f]{{{PREFIX_HEX}}}")
_TAG_KEYS = frozenset({"idTag", "parentIdTag", "id_tag", "parent_id_tag", "stop_id_tag"})


def configure(state_dir: Path, *, reveal_id_tags: bool) -> None:
    """Load the installation's key from ``state_dir`` (creating it, mode 0600, the first time).

    Raises OSError when the key can be neither read nor created.
    """
    global _key, _reveal
    _reveal = reveal_id_tags
    _key = load_or_create_key(state_dir / KEY_FILE)
    if reveal_id_tags:
        log.warning("idTags are logged and exported in clear (security.reveal_id_tags)")


def load_or_create_key(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return _read_key(path)
    key = secrets.token_bytes(KEY_BYTES)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    log.info("created the pseudonymisation key %s", path)
    return key


def _read_key(path: Path) -> bytes:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("%s was readable by others (mode %o): set to 0600", path, mode)
        path.chmod(0o600)
    key = path.read_bytes()
    if len(key) < 16:
        raise OSError(f"{path}: key too short ({len(key)} bytes); remove it for a new one")
    return key


def reveal() -> bool:
    return _reveal


def tag(id_tag: str | None) -> str:
    """How an idTag appears in logs and exports: ``tag:3f9a1c2b`` (or itself when revealed).

    IdToken is case-insensitive (OCPP 1.6 §7.28 CiString20): case-folded before hashing, so
    ``abc`` and ``ABC`` read as the same card, as they are.
    """
    if id_tag is None:
        return "-"
    if _reveal:
        return id_tag
    digest = hmac.new(_key, id_tag.casefold().encode(), hashlib.sha256).hexdigest()
    return f"tag:{digest[:PREFIX_HEX]}"


def redact_url(url: str) -> str:
    """``url`` with the password of its userinfo replaced by ``***``."""
    return _URL_CREDENTIALS.sub(lambda m: m.group("head") + REDACTED + "@", url)


def scrub(text: str) -> str:
    """URL credentials redacted and idTags (in JSON or repr form) pseudonymised."""
    if "://" in text:
        text = redact_url(text)
    if _reveal or not any(n in text for n in ("dTag", "d_tag", "idtag")):
        return text

    def sub(m: re.Match[str]) -> str:
        value = m.group("tag")
        if _PSEUDONYM.fullmatch(value):
            return m.group(0)  # scrubbed before (a stored event exported): keep it
        return m.group("head") + tag(value) + m.group(0)[-1]

    return _TAG_REPR.sub(sub, _TAG_JSON.sub(sub, text))


def scrub_known(text: str, id_tags: Iterable[str]) -> str:
    """``text`` with every occurrence of the given idTags (as a whole word, any case) replaced
    by its pseudonym: for texts whose lines are not all ours, like the journal, which may hold
    lines from before this rule or from a log call that forgot ``tag()``."""
    if _reveal:
        return text
    for id_tag in sorted(set(id_tags), key=len, reverse=True):  # the longest first
        if len(id_tag) < MIN_KNOWN_TAG_LEN:
            continue  # would match ordinary numbers and words
        pattern = re.compile(r"(?<![0-9A-Za-z])" + re.escape(id_tag) + r"(?![0-9A-Za-z])",
                             re.IGNORECASE)
        text = pattern.sub(tag(id_tag), text)
    return text


def scrub_tree(value: Any) -> Any:
    """A copy of a JSON-like value with idTag fields pseudonymised and every string scrubbed
    (for state snapshots that are exported)."""
    if isinstance(value, dict):
        return {k: (tag(v) if k in _TAG_KEYS and isinstance(v, str)
                    and not _PSEUDONYM.fullmatch(v) else scrub_tree(v))
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_tree(v) for v in value]
    if isinstance(value, str):
        return scrub(value)
    return value
