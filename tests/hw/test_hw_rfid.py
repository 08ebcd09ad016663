"""Card readers against real pseudo-terminals: RDM6300 and PN532 (HSU) frames."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hwpeers import PluggablePort

from ocppd.config import RfidConfig
from ocppd.hw.base import CardReader
from ocppd.hw.rfid import (
    Pn532Parser,
    Pn532Reader,
    Rdm6300Parser,
    Rdm6300Reader,
    make_reader,
    parse_in_list_passive_target,
)


def rdm_frame(ten_hex: str, *, bad_checksum: bool = False) -> bytes:
    xor = 0
    for b in bytes.fromhex(ten_hex):
        xor ^= b
    if bad_checksum:
        xor ^= 0xFF
    return b"\x02" + ten_hex.encode() + f"{xor:02X}".encode() + b"\x03"


# --- pure parsers --------------------------------------------------------------------------------


def test_rdm6300_parser_accepts_valid_and_counts_garbled_frames() -> None:
    p = Rdm6300Parser("uid")
    good = rdm_frame("1A0012AB3C")
    stream = (b"noise" + good + rdm_frame("1A0012AB3C", bad_checksum=True)
              + good[:7] + rdm_frame("0500FFEE11") + b"\x02ZZZZZZZZZZZZ\x03")
    tags: list[str] = []
    for i in range(0, len(stream), 5):  # arrives in pieces
        tags += p.feed(stream[i:i + 5])
    assert tags == ["0012AB3C", "00FFEE11"]
    assert p.garbled == 3  # bad checksum, truncated, not hex
    assert Rdm6300Parser("full").feed(good) == ["1A0012AB3C"]


def test_pn532_parser_checks_lcs_and_dcs() -> None:
    def frame(body: bytes, *, lcs_off: int = 0, dcs_off: int = 0) -> bytes:
        n = len(body)
        return (bytes([0, 0, 0xFF, n, ((-n) + lcs_off) & 0xFF]) + body
                + bytes([((-sum(body)) + dcs_off) & 0xFF, 0]))

    p = Pn532Parser()
    body = bytes([0xD5, 0x4B, 0x01, 0x01, 0x00, 0x44, 0x00, 0x04, 0xDE, 0xAD, 0xBE, 0xEF])
    items = p.feed(bytes.fromhex("0000FF00FF00") + frame(body, lcs_off=1) + frame(body, dcs_off=1)
                   + frame(body))
    assert items == [None, body[1:]]
    assert p.garbled == 2
    assert parse_in_list_passive_target(body[1:]) == "DEADBEEF"
    assert parse_in_list_passive_target(bytes([0x4B, 0x00])) is None


# --- RDM6300 on a pty ----------------------------------------------------------------------------


@pytest.fixture
async def port(tmp_path: Path) -> AsyncIterator[PluggablePort]:
    p = PluggablePort(tmp_path)
    yield p
    p.close()


async def next_card(q: asyncio.Queue[str]) -> str:
    return await asyncio.wait_for(q.get(), 2.0)


async def test_rdm6300_reads_debounces_and_survives_replug(port: PluggablePort) -> None:
    cfg = RfidConfig(type="rdm6300", port=str(port.path), debounce_s=30.0)
    reader = make_reader(cfg)
    assert isinstance(reader, Rdm6300Reader) and isinstance(reader, CardReader)
    reader.reopen_min_s = 0.02
    q: asyncio.Queue[str] = asyncio.Queue()
    await reader.start(q.put_nowait)
    try:
        assert await asyncio.to_thread(reader.wait_opened, 1, 2.0)
        frame = rdm_frame("1A0012AB3C")
        port.write(frame + frame + rdm_frame("1A0012AB3C", bad_checksum=True) + frame[:9]
                   + frame + rdm_frame("0500FFEE11"))
        assert await next_card(q) == "0012AB3C"
        assert await next_card(q) == "00FFEE11"  # the repeats of the first card were dropped
        assert q.empty() and reader.garbled == 2

        port.plug()  # unplugged; a new device appears at the same path
        assert await asyncio.to_thread(reader.wait_opened, 2, 3.0)
        port.write(rdm_frame("07CAFE0001"))
        assert await next_card(q) == "CAFE0001"
    finally:
        await reader.close()


# --- PN532 on a pty ------------------------------------------------------------------------


class Pn532Peer:
    """Answers the host's frames on the pty master like a PN532 in HSU mode."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.uid: bytes | None = None
        self.polls_with_card = 0
        self.commands: list[int] = []
        self.polled = asyncio.Event()
        self.noise_first = True
        self._buf = b""
        asyncio.get_running_loop().add_reader(fd, self._readable)

    def _reply(self, body: bytes) -> bytes:
        n = len(body)
        return bytes([0, 0, 0xFF, n, (-n) & 0xFF]) + body + bytes([(-sum(body)) & 0xFF, 0])

    def _readable(self) -> None:
        self._buf += os.read(self.fd, 512)
        while (i := self._buf.find(b"\x00\xff")) >= 0 and len(self._buf) >= i + 4:
            n = self._buf[i + 2]
            end = i + 4 + n + 2
            if len(self._buf) < end:
                return
            body, self._buf = self._buf[i + 4:i + 4 + n], self._buf[end:]
            cmd = body[1]
            self.commands.append(cmd)
            data = b""
            if cmd == 0x4A:
                if self.uid is None:
                    data = b"\x00"
                else:
                    data = bytes([1, 1, 0x00, 0x44, 0x00, len(self.uid)]) + self.uid
                    self.polls_with_card += 1
                    if self.polls_with_card >= 3:
                        self.polled.set()
            out = b"\x00\xff\x07\x10garbage" if self.noise_first else b""  # a garbled frame
            self.noise_first = False
            os.write(self.fd, out + bytes.fromhex("0000FF00FF00")
                     + self._reply(bytes([0xD5, cmd + 1]) + data))

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.fd)


async def test_pn532_polls_reports_uid_once_and_ignores_garbage(port: PluggablePort) -> None:
    peer = Pn532Peer(port.master)
    reader = Pn532Reader(RfidConfig(type="pn532", port=str(port.path), debounce_s=30.0))
    reader.POLL_INTERVAL_S = 0.01
    q: asyncio.Queue[str] = asyncio.Queue()
    await reader.start(q.put_nowait)
    try:
        assert await asyncio.to_thread(reader.wait_opened, 1, 2.0)
        peer.uid = bytes.fromhex("04A1B2C3D4E5F6")  # a 7-byte MIFARE UID
        assert await next_card(q) == "04A1B2C3D4E5F6"
        await asyncio.wait_for(peer.polled.wait(), 2.0)  # still on the reader...
        assert q.empty()  # ...but reported once
        assert peer.commands[:3] == [0x14, 0x32, 0x4A]  # SAMConfiguration, RFConfiguration
        assert reader.garbled >= 1
    finally:
        await reader.close()
        peer.close()
