"""Running the real daemon in tests: in-process (fast, inspectable) or as a process.

In-process runs use ocppd.app.Daemon exactly as `ocppd` does, minus signal handlers, on the
simulator, against the test Central System (tests/csms.py) on loopback.

Below them, the scenes many end-to-end tests share: a charging session (``charge``), its
transactionId (``transaction_id``), a session resumed after a restart (``resumed``), a charging
profile (``charging_profile``) sent and checked (``set_profile``, ``remote_start``). They take
the Central System as an argument and import its messages when called, so a module that does
not need the `ocpp` package can still import this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ocppd import config
from ocppd.app import Daemon
from ocppd.config import Config
from ocppd.hw.base import Hardware

CP_ID = "CP-TEST-1"


def sim_config_text(
    tmp_path: Path,
    url: str,
    *,
    connectors: int = 1,
    ocpp: dict[str, Any] | None = None,
    sim: dict[str, Any] | None = None,
    system: dict[str, Any] | None = None,
    central: dict[str, Any] | None = None,
    hardware: dict[str, Any] | None = None,
    cable: str = "socket",
    db: Path | None = None,
    security: dict[str, Any] | None = None,
) -> str:
    def table(values: dict[str, Any] | None) -> str:
        out = []
        for k, v in (values or {}).items():
            if isinstance(v, bool):
                out.append(f"{k} = {'true' if v else 'false'}")
            elif isinstance(v, str):
                out.append(f'{k} = "{v}"')
            elif isinstance(v, list):
                out.append(f"{k} = [{', '.join(repr(x).replace(chr(39), chr(34)) for x in v)}]")
            else:
                out.append(f"{k} = {v}")
        return "\n".join(out)

    conn = "".join(
        f'\n[[connectors]]\nmax_current_a = 32.0\ncable = "{cable}"\n' for _ in range(connectors)
    )
    cs = {"url": url, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0, "response_timeout_s": 5.0}
    cs.update(central or {})
    o = {"MeterValueSampleInterval": 0, "HeartbeatInterval": 300}
    o.update(ocpp or {})
    return f"""
[charge_point]
id = "{CP_ID}"
vendor = "ocppd"
model = "test"
[central_system]
{table(cs)}
[hardware]
{table({"driver": "sim", **(hardware or {})})}
{conn}
[sim]
{table(sim)}
[storage]
path = "{db or tmp_path / "ocppd.db"}"
[control]
socket = "{tmp_path / "control.sock"}"
[logging]
level = "debug"
[system]
{table({"reboot_command": ["/bin/true"], **(system or {})})}
[security]
{table(security)}
[ocpp]
{table(o)}
"""


def sim_config(tmp_path: Path, url: str, **kw: Any) -> Config:
    path = tmp_path / "ocppd.toml"
    path.write_text(sim_config_text(tmp_path, url, **kw))
    return config.load(path)


def resume_config(tmp_path: Path, url: str, **kw: Any) -> Config:
    """``sim_config`` where a session survives a restart (system.power_loss = "resume")."""
    return sim_config(tmp_path, url, system={"power_loss": "resume"}, **kw)


async def wait_until(
    pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(
    cfg: Config,
    *,
    plugged: tuple[int, ...] = (),
    hardware: Hardware | None = None,
    check_exit: bool = False,
    **daemon_kw: Any,
) -> AsyncIterator[Daemon]:
    """Run the daemon; ``plugged``: connectors whose simulated EV is plugged in before start;
    ``hardware``: the simulated charger to run on (a test's own, watched or wrapped);
    ``check_exit``: the daemon must stop cleanly within 10 s, else the test fails;
    ``daemon_kw``: passed to Daemon (an injected clock)."""
    hw = hardware
    if plugged:
        if hw is None:
            from ocppd.hw.sim import build_sim_hardware

            hw = build_sim_hardware(cfg)
        assert hw.sim is not None
        for cid in plugged:
            hw.sim.plug(cid)
    d = Daemon(cfg, install_signals=False, hardware=hw, **daemon_kw)
    task = asyncio.ensure_future(d.run())
    try:
        await wait_until(
            lambda: task.done() or (d.station is not None and d.station.started),
            what="daemon start",
        )
        if task.done():
            task.result()
        yield d
    finally:
        d.stop_event.set()
        if check_exit:
            await asyncio.wait_for(task, 10)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(task), 10)
        if not task.done():
            task.cancel()


def sim(d: Daemon) -> Any:
    assert d.station is not None
    return d.station.hw.sim


def status(d: Daemon, connector_id: int = 1) -> str:
    assert d.station is not None
    c = d.station.connectors[connector_id]
    return c.status.value if c.status else ""


class DaemonProcess:
    """The daemon as a real process (signals, sd_notify, SIGKILL)."""

    def __init__(self, cfg_path: Path, env: dict[str, str] | None = None) -> None:
        self.cfg_path = cfg_path
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = cfg_path.parent / "ocppd.log"

    def start(self) -> DaemonProcess:
        self._logf = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ocppd", "--config", str(self.cfg_path)],
            stdout=self._logf,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._logf.close()
        return self.proc.returncode

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ocppd.ctl", "--config", str(self.cfg_path), *args],
            capture_output=True,
            text=True,
            timeout=20,
        )


async def wait_status(
    cs: Any, value: str, cid: int = 1, count: int = 1, timeout: float = 10.0
) -> None:
    """Wait until the Central System got ``count`` StatusNotifications ``value`` for ``cid``."""
    await cs.wait_for(
        "StatusNotification",
        lambda p: p["connectorId"] == cid and p["status"] == value,
        count=count,
        timeout=timeout,
    )


async def booted(cs: Any, connectors: int = 1) -> None:
    """Wait for the StatusNotifications of connector 0 and every connector after boot."""
    for cid in range(connectors + 1):
        await cs.wait_for("StatusNotification", lambda p, cid=cid: p["connectorId"] == cid)


# --- scenes many end-to-end tests share --------------------------------------------------------


async def charge(
    cs: Any, d: Daemon, tag: str = "TAG1", *, cid: int = 1, at: int | None = None,
    count: int = 1,
) -> None:
    """The EV plugged into connector ``cid`` and the card ``tag`` presented, until the Central
    System has its ``count``-th Charging for ``cid``. ``at``: the connector named with the card
    (None: none, as from the reader; the station picks)."""
    sim(d).plug(cid)
    assert d.station is not None
    await d.station.swipe(tag, at)
    await wait_status(cs, "Charging", cid=cid, count=count)


async def transaction_id(d: Daemon, cid: int = 1) -> Any:
    """The transactionId of the session on ``cid``, once the Central System has given it."""
    assert d.station is not None
    c = d.station.connectors[cid]
    await wait_until(lambda: c.tx is not None and c.tx.remote_id is not None, what="tx id")
    assert c.tx is not None and c.tx.remote_id is not None
    return int(c.tx.remote_id)  # 1.6: an integer, kept by the station as text


@contextlib.asynccontextmanager
async def resumed(cs: Any, cfg: Config, tag: str = "TAG1", **run_kw: Any) -> AsyncIterator[Daemon]:
    """A session charging on connector 1 (``tag`` presented without a connector), then the
    daemon restarted with the EV still plugged in: the second run. ``cfg`` decides whether the
    session resumes (``resume_config``); ``run_kw`` go to the second ``running``."""
    async with running(cfg) as d:
        await booted(cs)
        await charge(cs, d, tag)
    async with running(cfg, plugged=(1,), **run_kw) as d:
        yield d


def charging_profile(
    pid: int,
    purpose: str,
    limit: float,
    *,
    stack: int = 0,
    tx_id: int | None = None,
    periods: list[dict[str, Any]] | None = None,
    kind: str = "Relative",
    unit: str = "A",
    duration: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A csChargingProfiles (OCPP 1.6 §7.8) limiting to ``limit`` from the start, or by
    ``periods``; ``extra``: fields set as they are (a bad value on purpose)."""
    sched: dict[str, Any] = {
        "chargingRateUnit": unit,
        "chargingSchedulePeriod": periods or [{"startPeriod": 0, "limit": limit}],
    }
    if duration is not None:
        sched["duration"] = duration
    if kind == "Absolute":
        sched["startSchedule"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    p: dict[str, Any] = {
        "chargingProfileId": pid,
        "stackLevel": stack,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": kind,
        "chargingSchedule": sched,
    }
    if tx_id is not None:
        p["transactionId"] = tx_id
    p.update(extra)
    return p


async def set_profile(
    cs: Any, connector_id: int, profile: dict[str, Any], *, expect: str = "Accepted"
) -> None:
    """SetChargingProfile from the Central System; the charge point answers ``expect``."""
    from csms import call

    conf = await cs.call(
        CP_ID, call.SetChargingProfile(connector_id=connector_id, cs_charging_profiles=profile)
    )
    assert conf.status == expect, f"SetChargingProfile: {conf.status}, expected {expect}"


async def remote_start(
    cs: Any, id_tag: str, *, connector_id: int = 1, profile: dict[str, Any] | None = None,
    expect: str = "Accepted",
) -> None:
    """RemoteStartTransaction, with a charging profile if given; answered ``expect``."""
    from csms import call

    conf = await cs.call(CP_ID, call.RemoteStartTransaction(
        id_tag=id_tag, connector_id=connector_id, charging_profile=profile))
    assert conf.status == expect, f"RemoteStartTransaction: {conf.status}, expected {expect}"


class SteppedClock:
    """Monotonic time for the daemon's retry waits that moves only when the daemon sleeps.

    Each ``sleep(delay_s)`` is recorded and advances ``now`` by the delay; with ``auto`` it
    returns at once, else it blocks until the test calls ``release()``. Pass it to ``running``
    as ``monotonic=clock.monotonic, sleep=clock.sleep``.
    """

    def __init__(self, *, auto: bool = True) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.auto = auto
        self._go = asyncio.Semaphore(0)

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, delay_s: float) -> None:
        self.sleeps.append(delay_s)
        if not self.auto:
            await self._go.acquire()
        self.now += max(0.0, delay_s)
        await asyncio.sleep(0)

    def release(self) -> None:
        self._go.release()
