"""A begin point other than OCPP 1.6's, end to end on the simulator with real storage: the
transaction begins at plug-in and gets its idTag from a card later (what a 2.0.1 Central System
configures with TxStartPoint=EVConnected, core/session/state.py TxPoints). No energy flows
before the card; the start, the authorization and the end are recorded as transaction events.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import sim_config, wait_until

from ocppd.core.session.state import TxPoint, TxPoints, when_all
from ocppd.hw.base import PilotState
from ocppd.hw.sim import build_sim_hardware
from ocppd.ocpp.v16.keys import Keys, V16Policy, standard_keys
from ocppd.station import Station
from ocppd.storage import Store

pytestmark = pytest.mark.asyncio


class PlugFirst(V16Policy):
    """1.6's keys with the points a 2.0.1 adapter gives for TxStartPoint/TxStopPoint
    EVConnected."""

    @property
    def tx_points(self) -> TxPoints:
        return TxPoints(begin=frozenset({when_all(TxPoint.EV_CONNECTED)}),
                        end=frozenset({TxPoint.EV_CONNECTED}))


async def test_a_transaction_begun_at_plug_in_gets_its_card_later(tmp_path: Path) -> None:
    cfg = sim_config(tmp_path, "ws://127.0.0.1:9/ocpp", ocpp={"AllowOfflineTxForUnknownId": True})
    hw = build_sim_hardware(cfg)
    store = Store.open(cfg.storage.path)
    keys = Keys(store, standard_keys(connectors=1), cfg.ocpp)
    station = Station(cfg=cfg, store=store, hw=hw, policy=PlugFirst(keys))
    board = hw.sim
    assert board is not None
    await station.start()
    try:
        c = station.connectors[1]
        board.plug(1)
        await wait_until(lambda: c.tx is not None, what="a transaction at plug-in")
        assert c.tx is not None and c.tx.id_tag is None
        local_id = c.tx.local_id
        assert [e.kind for e in store.tx_events_of(local_id)] == ["started"]
        # no card, no energy: nothing is offered, so the EV waits in B, the contactor open
        assert c.pilot is PilotState.B and not c.contactor_closed
        assert not board.view(1).offer_a

        said = await station.swipe("CARD1", None)
        assert said == "authorized the transaction on connector 1"
        await wait_until(lambda: c.contactor_closed, what="energy once the card is given")
        tx = store.transaction(local_id)
        assert tx is not None and tx.id_tag == "CARD1" and c.tx.local_id == local_id
        assert [e.kind for e in store.tx_events_of(local_id)] == ["started", "authorized"]

        board.unplug(1)
        await wait_until(lambda: c.tx is None, what="the end at unplug")
        tx = store.transaction(local_id)
        assert tx is not None and tx.finished and tx.id_tag == "CARD1"
        assert [e.kind for e in store.tx_events_of(local_id)] == [
            "started", "authorized", "ended"]
    finally:
        await station.close(stop_transactions=None)
        store.close()
