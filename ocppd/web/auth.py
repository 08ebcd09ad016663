"""Logging in to the web page: the password hash, sessions, CSRF tokens, failed-login limits.

The password is stored as an scrypt hash (RFC 7914) in ``web.password_file``; the daemon reads
the file at each login, so ``ocppd --set-web-password`` takes effect without a restart.
Sessions live in memory only: a restart logs everybody out, which is what one wants.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import hmac
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# RFC 7914 §2 parameters: N=2^14, r=8 costs 16 MiB and ~50 ms on a Raspberry Pi 4, once a login
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN = 2**14, 8, 1, 32
MIN_PASSWORD_LEN = 10
MAX_PASSWORD_LEN = 1024
MAX_SESSIONS = 32  # the oldest goes when a 33rd login comes
ABSOLUTE_SESSION_S = 12 * 3600  # a session ends after this even when in use
# failed logins: a client gets FAILS_PER_CLIENT tries per FAIL_WINDOW_S, and all clients
# together FAILS_TOTAL (a guesser with many addresses on the local network)
FAIL_WINDOW_S = 300.0
FAILS_PER_CLIENT = 5
FAILS_TOTAL = 20


class PasswordError(ValueError):
    """A password that cannot be used (too short, too long)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64), for the password file."""
    check_password(password)
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R,
                            p=SCRYPT_P, dklen=SCRYPT_DKLEN, maxmem=64 * 1024 * 1024)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """True if ``password`` matches ``stored``; False for anything malformed."""
    try:
        scheme, n, r, p, salt, digest = stored.strip().split("$")
        if scheme != "scrypt" or len(password) > MAX_PASSWORD_LEN:
            return False
        expected = base64.b64decode(digest, validate=True)
        got = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt, validate=True),
                             n=int(n), r=int(r), p=int(p), dklen=len(expected),
                             maxmem=64 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LEN:
        raise PasswordError(f"the password needs at least {MIN_PASSWORD_LEN} characters")
    if len(password) > MAX_PASSWORD_LEN:
        raise PasswordError(f"the password has more than {MAX_PASSWORD_LEN} characters")


def write_password_file(path: Path, password: str) -> None:
    """Replace the hash in ``path`` atomically; the file is readable by its owner and group."""
    line = hash_password(password) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".web-password.")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            os.fchmod(f.fileno(), 0o640)
            if os.geteuid() == 0:  # root sets it, the daemon's user must read it
                owner = path.parent.stat()
                os.fchown(f.fileno(), owner.st_uid, owner.st_gid)
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_password_hash(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


@dataclass(slots=True)
class Session:
    token: str
    csrf: str
    created_s: float
    seen_s: float
    flash: list[tuple[str, str]] = field(default_factory=list)  # (level, message)
    streams: int = 0  # open event streams (pages following live updates)


class Sessions:
    """Logged-in browsers, by the random token in their cookie."""

    def __init__(self, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s = timeout_s
        self._clock = clock
        self._by_token: dict[str, Session] = {}

    def create(self) -> Session:
        now = self._clock()
        self._expire(now)
        while len(self._by_token) >= MAX_SESSIONS:
            oldest = min(self._by_token.values(), key=lambda s: s.seen_s)
            del self._by_token[oldest.token]
        s = Session(token=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32),
                    created_s=now, seen_s=now)
        self._by_token[s.token] = s
        return s

    def get(self, token: str | None, *, touch: bool = True) -> Session | None:
        """The live session of ``token``; using it restarts its idle timeout."""
        if not token:
            return None
        now = self._clock()
        s = self._by_token.get(token)
        if s is None:
            return None
        if now - s.seen_s > self.timeout_s or now - s.created_s > ABSOLUTE_SESSION_S:
            del self._by_token[token]
            return None
        if touch:
            s.seen_s = now
        return s

    def drop(self, token: str | None) -> None:
        if token:
            self._by_token.pop(token, None)

    def _expire(self, now: float) -> None:
        for token, s in list(self._by_token.items()):
            if now - s.seen_s > self.timeout_s or now - s.created_s > ABSOLUTE_SESSION_S:
                del self._by_token[token]


def csrf_ok(session: Session, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(session.csrf.encode(), (token or "").encode())


class LoginThrottle:
    """Counts failed logins per client and in total over a sliding window."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._by_client: dict[str, collections.deque[float]] = {}
        self._all: collections.deque[float] = collections.deque()

    def _prune(self, now: float) -> None:
        while self._all and now - self._all[0] > FAIL_WINDOW_S:
            self._all.popleft()
        for client, q in list(self._by_client.items()):
            while q and now - q[0] > FAIL_WINDOW_S:
                q.popleft()
            if not q:
                del self._by_client[client]

    def retry_after_s(self, client: str) -> float | None:
        """Seconds until ``client`` may try again; None if it may now."""
        now = self._clock()
        self._prune(now)
        q = self._by_client.get(client)
        waits = []
        if q is not None and len(q) >= FAILS_PER_CLIENT:
            waits.append(FAIL_WINDOW_S - (now - q[0]))
        if len(self._all) >= FAILS_TOTAL:
            waits.append(FAIL_WINDOW_S - (now - self._all[0]))
        return max(1.0, max(waits)) if waits else None

    def failed(self, client: str) -> None:
        now = self._clock()
        self._by_client.setdefault(client, collections.deque()).append(now)
        self._all.append(now)

    def succeeded(self, client: str) -> None:
        self._by_client.pop(client, None)
