"""A register-level EVSE WB / DIN board behind a pseudo-terminal: the peer of hw/evsewb.py.

It speaks Modbus RTU (functions 3, 6 and 16, CRC-16) on the master side of a pty, so the driver
under test uses its real pymodbus serial client through ``ModbusBus``. Behind the registers sits
a small model of the board's MCU and of an EV, with the quirks the driver must cope with:

- register 1000 below the minimum current (2002) gives no PWM; above 80 A the write is refused
  with exception code 3 (illegal data value), as is any write to a read-only register;
- 1004 bit0 ("turn off charging now") stops the PWM and opens the relay while it is set (the
  strict reading: a driver that works with it also works where the bit only opens the relay);
- 2005 bit14 disables the board; bit13 makes the board set bit14 itself when an EV that
  charged is unplugged; bit3 allows charging in state D;
- error bits in 1007 (diode check, ventilation, RCD) put the vehicle state to 5 and open the
  relay at once, as the board's firmware does;
- the board answers nothing while ``silent`` (a cut line, a board without power), and a request
  for another unit id is not answered either, as on a real RS-485 line.

``meters`` holds register images of energy meters on the same line (other unit ids, read-only),
so a test can show the board and a meter sharing one RS-485 bus and its one owner.

The relay closes only when the EV is in C (or D, where allowed), the PWM is on, the off bit is
clear and no error is present. Every relay change is recorded with the registers written before
it, so a test can check that nothing closed without a command that allowed it.
"""

from __future__ import annotations

import asyncio
import os
import time
import tty
from dataclasses import dataclass

from hw.hwpeers import Image, crc16

RO = frozenset({1001, 1002, 1003, 1005, 1006, 1007, 2001, 2009})
WRITABLE_RANGES = ((1000, 1007), (2000, 2017))
DIODE_FAIL, VENT_FAIL, RCD_ERROR = 1 << 1, 1 << 2, 1 << 5


@dataclass(frozen=True, slots=True)
class RelayChange:
    at_s: float
    on: bool
    current_a: int  # register 1000 at that moment
    off_bit: bool


class EvseWbSim:
    def __init__(self, unit_id: int = 1, *, min_current_a: int = 6, boot_current_a: int = 16,
                 cable_a: int = 32, config: int = 1 << 3, firmware: int = 18) -> None:
        self.unit_id = unit_id
        self.regs: dict[int, int] = {a: 0 for a in range(1000, 1011)}
        self.regs.update({a: 0 for a in range(2000, 2018)})
        self.regs[2000] = boot_current_a
        self.regs[2001] = unit_id
        self.regs[2002] = min_current_a
        self.regs[2005] = config
        self.regs[1005] = firmware
        self.regs[1000] = boot_current_a  # 1000 starts from 2000 after power-up
        self.cable_a = cable_a
        self.plugged = False
        self.ev_ready = False  # the EV asks for power when offered (C)
        self.ev_vent = False  # ... in state D
        self.errors = 0  # 1007 error bits injected
        self.charged_this_plug = False
        self.silent = False
        self.meters: dict[int, Image] = {}
        self.requests = 0
        self.writes: list[tuple[int, int]] = []
        self.relay_log: list[RelayChange] = []
        self._relay = False
        self._update()
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self._buf = b""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.master, self._on_readable)

    # --- the EV and the installer's hands ---------------------------------------------------------

    def plug(self, ready: bool = True) -> None:
        self.plugged, self.ev_ready, self.charged_this_plug = True, ready, False
        self._update()

    def unplug(self) -> None:
        self.plugged = self.ev_ready = self.ev_vent = False
        self._update()

    def set_ready(self, ready: bool, *, ventilation: bool = False) -> None:
        self.ev_ready, self.ev_vent = ready, ventilation
        self._update()

    def set_error(self, bits: int, on: bool = True) -> None:
        self.errors = (self.errors | bits) if on else (self.errors & ~bits)
        self._update()

    def power_cycle(self) -> None:
        """The board restarts: volatile registers come back from their EEPROM defaults."""
        self.regs[1000] = self.regs[2000]
        self.regs[1004] = 0
        self._update()

    # --- what the board does now --------------------------------------------------------------

    @property
    def relay_on(self) -> bool:
        return self._relay

    @property
    def pwm_on(self) -> bool:
        return self.regs[1006] == 2

    @property
    def offered_a(self) -> int:
        return self.regs[1001]

    def _update(self) -> None:
        r = self.regs
        disabled = bool(r[2005] & (1 << 14))
        off = bool(r[1004] & 1)
        amps = r[1000]
        errors = self.errors
        if self.plugged and self.ev_ready and self.ev_vent and not r[2005] & (1 << 3):
            errors |= VENT_FAIL
        pwm = (not disabled and not off and not errors and amps >= r[2002] and amps > 0
               and self.plugged)
        r[1006] = 2 if pwm else 1
        r[1001] = amps if pwm else 0
        if errors:
            vehicle = 5
        elif not self.plugged:
            vehicle = 1
        elif pwm and self.ev_ready:
            vehicle = 4 if self.ev_vent else 3
        else:
            vehicle = 2
        if r[1002] in (3, 4) and vehicle == 1 and self.charged_this_plug and r[2005] & (1 << 13):
            r[2005] |= 1 << 14  # "disable EVSE after charge"
        r[1002] = vehicle
        r[1003] = self.cable_a if self.plugged else 0
        relay = vehicle in (3, 4) and pwm
        r[1007] = errors | (1 if relay else 0)
        if relay:
            self.charged_this_plug = True
        if relay != self._relay:
            self._relay = relay
            self.relay_log.append(RelayChange(time.monotonic(), relay, amps, off))

    # --- Modbus RTU -----------------------------------------------------------------------------

    def _on_readable(self) -> None:
        try:
            self._buf += os.read(self.master, 512)
        except OSError:
            return
        while len(self._buf) >= 8:
            fc = self._buf[1]
            size = 9 + self._buf[6] if fc == 16 and len(self._buf) >= 7 else 8
            if len(self._buf) < size:
                return
            frame, self._buf = self._buf[:size], self._buf[size:]
            if crc16(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
                self._buf = b""  # resynchronise, as a slave does after a silent interval
                return
            self.requests += 1
            if self.silent:
                continue
            if frame[0] == self.unit_id:
                self._answer(self._pdu(frame))
            elif frame[0] in self.meters:
                self._answer(self._meter_pdu(frame))

    def _meter_pdu(self, frame: bytes) -> bytes:
        unit, fc = frame[0], frame[1]
        addr, count = int.from_bytes(frame[2:4], "big"), int.from_bytes(frame[4:6], "big")
        regs = self.meters[unit].get(fc, {})
        if fc not in (3, 4) or any(a not in regs for a in range(addr, addr + count)):
            return bytes([unit, fc | 0x80, 2])
        body = b"".join(regs[a].to_bytes(2, "big") for a in range(addr, addr + count))
        return bytes([unit, fc, len(body)]) + body

    def _pdu(self, frame: bytes) -> bytes:
        unit, fc = frame[0], frame[1]
        addr = int.from_bytes(frame[2:4], "big")

        def error(code: int) -> bytes:
            return bytes([unit, fc | 0x80, code])

        if fc == 3:
            count = int.from_bytes(frame[4:6], "big")
            if any(a not in self.regs for a in range(addr, addr + count)):
                return error(2)
            body = b"".join(self.regs[a].to_bytes(2, "big") for a in range(addr, addr + count))
            return bytes([unit, 3, len(body)]) + body
        if fc in (6, 16):
            if fc == 6:
                values = [int.from_bytes(frame[4:6], "big")]
            else:
                count = int.from_bytes(frame[4:6], "big")
                values = [int.from_bytes(frame[7 + 2 * i:9 + 2 * i], "big") for i in range(count)]
            for i, v in enumerate(values):
                a = addr + i
                if a in RO or not any(lo <= a <= hi for lo, hi in WRITABLE_RANGES):
                    return error(2)
                if a == 1000 and v > 80:
                    return error(3)
            for i, v in enumerate(values):
                self.regs[addr + i] = v
                self.writes.append((addr + i, v))
            self._update()
            return frame[:6]  # both echo unit, function, address and value or count
        return error(1)

    def _answer(self, pdu: bytes) -> None:
        frame = pdu + crc16(pdu).to_bytes(2, "little")
        os.write(self.master, frame)

    def close(self) -> None:
        self._loop.remove_reader(self.master)
        os.close(self.master)
        os.close(self.slave)
