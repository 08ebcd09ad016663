"""What a person reading the journal sees while the Central System is away (issue: offline
retries invisible at the default log level): every failed attempt while the backoff is short,
then at most one "still offline" line per OFFLINE_REPORT_EVERY_S, and a line when it is back."""

from __future__ import annotations

import asyncio
import logging

import pytest
from faultproxy import FaultProxy, Mode
from linkkit import CentralSystem, Handlers, SteppedSleep, running, settings_for

from ocppd.ocpp import link as link_module
from ocppd.ocpp.link import Link

LOG = "ocppd.link"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOG and r.levelno == level]


async def test_offline_retries_are_reported_without_a_line_per_attempt(
        cs: CentralSystem, handlers: Handlers, caplog: pytest.LogCaptureFixture) -> None:
    sleep, clock = SteppedSleep(), FakeClock()
    every_s = link_module.OFFLINE_REPORT_EVERY_S
    async with FaultProxy(cs.port) as proxy:
        await proxy.set_mode(Mode.REFUSE)
        link = Link(settings_for(f"ws://127.0.0.1:{proxy.port}/ocpp", reconnect_min_s=1,
                                 reconnect_max_s=300),
                    handler=handlers, sleep=sleep, rand=lambda: 1.0, clock=clock)
        with caplog.at_level(logging.INFO, logger=LOG):
            async with running(link):
                delays = []
                for _ in range(20):  # 1, 2, ... 256, then 300 s: about 75 minutes offline
                    delays.append(await sleep.next())
                    clock.now += delays[-1]
                    sleep.release()
                delays.append(await sleep.next())  # the 21st failed attempt's wait
                clock.now += delays[-1]
                await proxy.set_mode(Mode.PASS)
                sleep.release()
                await asyncio.wait_for(link.wait_connected(), 5)
    warnings = _lines(caplog, logging.WARNING)
    short = [d for d in delays if d < link_module.SHORT_BACKOFF_S]
    attempt_lines = [w for w in warnings if w.startswith("connection attempt")]
    still = [w for w in warnings if w.startswith("still offline since")]
    # every attempt while the backoff is short, each saying why and when the next one is
    assert len(attempt_lines) == len(short) == 6
    assert all("cannot connect" in w and "next attempt in" in w for w in attempt_lines)
    # then at most one line per OFFLINE_REPORT_EVERY_S, with the count and the next attempt
    long_s = sum(d for d in delays if d >= link_module.SHORT_BACKOFF_S)
    assert 2 <= len(still) <= long_s // every_s + 1
    assert "7 failed attempts" in still[0] and "next attempt in 64 s" in still[0]
    assert all("cannot connect" in w for w in still)
    assert len(warnings) == len(attempt_lines) + len(still)  # nothing else, no line per attempt
    back = [i for i in _lines(caplog, logging.INFO) if "back online" in i]
    assert len(back) == 1 and "21 failed attempts" in back[0]


async def test_a_new_kind_of_failure_is_reported_at_once(
        cs: CentralSystem, handlers: Handlers, caplog: pytest.LogCaptureFixture) -> None:
    """During the quiet phase, a different error is worth a line (transitions are news)."""
    sleep, clock = SteppedSleep(), FakeClock()
    async with FaultProxy(cs.port) as proxy:
        await proxy.set_mode(Mode.REFUSE)
        link = Link(settings_for(f"ws://127.0.0.1:{proxy.port}/ocpp", reconnect_min_s=100,
                                 reconnect_max_s=300, connect_timeout_s=0.3),
                    handler=handlers, sleep=sleep, rand=lambda: 1.0, clock=clock)
        with caplog.at_level(logging.INFO, logger=LOG):
            async with running(link):
                for _ in range(2):
                    await sleep.next()
                    clock.now += 1
                    sleep.release()
                await proxy.set_mode(Mode.BLACKHOLE)  # now the handshake times out instead
                await sleep.next()
    still = [w for w in _lines(caplog, logging.WARNING) if w.startswith("still offline")]
    assert len(still) == 2  # the first, and the one for the new error; not the repeat
    assert "cannot connect" in still[0] and "no handshake" in still[1]
