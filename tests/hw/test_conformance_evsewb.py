"""The conformance kit against the EVSE WB driver, talking RTU to a simulated board on a pty."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from evsewbsim import DIODE_FAIL, RCD_ERROR, EvseWbSim

from ocppd.config import BusConfig
from ocppd.hw import conformance
from ocppd.hw.evsewb import EvseWbBoard, EvseWbOptions
from ocppd.hw.modbus import ModbusBus

FAULT_BITS = {"diode_check": DIODE_FAIL, "rcd": RCD_ERROR}


class EvseWbRig:
    self_switching = True  # the board's MCU closes its relay when the EV asks while offered
    fault_names = tuple(FAULT_BITS)
    has_link = True
    connector_ids = (1,)

    def __init__(self, sim: EvseWbSim) -> None:
        self.sim = sim
        self.bus = ModbusBus(BusConfig(type="rtu", port=sim.port, timeout_s=0.2), name="rs485")
        self.board = EvseWbBoard(self.bus, EvseWbOptions(
            bus="rs485", unit_ids=[sim.unit_id], poll_interval_s=0.05, link_timeout_s=1.0))

    def plug(self, connector_id: int, *, ready: bool) -> None:
        self.sim.plug(ready)

    def set_ready(self, connector_id: int, ready: bool) -> None:
        self.sim.set_ready(ready)

    def unplug(self, connector_id: int) -> None:
        self.sim.unplug()

    def contactor_closed(self, connector_id: int) -> bool:
        return self.sim.relay_on

    def offered_a(self, connector_id: int) -> float | None:
        return float(self.sim.offered_a) if self.sim.pwm_on else None

    def inject_fault(self, connector_id: int, name: str, active: bool) -> None:
        self.sim.set_error(FAULT_BITS[name], active)

    def cut_link(self) -> None:
        self.sim.silent = True

    def restore_link(self) -> None:
        self.sim.silent = False

    async def settle(self) -> None:
        """Two more full poll cycles of the driver (each reads the runtime block once)."""
        target = self.sim.requests + 4
        await conformance.eventually("board polled", lambda: self.sim.requests >= target, 3.0)


@pytest.fixture
async def rig() -> AsyncIterator[EvseWbRig]:
    sim = EvseWbSim()
    r = EvseWbRig(sim)
    yield r
    await r.board.close()
    await r.bus.close()
    sim.close()


@pytest.mark.parametrize("check", conformance.CHECKS, ids=conformance.check_id)
async def test_evse_wb_conforms(rig: EvseWbRig,
                                check: Callable[[EvseWbRig], Awaitable[None]]) -> None:
    await check(rig)
