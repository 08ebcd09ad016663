"""`ocppctl watch`: the local event stream over the real control socket, against the daemon on
the simulator and a real Central System; and the installer commands the web page uses too."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from csms import CentralSystem
from harness import booted, running, sim_config, wait_until

from ocppd import ctl
from ocppd.app import Daemon

ID_TAG = "WATCH0001"


async def ask(d: Daemon, cmd: str, **args: Any) -> Any:
    return await asyncio.to_thread(ctl.call, d.cfg.control.socket, cmd, args, timeout_s=10.0)


class Watcher:
    """``ocppctl watch`` as a real process; lines read with a bound."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    async def line(self, timeout: float = 10.0) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not raw:
            raise AssertionError(f"ocppctl watch ended; lines so far: {self.lines}")
        text = raw.decode().rstrip("\n")
        self.lines.append(text)
        return text

    async def seen(self, pred: Any, timeout: float = 15.0, what: str = "event") -> Any:
        """A line already read that satisfies ``pred``, else the next one: for lines whose order
        the daemon does not promise (a frame and the event of the same moment)."""
        for text in self.lines:
            if pred(text):
                return text
        return await self.until(pred, timeout, what)

    async def until(self, pred: Any, timeout: float = 15.0, what: str = "event") -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"no {what} within {timeout} s; got {self.lines[-20:]}")
            text = await self.line(left)
            if pred(text):
                return text


async def watcher(sock: Path, *args: str) -> AsyncIterator[Watcher]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ocppd.ctl", "--socket", str(sock), "watch", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield Watcher(proc)
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


def _json_kind(kind: str, **match: Any) -> Any:
    def pred(text: str) -> bool:
        ev = json.loads(text)  # every line must be one JSON object
        return ev["kind"] == kind and all(ev.get(k) == v for k, v in match.items())

    return pred


async def test_watch_json_shows_a_session_as_it_happens(tmp_path: Path, cs: CentralSystem) -> None:
    cfg = sim_config(tmp_path, cs.url, sim={"time_factor": 60.0})
    async with running(cfg) as d:
        await booted(cs)
        gen = watcher(cfg.control.socket, "--json")
        w = await gen.__anext__()
        try:
            first = json.loads(await w.line())
            assert first["kind"] == "snapshot"
            assert first["status"]["connectors"][0]["status"] == "Available"

            await ask(d, "plug", connector_id=1)
            await w.until(_json_kind("status", connector_id=1, status="Preparing"),
                          what="Preparing")
            await ask(d, "swipe", id_tag=ID_TAG, connector_id=1)
            started = json.loads(await w.until(_json_kind("session_started", connector_id=1),
                                               what="session_started"))
            assert started["id_tag"].startswith("tag:")  # idTags are personal data
            await w.until(_json_kind("status", connector_id=1, status="Charging"),
                          what="Charging")
            first_reading = json.loads(await w.until(
                lambda t: json.loads(t)["kind"] == "reading" and json.loads(t)["power_w"],
                what="a reading with power"))
            later = json.loads(await w.until(
                lambda t: (json.loads(t)["kind"] == "reading"
                           and (json.loads(t)["energy_wh"] or 0) > (
                               first_reading["energy_wh"] or 0)),
                what="a reading with more energy"))
            assert later["seq"] > first_reading["seq"]

            await ask(d, "stop", connector_id=1)
            stopped = json.loads(await w.until(_json_kind("session_stopped", connector_id=1),
                                               what="session_stopped"))
            assert stopped["reason"] == "local"
            assert stopped["energy_wh"] is not None and stopped["energy_wh"] > 0
            seqs = [json.loads(t)["seq"] for t in w.lines]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        finally:
            await gen.aclose()
        # the watcher went away: nobody left on the bus, no meter reads on its account
        assert d.bus is not None
        await wait_until(lambda: d.bus is not None and d.bus.subscribers == 0,
                         what="subscription closed")


async def test_watch_for_people_and_with_ocpp_frames(tmp_path: Path, cs: CentralSystem) -> None:
    cfg = sim_config(tmp_path, cs.url)
    async with running(cfg) as d:
        await booted(cs)
        gen = watcher(cfg.control.socket, "--frames")
        w = await gen.__anext__()
        try:
            assert "registration accepted" in await w.line()
            await ask(d, "plug", connector_id=1)
            await ask(d, "swipe", id_tag=ID_TAG, connector_id=1)
            line = await w.until(lambda t: "transaction" in t and "started" in t,
                                 what="started line")
            assert ID_TAG not in line  # idTags are personal data
            # the frames may come before the event line: the session starts when it is queued
            await w.seen(lambda t: ">>" in t and "StartTransaction" in t, what="frame out")
            await w.seen(lambda t: "<<" in t and "transactionId" in t, what="frame in")
        finally:
            await gen.aclose()


async def test_installer_commands_keep_the_safety_rules(tmp_path: Path, cs: CentralSystem) -> None:
    cfg = sim_config(tmp_path, cs.url)
    async with running(cfg) as d:
        await booted(cs)
        assert d.station is not None
        assert d.web is None  # the web page is off unless [web] enabled = true
        c = d.station.connectors[1]
        # a local limit above the connector's rating does not raise the offer
        await ask(d, "limit", connector_id=1, limit_a=60)
        await ask(d, "plug", connector_id=1)
        await ask(d, "swipe", id_tag=ID_TAG, connector_id=1)
        await wait_until(lambda: c.contactor_closed, what="charging")
        assert c.offer_a == 32.0
        await ask(d, "limit", connector_id=1, limit_a=10)
        assert c.offer_a == 10.0
        # a meter reading on demand reaches the Central System, as TriggerMessage's would
        await ask(d, "meter", connector_id=1)
        await cs.wait_for("MeterValues", lambda p: p["connectorId"] == 1)
        st = await ask(d, "status")
        reasons = st["connectors"][0]["limits"]
        assert reasons[0] == {"source": "local limit", "limit_a": 10.0}
        # below 6 A: no energy at all (IEC 61851-1), the contactor opens
        await ask(d, "limit", connector_id=1, limit_a=3)
        assert not c.contactor_closed
        await ask(d, "limit", connector_id=1, limit_a=None)
        await wait_until(lambda: c.contactor_closed, what="charging again")
        # unavailable while charging: scheduled, not forced
        assert await ask(d, "availability", connector_id=1, operative=False) == "scheduled"
        assert "stopped" in await ask(d, "stop", connector_id=1)
        assert not c.contactor_closed
        await wait_until(lambda: not c.operative, what="unavailable after the stop")
        with pytest.raises(ctl.CtlError, match="no transaction"):
            await ask(d, "stop", connector_id=1)
        with pytest.raises(ctl.CtlError, match="no connector 7"):
            await ask(d, "unlock", connector_id=7)
        # a card does not start a session on an unavailable connector
        with pytest.raises(ctl.CtlError, match="not available"):
            await ask(d, "swipe", id_tag=ID_TAG, connector_id=1)
        assert not c.contactor_closed


async def test_config_set_rejection_says_what_the_key_takes(
    tmp_path: Path, cs: CentralSystem, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = sim_config(tmp_path, cs.url)
    async with running(cfg):
        await booted(cs)
        argv = ["--socket", str(cfg.control.socket), "config", "set", "HeartbeatInterval", "-5"]
        code = await asyncio.to_thread(ctl.main, argv)
        out = capsys.readouterr().out
        assert code == 1
        assert "HeartbeatInterval: Rejected (expects a whole number" in out


async def test_watch_shows_a_fault_and_its_clearing(tmp_path: Path, cs: CentralSystem) -> None:
    from ocppd.hw.base import Fault

    cfg = sim_config(tmp_path, cs.url)
    async with running(cfg) as d:
        await booted(cs)
        gen = watcher(cfg.control.socket, "--json")
        w = await gen.__anext__()
        try:
            assert json.loads(await w.line())["kind"] == "snapshot"
            assert d.station is not None
            d.station.hw.sim.inject_fault(1, Fault.GROUND_FAILURE, True, "RCD tripped")
            raised = json.loads(await w.until(_json_kind("fault", connector_id=1, active=True),
                                              what="fault raised"))
            assert raised["error"] == "GroundFailure"
            await w.until(_json_kind("status", connector_id=1, status="Faulted"), what="Faulted")
            checks = await ask(d, "checks")
            rcd = next(i for i in checks[0]["items"] if i["name"].startswith("RCD"))
            assert (rcd["value"], rcd["verdict"]) == ("tripped", "problem")
            d.station.hw.sim.inject_fault(1, Fault.GROUND_FAILURE, False)
            cleared = json.loads(await w.until(_json_kind("fault", connector_id=1, active=False),
                                               what="fault cleared"))
            assert cleared["error"] == "GroundFailure"
            checks = await ask(d, "checks")
            rcd = next(i for i in checks[0]["items"] if i["name"].startswith("RCD"))
            assert rcd["verdict"] == "ok"
            # the board's own raw inputs come along (here the simulator's)
            items = {i["name"]: i for i in checks[0]["items"]}
            assert items["pilot high level"]["value"] == "+12.0 V"
            assert items["contactor feedback input"]["value"] == "open"
        finally:
            await gen.aclose()
