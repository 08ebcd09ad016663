"""RFID card readers on a serial port: RDM6300 (125 kHz) and PN532 over HSU (13.56 MHz).

Each reader runs a thread doing blocking pyserial reads with a short timeout (so close() is
prompt), hands card ids to the loop with ``call_soon_threadsafe``, and survives the port going
away: on SerialException/OSError it closes the port and reopens the same path with a growing
backoff, so a USB-serial reader unplugged and plugged back in is picked up again.

Frame parsing is pure (``Rdm6300Parser``, ``Pn532Parser``) and tested on its own; garbled
frames are dropped and counted. idTag = uppercase hex of the UID, byte 0 first (OCPP 1.6 §3.9).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import serial

from ocppd.config import RfidConfig
from ocppd.hw.base import CardCallback

log = logging.getLogger(__name__)

STX, ETX = 0x02, 0x03
HEX = frozenset(b"0123456789ABCDEFabcdef")
RDM6300_BAUD = 9600  # 8N1, transmit only
PN532_BAUD = 115200  # HSU default (PN532 user manual UM0701-02)
READ_TIMEOUT_S = 0.1


class Rdm6300Parser:
    """RDM6300 frame: STX, 10 ASCII hex (2 version + 8 tag), 2 ASCII hex XOR checksum, ETX."""

    FRAME_LEN = 14

    def __init__(self, id_format: str = "uid") -> None:
        self.id_format = id_format
        self.frames = 0
        self.garbled = 0
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        out: list[str] = []
        while True:
            start = self._buf.find(STX)
            if start < 0:
                self._buf.clear()
                return out
            del self._buf[:start]
            nxt = self._buf.find(STX, 1)
            if 0 < nxt < self.FRAME_LEN:  # a new frame began before this one ended
                self.garbled += 1
                del self._buf[:nxt]
                continue
            if len(self._buf) < self.FRAME_LEN:
                return out
            frame = bytes(self._buf[:self.FRAME_LEN])
            del self._buf[:self.FRAME_LEN]
            tag = self._check(frame)
            if tag is None:
                self.garbled += 1
            else:
                self.frames += 1
                out.append(tag if self.id_format == "full" else tag[2:])

    @staticmethod
    def _check(frame: bytes) -> str | None:
        body = frame[1:13]
        if frame[13] != ETX or not all(b in HEX for b in body):
            return None
        data = bytes.fromhex(body[:10].decode())
        xor = 0
        for b in data:
            xor ^= b
        if xor != int(body[10:12], 16):
            return None
        return body[:10].decode().upper()


# --- PN532 --------------------------------------------------------------------------------------
# NXP UM0701-02 §6.2: normal information frame
#   00 | 00 FF | LEN | LCS | TFI | PD0..PDn | DCS | 00, LEN+LCS = 0, TFI+PD0..PDn+DCS = 0 (mod 256)
# TFI D4 host->PN532, D5 PN532->host; ACK = 00 00 FF 00 FF 00.
TFI_HOST, TFI_PN532 = 0xD4, 0xD5
ACK = bytes.fromhex("0000FF00FF00")
WAKEUP = bytes([0x55, 0x55]) + bytes(14)  # HSU wake-up: long preamble, then the command
CMD_SAM_CONFIGURATION = 0x14
CMD_RF_CONFIGURATION = 0x32
CMD_IN_LIST_PASSIVE_TARGET = 0x4A


def pn532_frame(command: int, data: bytes = b"") -> bytes:
    body = bytes([TFI_HOST, command]) + data
    length = len(body)
    return (bytes([0x00, 0x00, 0xFF, length, (-length) & 0xFF]) + body
            + bytes([(-sum(body)) & 0xFF, 0x00]))


class Pn532Parser:
    """Splits PN532 output into ACKs and checked response payloads (command code first)."""

    def __init__(self) -> None:
        self.garbled = 0
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes | None]:
        """Returns items: None for an ACK, or the bytes after TFI (response code, data...)."""
        self._buf += data
        out: list[bytes | None] = []
        while True:
            start = self._buf.find(b"\x00\xff")
            if start < 0:
                del self._buf[:max(0, len(self._buf) - 1)]
                return out
            del self._buf[:start]
            if len(self._buf) < 4:
                return out
            length, lcs = self._buf[2], self._buf[3]
            if length == 0 and lcs == 0xFF:  # ACK
                del self._buf[:4]
                out.append(None)
                continue
            if (length + lcs) & 0xFF or length < 2:
                self.garbled += 1
                del self._buf[:2]
                continue
            if len(self._buf) < 4 + length + 1:
                return out
            body = bytes(self._buf[4:4 + length])
            dcs = self._buf[4 + length]
            del self._buf[:4 + length + 1]
            if (sum(body) + dcs) & 0xFF or body[0] != TFI_PN532:
                self.garbled += 1
                continue
            out.append(body[1:])


def parse_in_list_passive_target(payload: bytes) -> str | None:
    """InListPassiveTarget (106 kbps type A) response -> UID hex, None when no target."""
    # D5 4B | NbTg | Tg SENS_RES(2) SEL_RES NFCIDLength NFCID1...
    if len(payload) < 2 or payload[0] != CMD_IN_LIST_PASSIVE_TARGET + 1 or payload[1] == 0:
        return None
    if len(payload) < 7:
        return None
    uid_len = payload[6]
    uid = payload[7:7 + uid_len]
    if uid_len == 0 or len(uid) != uid_len:
        return None
    return uid.hex().upper()


# --- the reader thread --------------------------------------------------------------------------


class SerialCardReader:
    """Common thread, reopen and debounce logic. Subclasses implement ``_session``."""

    default_baud = RDM6300_BAUD

    def __init__(self, cfg: RfidConfig, *, reopen_min_s: float = 0.5,
                 reopen_max_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.baudrate = cfg.baudrate or self.default_baud
        self.reopen_min_s = reopen_min_s
        self.reopen_max_s = reopen_max_s
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._port: Any = None
        self._last_seen: dict[str, float] = {}
        self._on_card: CardCallback | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cond = threading.Condition()
        self.opens = 0  # times the port was opened (tests, diagnostics)
        self.cards = 0

    @property
    def garbled(self) -> int:
        raise NotImplementedError

    async def start(self, on_card: CardCallback) -> None:
        self._on_card, self._loop = on_card, asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"ocppd-rfid-{self.cfg.type}")
        self._thread.start()

    async def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)
            self._thread = None

    def wait_opened(self, count: int, timeout_s: float) -> bool:
        """Block until the port was opened ``count`` times in total (tests, diagnostics)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.opens >= count, timeout_s)

    def _run(self) -> None:
        delay_s = self.reopen_min_s
        failing = False
        while not self._stop.is_set():
            try:
                port = serial.Serial(self.cfg.port, self.baudrate, timeout=READ_TIMEOUT_S)
            except (serial.SerialException, OSError) as exc:
                if not failing:
                    log.warning("card reader %s: cannot open: %s", self.cfg.port, exc)
                failing = True
                self._stop.wait(delay_s)
                delay_s = min(delay_s * 2, self.reopen_max_s)
                continue
            if failing:
                log.warning("card reader %s: available again", self.cfg.port)
            failing = False
            delay_s = self.reopen_min_s
            with self._cond:
                self.opens += 1
                self._cond.notify_all()
            try:
                self._session(port)
            except (serial.SerialException, OSError) as exc:
                log.warning("card reader %s: lost: %s", self.cfg.port, exc)
                failing = True
            finally:
                port.close()
            self._stop.wait(self.reopen_min_s if failing else 0)

    def _session(self, port: Any) -> None:
        raise NotImplementedError

    def _card(self, id_tag: str) -> None:
        """Debounce: one presentation per card; a card held to the reader counts once."""
        now = self._clock()
        last = self._last_seen.get(id_tag)
        self._last_seen[id_tag] = now
        if last is not None and now - last < self.cfg.debounce_s:
            return
        self.cards += 1
        if self._loop is not None and self._on_card is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._on_card, id_tag)


class Rdm6300Reader(SerialCardReader):
    default_baud = RDM6300_BAUD

    def __init__(self, cfg: RfidConfig, **kw: Any) -> None:
        super().__init__(cfg, **kw)
        self.parser = Rdm6300Parser(cfg.id_format)

    @property
    def garbled(self) -> int:
        return self.parser.garbled

    def _session(self, port: Any) -> None:
        while not self._stop.is_set():
            data = port.read(max(1, port.in_waiting))
            for tag in self.parser.feed(data):
                self._card(tag)


class Pn532Reader(SerialCardReader):
    default_baud = PN532_BAUD
    RESPONSE_TIMEOUT_S = 1.0
    POLL_INTERVAL_S = 0.2

    def __init__(self, cfg: RfidConfig, **kw: Any) -> None:
        super().__init__(cfg, **kw)
        self.parser = Pn532Parser()

    @property
    def garbled(self) -> int:
        return self.parser.garbled

    def _command(self, port: Any, command: int, data: bytes, *, wake: bool = False
                 ) -> bytes | None:
        """Send one command, wait for ACK and the response. None on timeout."""
        port.write((WAKEUP if wake else b"") + pn532_frame(command, data))
        acked = False
        deadline = self._clock() + self.RESPONSE_TIMEOUT_S
        while not self._stop.is_set() and self._clock() < deadline:
            for item in self.parser.feed(port.read(max(1, port.in_waiting))):
                if item is None:
                    acked = True
                elif acked and item[:1] == bytes([command + 1]):
                    return item
        return None

    def _session(self, port: Any) -> None:
        ready = False
        while not self._stop.is_set():
            if not ready:
                # SAMConfiguration: normal mode, no IRQ; RFConfiguration MaxRetries: give up a
                # passive activation after 2 tries so InListPassiveTarget answers "no card".
                ready = (self._command(port, CMD_SAM_CONFIGURATION, b"\x01\x14\x01", wake=True)
                         is not None and
                         self._command(port, CMD_RF_CONFIGURATION, b"\x05\xff\x01\x02")
                         is not None)
                if not ready:
                    self._stop.wait(self.POLL_INTERVAL_S)
                    continue
            reply = self._command(port, CMD_IN_LIST_PASSIVE_TARGET, b"\x01\x00")
            if reply is None:
                ready = False  # the PN532 stopped answering: wake and configure it again
                continue
            uid = parse_in_list_passive_target(reply)
            if uid is not None:
                self._card(uid)
            self._stop.wait(self.POLL_INTERVAL_S)


def make_reader(cfg: RfidConfig) -> SerialCardReader:
    if cfg.type == "pn532":
        return Pn532Reader(cfg)
    return Rdm6300Reader(cfg)
