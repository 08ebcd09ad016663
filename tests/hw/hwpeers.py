"""Real peers for the hardware tests: a pymodbus TCP server, a hand-written RTU responder on a
pseudo-terminal, and serial ports that can be unplugged and plugged back (a repointed symlink).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from pathlib import Path
from typing import Any

from ocppd.hw.metermap import MeterMap

Image = dict[int, dict[int, int]]  # function code -> address -> register word


def image_for(meter_map: MeterMap, values: dict[str, float], *,
              nan: tuple[str, ...] = ()) -> Image:
    """The register image a meter with these readings would hold, built from its own map."""
    image: Image = {3: {}, 4: {}}
    for qty, reg in meter_map.registers.items():
        words = reg.encode_nan() if qty in nan else reg.encode(values[qty])
        for i, w in enumerate(words):
            image[reg.function][reg.address + i] = w
    return image


def _blocks(regs: dict[int, int]) -> list[tuple[int, list[int]]]:
    out: list[tuple[int, list[int]]] = []
    for addr in sorted(regs):
        if out and out[-1][0] + len(out[-1][1]) == addr:
            out[-1][1].append(regs[addr])
        else:
            out.append((addr, [regs[addr]]))
    return out


class TcpMeterServer:
    """A pymodbus Modbus-TCP server on loopback holding one image per unit id."""

    def __init__(self, images: dict[int, Image]) -> None:
        self.images = images
        self.port = 0
        self._server: Any = None
        self._task: asyncio.Task[Any] | None = None

    def _context(self) -> Any:
        try:  # pymodbus >= 3.10 (the SimData API; the old datastore is deprecated there)
            from pymodbus.simulator import DataType, SimData, SimDevice

            def sim(regs: dict[int, int]) -> list[Any]:
                blocks = _blocks(regs) or [(0, [0])]
                return [SimData(a, values=v, datatype=DataType.REGISTERS) for a, v in blocks]

            bits = [SimData(0, datatype=DataType.BITS)]
            return [SimDevice(id=u, simdata=(bits, bits, sim(img[3]), sim(img[4])))
                    for u, img in self.images.items()]
        except ImportError:  # pymodbus 3.0 .. 3.9: the legacy datastore
            from pymodbus.datastore import (
                ModbusServerContext,
                ModbusSlaveContext,
                ModbusSparseDataBlock,
            )

            # The context reads register N from block address N + 1 (3.0 without zero_mode, and
            # always from 3.8 on, which dropped zero_mode), so the image is stored one up.
            def block(regs: dict[int, int]) -> Any:
                return ModbusSparseDataBlock({a + 1: w for a, w in (regs or {0: 0}).items()})

            slaves = {u: ModbusSlaveContext(hr=block(img[3]), ir=block(img[4]))
                      for u, img in self.images.items()}
            return ModbusServerContext(slaves=slaves, single=False)

    async def start(self) -> None:
        try:
            from pymodbus.server import ModbusTcpServer
        except ImportError:  # pragma: no cover - pymodbus 3.0
            from pymodbus.server.async_io import ModbusTcpServer
        self._server = ModbusTcpServer(self._context(), address=("127.0.0.1", self.port))
        self._task = asyncio.create_task(self._server.serve_forever())
        for _ in range(200):  # bounded wait for the listening socket
            transport = getattr(self._server, "transport", None) or getattr(
                self._server, "server", None)
            if transport is not None and getattr(transport, "sockets", None):
                self.port = transport.sockets[0].getsockname()[1]
                return
            await asyncio.sleep(0.01)
        raise RuntimeError("modbus server did not start")

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def crc16(data: bytes) -> int:
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


class RtuResponder:
    """A Modbus RTU slave (several unit ids) on the master side of a pseudo-terminal.

    Unknown unit ids get no answer, as on a real RS-485 line; ``silent`` mutes every unit
    (a meter that lost power). ``requests`` counts requests seen.
    """

    def __init__(self, images: dict[int, Image]) -> None:
        self.images = images
        self.silent = False
        self.requests = 0
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self._buf = b""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.master, self._on_readable)

    def _on_readable(self) -> None:
        try:
            self._buf += os.read(self.master, 256)
        except OSError:
            return
        while len(self._buf) >= 8:
            frame, self._buf = self._buf[:8], self._buf[8:]
            if crc16(frame[:6]) != int.from_bytes(frame[6:8], "little"):
                self._buf = b""  # resynchronise, as a slave does after a silent interval
                return
            self.requests += 1
            unit, fc = frame[0], frame[1]
            addr, count = int.from_bytes(frame[2:4], "big"), int.from_bytes(frame[4:6], "big")
            if self.silent or unit not in self.images:
                continue
            regs = self.images[unit].get(fc, {})
            if fc not in (3, 4) or any(a not in regs for a in range(addr, addr + count)):
                pdu = bytes([unit, fc | 0x80, 2])
            else:
                body = b"".join(regs[a].to_bytes(2, "big") for a in range(addr, addr + count))
                pdu = bytes([unit, fc, len(body)]) + body
            os.write(self.master, pdu + crc16(pdu).to_bytes(2, "little"))

    def close(self) -> None:
        self._loop.remove_reader(self.master)
        os.close(self.master)
        os.close(self.slave)


class PluggablePort:
    """A serial device path (a symlink we control) whose pty can be unplugged and replaced."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "ttyREADER"
        self.master = -1
        self.slave = -1
        self.plug()

    def plug(self) -> None:
        """A new pty appears at the same path (a USB reader plugged back in)."""
        master, slave = os.openpty()
        tty.setraw(slave)
        tmp = self.path.with_suffix(".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(self.path)  # atomic repoint
        old = (self.master, self.slave)
        self.master, self.slave = master, slave
        for fd in old:
            if fd >= 0:
                os.close(fd)  # the old device goes away: its reader sees EIO / hang-up

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            if fd >= 0:
                os.close(fd)
        self.master = self.slave = -1
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
