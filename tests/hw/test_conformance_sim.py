"""The conformance kit (ocppd.hw.conformance) against the built-in simulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from ocppd.config import ConnectorConfig, SimConfig
from ocppd.hw import conformance
from ocppd.hw.base import Fault, PilotState
from ocppd.hw.sim import SimBoard

FAULTS = {"ground_failure": (Fault.GROUND_FAILURE, False),
          "emergency_stop": (Fault.EMERGENCY_STOP, True)}  # True: the whole charger (id 0)


class SimRig:
    self_switching = False
    fault_names = tuple(FAULTS)
    has_link = False
    connector_ids = (1, 2)

    def __init__(self) -> None:
        self.board = SimBoard([ConnectorConfig(), ConnectorConfig()], SimConfig())

    def plug(self, connector_id: int, *, ready: bool) -> None:
        self.board.plug(connector_id)
        if not ready:
            self.board.set_ev_state(connector_id, PilotState.B)

    def set_ready(self, connector_id: int, ready: bool) -> None:
        self.board.set_ev_state(connector_id, PilotState.C if ready else PilotState.B)

    def unplug(self, connector_id: int) -> None:
        self.board.unplug(connector_id)

    def contactor_closed(self, connector_id: int) -> bool:
        return self.board.view(connector_id).contactor_closed

    def offered_a(self, connector_id: int) -> float | None:
        return self.board.view(connector_id).offer_a

    def inject_fault(self, connector_id: int, name: str, active: bool) -> None:
        fault, whole = FAULTS[name]
        self.board.inject_fault(0 if whole else connector_id, fault, active)

    def cut_link(self) -> None:
        raise NotImplementedError

    def restore_link(self) -> None:
        raise NotImplementedError

    async def settle(self) -> None:
        for _ in range(5):  # events travel by call_soon: a few loop turns deliver them all
            await asyncio.sleep(0)


@pytest.fixture
async def rig() -> AsyncIterator[SimRig]:
    r = SimRig()
    yield r
    await r.board.close()


@pytest.mark.parametrize("check", conformance.CHECKS, ids=conformance.check_id)
async def test_sim_conforms(rig: SimRig, check: Callable[[SimRig], Awaitable[None]]) -> None:
    await check(rig)
