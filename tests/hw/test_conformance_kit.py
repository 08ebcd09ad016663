"""The conformance kit catches a broken driver: the simulator, broken on purpose in one way at a
time, must fail the check for the obligation it breaks, saying what went wrong."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from test_conformance_sim import SimRig

from ocppd.config import ConnectorConfig, SimConfig
from ocppd.hw import conformance
from ocppd.hw.base import BoardEvent, Emit, PilotState
from ocppd.hw.sim import SimBoard

Check = Callable[[SimRig], Awaitable[None]]


class EmitsFromCommands(SimBoard):
    """Calls the station back from inside set_offer / set_contactor (base.py, item 2: events
    arrive later, from the loop)."""

    def _send(self, event: BoardEvent) -> None:
        if self._emit is not None:
            self._emit(event)


class ClosesByItself(SimBoard):
    """Closes the contactor as soon as the EV asks for power, without the core's say-so."""

    def _set_state(self, connector_id: int, port: object, state: PilotState) -> None:
        super()._set_state(connector_id, port, state)  # type: ignore[arg-type]
        if state is PilotState.C:
            super().set_contactor(connector_id, True)


class NeverOpens(SimBoard):
    """Ignores the command to open."""

    def set_contactor(self, connector_id: int, closed: bool) -> None:
        if closed:
            super().set_contactor(connector_id, closed)


class StaysClosedOnFault(SimBoard):
    """Reports a fault but leaves the contactor as it was."""

    def set_contactor(self, connector_id: int, closed: bool) -> None:
        if closed or not self.faulting:
            super().set_contactor(connector_id, closed)

    faulting = False

    def inject_fault(self, connector_id: int, *args: object, **kw: object) -> None:
        self.faulting = bool(args[1])
        try:
            super().inject_fault(connector_id, *args, **kw)  # type: ignore[arg-type]
        finally:
            self.faulting = False


class SilentAtStart(SimBoard):
    """Never reports the pilot states it starts with."""

    async def start(self, emit: Emit) -> None:
        await super().start(lambda event: None)


class CountsCloses(NeverOpens):
    closes = 0

    async def close(self) -> None:
        self.closes += 1
        await super().close()


@pytest.fixture
async def broken() -> AsyncIterator[Callable[[type[SimBoard]], SimRig]]:
    rigs: list[SimRig] = []

    def make(board: type[SimBoard]) -> SimRig:
        rig = SimRig()
        rig.board = board([ConnectorConfig(), ConnectorConfig()], SimConfig())
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        await rig.board.close()


@pytest.mark.parametrize(
    ("board", "check", "said"),
    [
        (EmitsFromCommands, conformance.check_nothing_closes_without_the_core,
         "emitted from inside a command"),
        (ClosesByItself, conformance.check_nothing_closes_without_the_core,
         "contactor closed without the core's say-so"),
        (NeverOpens, conformance.check_contactor_closes_and_opens_within_deadlines,
         "connector 1: contactor closed without the core's say-so"),
        (StaysClosedOnFault, conformance.check_contactor_opens_on_every_fault,
         "contactor opens by itself: not within"),
        (SilentAtStart, conformance.check_safe_at_start_and_after_close,
         "start(): pilot state of connector 1: no such event"),
    ],
    ids=["emits-from-commands", "closes-by-itself", "never-opens", "stays-closed-on-fault",
         "silent-at-start"],
)
async def test_the_kit_fails_a_broken_driver(
    broken: Callable[[type[SimBoard]], SimRig], board: type[SimBoard], check: Check, said: str
) -> None:
    rig = broken(board)
    with pytest.raises(AssertionError, match=re.escape(said)):
        await check(rig)


async def test_a_failing_check_still_closes_the_board(
    broken: Callable[[type[SimBoard]], SimRig],
) -> None:
    rig = broken(CountsCloses)
    with pytest.raises(AssertionError):
        await conformance.check_contactor_closes_and_opens_within_deadlines(rig)
    assert isinstance(rig.board, CountsCloses) and rig.board.closes == 1
