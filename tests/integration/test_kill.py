"""The kill test: SIGKILL the real daemon at random moments over many sessions while the link
flaps, then check from the Central System's side that nothing was lost or duplicated beyond
what OCPP allows (issue: nothing is ever lost).

A message whose CALLRESULT never arrived may be sent again, so the Central System can see the
same StartTransaction twice (and hand out two ids); the checks therefore group messages by
their payload and accept any id the Central System gave for that start.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from csms import CentralSystem
from harness import DaemonProcess, sim_config_text
from link.faultproxy import FaultProxy, Mode

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

ROUNDS = 14


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def ctl(d: DaemonProcess, *args: str) -> str:
    r = await asyncio.to_thread(d.ctl, *args)
    return r.stdout + r.stderr if r.returncode == 0 else ""


async def wait_socket(d: DaemonProcess, path: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert d.proc is not None
        if d.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(
                f"daemon did not open its control socket: {d.log.read_text()[-2000:]}"
            )
        await asyncio.sleep(0.02)


async def flap(proxy: FaultProxy, rng: random.Random, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.sleep(rng.uniform(0.3, 1.2))
        await proxy.set_mode(rng.choice([Mode.PASS, Mode.PASS, Mode.RESET, Mode.REFUSE]))
    await proxy.set_mode(Mode.PASS)


async def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    cs: CentralSystem, tmp_path: Path
) -> None:
    rng = random.Random(20261123)
    async with FaultProxy(cs.port) as proxy:
        cfg = tmp_path / "ocppd.toml"
        cfg.write_text(
            sim_config_text(
                tmp_path,
                f"ws://{proxy.address}/ocpp",
                ocpp={
                    "MeterValueSampleInterval": 1,
                    "AllowOfflineTxForUnknownId": True,
                    "LocalAuthorizeOffline": True,
                    "MeterValuesSampledData": "Energy.Active.Import.Register",
                    "TransactionMessageRetryInterval": 1,
                },
                sim={"time_factor": 60.0},
                central={"reconnect_min_s": 0.1, "reconnect_max_s": 1.0, "response_timeout_s": 2.0},
            )
        )
        sock = tmp_path / "control.sock"
        stop_flapping = asyncio.Event()
        flapper = asyncio.ensure_future(flap(proxy, rng, stop_flapping))
        started_tags: list[str] = []
        try:
            for round_no in range(ROUNDS):
                d = DaemonProcess(cfg).start()
                try:
                    await wait_socket(d, sock)
                    tag = f"K{round_no:02d}"
                    await ctl(d, "plug", "1")
                    out = await ctl(d, "swipe", tag)
                    if "started" in out:
                        started_tags.append(tag)
                    await asyncio.sleep(rng.uniform(0.2, 2.0))
                    if rng.random() < 0.5:  # half the sessions end normally, then maybe a kill
                        await ctl(d, "swipe", tag)
                        await ctl(d, "unplug", "1")
                        await asyncio.sleep(rng.uniform(0.0, 0.5))
                    d.signal(signal.SIGKILL)
                    await asyncio.to_thread(d.wait, 10)
                finally:
                    d.stop()
                    sock.unlink(missing_ok=True)
            stop_flapping.set()
            await flapper
            # a last, undisturbed run delivers whatever is still queued
            d = DaemonProcess(cfg).start()
            try:
                await wait_socket(d, sock)
                deadline = time.monotonic() + 60
                while True:
                    status = await ctl(d, "status", "--json")
                    if '"outbox": 0' in status and '"registration": "accepted"' in status:
                        break
                    assert time.monotonic() < deadline, f"outbox not drained: {status}"
                    await asyncio.sleep(0.2)
            finally:
                assert d.stop() == 0
        finally:
            stop_flapping.set()
            if not flapper.done():
                await flapper

    check_central_system_view(cs, started_tags)


def check_central_system_view(cs: CentralSystem, started_tags: list[str]) -> None:
    # StartTransaction.req -> the ids the Central System gave it (more than one if resent)
    ids_of_start: dict[tuple[str, str], list[int]] = defaultdict(list)
    pending: dict[str, tuple[str, str]] = {}
    order: list[tuple[str, Any]] = []
    for m in cs.messages:
        if m.direction == "in" and m.action == "StartTransaction":
            key = (m.payload["idTag"], m.payload["timestamp"])
            pending["start"] = key
            order.append(("start", key))
        elif m.direction == "out" and m.action == "StartTransaction.conf" and "start" in pending:
            ids_of_start[pending.pop("start")].append(m.payload["transactionId"])
        elif m.direction == "in" and m.action in ("StopTransaction", "MeterValues"):
            order.append((m.action, m.payload))

    sessions = list(dict.fromkeys(k for kind, k in order if kind == "start"))
    # every session the daemon reported as started reached the Central System exactly once
    tags = [tag for tag, _ in sessions]
    assert sorted(tags) == sorted(set(tags)), f"a session started twice: {tags}"
    assert set(started_tags) <= set(tags), f"lost sessions: {set(started_tags) - set(tags)}"

    tx_of: dict[int, tuple[str, str]] = {tx: key for key, txs in ids_of_start.items() for tx in txs}
    stops: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    samples: dict[tuple[str, str], list[tuple[datetime, float]]] = defaultdict(list)
    seen_start: set[tuple[str, str]] = set()
    for kind, item in order:
        if kind == "start":
            seen_start.add(item)
            continue
        tx_id = item.get("transactionId")
        assert tx_id is not None and tx_id != -1, f"{kind} without a real transactionId: {item}"
        assert tx_id in tx_of, f"{kind} for an unknown transaction {tx_id}"
        key = tx_of[tx_id]
        assert key in seen_start, f"{kind} before its StartTransaction"
        if kind == "StopTransaction":
            stops[key].append(item)
        else:
            for mv in item["meterValue"]:
                for sv in mv["sampledValue"]:
                    samples[key].append((ts(mv["timestamp"]), float(sv["value"])))

    starts_by_key = {
        (m.payload["idTag"], m.payload["timestamp"]): m.payload
        for m in cs.messages
        if m.direction == "in" and m.action == "StartTransaction"
    }
    previous_stop = -1.0
    for key in sessions:
        distinct_stops = {(s["timestamp"], s["meterStop"], s["reason"]) for s in stops[key]}
        assert len(distinct_stops) == 1, f"session {key}: stops {distinct_stops}"
        ((_, meter_stop, reason),) = distinct_stops
        meter_start = starts_by_key[key]["meterStart"]
        assert meter_stop >= meter_start, key
        assert meter_start >= previous_stop, "the register went backwards between sessions"
        previous_stop = meter_stop
        assert reason in ("Local", "PowerLoss"), reason
        values = [v for _, v in sorted(set(samples[key]))]
        assert values == sorted(values), f"session {key}: meter values not monotonic"
        assert all(meter_start <= v <= meter_stop for v in values), key
