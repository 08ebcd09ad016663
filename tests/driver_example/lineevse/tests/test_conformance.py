"""Run ocppd's conformance kit against the LineEVSE driver and a simulated board on a pty.

    python -m pytest tests/driver_example/lineevse/tests    (ocppd and this package importable)
"""

from __future__ import annotations

import asyncio
import os
import tty
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from lineevse_ocppd import LineEvseBoard

from ocppd.hw import conformance


class FakeBoard:
    """The board's firmware, as far as the driver can tell, on the far side of a pty."""

    WATCHDOG_S = 3.0

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self.offer: float | None = None
        self.may_close = False
        self.plugged = self.ready = False
        self.faults: set[str] = set()
        self.deaf = False  # the line is cut: nothing goes either way
        self.lines_heard = 0
        self._buf = b""
        self._state = ""
        self._loop = asyncio.get_running_loop()
        self._watchdog: asyncio.TimerHandle | None = None
        self._loop.add_reader(self.master, self._readable)

    @property
    def relay_on(self) -> bool:
        return self.may_close and self.state in ("C", "D") and not self.faults

    @property
    def state(self) -> str:
        if self.faults and "estop" not in self.faults:
            return "F" if self.plugged else "A"
        if not self.plugged:
            return "A"
        return "C" if self.ready and (self.offer or 0) >= 6 else "B"

    def changed(self) -> None:
        if self.state != self._state:
            self._state = self.state
            self.say(f"STATE 1 {self.state}")

    def say(self, line: str) -> None:
        if not self.deaf:
            os.write(self.master, line.encode() + b"\n")

    def fault(self, name: str, active: bool) -> None:
        if active:
            self.faults.add(name)
            self.may_close = False  # the firmware opens by itself
        else:
            self.faults.discard(name)
        self.say(f"FAULT 1 {name} {int(active)}")
        self.changed()

    def _expired(self) -> None:  # nothing from the Pi for WATCHDOG_S: fail safe
        self.may_close, self.offer = False, None
        self.changed()

    def _readable(self) -> None:
        data = os.read(self.master, 256)
        if self.deaf:
            return
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            self.lines_heard += 1
            if self._watchdog is not None:
                self._watchdog.cancel()
            self._watchdog = self._loop.call_later(self.WATCHDOG_S, self._expired)
            match line.decode().split():
                case ["OFFER", _, "-"]:
                    self.offer = None
                case ["OFFER", _, amps]:
                    self.offer = float(amps)
                case ["CLOSE", _, flag]:
                    self.may_close = flag == "1"
                case ["PING"]:
                    self.say(f"STATE 1 {self.state}")
            self.changed()

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._loop.remove_reader(self.master)
        os.close(self.master)
        os.close(self.slave)


class LineEvseRig:
    self_switching = False
    fault_names = ("rcd", "estop")
    has_link = True
    connector_ids = (1,)

    def __init__(self) -> None:
        self.fake = FakeBoard()
        self.board = LineEvseBoard(self.fake.port, 9600, 1)

    def plug(self, connector_id: int, *, ready: bool) -> None:
        self.fake.plugged, self.fake.ready = True, ready
        self.fake.changed()

    def set_ready(self, connector_id: int, ready: bool) -> None:
        self.fake.ready = ready
        self.fake.changed()

    def unplug(self, connector_id: int) -> None:
        self.fake.plugged = self.fake.ready = False
        self.fake.changed()

    def contactor_closed(self, connector_id: int) -> bool:
        return self.fake.relay_on

    def offered_a(self, connector_id: int) -> float | None:
        return self.fake.offer

    def inject_fault(self, connector_id: int, name: str, active: bool) -> None:
        self.fake.fault(name, active)

    def cut_link(self) -> None:
        self.fake.deaf = True

    def restore_link(self) -> None:
        self.fake.deaf = False

    async def settle(self) -> None:
        target = self.fake.lines_heard + 1  # one more PING: everything before it arrived
        await conformance.eventually("board heard us", lambda: self.fake.lines_heard >= target,
                                     3.0)


@pytest.fixture
async def rig() -> AsyncIterator[LineEvseRig]:
    r = LineEvseRig()
    yield r
    await r.board.close()
    r.fake.close()


@pytest.mark.parametrize("check", conformance.CHECKS, ids=conformance.check_id)
async def test_lineevse_conforms(rig: LineEvseRig,
                                 check: Callable[[LineEvseRig], Awaitable[None]]) -> None:
    await check(rig)
