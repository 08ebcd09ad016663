"""Simulated power cuts: nothing that was acted upon is lost, and a confirmed message comes
back at most once per cut.

Commits do not fsync on the event loop; a background thread does (ocppd/storage/durability.py).
This test checks the promise that rests on: whatever the Central System was sent, and every
session whose contactor closed, survives a power cut at any instant.

A power cut is simulated with the LD_PRELOAD library scripts/bench/slowfsync.c: each time the
daemon flushes a file, the library keeps a copy of it as it was when the flush was asked for,
once the flush returned (what the disk is guaranteed to hold). The cut is a SIGKILL followed by
putting those copies in place of the files (a write-ahead log never flushed is gone), and the
runtime directory (a tmpfs) is emptied. The daemon then starts on what is left.

Checked from the Central System's side, after a last undisturbed run has delivered everything:
every session that started reached it, with one start and one stop (a repeat carries the same
values); no MeterValues it received carries more energy than the session's meterStop (a sample
sent but then lost by the charger would show as one); and at most two confirmed messages came
back per cut. A confirmation is durable one flush after it arrived (for MeterValues, with the
next sample's flush), so a cut inside that window sends that one message again, unchanged; with
the flush on the event loop, as before, the window was the same flush.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import signal
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from csms import CentralSystem
from harness import DaemonProcess, sim_config_text

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

SHIM = Path(__file__).resolve().parents[2] / "scripts" / "bench" / "slowfsync.c"
CUTS = 10


def build_shim(tmp_path: Path) -> Path:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("needs a C compiler for the flush-recording library")
    lib = tmp_path / "slowfsync.so"
    subprocess.run([gcc, "-shared", "-fPIC", "-o", str(lib), str(SHIM), "-ldl"], check=True)
    return lib


async def ctl(d: DaemonProcess, *args: str) -> str:
    r = await asyncio.to_thread(d.ctl, *args)
    return r.stdout + r.stderr if r.returncode == 0 else ""


async def wait_socket(d: DaemonProcess, path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert d.proc is not None
        if d.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"daemon did not start: {d.log.read_text()[-2000:]}")
        await asyncio.sleep(0.02)


def power_cut(state: Path, durable: Path, runtime: Path) -> None:
    """What the disk holds after the cut: the flushed copies; the tmpfs is empty."""
    for name in ("ocppd.db", "ocppd.db-wal"):
        copy = durable / f"{name}.durable"
        if copy.exists():
            shutil.copyfile(copy, state / name)
        elif name.endswith("-wal"):
            (state / name).unlink(missing_ok=True)  # never flushed: nothing of it survives
    (state / "ocppd.db-shm").unlink(missing_ok=True)  # rebuilt from the log at open
    for p in runtime.iterdir():
        if p.is_file():
            p.unlink()


async def test_power_cuts_lose_nothing_acted_upon(cs: CentralSystem, tmp_path: Path) -> None:
    lib = build_shim(tmp_path)
    durable = tmp_path / "durable"
    runtime = tmp_path / "run"
    durable.mkdir()
    runtime.mkdir()
    cfg = tmp_path / "ocppd.toml"
    cfg.write_text(sim_config_text(
        tmp_path, cs.url,
        ocpp={"MeterValueSampleInterval": 1, "MeterValuesSampledData":
              "Energy.Active.Import.Register", "LocalAuthorizeOffline": True},
        sim={"time_factor": 60.0},
        central={"reconnect_min_s": 0.1, "reconnect_max_s": 1.0}))
    # flushes take 200 ms, as on a slow SD card: a cut often falls inside one
    env = {"LD_PRELOAD": str(lib), "POWERCUT_DIR": str(durable), "SLOW_FSYNC_MS": "200",
           "RUNTIME_DIRECTORY": str(runtime)}
    sock = tmp_path / "control.sock"
    rng = random.Random(20261126)
    started: list[str] = []
    for cut in range(CUTS):
        d = DaemonProcess(cfg, env=env).start()
        try:
            await wait_socket(d, sock)
            tag = f"P{cut:02d}"
            await ctl(d, "plug", "1")
            if "started" in await ctl(d, "swipe", tag):
                started.append(tag)
            await asyncio.sleep(rng.uniform(0.5, 3.0))  # a random moment to cut the power
            if rng.random() < 0.3:
                await ctl(d, "swipe", tag)
                await ctl(d, "unplug", "1")
                await asyncio.sleep(rng.uniform(0.0, 0.5))
            d.signal(signal.SIGKILL)
            await asyncio.to_thread(d.wait, 10)
        finally:
            d.stop()
            sock.unlink(missing_ok=True)
        power_cut(tmp_path, durable, runtime)

    d = DaemonProcess(cfg, env=env).start()  # undisturbed: delivers what is queued
    try:
        await wait_socket(d, sock)
        deadline = time.monotonic() + 60
        while '"outbox": 0' not in (status := await ctl(d, "status", "--json")) or \
                '"registration": "accepted"' not in status:
            assert time.monotonic() < deadline, f"outbox not drained: {status}"
            await asyncio.sleep(0.2)
    finally:
        assert d.stop() == 0
    check(cs, started)


def check(cs: CentralSystem, started: list[str]) -> None:
    # a message whose confirmation was not yet durable when the power went may come again,
    # with the same payload: group by content, as the Central System would de-duplicate
    session_of_tx: dict[int, str] = {}
    pending: str | None = None
    starts: Counter[str] = Counter()
    for m in cs.messages:
        if m.direction == "in" and m.action == "StartTransaction":
            pending = m.payload["idTag"]
            starts[(pending, m.payload["timestamp"])] += 1
        elif m.direction == "out" and m.action == "StartTransaction.conf" and pending:
            session_of_tx[m.payload["transactionId"]] = pending
            pending = None
    sessions = {tag for tag, _ in starts}
    assert set(started) <= sessions, f"sessions lost: {set(started) - sessions}"
    assert len(starts) == len(sessions), f"two different starts for one card: {starts}"

    stops: dict[str, set[tuple[Any, ...]]] = defaultdict(set)
    values: dict[str, list[float]] = defaultdict(list)
    seen: Counter[tuple[Any, ...]] = Counter()
    for m in cs.messages:
        if m.direction != "in" or m.action not in ("StopTransaction", "MeterValues"):
            continue
        session = session_of_tx.get(m.payload.get("transactionId", -1))
        assert session is not None, f"{m.action} for an unknown transaction: {m.payload}"
        if m.action == "StopTransaction":
            p = m.payload
            stops[session].add((p["meterStop"], p["timestamp"], p["reason"]))
            seen[("stop", session)] += 1
            continue
        for mv in m.payload["meterValue"]:
            seen[(session, mv["timestamp"])] += 1
            values[session] += [float(sv["value"]) for sv in mv["sampledValue"]]
    assert set(stops) == sessions, "every session ends with a StopTransaction"
    for session, found in stops.items():
        assert len(found) == 1, f"session {session} stopped differently: {found}"
    for session, vals in values.items():
        # a MeterValues the charger sent and then lost would carry more than the meterStop it
        # reports after the cut (its last durable reading)
        ((meter_stop, _, _),) = stops[session]
        assert max(vals) <= meter_stop, f"session {session}: {max(vals)} > {meter_stop}"
    again = sum(n - 1 for n in seen.values()) + sum(n - 1 for n in starts.values())
    # per cut: the last MeterValues, and a StartTransaction/StopTransaction whose confirmation
    # was being flushed (the MeterValues' deletion rides on that same flush)
    assert again <= 2 * CUTS, f"{again} confirmed messages sent again in {CUTS} power cuts"
    print(f"{CUTS} power cuts: {len(sessions)} sessions, {sum(seen.values())} messages after"
          f" the starts, {again} sent a second time")
