"""systemd integration: readiness and status (sd_notify), the watchdog, and logging.

Notifications follow sd_notify(3): newline-separated ``KEY=VALUE`` assignments in one datagram
to the Unix socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract
namespace). python3-systemd's ``systemd.daemon.notify`` is used when it is installed; otherwise a
small sender here writes the same bytes. Without ``$NOTIFY_SOCKET`` (not started by systemd, or
``Type=simple``) every call is a no-op.

The watchdog is fed from the event loop itself (``run_watchdog`` is an asyncio task), so a loop
that stalls stops the pings and systemd restarts the daemon (``WatchdogSec=`` in the unit).

Logging: when stderr is connected to the journal (``$JOURNAL_STREAM`` names stderr's
``st_dev:st_ino``, see systemd.exec(5)) and python3-systemd is installed, records go straight to
journald with structured fields. Otherwise a compact line goes to stderr::

    2026-01-01T12:00:00Z INFO ocppd.link: connected to ws://cs.example/CP-1

Journal field convention: pass upper-case keys through ``extra=`` and they become journal fields
(query them with ``journalctl -u ocppd CONNECTOR_ID=1``)::

    log.info("transaction %d started", tx_id,
             extra={"CONNECTOR_ID": 1, "OCPP_ACTION": "StartTransaction", "TRANSACTION_ID": tx_id})

Names must match journald's rules (``[A-Z0-9_]``, not starting with ``_``); the stderr format
ignores them. Every record is also tagged ``SYSLOG_IDENTIFIER=ocppd``.

Secrets (the AuthorizationKey, ...) are registered with ``register_secret`` and replaced by
``***`` in every message that reaches a handler set up here; so are passwords inside URLs, and
idTags in frames and payloads are pseudonymised (``ocppd.privacy.scrub``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import socket
import sys
import time
from typing import Any, TextIO

from ocppd import privacy

# python3-systemd is optional (Recommends, not Depends) and imported when first needed: the
# journal module only when logging to the journal, the daemon module at the first notification.
_UNLOADED: Any = object()
_sd_daemon: Any = _UNLOADED
_sd_journal: Any = _UNLOADED


def _import(name: str) -> Any:
    try:
        return importlib.import_module(f"systemd.{name}")
    except ImportError:  # pragma: no cover - depends on the installation
        return None


def _daemon_module() -> Any:
    global _sd_daemon
    if _sd_daemon is _UNLOADED:
        _sd_daemon = _import("daemon")
    return _sd_daemon


def _journal_module() -> Any:
    global _sd_journal
    if _sd_journal is _UNLOADED:
        _sd_journal = _import("journal")
    return _sd_journal


def have_python_systemd() -> bool:
    """python3-systemd is importable (else the pure-Python notifier and stderr logging are
    used)."""
    return _daemon_module() is not None and _journal_module() is not None


log = logging.getLogger("ocppd.systemd")

#: The logger OCPP frames are written to at debug level; enabled only by ``logging.log_frames``.
FRAMES_LOGGER = "ocppd.ocpp.frames"

SYSLOG_IDENTIFIER = "ocppd"


# --- sd_notify ----------------------------------------------------------------------------------


def _socket_address(name: str) -> str:
    # sd_notify(3): a leading "@" means the Linux abstract namespace (a leading NUL byte)
    return "\0" + name[1:] if name.startswith("@") else name


def _send_datagram(name: str, message: str) -> None:
    """The pure-Python sd_notify: one datagram, no reply. Raises OSError on failure."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(_socket_address(name))
        sock.sendall(message.encode("utf-8"))


class Notifier:
    """Sends sd_notify messages to systemd; every method is a no-op without ``$NOTIFY_SOCKET``.

    ``use_library=False`` forces the pure-Python sender even when python3-systemd is installed.
    Failures are logged once (and again only after a success), never raised: losing a status
    line must not take the daemon down.
    """

    def __init__(self, *, use_library: bool = True) -> None:
        self._socket = os.environ.get("NOTIFY_SOCKET") or None
        self._want_library = use_library
        self._last_status: str | None = None
        self._failing = False

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    @property
    def uses_library(self) -> bool:
        return self._want_library and _daemon_module() is not None

    def ready(self) -> None:
        self._send("READY=1")

    def status(self, text: str) -> None:
        # STATUS= is a single line; identical consecutive lines are not worth a datagram
        line = " ".join(text.splitlines())
        if line == self._last_status:
            return
        self._last_status = line
        self._send(f"STATUS={line}")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def reloading(self) -> None:
        """Announce a reload; send ``ready()`` when it is done.

        sd_notify(3): with ``Type=notify-reload`` (systemd >= 253) RELOADING=1 must carry
        MONOTONIC_USEC, the CLOCK_MONOTONIC time of the request; older versions ignore it.
        """
        now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={now_us}")

    def _send(self, message: str) -> None:
        if self._socket is None:
            return
        try:
            if self.uses_library:
                if not _daemon_module().notify(message):
                    raise OSError(f"sd_notify to {self._socket} failed")
            else:
                _send_datagram(self._socket, message)
        except OSError as exc:
            if not self._failing:
                log.warning("cannot notify systemd at %s: %s", self._socket, exc)
            self._failing = True
        else:
            if self._failing:
                log.info("notifying systemd at %s works again", self._socket)
            self._failing = False


# --- watchdog -----------------------------------------------------------------------------------


def watchdog_interval_s() -> float | None:
    """The watchdog timeout systemd enforces (``WatchdogSec=``), or None when it is off.

    From ``$WATCHDOG_USEC``; when ``$WATCHDOG_PID`` is set it must be this process, otherwise
    the variables were meant for a parent (sd_watchdog_enabled(3)). ``run_watchdog`` pings at
    half of this value.
    """
    usec = os.environ.get("WATCHDOG_USEC", "")
    try:
        timeout_us = int(usec)
    except ValueError:
        return None
    if timeout_us <= 0:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return timeout_us / 1_000_000


async def run_watchdog(notifier: Notifier, interval_s: float) -> None:
    """Ping WATCHDOG=1 every ``interval_s / 2`` until cancelled.

    ``interval_s`` is the timeout from ``watchdog_interval_s``; half of it is what
    sd_watchdog_enabled(3) recommends. The pings come from the event loop, so they stop when the
    loop stalls, which is what the watchdog is for. Deadlines are kept on the loop clock so a
    slow iteration does not push every later ping back.
    """
    period_s = interval_s / 2
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    while True:
        notifier.watchdog()
        next_at += period_s
        now = loop.time()
        if next_at < now:  # we were late (a stall): restart the cadence from now
            next_at = now + period_s
        await asyncio.sleep(next_at - now)


# --- secrets ------------------------------------------------------------------------------------

_secrets: set[str] = set()
REDACTED = "***"
_MIN_SECRET_LEN = 4  # shorter strings would redact ordinary words and numbers


def register_secret(secret: str) -> None:
    """Never let ``secret`` appear in a log message again (replaced by ``***``)."""
    if len(secret) >= _MIN_SECRET_LEN:
        _secrets.add(secret)


def forget_secrets() -> None:
    """Drop every registered secret (for tests and configuration reloads)."""
    _secrets.clear()


def redact(text: str) -> str:
    # longest first, so a secret that contains another is replaced whole
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """Replaces registered secrets, URL credentials and idTags (privacy.scrub) in the message
    and any traceback of a record.

    The record is rewritten in place (message formatted, args dropped) because the journal
    handler also sends the raw ``msg``/``args`` attributes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = privacy.scrub(redact(message))
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            clean_exc = privacy.scrub(redact(record.exc_text))
            if clean_exc != record.exc_text:
                # exc_info would be formatted again from the live exception: drop it
                record.exc_text, record.exc_info = clean_exc, None
        return True


# --- logging ------------------------------------------------------------------------------------


class _UtcFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return time.strftime(datefmt or "%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))


def _syslog_priority(levelno: int) -> int:
    # sd-daemon(3) "<N>" prefixes are syslog priorities: crit 2, err 3, warning 4, info 6, debug 7
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    return 6 if levelno >= logging.INFO else 7


class _SyslogPrefixFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_syslog_priority(record.levelno)}>"
        # every line of a traceback gets the prefix, or journald files it at the default level
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def journal_stream_matches(stream: TextIO) -> bool:
    """True when ``stream`` is the journal connection systemd gave us (systemd.exec(5))."""
    expected = os.environ.get("JOURNAL_STREAM")
    if not expected:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # pytest capture, closed stream, StringIO
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def setup_logging(level: str, *, log_frames: bool, stream: TextIO | None = None) -> logging.Handler:
    """Configure the root logger once for the daemon; returns the handler installed.

    ``level`` is a ``logging.level`` value (debug/info/warning/error). OCPP frames (logger
    ``FRAMES_LOGGER``) are logged at debug level only when ``log_frames`` is true, whatever the
    level. Calling it again replaces the handler installed before.
    """
    out = stream if stream is not None else sys.stderr
    handler: logging.Handler
    to_journal = journal_stream_matches(out)
    journal = _journal_module() if to_journal else None
    if journal is not None:
        handler = journal.JournalHandler(SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER)
    elif to_journal:
        # journald stamps time and unit itself; keep the level via a syslog prefix
        handler = logging.StreamHandler(out)
        handler.setFormatter(_SyslogPrefixFormatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(out)
        handler.setFormatter(
            _UtcFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%SZ")
        )
    handler.addFilter(RedactingFilter())
    handler.set_name("ocppd")

    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "ocppd"]:
        root.removeHandler(old)
        with contextlib.suppress(Exception):
            old.close()
    root.addHandler(handler)
    numeric = logging.getLevelName(level.upper())
    root.setLevel(numeric if isinstance(numeric, int) else logging.INFO)
    frames_level = logging.DEBUG if log_frames else max(root.level, logging.INFO)
    logging.getLogger(FRAMES_LOGGER).setLevel(frames_level)
    return handler


def journal_fields(**fields: Any) -> dict[str, Any]:
    """``extra=`` for a log call, with the field names checked (upper-case, journald rules)."""
    for name in fields:
        if not name.replace("_", "").isalnum() or not name.isupper() or name.startswith("_"):
            raise ValueError(f"not a journal field name: {name!r}")
    return fields
