"""The EVSE WB driver's handling of the board's quirks, against the register-level simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from evsewbsim import EvseWbSim

from ocppd.config import BusConfig
from ocppd.hw.base import BoardEvent, CableRating, EvseBoard, PilotChanged, PilotState
from ocppd.hw.conformance import Recorder, eventually
from ocppd.hw.evsewb import EvseWbBoard, EvseWbOptions
from ocppd.hw.modbus import ModbusBus

DISABLED, DISABLE_AFTER_CHARGE, CHARGE_ON_D = 1 << 14, 1 << 13, 1 << 3


@dataclass
class Rig:
    sim: EvseWbSim
    board: EvseWbBoard
    rec: Recorder

    async def settle(self) -> None:
        target = self.sim.requests + 4
        await eventually("two poll cycles", lambda: self.sim.requests >= target, 3.0)


async def make(**sim_kw: int) -> Rig:
    sim = EvseWbSim(**sim_kw)
    bus = ModbusBus(BusConfig(type="rtu", port=sim.port, timeout_s=0.2), name="rs485")
    board = EvseWbBoard(bus, EvseWbOptions(bus="rs485", poll_interval_s=0.05,
                                           link_timeout_s=1.0))
    rec = Recorder()
    await board.start(rec)
    return Rig(sim, board, rec)


@pytest.fixture
async def rigs() -> AsyncIterator[list[Rig]]:
    made: list[Rig] = []
    yield made
    for r in made:
        await r.board.close()
        await r.board.bus.close()
        r.sim.close()


def pilot(state: PilotState) -> object:
    return lambda e: isinstance(e, PilotChanged) and e.state is state


async def test_start_writes_the_safe_state_then_enables_the_board(rigs: list[Rig]) -> None:
    rigs.append(r := await make(boot_current_a=16, config=CHARGE_ON_D | DISABLED))
    assert isinstance(r.board, EvseBoard)
    await r.rec.wait_for("pilot A", pilot(PilotState.A))  # type: ignore[arg-type]
    await r.settle()
    # Off bit and 0 A go out before the EEPROM fixes; the board is enabled only after them.
    assert r.sim.writes[:2] == [(1004, 1), (1000, 0)]
    assert (2000, 0) in r.sim.writes and r.sim.regs[2000] == 0
    assert not r.sim.regs[2005] & DISABLED and r.sim.regs[2005] & CHARGE_ON_D
    assert not r.sim.pwm_on and not r.sim.relay_on


async def test_offer_below_the_board_minimum_is_nothing_and_fractions_are_cut(
    rigs: list[Rig],
) -> None:
    rigs.append(r := await make(min_current_a=8))
    r.sim.plug(ready=False)
    await r.rec.wait_for("pilot B", pilot(PilotState.B))  # type: ignore[arg-type]
    r.board.set_offer(1, 7.9)  # the core may go that low; this board cannot
    await r.settle()
    assert r.sim.regs[1000] == 0 and not r.sim.pwm_on
    r.board.set_offer(1, 8.0)
    await eventually("8 A", lambda: r.sim.offered_a == 8, 2.0)
    r.board.set_offer(1, 12.99)
    await eventually("12 A", lambda: r.sim.regs[1000] == 12, 2.0)
    r.board.set_offer(1, 0.0)  # "pause": no PWM on this board
    await eventually("no PWM", lambda: not r.sim.pwm_on and r.sim.regs[1004] & 1 == 1, 2.0)


async def test_board_that_disables_itself_after_a_charge_is_enabled_for_the_next(
    rigs: list[Rig],
) -> None:
    rigs.append(r := await make(config=CHARGE_ON_D | DISABLE_AFTER_CHARGE))
    for session in range(2):
        r.sim.plug(ready=True)
        r.board.set_offer(1, 16.0)
        await r.rec.wait_for(f"session {session}: C", pilot(PilotState.C),  # type: ignore
                             after=len(r.rec.events))
        r.board.set_contactor(1, True)
        await eventually(f"session {session}: relay on", lambda: r.sim.relay_on, 2.0)
        r.sim.unplug()  # the board now sets 2005 bit14 by itself
        r.board.set_contactor(1, False)
        r.board.set_offer(1, None)
        if session == 0:
            await eventually("disabled by the board",
                             lambda: r.sim.regs[2005] & DISABLED != 0, 2.0)
    assert r.sim.regs[2005] & DISABLE_AFTER_CHARGE  # the installer's choice is kept


async def test_a_board_that_restarted_gets_its_registers_again(rigs: list[Rig]) -> None:
    rigs.append(r := await make(boot_current_a=0))
    r.sim.plug(ready=False)
    r.board.set_offer(1, 20.0)
    await eventually("20 A", lambda: r.sim.offered_a == 20, 2.0)
    r.sim.power_cycle()  # 1000 back to 0, the off bit cleared
    await eventually("20 A again", lambda: r.sim.offered_a == 20, 2.0)


async def test_cable_rating_and_vehicle_states_are_reported(rigs: list[Rig]) -> None:
    rigs.append(r := await make())
    r.sim.cable_a = 20
    r.sim.plug(ready=True)

    def cable(e: BoardEvent) -> bool:
        return isinstance(e, CableRating) and e.max_current_a == 20.0

    await r.rec.wait_for("cable 20 A", cable)
    r.board.set_offer(1, 16.0)
    r.sim.set_ready(True, ventilation=True)
    await r.rec.wait_for("D", pilot(PilotState.D))  # type: ignore[arg-type]
