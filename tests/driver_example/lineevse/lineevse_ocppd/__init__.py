"""ocppd driver for LineEVSE: a pilot-and-contactor MCU that speaks lines of text on a serial port.

The board's protocol (9600 baud, one command or report per line):

    Pi -> board   OFFER <connector> <amps>|-     offer a current, or nothing (steady +12 V)
                  CLOSE <connector> 0|1          the contactor may close (1) or must open (0)
                  PING                           "I am alive", at least every second
    board -> Pi   STATE <connector> A|B|C|D|E|F  the pilot state, on every change and on PING
                  FAULT <connector> <name> 0|1   a fault (rcd, estop) appeared or cleared

The firmware opens the contactor and stops offering when it hears nothing for 3 s (its own
watchdog: ocppd's fail-safe obligation 6), and opens by itself on every fault (obligation 5).
The driver, for its part, reports the board as lost when it hears nothing for 3 s, and tells
it again what the core wants (by then: open, no offer) as soon as it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import time
import tty
from dataclasses import dataclass

from ocppd.config import Config
from ocppd.errors import HardwareError
from ocppd.hw.base import Emit, Fault, FaultChanged, Hardware, PilotChanged, PilotState
from ocppd.hw.drivers import Driver, Problems, setting

FAULTS = {"rcd": Fault.GROUND_FAILURE, "estop": Fault.EMERGENCY_STOP}
PING_INTERVAL_S = 1.0
LOST_AFTER_S = 3.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """[hardware.lineevse]"""

    port: str = setting(doc="serial device of the board, e.g. /dev/ttyAMA0")
    baudrate: int = setting(9600, choices=(9600, 19200, 115200))


class LineEvseBoard:
    """ocppd.hw.base.EvseBoard for one LineEVSE board; connectors are the board's numbers."""

    def __init__(self, port: str, baudrate: int, connectors: int) -> None:
        self.port, self.baudrate, self.connectors = port, baudrate, connectors
        self._fd = -1
        self._buf = b""
        self._emit: Emit | None = None
        self._pinger: asyncio.Task[None] | None = None
        # What the core wants per connector: (contactor closed, offer in A or None).
        self._want: dict[int, tuple[bool, float | None]] = {
            cid: (False, None) for cid in range(1, connectors + 1)}
        self._last_heard_s = time.monotonic()
        self._lost = False

    async def start(self, emit: Emit) -> None:
        try:
            self._fd = os.open(self.port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as exc:
            raise HardwareError(f"lineevse {self.port}: {exc.strerror}") from None
        tty.setraw(self._fd)
        speed = getattr(termios, f"B{self.baudrate}")
        attrs = termios.tcgetattr(self._fd)
        attrs[4] = attrs[5] = speed
        termios.tcsetattr(self._fd, termios.TCSANOW, attrs)
        self._emit = emit
        self._last_heard_s = time.monotonic()
        for cid in range(1, self.connectors + 1):  # safe state first (obligation 1)
            self._send(f"CLOSE {cid} 0")
            self._send(f"OFFER {cid} -")
        asyncio.get_running_loop().add_reader(self._fd, self._readable)
        self._pinger = asyncio.create_task(self._ping())  # the board answers with its states

    async def close(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pinger
            self._pinger = None
        if self._fd >= 0:
            for cid in range(1, self.connectors + 1):
                self._send(f"CLOSE {cid} 0")
                self._send(f"OFFER {cid} -")
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
        self._emit = None

    def set_contactor(self, connector_id: int, closed: bool) -> None:
        self._want[connector_id] = (closed, self._want[connector_id][1])
        self._send(f"CLOSE {connector_id} {int(closed)}")

    def set_offer(self, connector_id: int, current_a: float | None) -> None:
        self._want[connector_id] = (self._want[connector_id][0], current_a)
        # This board has no "pause" duty: 0 A is sent as no offer, and the EV pauses all the same.
        self._send(f"OFFER {connector_id} {current_a:.1f}" if current_a else
                   f"OFFER {connector_id} -")

    def set_pilot_error(self, connector_id: int) -> None:
        self.set_contactor(connector_id, False)
        self.set_offer(connector_id, None)

    async def lock(self, connector_id: int, locked: bool) -> bool:
        return True  # no lock on this board

    def has_lock(self, connector_id: int) -> bool:
        return False

    def _send(self, line: str) -> None:
        if self._fd >= 0:
            with contextlib.suppress(BlockingIOError):
                os.write(self._fd, line.encode() + b"\n")

    async def _ping(self) -> None:
        while True:
            self._send("PING")
            await asyncio.sleep(PING_INTERVAL_S)
            if not self._lost and time.monotonic() - self._last_heard_s > LOST_AFTER_S:
                self._lost = True
                self._report_link(lost=True)

    def _report_link(self, *, lost: bool) -> None:
        if self._emit is not None:
            for cid in self._want:
                self._emit(FaultChanged(connector_id=cid, fault=Fault.BOARD_LINK_LOST,
                                        active=lost, detail="no answer" if lost else ""))

    def _readable(self) -> None:
        try:
            self._buf += os.read(self._fd, 256)
        except OSError:
            return
        *lines, self._buf = self._buf.split(b"\n")
        if lines:
            self._last_heard_s = time.monotonic()
        if lines and self._lost:  # back: first what the core wants now (open by then), then news
            self._lost = False
            for cid, (closed, offer) in self._want.items():
                self.set_contactor(cid, closed)
                self.set_offer(cid, offer)
            self._report_link(lost=False)
        for raw in lines:
            self._line(raw.decode(errors="replace").split())

    def _line(self, words: list[str]) -> None:
        if self._emit is None:
            return
        match words:
            case ["STATE", cid, state] if state in PilotState.__members__:
                self._emit(PilotChanged(connector_id=int(cid), state=PilotState(state)))
            case ["FAULT", cid, name, active] if name in FAULTS:
                self._emit(FaultChanged(connector_id=int(cid), fault=FAULTS[name],
                                        active=active == "1", detail=name))


def _check(cfg: Config, options: Options) -> Problems:
    if not options.port.startswith("/dev/"):
        return [("hardware.lineevse.port", f"not a device path: {options.port!r}")]
    return []


def _build(cfg: Config, options: Options) -> Hardware:
    # Meters and card readers could come from ocppd's own tables; this board has neither.
    board = LineEvseBoard(options.port, options.baudrate, len(cfg.connectors))
    return Hardware(board=board, meters={})


DRIVER = Driver(
    name="lineevse",
    summary="LineEVSE pilot/contactor boards on a serial port",
    build=_build,
    options=Options,
    check=_check,
    fail_safe="the board opens and stops offering after 3 s without a line from ocppd",
)
