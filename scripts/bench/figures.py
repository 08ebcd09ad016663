"""The measurements. Each returns plain dicts: every run's values and their median.

Runs alternate between ocppd and its floor, after one warm-up of each that is not counted, so
neither side profits alone from a warm page cache or a CPU that has just clocked up.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import procs, workload
from bench.cs import CentralSystem

CONTACTOR_CLOSED = "sim connector 1: contactor closed"
CONTACTOR_OPEN = "sim connector 1: contactor open"
CONNECTORS = 2
STATUSES_AFTER_BOOT = CONNECTORS + 1  # connector 0 (the charger) and each connector (§4.9)


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    runs: int
    settle_s: float  # after boot, before RSS is read: let start-up garbage settle
    idle_window_s: float
    idle_slices: int
    calls: int  # per batch, per action
    replay_n: int
    reaction_runs: int
    wear_samples: int  # periodic samples per wear run (1 s apart)


FULL = Settings(runs=5, settle_s=1.0, idle_window_s=60.0, idle_slices=6, calls=1000,
                replay_n=10_000, reaction_runs=9, wear_samples=30)
QUICK = Settings(runs=2, settle_s=0.3, idle_window_s=2.0, idle_slices=2, calls=100,
                 replay_n=300, reaction_runs=3, wear_samples=3)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: a p99 is a latency that happened)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


class Bench:
    def __init__(self, cs: CentralSystem, workdir: Path, settings: Settings) -> None:
        self.cs = cs
        self.workdir = workdir
        self.s = settings
        self._n = 0

    def _new_dir(self, what: str) -> Path:
        self._n += 1
        d = self.workdir / f"{self._n:02d}-{what}"
        d.mkdir(parents=True)
        return d

    async def _daemon(self, what: str, *, queued: int = 0, boot_status: str | None = None,
                      ocpp: dict[str, int] | None = None, env: dict[str, str] | None = None,
                      ) -> tuple[procs.Proc, procs.NotifySocket, Path, str]:
        d = self._new_dir(what)
        cp_id = f"{workload.CP_ID}-{self._n}"
        cfg = workload.write_config(d, self.cs.url, cp_id=cp_id, connectors=CONNECTORS,
                                    ocpp=ocpp)
        # An existing database, as on every start but the first of a charger's life.
        workload.prefill_outbox(d / "ocppd.db", queued)
        if boot_status is not None:
            self.cs.boot_status_of[cp_id] = boot_status
        notify = procs.NotifySocket(d / "notify.sock")
        # as under systemd (RuntimeDirectory=): the daemon's runtime directory is a tmpfs
        env = {**procs.runtime_dir_env(), **(env or {})}
        proc = await procs.start_daemon(cfg, notify, env)
        return proc, notify, d, cp_id

    async def _stop(self, proc: procs.Proc, notify: procs.NotifySocket | None = None) -> None:
        code = await proc.stop()
        if notify is not None:
            notify.close()
        if code not in (0, None):
            tail = "\n  ".join(x.text for x in proc.lines[-10:])
            raise RuntimeError(f"{proc.name} exited with {code}:\n  {tail}")

    async def _booted(self, cp_id: str, *, statuses: int = STATUSES_AFTER_BOOT) -> float:
        st = await self.cs.wait_boot(cp_id)
        await self.cs.wait(lambda: len(st.handled.get("StatusNotification", [])) >= statuses,
                           15.0, f"{statuses} StatusNotification from {cp_id}")
        return st.boot_at[0]

    # --- 1 and 2: start-up and memory ----------------------------------------------------------

    async def _startup_ocppd(self) -> dict[str, float]:
        proc, notify, _, cp_id = await self._daemon("startup")
        try:
            ready_at = await notify.ready_at(30.0)
            boot_at = await self._booted(cp_id)
            await asyncio.sleep(self.s.settle_s)
            rss_kb = proc.rss_kb()
        finally:
            await self._stop(proc, notify)
        return {"boot_s": boot_at - proc.started_at, "ready_s": ready_at - proc.started_at,
                "rss_kb": rss_kb}

    async def _startup_floor(self) -> dict[str, float]:
        self._n += 1
        cp_id = f"FLOOR-{self._n}"
        proc = await procs.start_floor(self.cs.url, cp_id)
        try:
            await proc.wait_line("BOOTED", 30.0)
            boot_at = self.cs.stations[cp_id].boot_at[0]
            await asyncio.sleep(self.s.settle_s)
            rss_kb = proc.rss_kb()
        finally:
            await self._stop(proc)
        return {"boot_s": boot_at - proc.started_at, "rss_kb": rss_kb}

    async def startup(self) -> dict[str, Any]:
        await self._startup_ocppd()  # warm-up: page cache, .pyc files
        await self._startup_floor()
        ocppd, floor = [], []
        for _ in range(self.s.runs):
            ocppd.append(await self._startup_ocppd())
            floor.append(await self._startup_floor())
        return {"ocppd": ocppd, "floor": floor}

    async def import_times(self) -> dict[str, Any]:
        """Where start-up goes: importing ocppd's modules against importing aiohttp alone (the
        floor's only import), each in a fresh interpreter, timed inside it."""
        async def timed(module: str) -> float:
            code = (f"import time; t = time.perf_counter(); import {module}; "
                    "print(time.perf_counter() - t)")
            p = procs.Proc(f"import {module}", ends_on_eof=True)
            await p.start([sys.executable, "-c", code], procs.child_env())
            line = await p.wait_line(".", 30.0)
            await self._stop(p)
            return float(line.text)
        ocppd, floor = [], []
        for _ in range(self.s.runs):
            ocppd.append(await timed("ocppd.app"))
            floor.append(await timed("aiohttp"))
        return {"ocppd_app_s": ocppd, "aiohttp_s": floor}

    def storage_replay(self) -> dict[str, Any]:
        """The outbox alone (batched read + confirm per message, ocppd.storage.bench): the
        share of the replay that is SQLite, with no network in it."""
        from ocppd.storage.bench import events_replay

        rates = []
        for i in range(self.s.runs):
            path = self._new_dir(f"storage-{i}") / "outbox.db"
            rates.append(events_replay(path, self.s.replay_n))
        return {"per_s": rates}

    async def _queued_rss(self) -> dict[str, float]:
        """RSS booted (Pending, so nothing is sent) with replay_n MeterValues queued."""
        proc, notify, _, cp_id = await self._daemon("queued", queued=self.s.replay_n,
                                                    boot_status="Pending")
        try:
            await self.cs.wait_boot(cp_id)
            await asyncio.sleep(self.s.settle_s)
            return {"rss_kb": proc.rss_kb()}
        finally:
            await self._stop(proc, notify)

    # --- 3: idle CPU ---------------------------------------------------------------------------

    async def idle_cpu(self) -> dict[str, Any]:
        """Both processes connected and idle at the same time, over the same window."""
        proc, notify, _, cp_id = await self._daemon("idle")
        floor = await procs.start_floor(self.cs.url, f"FLOOR-IDLE-{self._n}")
        try:
            await self._booted(cp_id)
            await floor.wait_line("BOOTED", 30.0)
            await asyncio.sleep(max(self.s.settle_s, 1.0))
            slice_s = self.s.idle_window_s / self.s.idle_slices
            slices: dict[str, list[float]] = {"ocppd": [], "floor": []}
            written_per_h: list[float] = []  # bytes the daemon wrote, per slice, scaled
            t_start = time.monotonic()
            cpu_start = {"ocppd": proc.cpu_s(), "floor": floor.cpu_s()}
            written_start = proc.write_bytes()
            for _ in range(self.s.idle_slices):
                t0 = time.monotonic()
                c0 = {"ocppd": proc.cpu_s(), "floor": floor.cpu_s()}
                w0 = proc.write_bytes()
                await asyncio.sleep(slice_s)
                wall_s = time.monotonic() - t0
                written_per_h.append((proc.write_bytes() - w0) * 3600 / wall_s)
                slices["ocppd"].append((proc.cpu_s() - c0["ocppd"]) / wall_s * 100)
                slices["floor"].append((floor.cpu_s() - c0["floor"]) / wall_s * 100)
            wall_s = time.monotonic() - t_start
            whole = {"ocppd": (proc.cpu_s() - cpu_start["ocppd"]) / wall_s * 100,
                     "floor": (floor.cpu_s() - cpu_start["floor"]) / wall_s * 100}
            written = proc.write_bytes() - written_start
            frames = sum(len(v) for v in self.cs.stations[cp_id].handled.values())
        finally:
            await self._stop(floor)
            await self._stop(proc, notify)
        return {"slice_s": slice_s, "window_s": wall_s, "slices_pct": slices, "window_pct": whole,
                "written_bytes": written, "written_bytes_per_h_slices": written_per_h,
                "ocppd_frames_in_window_and_boot": frames}

    # --- 4: calls from the Central System and replay -------------------------------------------

    async def _call_batch(self, cp_id: str, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        latencies = []
        t0 = time.monotonic()
        for _ in range(self.s.calls):
            _, rtt = await self.cs.call(cp_id, action, payload)
            latencies.append(rtt)
        wall_s = time.monotonic() - t0
        return {"calls": self.s.calls, "per_s": self.s.calls / wall_s,
                "p50_ms": percentile(latencies, 50) * 1e3,
                "p99_ms": percentile(latencies, 99) * 1e3,
                "max_ms": max(latencies) * 1e3}

    async def _concurrent_batch(self, cp_id: str, action: str, payload: dict[str, Any],
                                in_flight: int = 8) -> dict[str, Any]:
        per = self.s.calls // in_flight

        async def worker() -> None:
            for _ in range(per):
                await self.cs.call(cp_id, action, payload)
        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        return {"calls": per * in_flight, "in_flight": in_flight,
                "per_s": per * in_flight / (time.monotonic() - t0)}

    async def _calls_on(self, cp_id: str) -> dict[str, list[dict[str, Any]]]:
        actions = {"GetConfiguration": {}, "DataTransfer": {"vendorId": "bench", "data": "x"}}
        for action, payload in actions.items():  # warm-up
            for _ in range(50):
                await self.cs.call(cp_id, action, payload)
        out: dict[str, list[dict[str, Any]]] = {a: [] for a in actions}
        out["GetConfiguration_concurrent"] = []
        for _ in range(self.s.runs):
            for action, payload in actions.items():
                out[action].append(await self._call_batch(cp_id, action, payload))
            out["GetConfiguration_concurrent"].append(
                await self._concurrent_batch(cp_id, "GetConfiguration", {}))
        return out

    async def calls(self) -> dict[str, Any]:
        proc, notify, _, cp_id = await self._daemon("calls")
        try:
            await self._booted(cp_id)
            ocppd = await self._calls_on(cp_id)
        finally:
            await self._stop(proc, notify)
        floor_id = f"FLOOR-CALLS-{self._n}"
        floor = await procs.start_floor(self.cs.url, floor_id)
        try:
            await floor.wait_line("BOOTED", 30.0)
            floor_res = await self._calls_on(floor_id)
        finally:
            await self._stop(floor)
        return {"ocppd": ocppd, "floor": floor_res}

    def _replay_rate(self, cp_id: str) -> float:
        at = self.cs.stations[cp_id].meter_at
        return (len(at) - 1) / (at[-1] - at[0])

    async def _replay_ocppd(self) -> dict[str, float]:
        n = self.s.replay_n
        proc, notify, _, cp_id = await self._daemon("replay", queued=n, boot_status="Pending")
        try:
            await self.cs.wait_boot(cp_id)
            await asyncio.sleep(self.s.settle_s)
            queued_rss_kb = proc.rss_kb()  # booted, Pending: the backlog sits in the database
            self.cs.boot_status_of[cp_id] = "Accepted"
            # OCPP 1.6 §5.17: a triggered BootNotification; Accepted lets the outbox go
            await self.cs.call(cp_id, "TriggerMessage", {"requestedMessage": "BootNotification"})
            await self.cs.wait_meter_values(cp_id, n, timeout_s=max(60.0, n / 50))
            rate = self._replay_rate(cp_id)
            peak_kb = proc.peak_rss_kb()
        finally:
            await self._stop(proc, notify)
        return {"per_s": rate, "queued_rss_kb": queued_rss_kb, "peak_rss_kb": peak_kb}

    async def _replay_floor(self) -> dict[str, float]:
        n = self.s.replay_n
        self._n += 1
        cp_id = f"FLOOR-REPLAY-{self._n}"
        proc = await procs.start_floor(self.cs.url, cp_id, replay=n)
        try:
            await proc.wait_line("REPLAYED", max(60.0, n / 50))
            await self.cs.wait_meter_values(cp_id, n, 5.0)
        finally:
            await self._stop(proc)
        return {"per_s": self._replay_rate(cp_id)}

    async def replay(self) -> dict[str, Any]:
        ocppd, floor = [], []
        for _ in range(self.s.runs):
            floor.append(await self._replay_floor())
            ocppd.append(await self._replay_ocppd())
        return {"n": self.s.replay_n, "ocppd": ocppd, "floor": floor}

    # --- 5: reaction ---------------------------------------------------------------------------

    async def reaction(self) -> dict[str, Any]:
        """Swipe on a plugged EV -> contactor closed, minus the Central System's Authorize time.

        t0: the swipe request is written to the control socket. t1: the daemon's log line
        "sim connector 1: contactor closed" arrives on our pipe (logged synchronously where the
        simulated relay is switched). The Central System's time from receiving Authorize to
        sending its answer is subtracted; the loopback round trip and everything in the daemon
        (authorization, storage of the transaction, the EV's pilot reaction, the safety rules)
        stay in. StartTransaction is not waited for: it goes through the outbox (§3.7).
        """
        proc, notify, d, cp_id = await self._daemon("reaction")
        ctl: workload.Control | None = None
        runs = []
        try:
            await self._booted(cp_id)
            st = self.cs.stations[cp_id]
            ctl = await workload.Control.connect(d / "control.sock")
            await ctl.ask("plug", connector_id=1)
            for i in range(self.s.reaction_runs + 1):  # the first is a warm-up
                tag = f"BENCH{i:04d}"  # a new tag each time: always a real Authorize
                mark = len(proc.lines)
                n_auth = len(st.handled.get("Authorize", []))
                t0 = time.monotonic()
                await ctl.send("swipe", id_tag=tag, connector_id=1)
                closed = await proc.wait_line(CONTACTOR_CLOSED, 10.0, after=mark)
                await ctl.reply()
                t_reply = time.monotonic()
                auths = st.handled.get("Authorize", [])
                if len(auths) != n_auth + 1:
                    raise RuntimeError("the swipe did not make exactly one Authorize")
                cs_s = auths[-1][1] - auths[-1][0]
                if i:
                    runs.append({"swipe_to_contactor_ms": (closed.at - t0 - cs_s) * 1e3,
                                 "raw_ms": (closed.at - t0) * 1e3, "cs_authorize_ms": cs_s * 1e3,
                                 "swipe_reply_ms": (t_reply - t0) * 1e3})
                mark = len(proc.lines)
                await ctl.ask("swipe", id_tag=tag, connector_id=1)  # the same card stops
                await proc.wait_line(CONTACTOR_OPEN, 10.0, after=mark)
                await ctl.ask("unplug", connector_id=1)  # a fresh EV for the next swipe
                await ctl.ask("plug", connector_id=1)
        finally:
            if ctl is not None:
                with contextlib.suppress(Exception):
                    await ctl.close()
            await self._stop(proc, notify)
        return {"runs": runs}
