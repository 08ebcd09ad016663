"""Storage wear, the contactor under a slow disk, and the first calls after a start.

``charging_wear``: the daemon charges on the simulator with MeterValueSampleInterval 1 s; over N
samples it counts the bytes the process caused to be written (/proc/PID/io ``write_bytes``,
counted as pages are dirtied), the growth of the database files and the fsync/fdatasync calls
(strace, attached to every thread). Dirty pages are written back after every sample (``sync``),
as the kernel does between two samples at the real interval. Per hour is per sample times 64:
MeterValueSampleInterval 60 plus ClockAlignedDataInterval 900, each sample a periodic one.
The floor, in the same state directory and measured the same way: a process that makes one
durable append per sample, a single 1 KiB log page and an fdatasync, the least any design that
keeps each sample across a power cut writes (the file system adds to it: on ext4 one such
append counts two 4 KiB pages).

``slow_fsync``: unplug -> contactor open while every fsync/fdatasync of the daemon takes 500 ms.
The delay comes from a small LD_PRELOAD library compiled here with gcc (device-mapper's delay
target or a FUSE file system would need privileges and kernel support a benchmark machine may
not have); it slows the very calls SQLite and Python make to reach the disk. The unplug is sent
at a random moment shortly after a MeterValues arrived, i.e. while the sample's storage work is
in flight. The same measurement without the library is the baseline.

``cold_calls``: a fresh daemon per run, one second after its boot: the first DataTransfer, the
first GetConfiguration and the first swipe -> contactor, next to the same calls repeated (warm).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import procs, workload
from bench.figures import CONTACTOR_CLOSED, CONTACTOR_OPEN, Bench, median

SAMPLES_PER_HOUR = 3600 // 60 + 3600 // 900  # MeterValueSampleInterval 60 + aligned 900
SLOW_FSYNC_MS = 500

SHIM_SOURCE = Path(__file__).resolve().parent / "slowfsync.c"


def have_compiler() -> bool:
    return bool(shutil.which("gcc") or shutil.which("cc"))


def build_slow_fsync_shim(workdir: Path) -> Path:
    """Compile slowfsync.c (the tests build the same library)."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise RuntimeError("slow_fsync needs gcc (apt-get install gcc)")
    lib = workdir / "slowfsync.so"
    subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-o", str(lib), str(SHIM_SOURCE), "-ldl"],
                   check=True, capture_output=True)
    return lib


def _db_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.glob("ocppd.db*") if p.is_file())


class Strace:
    """strace logging every fsync and fdatasync of every thread of a process, with times, so
    that exactly the calls inside a window are counted."""

    def __init__(self, proc: procs.Proc, log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path
        self._p: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Strace:
        exe = shutil.which("strace")
        if exe is None:
            return self
        argv = [exe, "-f", "-ttt", "-e", "trace=fsync,fdatasync", "-o", str(self.log_path)]
        for tid in self.proc.threads():
            argv += ["-p", str(tid)]
        self._p = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        await asyncio.sleep(0.5)  # attaching takes a moment; the window starts after it
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._p is not None and self._p.returncode is None:
            self._p.send_signal(signal.SIGINT)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._p.wait(), 10)

    async def count(self, t0_wall: float, t1_wall: float) -> int | None:
        """Calls that started within [t0_wall, t1_wall] (None without strace)."""
        if self._p is None:
            return None
        await self.__aexit__()
        return calls_between(self.log_path.read_text(errors="replace"), t0_wall, t1_wall)


def calls_between(text: str, t0_wall: float, t1_wall: float) -> int:
    """fsync/fdatasync calls in an ``strace -f -ttt`` log that started in the window."""
    n = 0
    for row in text.splitlines():
        m = re.match(r"(?:\d+\s+)?(\d+\.\d+)\s+(?:fsync|fdatasync)\(", row)
        if m and t0_wall <= float(m.group(1)) <= t1_wall:
            n += 1
    return n


async def _start_charging(bench: Bench, proc: procs.Proc, d: Path, tag: str
                          ) -> workload.Control:
    ctl = await workload.Control.connect(d / "control.sock")
    await ctl.ask("plug", connector_id=1)
    mark = len(proc.lines)
    await ctl.send("swipe", id_tag=tag, connector_id=1)
    await proc.wait_line(CONTACTOR_CLOSED, 30.0, after=mark)
    await ctl.reply(30.0)
    return ctl


async def _meter_values(bench: Bench, cp_id: str, count: int, timeout_s: float) -> None:
    await bench.cs.wait_meter_values(cp_id, count, timeout_s)


_FLOOR_CODE = r"""
import os, sys
def written():
    with open("/proc/self/io") as f:
        return next(int(r.split()[1]) for r in f if r.startswith("write_bytes"))
path, n = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
os.pwrite(fd, bytes(32), 0)
os.fsync(fd)
os.sync()
start, offset = written(), 32
for _ in range(n):
    os.pwrite(fd, bytes(24 + 1024), offset)  # one log page with its frame header
    offset += 24 + 1024
    os.fdatasync(fd)
    os.sync()  # written back between samples (see the module docstring)
print(written() - start)
os.close(fd)
os.unlink(path)
"""


def floor_written(d: Path, samples: int) -> int:
    """Bytes the floor process writes for ``samples`` durable appends (module docstring)."""
    import sys

    run = subprocess.run([sys.executable, "-c", _FLOOR_CODE, str(d / "floor.wal"),
                          str(samples)], capture_output=True, text=True, timeout=120, check=True)
    return int(run.stdout.strip())


async def charging_wear(bench: Bench, samples: int) -> dict[str, Any]:
    """Bytes and fsyncs per periodic sample while charging (see the module docstring)."""
    proc, notify, d, cp_id = await bench._daemon(
        "wear", ocpp={"MeterValueSampleInterval": 1, "ClockAlignedDataInterval": 0})
    ctl: workload.Control | None = None
    try:
        await bench._booted(cp_id)
        ctl = await _start_charging(bench, proc, d, "WEAR0001")
        st = bench.cs.stations[cp_id]
        await _meter_values(bench, cp_id, 3, 30.0)  # the session is under way
        async with Strace(proc, d / "fsyncs.strace") as trace:
            base = len(st.meter_at) + 1
            await _meter_values(bench, cp_id, base, 30.0)
            t0, w0, f0, wall0 = time.monotonic(), proc.write_bytes(), _db_bytes(d), time.time()
            for i in range(1, samples + 1):
                await _meter_values(bench, cp_id, base + i, 30.0)
                # At the real interval (60 s) the kernel writes dirty pages back between two
                # samples (dirty_expire 30 s), so each sample dirties its pages afresh; samples
                # 1 s apart would share one write-back and hide that. Writing back after each
                # sample counts what a 60 s interval costs.
                await asyncio.to_thread(os.sync)
            t1, w1, f1, wall1 = time.monotonic(), proc.write_bytes(), _db_bytes(d), time.time()
            fsyncs = await trace.count(wall0, wall1)
    finally:
        if ctl is not None:
            with contextlib.suppress(Exception):
                await ctl.close()
        await bench._stop(proc, notify)
    floor = await asyncio.to_thread(floor_written, d, samples)
    return {"samples": samples, "window_s": t1 - t0, "written_bytes": w1 - w0,
            "floor_written_bytes": floor,
            "file_growth_bytes": f1 - f0, "fsyncs": fsyncs,
            "strace": shutil.which("strace") is not None}


async def _unplug_latencies(bench: Bench, runs: int, env: dict[str, str] | None,
                            what: str) -> list[float]:
    proc, notify, d, cp_id = await bench._daemon(
        what, ocpp={"MeterValueSampleInterval": 1}, env=env)
    rng = random.Random(18)
    out: list[float] = []
    ctl: workload.Control | None = None
    try:
        await bench._booted(cp_id)
        st = None
        for i in range(runs):
            if ctl is not None:
                await ctl.close()
            ctl = await _start_charging(bench, proc, d, f"SLOW{i:04d}")
            st = bench.cs.stations[cp_id]
            await _meter_values(bench, cp_id, len(st.meter_at) + 1, 30.0)
            # anywhere in the sampling cycle: a 1 s wait, then the sample's storage work
            await asyncio.sleep(rng.uniform(0.0, 2.5))
            mark = len(proc.lines)
            t0 = time.monotonic()
            await ctl.send("unplug", connector_id=1)
            opened = await proc.wait_line(CONTACTOR_OPEN, 30.0, after=mark)
            out.append((opened.at - t0) * 1e3)
            await ctl.reply(30.0)
    finally:
        if ctl is not None:
            with contextlib.suppress(Exception):
                await ctl.close()
        await bench._stop(proc, notify)
    return out


async def slow_fsync(bench: Bench, runs: int) -> dict[str, Any]:
    lib = build_slow_fsync_shim(bench.workdir)
    slow_env = {"LD_PRELOAD": str(lib), "SLOW_FSYNC_MS": str(SLOW_FSYNC_MS)}
    normal = await _unplug_latencies(bench, runs, None, "unplug-normal")
    slow = await _unplug_latencies(bench, runs, slow_env, "unplug-slow")
    return {"fsync_ms": SLOW_FSYNC_MS, "slow_ms": slow, "normal_ms": normal,
            "method": "LD_PRELOAD library delaying fsync/fdatasync"}


_DT = {"vendorId": "bench", "data": "x"}


async def _cold_run(bench: Bench, warm_n: int) -> dict[str, float]:
    proc, notify, d, cp_id = await bench._daemon("cold")
    ctl: workload.Control | None = None
    try:
        await bench._booted(cp_id)
        await asyncio.sleep(1.0)  # a Central System's first call comes a moment after the boot
        res: dict[str, float] = {}
        for action, payload in (("DataTransfer", _DT), ("GetConfiguration", {})):
            _, first = await bench.cs.call(cp_id, action, payload)
            warm = [(await bench.cs.call(cp_id, action, payload))[1] for _ in range(warm_n)]
            res[f"{action}_cold_ms"] = first * 1e3
            res[f"{action}_warm_ms"] = median(warm) * 1e3
        st = bench.cs.stations[cp_id]
        ctl = await workload.Control.connect(d / "control.sock")
        await ctl.ask("plug", connector_id=1)
        swipes = []
        for i in range(4):
            tag = f"COLD{i:04d}"
            n_auth = len(st.handled.get("Authorize", []))
            mark = len(proc.lines)
            t0 = time.monotonic()
            await ctl.send("swipe", id_tag=tag, connector_id=1)
            closed = await proc.wait_line(CONTACTOR_CLOSED, 10.0, after=mark)
            await ctl.reply()
            auths = st.handled.get("Authorize", [])
            if len(auths) != n_auth + 1:
                raise RuntimeError("the swipe did not make exactly one Authorize")
            swipes.append((closed.at - t0 - (auths[-1][1] - auths[-1][0])) * 1e3)
            mark = len(proc.lines)
            await ctl.ask("swipe", id_tag=tag, connector_id=1)
            await proc.wait_line(CONTACTOR_OPEN, 10.0, after=mark)
            await ctl.ask("unplug", connector_id=1)
            await ctl.ask("plug", connector_id=1)
        res["swipe_cold_ms"] = swipes[0]
        res["swipe_warm_ms"] = median(swipes[1:])
        return res
    finally:
        if ctl is not None:
            with contextlib.suppress(Exception):
                await ctl.close()
        await bench._stop(proc, notify)


async def cold_calls(bench: Bench, runs: int) -> dict[str, Any]:
    return {"runs": [await _cold_run(bench, 20) for _ in range(runs)]}
