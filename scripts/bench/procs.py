"""Processes the benchmark starts: the daemon and the floor client, always cleaned up.

Every child is started through ``Proc.start`` and recorded in ``_LIVE``; ``stop_all()`` (called
from the entry point's ``finally``) ends whatever is still running, so an interrupted benchmark
leaves nothing behind. Output lines are timestamped on the monotonic clock as they arrive, which
is how the reaction figure sees the contactor close.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FLOOR_SCRIPT = Path(__file__).resolve().parent / "floor_client.py"
CLK_TCK = os.sysconf("SC_CLK_TCK")

_LIVE: set[Proc] = set()


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # Log to the pipe we read, not to the journal, whoever runs the benchmark.
    for name in ("JOURNAL_STREAM", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                 "INVOCATION_ID"):
        env.pop(name, None)
    env.update(extra or {})
    return env


@dataclass(frozen=True, slots=True, kw_only=True)
class Line:
    at: float  # monotonic arrival time
    text: str


class Proc:
    """A child process whose combined stdout/stderr is read line by line as it arrives."""

    def __init__(self, name: str, *, ends_on_eof: bool = False) -> None:
        self.name = name
        self.ends_on_eof = ends_on_eof  # closing stdin is its graceful stop (the floor)
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at = 0.0
        self.lines: list[Line] = []
        self._waiters: list[tuple[str, int, asyncio.Future[Line]]] = []
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, argv: list[str], env: dict[str, str]) -> Proc:
        self.started_at = time.monotonic()
        self.proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=env, cwd=str(REPO), start_new_session=True)
        _LIVE.add(self)
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            line = Line(at=time.monotonic(), text=raw.decode(errors="replace").rstrip("\n"))
            self.lines.append(line)
            for w in list(self._waiters):
                text, start, fut = w
                if text in line.text and len(self.lines) > start and not fut.done():
                    fut.set_result(line)
                    self._waiters.remove(w)

    async def wait_line(self, text: str, timeout_s: float, *, after: int = 0) -> Line:
        """The first output line containing ``text`` among lines[after:], waiting for it."""
        for line in self.lines[after:]:
            if text in line.text:
                return line
        fut: asyncio.Future[Line] = asyncio.get_running_loop().create_future()
        self._waiters.append((text, after, fut))
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            tail = "\n  ".join(x.text for x in self.lines[-15:])
            raise RuntimeError(f"{self.name}: no line with {text!r} within {timeout_s:g} s;"
                               f" last output:\n  {tail}") from None

    # --- /proc ---------------------------------------------------------------------------------

    def _status_kb(self, field: str) -> int:
        for row in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if row.startswith(field + ":"):
                return int(row.split()[1])
        raise RuntimeError(f"no {field} in /proc/{self.pid}/status")

    def rss_kb(self) -> int:
        return self._status_kb("VmRSS")

    def peak_rss_kb(self) -> int:
        return self._status_kb("VmHWM")

    def write_bytes(self) -> int:
        """Bytes this process caused to be written to storage (proc(5) /proc/PID/io,
        counted when a page is dirtied), all its threads."""
        for row in Path(f"/proc/{self.pid}/io").read_text().splitlines():
            if row.startswith("write_bytes:"):
                return int(row.split()[1])
        raise RuntimeError(f"no write_bytes in /proc/{self.pid}/io")

    def threads(self) -> list[int]:
        return sorted(int(t.name) for t in Path(f"/proc/{self.pid}/task").iterdir())

    def cpu_s(self) -> float:
        """utime + stime of the process (all its threads), seconds."""
        text = Path(f"/proc/{self.pid}/stat").read_text()
        fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)

    # --- ending --------------------------------------------------------------------------------

    async def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM (the daemon's graceful stop), then SIGKILL; close stdin first for the floor."""
        if self.proc is None:
            return None
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            if self.proc.returncode is None and self.ends_on_eof:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.proc.wait(), timeout_s)
            if self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(self.proc.wait(), timeout_s)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        self.proc.kill()
                    await self.proc.wait()
            if self._reader is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._reader, 5)
        finally:
            _LIVE.discard(self)
        return self.proc.returncode


async def stop_all() -> None:
    for p in list(_LIVE):
        await p.stop(timeout_s=5.0)


def kill_all_now() -> None:
    """Last resort (interpreter exit): SIGKILL anything still recorded as running."""
    for p in list(_LIVE):
        if p.proc is not None and p.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.proc.pid, signal.SIGKILL)


class NotifySocket:
    """A datagram socket standing in for systemd's: records when each sd_notify line arrived."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[tuple[float, str]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.setblocking(False)
        self._ready: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        while True:
            try:
                data = self._sock.recv(4096)
            except BlockingIOError:
                return
            at = time.monotonic()
            for line in data.decode(errors="replace").splitlines():
                self.messages.append((at, line))
                if line == "READY=1" and not self._ready.done():
                    self._ready.set_result(at)

    async def ready_at(self, timeout_s: float) -> float:
        return await asyncio.wait_for(asyncio.shield(self._ready), timeout_s)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def runtime_dir_env() -> dict[str, str]:
    """RUNTIME_DIRECTORY on a tmpfs, as systemd sets it for the service (RuntimeDirectory=);
    removed when the benchmark exits. Empty where there is no /dev/shm."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        return {}
    path = tempfile.mkdtemp(prefix="ocppd-bench-run-", dir=shm)
    atexit.register(shutil.rmtree, path, True)
    return {"RUNTIME_DIRECTORY": path}


async def start_daemon(cfg_path: Path, notify: NotifySocket | None = None,
                       env_extra: dict[str, str] | None = None) -> Proc:
    env = child_env({**({"NOTIFY_SOCKET": str(notify.path)} if notify else {}),
                     **(env_extra or {})})
    argv = [sys.executable, "-m", "ocppd", "--config", str(cfg_path)]
    return await Proc("ocppd").start(argv, env)


async def start_floor(url: str, cp_id: str, replay: int | None = None) -> Proc:
    argv = [sys.executable, str(FLOOR_SCRIPT), url, cp_id]
    if replay is not None:
        argv += ["--replay", str(replay)]
    return await Proc("floor", ends_on_eof=True).start(argv, child_env())
