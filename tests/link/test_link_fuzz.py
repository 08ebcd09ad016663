"""Fuzz the incoming path of a live link: whatever the Central System sends, the charge point side
never crashes and never wedges (after each frame a normal CALL still gets its answer)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from linkkit import CentralSystem, Conn, Handlers, running, settings_for

from ocppd.ocpp.link import Link
from ocppd.ocpp.validate import Validator

ACTIONS = ["Reset", "ChangeAvailability", "RemoteStartTransaction", "GetConfiguration",
           "DataTransfer", "TriggerMessage", "SetChargingProfile", "NoSuchAction", "", "Heartbeat"]

json_leaf = st.one_of(
    st.none(), st.booleans(), st.text(max_size=30),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=4),
    max_leaves=20,
)
message_ids = st.one_of(st.text(min_size=1, max_size=40), st.integers(), st.none())


@st.composite
def frames(draw: st.DrawFn) -> tuple[str, str | bytes]:
    """One frame: ("text", str) or ("binary", bytes)."""
    kind = draw(st.sampled_from(["call", "result", "error", "type", "raw", "truncated",
                                 "huge", "deep", "binary", "value"]))
    mid = draw(message_ids)
    if kind == "call":
        frame: Any = [2, mid, draw(st.sampled_from(ACTIONS)), draw(json_value)]
    elif kind == "result":
        frame = [3, mid, draw(json_value)]
    elif kind == "error":
        frame = [4, mid, draw(st.text(max_size=30)), draw(json_value), draw(json_value)]
    elif kind == "type":
        frame = [draw(json_value), mid, *draw(st.lists(json_value, max_size=3))]
    elif kind == "value":
        frame = draw(json_value)
    elif kind == "raw":
        return "text", draw(st.text(max_size=200))
    elif kind == "truncated":
        text = json.dumps([2, mid, draw(st.sampled_from(ACTIONS)), draw(json_value)])
        return "text", text[: draw(st.integers(0, max(0, len(text) - 1)))]
    elif kind == "huge":
        digits = draw(st.integers(1, 6000))
        return "text", f'[2,"h","ChangeAvailability",{{"connectorId":{"9" * digits},' \
                       '"type":"Operative"}]'
    elif kind == "deep":
        depth = draw(st.integers(1, 20000))
        return "text", '[2,"d","DataTransfer",{"vendorId":"v","data":' + "[" * depth + \
            "]" * depth + "}]"
    else:
        return "binary", draw(st.binary(max_size=200))
    return "text", json.dumps(frame)


class LiveLink:
    """A Central System and a Link on one event loop that lives across hypothesis examples."""

    def __init__(self) -> None:
        self.runner = asyncio.Runner()
        self.handlers = Handlers()
        self.handlers.returns("GetLocalListVersion", {"listVersion": 1})
        self.handlers.returns("Reset", {"status": "Accepted"})
        self.probes = 0

    async def _start(self) -> None:
        self.cs = CentralSystem()
        await self.cs.start()
        self.link = Link(settings_for(self.cs.url), handler=self.handlers,
                         validator=Validator())
        self._running = running(self.link)
        await self._running.__aenter__()
        self.conn: Conn = await self.cs.connection(1)
        await asyncio.wait_for(self.link.wait_connected(), 5)

    async def _stop(self) -> None:
        await self._running.__aexit__(None, None, None)
        await self.cs.close()

    def __enter__(self) -> LiveLink:
        self.runner.run(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.runner.run(self._stop())
        finally:
            self.runner.close()

    async def _send_and_probe(self, kind: str, data: str | bytes) -> list[Any]:
        if kind == "binary":
            assert isinstance(data, bytes)
            await self.conn.ws.send_bytes(data)
        else:
            assert isinstance(data, str)
            await self.conn.send(data)
        self.probes += 1
        return await self.conn.call("GetLocalListVersion", {}, timeout_s=5.0)

    def check(self, kind: str, data: str | bytes) -> None:
        answer = self.runner.run(self._send_and_probe(kind, data))
        assert answer[0] == 3 and answer[2] == {"listVersion": 1}
        assert self.link.connected and self.link.stats.connects == 1


@pytest.fixture
def live(caplog: pytest.LogCaptureFixture) -> Iterator[LiveLink]:
    caplog.set_level(logging.ERROR, logger="ocppd.link")  # many expected warnings: not those
    with LiveLink() as live:
        yield live
    # no handler/task failure, no invalid answer of ours: nothing at ERROR
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_fuzzed_incoming_frames_never_crash_or_wedge_the_link(live: LiveLink) -> None:
    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(frames())
    def one(frame: tuple[str, str | bytes]) -> None:
        live.check(*frame)

    one()
    # after the fuzz, the link still does both directions
    live.cs.answers["Heartbeat"] = {"currentTime": "2024-01-01T00:00:00Z"}
    assert live.runner.run(live.link.call("Heartbeat", {}))["currentTime"]
    assert live.probes >= 50
    assert live.link.stats.frames_in > live.probes


@pytest.mark.parametrize("frame", [
    '[2,"x","Reset",' + "{" * 50_000,
    '[2,"y","ChangeAvailability",{"connectorId":' + "1" * 5000 + ',"type":"Operative"}]',
    '[2,"z","Reset",{"type":"Hard"}]' * 3,
    r'[2,"w","Reset",{"type":"\ud800"}]',
    r'[2,"\udc00","Reset",{"type":"Hard"}]',
])
def test_known_nasty_frames(live: LiveLink, frame: str) -> None:
    live.check("text", frame)


async def test_text_frame_with_invalid_utf8_drops_and_reconnects(
        cs: CentralSystem, handlers: Handlers) -> None:
    # RFC 6455 §8.1: invalid UTF-8 in a text frame fails the connection (close code 1007).
    link = Link(settings_for(cs.url), handler=handlers, validator=Validator())
    handlers.returns("Reset", {"status": "Accepted"})
    async with running(link):
        conn = await cs.connection(1)
        writer = conn.ws._writer  # the public API refuses to send invalid UTF-8, as it should
        assert writer is not None
        send = getattr(writer, "send_frame", None) or getattr(writer, "_send_frame")  # noqa: B009 - 3.8
        await send(b'[2,"u","Reset",{"type":"\xff\xfe"}]', 0x1)
        await asyncio.wait_for(conn.closed.wait(), 5)
        conn2 = await cs.connection(2)
        answer = await conn2.call("Reset", {"type": "Soft"})
    assert answer[2] == {"status": "Accepted"}
    assert handlers.seen == [("Reset", {"type": "Soft"})]
