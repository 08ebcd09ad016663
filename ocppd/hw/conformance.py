"""The conformance kit: checks a board driver against every obligation of hw/base.py.

(Above 400 lines: one check per obligation of hw/base.py, each with its own short rig
script; a driver author reads the file as the list of what is asked of a driver.)

A driver author writes a *rig*: the driver's board object plus hands and eyes on the hardware
behind it (a simulated board, or the real one on a bench), then runs every check::

    import pytest
    from ocppd.hw import conformance

    @pytest.fixture
    async def rig():
        r = MyRig()              # implements conformance.Rig
        yield r
        await r.teardown()

    @pytest.mark.parametrize("check", conformance.CHECKS, ids=conformance.check_id)
    async def test_conformance(rig, check):
        await check(rig)

(pytest-asyncio in auto mode runs the coroutines.) The checks play the core's part: they call
the board's commands the way the station does and watch the events and the hardware. A check
that fails raises ``AssertionError`` saying which obligation and what was seen. Every wait is
bounded by the deadlines in hw/base.py; nothing sleeps to wait for something.

The "eyes" must look at the hardware, not at what the driver believes: the relay output or its
feedback contact, the PWM duty on the pilot, the board's registers.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from ocppd.hw.base import (
    COMMAND_DEADLINE_S,
    CONTACTOR_OPEN_DEADLINE_S,
    EVENT_DEADLINE_S,
    LINK_LOSS_DEADLINE_S,
    BoardEvent,
    EvseBoard,
    Fault,
    FaultChanged,
    PilotChanged,
    PilotState,
)
from ocppd.tasks import wait_event

WATCH_INTERVAL_S = 0.002  # how often the contactor is looked at while a check runs
CHARGE_A = 16.0
TOL_A = 0.05  # what reading a current back from a PWM duty may add by rounding


class Rig(Protocol):
    """A board under test and a way to act on, and look at, the hardware behind it."""

    board: EvseBoard
    connector_ids: tuple[int, ...]
    # A board whose own MCU closes the relay when the EV asks while current is offered (EVSE WB,
    # SmartEVSE, OpenEVSE). For it, a standing offer is the core's say-so (base.py, item 4).
    self_switching: bool
    fault_names: tuple[str, ...]  # faults inject_fault() can raise, at least one
    has_link: bool  # a line between driver and board that cut_link() can cut

    def plug(self, connector_id: int, *, ready: bool) -> None:
        """An EV is plugged in; ``ready``: it asks for power (C) as soon as it is offered."""

    def set_ready(self, connector_id: int, ready: bool) -> None: ...

    def unplug(self, connector_id: int) -> None: ...

    def contactor_closed(self, connector_id: int) -> bool:
        """What the contactor (relay output, feedback contact, board register) does now."""

    def offered_a(self, connector_id: int) -> float | None:
        """What the pilot offers now, as the hardware shows it; None or 0: nothing."""

    def inject_fault(self, connector_id: int, name: str, active: bool) -> None: ...

    def cut_link(self) -> None: ...

    def restore_link(self) -> None: ...

    async def settle(self) -> None:
        """Return once the board has taken in everything done so far (e.g. two poll cycles)."""


@dataclass
class Recorder:
    """Plays the station's ``emit``: keeps every event, wakes waiters, flags misuse."""

    events: list[BoardEvent] = field(default_factory=list)
    in_command: bool = False
    misuse: list[str] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, event: BoardEvent) -> None:
        if self.in_command:
            self.misuse.append(f"{event} was emitted from inside a command")
        self.events.append(event)
        self._changed.set()

    async def wait_for(self, what: str, match: Callable[[BoardEvent], bool], *, after: int = 0,
                       timeout_s: float = EVENT_DEADLINE_S) -> BoardEvent:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            for ev in self.events[after:]:
                if match(ev):
                    return ev
            self._changed.clear()
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"{what}: no such event within {timeout_s} s; saw "
                                     f"{self.events[after:]}")
            await wait_event(self._changed, left)

    @contextlib.contextmanager
    def command(self) -> Iterator[None]:
        self.in_command = True
        try:
            yield
        finally:
            self.in_command = False


class Watcher:
    """Samples the contactor while a check runs; remembers every close and what allowed it.

    When the core withdraws its say-so the contactor has CONTACTOR_OPEN_DEADLINE_S to open: a
    close seen within that grace is not a violation (a command on its way down a serial line).
    """

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.allowed: dict[int, bool] = {cid: False for cid in rig.connector_ids}
        self.grace_until: dict[int, float] = {cid: 0.0 for cid in rig.connector_ids}
        self.violations: list[str] = []
        self._task: asyncio.Task[None] | None = None

    def allow(self, connector_id: int, allowed: bool) -> None:
        if self.allowed[connector_id] and not allowed:
            now = asyncio.get_running_loop().time()
            self.grace_until[connector_id] = now + CONTACTOR_OPEN_DEADLINE_S
        self.allowed[connector_id] = allowed

    async def __aenter__(self) -> Watcher:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.sample()
        assert not self.violations, "; ".join(self.violations[:3])

    def sample(self) -> None:
        now = asyncio.get_running_loop().time()
        for cid in self.rig.connector_ids:
            if self.allowed[cid] or now < self.grace_until[cid]:
                continue
            if self.rig.contactor_closed(cid):
                self.violations.append(f"connector {cid}: contactor closed without the "
                                       f"core's say-so")

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(WATCH_INTERVAL_S)


async def eventually(what: str, pred: Callable[[], bool], timeout_s: float) -> None:
    """Wait, bounded, until ``pred()`` holds on the hardware."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(WATCH_INTERVAL_S)


def _offering(rig: Rig, cid: int) -> bool:
    return bool(rig.offered_a(cid))


@contextlib.asynccontextmanager
async def _session(rig: Rig) -> AsyncIterator[tuple[Recorder, Watcher]]:
    """One check's run of the board, the way the station runs it: nothing closed or offered
    before start(), start() reports every pilot state, the Watcher guards the contactor
    throughout, close() always comes, and afterwards nothing is closed or offered and no event
    came from inside a command (obligations 1, 2, 4)."""
    rec = Recorder()
    for cid in rig.connector_ids:
        assert not rig.contactor_closed(cid), f"connector {cid}: closed before start()"
        assert not _offering(rig, cid), f"connector {cid}: offering before start()"
    await rig.board.start(rec)
    try:
        for cid in rig.connector_ids:
            await rec.wait_for(f"start(): pilot state of connector {cid}",
                               lambda e, c=cid: isinstance(e, PilotChanged)  # type: ignore[misc]
                               and e.connector_id == c)
        async with Watcher(rig) as watch:
            yield rec, watch
    finally:
        await rig.board.close()
    for cid in rig.connector_ids:
        assert not rig.contactor_closed(cid), f"connector {cid}: closed after close()"
        assert not _offering(rig, cid), f"connector {cid}: still offering after close()"
    assert not rec.misuse, rec.misuse


def _cmd(rec: Recorder, call: Callable[[], object]) -> None:
    with rec.command():
        result = call()
    assert not inspect.isawaitable(result), "a command must return at once, not a coroutine"


def _pilot(cid: int, *states: PilotState) -> Callable[[BoardEvent], bool]:
    return lambda e: (isinstance(e, PilotChanged) and e.connector_id == cid
                      and e.state in states)


async def _charging(rig: Rig, rec: Recorder, watch: Watcher, cid: int, *,
                    plugged: bool = False) -> None:
    """Bring connector ``cid`` to charging the way the core does: offer, EV asks, close."""
    mark = len(rec.events)
    if not plugged:
        rig.plug(cid, ready=False)
    _cmd(rec, lambda: rig.board.set_offer(cid, CHARGE_A))
    if rig.self_switching:
        watch.allow(cid, True)
    rig.set_ready(cid, True)
    await rec.wait_for(f"connector {cid}: EV asks for power (C)", _pilot(cid, PilotState.C),
                       after=mark, timeout_s=COMMAND_DEADLINE_S + EVENT_DEADLINE_S)
    watch.allow(cid, True)
    _cmd(rec, lambda: rig.board.set_contactor(cid, True))
    await eventually(f"connector {cid}: contactor closes", lambda: rig.contactor_closed(cid),
                     COMMAND_DEADLINE_S)


async def _stop(rig: Rig, rec: Recorder, watch: Watcher, cid: int) -> None:
    """What the core does on a stop or a fault: open first, then withdraw the offer."""
    watch.allow(cid, False)
    _cmd(rec, lambda: rig.board.set_contactor(cid, False))
    _cmd(rec, lambda: rig.board.set_offer(cid, None))


# --- the checks -------------------------------------------------------------------------------
# Each runs inside _session, which checks what holds for every run: safe before start() and after
# close(), the pilot states reported at start(), no close without the core, no event from inside
# a command.


async def check_safe_at_start_and_after_close(rig: Rig) -> None:
    """Obligations 1, 2: open and offering nothing before start() and after close(); start()
    reports the pilot state of every connector."""
    async with _session(rig):
        for cid in rig.connector_ids:
            assert not rig.contactor_closed(cid), f"connector {cid}: closed after start()"


async def check_pilot_events_follow_the_ev(rig: Rig) -> None:
    """Obligation 2: plug, EV ready, EV paused and unplug each arrive as PilotChanged."""
    async with _session(rig) as (rec, watch):
        for cid in rig.connector_ids:
            mark = len(rec.events)
            rig.plug(cid, ready=False)
            await rec.wait_for(f"connector {cid}: plug (B)", _pilot(cid, PilotState.B),
                               after=mark)
            await _charging(rig, rec, watch, cid, plugged=True)
            mark = len(rec.events)
            rig.set_ready(cid, False)
            await rec.wait_for(f"connector {cid}: EV pauses (B)", _pilot(cid, PilotState.B),
                               after=mark)
            await _stop(rig, rec, watch, cid)
            mark = len(rec.events)
            rig.unplug(cid)
            await rec.wait_for(f"connector {cid}: unplug (A)", _pilot(cid, PilotState.A),
                               after=mark)


async def check_offer_takes_effect_within_its_deadline(rig: Rig) -> None:
    """Obligation 3: set_offer reaches the pilot within COMMAND_DEADLINE_S, never above."""
    async with _session(rig) as (rec, _):
        for cid in rig.connector_ids:
            rig.plug(cid, ready=False)
            for amps in (16.0, 10.0, 32.0):
                _cmd(rec, lambda a=amps, c=cid: rig.board.set_offer(c, a))  # type: ignore[misc]
                await eventually(f"connector {cid}: offer {amps} A",
                                 lambda a=amps, c=cid: (  # type: ignore[misc]
                                     a - 1.0 < (rig.offered_a(c) or 0.0) <= a + TOL_A),
                                 COMMAND_DEADLINE_S)
            _cmd(rec, lambda c=cid: rig.board.set_offer(c, None))  # type: ignore[misc]
            await eventually(f"connector {cid}: offer withdrawn",
                             lambda c=cid: not _offering(rig, c),  # type: ignore[misc]
                             COMMAND_DEADLINE_S)
            rig.unplug(cid)


async def check_contactor_closes_and_opens_within_deadlines(rig: Rig) -> None:
    """Obligation 3: closing within COMMAND_DEADLINE_S, opening within
    CONTACTOR_OPEN_DEADLINE_S of the command."""
    async with _session(rig) as (rec, watch):
        for cid in rig.connector_ids:
            await _charging(rig, rec, watch, cid)
            await _stop(rig, rec, watch, cid)
            await eventually(f"connector {cid}: contactor opens",
                             lambda c=cid: not rig.contactor_closed(c),  # type: ignore[misc]
                             CONTACTOR_OPEN_DEADLINE_S)
            rig.unplug(cid)


async def check_nothing_closes_without_the_core(rig: Rig) -> None:
    """Obligation 4: an EV asking for power gets no contactor while the core has not said so."""
    async with _session(rig) as (rec, _):
        for cid in rig.connector_ids:
            rig.plug(cid, ready=True)  # asks for power, nothing offered, nothing commanded
        await rig.settle()
        if not rig.self_switching:
            for cid in rig.connector_ids:  # offered, EV asking, but never commanded closed
                _cmd(rec, lambda c=cid: rig.board.set_offer(c, CHARGE_A))  # type: ignore
            await rig.settle()
        for cid in rig.connector_ids:
            _cmd(rec, lambda c=cid: rig.board.set_offer(c, 0.0))  # type: ignore[misc]
        await rig.settle()
        for cid in rig.connector_ids:
            rig.unplug(cid)
        await rig.settle()


async def check_contactor_opens_on_every_fault(rig: Rig) -> None:
    """Obligation 5: the board opens by itself on each fault, then reports it; it does not
    close again when the fault clears."""
    assert rig.fault_names, "a rig must be able to inject at least one fault"
    async with _session(rig) as (rec, watch):
        cid = rig.connector_ids[0]
        for name in rig.fault_names:
            await _charging(rig, rec, watch, cid)
            mark = len(rec.events)
            rig.inject_fault(cid, name, True)
            # No command from the core here: the board must open on its own.
            await eventually(f"fault {name}: contactor opens by itself",
                             lambda: not rig.contactor_closed(cid), CONTACTOR_OPEN_DEADLINE_S)
            watch.allow(cid, False)
            ev = await rec.wait_for(f"fault {name}: reported",
                                    lambda e: isinstance(e, FaultChanged) and e.active,
                                    after=mark)
            assert isinstance(ev, FaultChanged)
            await _stop(rig, rec, watch, cid)  # the core reacts as it does
            mark = len(rec.events)
            rig.inject_fault(cid, name, False)
            await rec.wait_for(f"fault {name}: clearance reported",
                               lambda e, f=ev.fault: (  # type: ignore[misc]
                                   isinstance(e, FaultChanged) and e.fault is f
                                   and not e.active),
                               after=mark)
            await rig.settle()
            rig.unplug(cid)
            await rig.settle()


async def check_link_loss_is_reported_and_fails_safe(rig: Rig) -> None:
    """Obligation 6: a dead driver-to-board line is a BOARD_LINK_LOST fault within
    LINK_LOSS_DEADLINE_S; when it answers again the contactor is open before the fault clears,
    and nothing closes afterwards without the core."""
    if not rig.has_link:
        return  # no line between driver and board (the simulator, the Pi's own GPIO)
    async with _session(rig) as (rec, watch):
        cid = rig.connector_ids[0]
        await _charging(rig, rec, watch, cid)
        mark = len(rec.events)
        rig.cut_link()
        await rec.wait_for("link loss reported",
                           lambda e: isinstance(e, FaultChanged) and e.active
                           and e.fault is Fault.BOARD_LINK_LOST,
                           after=mark, timeout_s=LINK_LOSS_DEADLINE_S)
        # The core opens on the fault; the relay may stay on behind the dead line (the
        # board's own business until the line is back), so the watcher allows it meanwhile.
        _cmd(rec, lambda: rig.board.set_contactor(cid, False))
        _cmd(rec, lambda: rig.board.set_offer(cid, None))
        mark = len(rec.events)
        rig.restore_link()
        cleared = await rec.wait_for(
            "link back reported",
            lambda e: isinstance(e, FaultChanged) and not e.active
            and e.fault is Fault.BOARD_LINK_LOST,
            after=mark, timeout_s=LINK_LOSS_DEADLINE_S)
        assert cleared is not None
        assert not rig.contactor_closed(cid), "link back: contactor still closed when the " \
                                              "fault was cleared"
        watch.allow(cid, False)
        await rig.settle()
        rig.unplug(cid)
        await rig.settle()


CHECKS: tuple[Callable[[Rig], Awaitable[None]], ...] = (
    check_safe_at_start_and_after_close,
    check_pilot_events_follow_the_ev,
    check_offer_takes_effect_within_its_deadline,
    check_contactor_closes_and_opens_within_deadlines,
    check_nothing_closes_without_the_core,
    check_contactor_opens_on_every_fault,
    check_link_loss_is_reported_and_fails_safe,
)


def check_id(check: object) -> str:
    return getattr(check, "__name__", str(check)).removeprefix("check_")
