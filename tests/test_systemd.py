"""systemd integration against a real notify socket: readiness, status, watchdog, logging."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocppd import systemd as sd

try:
    import systemd.journal as sd_journal
except ImportError:  # pragma: no cover
    sd_journal = None

HAVE_LIBRARY = sd.have_python_systemd()
senders = pytest.mark.parametrize(
    "use_library",
    [
        pytest.param(True, id="python3-systemd", marks=pytest.mark.skipif(
            not HAVE_LIBRARY, reason="python3-systemd not installed")),
        pytest.param(False, id="pure-python"),
    ],
)


def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2.0)
    return sock


@pytest.fixture
def notify_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify.sock"
    with _receiver(str(path)) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


@pytest.fixture
def notify_abstract(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    name = f"ocppd-test-{uuid.uuid4().hex}"
    with _receiver("\0" + name) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        yield sock


def _assert_nothing_more(sock: socket.socket) -> None:
    # Unix datagrams are delivered synchronously: anything sent is already queued
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(4096)


# --- sd_notify ----------------------------------------------------------------------------------


@senders
def test_ready_status_stopping_reach_a_path_socket(
    notify_path: socket.socket, use_library: bool
) -> None:
    n = sd.Notifier(use_library=use_library)
    assert n.enabled and n.uses_library is use_library
    n.ready()
    n.status("connected to ws://cs.example/CP-1")
    n.stopping()
    assert notify_path.recv(4096) == b"READY=1"
    assert notify_path.recv(4096) == b"STATUS=connected to ws://cs.example/CP-1"
    assert notify_path.recv(4096) == b"STOPPING=1"


@senders
def test_abstract_socket_name_is_reached(notify_abstract: socket.socket, use_library: bool) -> None:
    n = sd.Notifier(use_library=use_library)
    n.ready()
    assert notify_abstract.recv(4096) == b"READY=1"


@senders
def test_identical_consecutive_status_lines_are_sent_once(
    notify_path: socket.socket, use_library: bool
) -> None:
    n = sd.Notifier(use_library=use_library)
    n.status("offline")
    n.status("offline")
    n.status("connected")
    n.status("offline")
    assert [notify_path.recv(4096) for _ in range(3)] == [
        b"STATUS=offline", b"STATUS=connected", b"STATUS=offline"]
    _assert_nothing_more(notify_path)


def test_without_python3_systemd_the_pure_python_sender_is_used(
    notify_path: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sd, "_sd_daemon", None)
    n = sd.Notifier()
    assert not n.uses_library
    n.ready()
    assert notify_path.recv(4096) == b"READY=1"


def test_status_is_kept_on_one_line(notify_path: socket.socket) -> None:
    sd.Notifier(use_library=False).status("line one\nline two")
    assert notify_path.recv(4096) == b"STATUS=line one line two"


@senders
def test_reloading_carries_the_monotonic_time(
    notify_path: socket.socket, use_library: bool
) -> None:
    before_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    sd.Notifier(use_library=use_library).reloading()
    after_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = notify_path.recv(4096).decode().split("\n")
    assert first == "RELOADING=1"
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC" and before_us <= int(value) <= after_us


def test_without_notify_socket_every_call_is_a_no_op(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    for use_library in (True, False):
        n = sd.Notifier(use_library=use_library)
        assert not n.enabled
        n.ready()
        n.status("x")
        n.watchdog()
        n.reloading()
        n.stopping()
    assert not [r for r in caplog.records if r.name == "ocppd.systemd"]


@senders
def test_unreachable_notify_socket_is_logged_once_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    use_library: bool,
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    n = sd.Notifier(use_library=use_library)
    with caplog.at_level(logging.WARNING, logger="ocppd.systemd"):
        n.ready()
        n.watchdog()
        n.watchdog()
    warnings = [r for r in caplog.records if r.name == "ocppd.systemd"]
    assert len(warnings) == 1 and "gone.sock" in warnings[0].getMessage()


# --- watchdog -----------------------------------------------------------------------------------


def test_watchdog_interval_comes_from_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert sd.watchdog_interval_s() == pytest.approx(0.2)
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sd.watchdog_interval_s() == pytest.approx(0.2)


def test_watchdog_meant_for_another_process_is_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert sd.watchdog_interval_s() is None


@pytest.mark.parametrize("usec", [None, "", "0", "-5", "soon"])
def test_watchdog_is_off_without_a_valid_timeout(
    monkeypatch: pytest.MonkeyPatch, usec: str | None
) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    if usec is None:
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    assert sd.watchdog_interval_s() is None


@senders
async def test_watchdog_pings_at_half_the_timeout(
    notify_path: socket.socket, monkeypatch: pytest.MonkeyPatch, use_library: bool
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    interval_s = sd.watchdog_interval_s()
    assert interval_s is not None
    notify_path.setblocking(False)
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(sd.run_watchdog(sd.Notifier(use_library=use_library), interval_s))
    times: list[float] = []
    try:
        async with asyncio.timeout(3.0):
            while len(times) < 6:
                assert await loop.sock_recv(notify_path, 4096) == b"WATCHDOG=1"
                times.append(loop.time())
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    # five periods of 0.1 s; generous bounds for a loaded machine
    assert 0.3 <= times[-1] - times[0] <= 1.5, gaps
    assert all(0.03 <= g <= 0.5 for g in gaps), gaps


async def test_stalled_loop_stops_the_pings(notify_path: socket.socket) -> None:
    notify_path.setblocking(False)
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(sd.run_watchdog(sd.Notifier(use_library=False), 0.1))
    try:
        async with asyncio.timeout(2.0):
            await loop.sock_recv(notify_path, 4096)
            time.sleep(0.3)  # noqa: ASYNC251 - the stall under test: the loop is blocked
            stalled_at = loop.time()
            await loop.sock_recv(notify_path, 4096)  # the ping due during the stall is late
            await loop.sock_recv(notify_path, 4096)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # no burst of catch-up pings: the next one comes a full period after the late one
    assert loop.time() - stalled_at >= 0.03


# --- logging ------------------------------------------------------------------------------------


@pytest.fixture
def clean_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    root = logging.getLogger()
    frames = logging.getLogger(sd.FRAMES_LOGGER)
    saved = (list(root.handlers), root.level, frames.level)
    yield
    for h in list(root.handlers):
        if h not in saved[0]:
            root.removeHandler(h)
            h.close()
    root.setLevel(saved[1])
    frames.setLevel(saved[2])
    sd.forget_secrets()


def test_stderr_lines_are_compact_and_utc(clean_logging: None) -> None:
    out = io.StringIO()
    sd.setup_logging("info", log_frames=False, stream=out)
    logging.getLogger("ocppd.link").info("connected to %s", "ws://cs.example/CP-1")
    logging.getLogger("ocppd.link").debug("not at info level")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ INFO ocppd\.link: connected to ws://cs\.example/CP-1",
        lines[0],
    ), lines[0]
    stamp = time.strptime(lines[0].split()[0], "%Y-%m-%dT%H:%M:%SZ")
    assert abs(time.mktime(stamp) - time.mktime(time.gmtime())) < 60


def test_setting_up_again_replaces_the_handler(clean_logging: None) -> None:
    first, second = io.StringIO(), io.StringIO()
    sd.setup_logging("info", log_frames=False, stream=first)
    sd.setup_logging("warning", log_frames=False, stream=second)
    logging.getLogger("ocppd.x").warning("once")
    logging.getLogger("ocppd.x").info("filtered")
    assert first.getvalue() == "" and second.getvalue().count("once") == 1
    assert "filtered" not in second.getvalue()


@pytest.mark.parametrize("log_frames", [False, True])
def test_frames_are_logged_only_when_asked(clean_logging: None, log_frames: bool) -> None:
    out = io.StringIO()
    sd.setup_logging("debug", log_frames=log_frames, stream=out)
    logging.getLogger(sd.FRAMES_LOGGER).debug('[2,"1","Heartbeat",{}]')
    logging.getLogger("ocppd.link").debug("other debug")
    assert ("Heartbeat" in out.getvalue()) is log_frames
    assert "other debug" in out.getvalue()


def test_registered_secrets_never_reach_the_log(clean_logging: None) -> None:
    out = io.StringIO()
    sd.setup_logging("debug", log_frames=True, stream=out)
    sd.register_secret("0123456789abcdef-key")
    sd.register_secret("")  # ignored: would redact everything
    log = logging.getLogger("ocppd.link")
    log.info("connecting with key %s", "0123456789abcdef-key")
    log.info("literal 0123456789abcdef-key in the format")
    try:
        raise RuntimeError("auth failed for 0123456789abcdef-key")
    except RuntimeError:
        log.exception("handshake")
    text = out.getvalue()
    assert "0123456789abcdef-key" not in text
    # the message, the format string, the traceback's source line and the exception text
    assert text.count("***") == 4 and "RuntimeError" in text


def test_journal_stream_without_the_module_uses_syslog_prefixes(
    clean_logging: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sd, "_sd_journal", None)
    with open(tmp_path / "journal", "w+") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        handler = sd.setup_logging("info", log_frames=False, stream=stream)
        assert type(handler) is logging.StreamHandler
        logging.getLogger("ocppd.link").warning("lost connection")
        handler.flush()
        stream.seek(0)
        assert stream.read() == "<4>ocppd.link: lost connection\n"


def test_journal_stream_of_another_file_keeps_stderr_format(
    clean_logging: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    with open(tmp_path / "err", "w") as stream:
        handler = sd.setup_logging("info", log_frames=False, stream=stream)
        assert type(handler) is logging.StreamHandler
        assert not sd.journal_stream_matches(stream)


@pytest.mark.skipif(sd_journal is None, reason="python3-systemd not installed")
def test_journal_stream_chooses_journald_with_structured_fields(
    clean_logging: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sd_journal is not None
    with open(tmp_path / "journal", "w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        handler = sd.setup_logging("info", log_frames=False, stream=stream)
    assert isinstance(handler, sd_journal.JournalHandler)
    sent: list[tuple[str, dict[str, object]]] = []
    # journald's socket path is fixed; capture what the handler would write to it
    def capture(MESSAGE: str, **fields: object) -> None:  # noqa: N803 - journal.send's signature
        sent.append((MESSAGE, fields))

    handler.send = capture
    sd.register_secret("hunter2-secret")
    logging.getLogger("ocppd.station").info(
        "tag %s started with %s", "ABC", "hunter2-secret",
        extra=sd.journal_fields(CONNECTOR_ID=1, OCPP_ACTION="StartTransaction"),
    )
    [(message, fields)] = sent
    assert message == "tag ABC started with ***"
    assert fields["CONNECTOR_ID"] == 1 and fields["OCPP_ACTION"] == "StartTransaction"
    assert fields["SYSLOG_IDENTIFIER"] == "ocppd" and fields["PRIORITY"] == "6"
    assert "hunter2-secret" not in repr(fields)


def test_journal_field_names_are_checked() -> None:
    assert sd.journal_fields(CONNECTOR_ID=2) == {"CONNECTOR_ID": 2}
    with pytest.raises(ValueError):
        sd.journal_fields(connector=2)
