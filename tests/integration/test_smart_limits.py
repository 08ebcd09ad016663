"""Charger-wide limits and remote-start profiles, end to end (OCPP 1.6 §3.13.1, §5.11, §7.8).

The real daemon on the simulator against a real Central System on loopback. The simulator
records the highest sum of pilot offers it ever saw (``peak_total_offer_a``) and the offer at
the instant each contactor closed (``offer_at_close_a``): limits must hold at every instant,
not only once things have settled.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from csms import CentralSystem, call
from harness import (
    CP_ID,
    booted,
    charge,
    charging_profile,
    remote_start,
    resume_config,
    running,
    set_profile,
    sim,
    sim_config,
    transaction_id,
    wait_status,
    wait_until,
)

pytestmark = pytest.mark.asyncio


def offers(d: Any) -> dict[int, float]:
    return {cid: sim(d).view(cid).offer_a or 0.0 for cid in d.station.connectors}


# --- item 1: the charger's limit is shared ---------------------------------------------------


async def test_charge_point_max_profile_is_shared_between_two_charging_connectors(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url, connectors=2)) as d:
        await booted(cs, connectors=2)
        await set_profile(cs, 0, charging_profile(1, "ChargePointMaxProfile", 16))
        await charge(cs, d, "TAG1", cid=1, at=1)
        await wait_until(lambda: offers(d)[1] == 16, what="connector 1 alone gets all 16 A")
        await charge(cs, d, "TAG2", cid=2, at=2)
        await wait_until(lambda: offers(d) == {1: 8, 2: 8}, what="16 A shared 8 + 8")
        assert sim(d).view(1).contactor_closed and sim(d).view(2).contactor_closed
        assert sim(d).peak_total_offer_a <= 16  # at no instant more than the charger's limit
        # the session on 1 ends: 2 gets the whole limit again
        await d.station.swipe("TAG1", 1)
        await wait_until(lambda: offers(d)[2] == 16, what="connector 2 gets all 16 A")
        assert sim(d).peak_total_offer_a <= 16


async def test_site_breaker_limit_caps_the_sum_without_any_profile(
    cs: CentralSystem, tmp_path: Path
) -> None:
    cfg = sim_config(tmp_path, cs.url, connectors=2, hardware={"max_current_a": 20.0})
    async with running(cfg) as d:
        await booted(cs, connectors=2)
        await charge(cs, d, "TAG1", cid=1, at=1)
        await charge(cs, d, "TAG2", cid=2, at=2)
        await wait_until(lambda: offers(d) == {1: 10, 2: 10}, what="20 A shared 10 + 10")
        assert sim(d).peak_total_offer_a <= 20
        comp = await cs.call(CP_ID, call.GetCompositeSchedule(connector_id=0, duration=60))
        assert comp.status == "Accepted"
        assert comp.charging_schedule["charging_schedule_period"][0]["limit"] == 20


async def test_a_connector_that_cannot_get_6_a_pauses_until_another_session_ends(
    cs: CentralSystem, tmp_path: Path
) -> None:
    cfg = sim_config(tmp_path, cs.url, connectors=3, hardware={"max_current_a": 16.0})
    async with running(cfg) as d:
        await booted(cs, connectors=3)
        await charge(cs, d, "TAG1", cid=1, at=1)
        await charge(cs, d, "TAG2", cid=2, at=2)
        sim(d).plug(3)
        await d.station.swipe("TAG3", 3)
        await wait_status(cs, "SuspendedEVSE", cid=3)  # 3 x 6 A does not fit in 16 A
        assert offers(d) == {1: 8, 2: 8, 3: 0}
        assert not sim(d).view(3).contactor_closed
        await d.station.swipe("TAG1", 1)
        await wait_status(cs, "Charging", cid=3)
        assert offers(d) == {1: 0, 2: 8, 3: 8}
        assert sim(d).peak_total_offer_a <= 16


async def test_composite_schedule_of_connector_0_is_what_the_whole_charger_may_draw(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url, connectors=2)) as d:
        await booted(cs, connectors=2)
        comp = await cs.call(CP_ID, call.GetCompositeSchedule(connector_id=0, duration=60))
        # no profile, no site limit: both connectors at their 32 A rating
        assert comp.charging_schedule["charging_schedule_period"][0]["limit"] == 64
        await set_profile(cs, 0, charging_profile(1, "ChargePointMaxProfile", 16))
        comp = await cs.call(CP_ID, call.GetCompositeSchedule(connector_id=0, duration=60))
        assert comp.charging_schedule["charging_schedule_period"][0]["limit"] == 16
        assert d.smart is not None


# --- item 3: a RemoteStartTransaction's profile from the first ampere ---------------------------


async def test_remote_start_profile_limits_the_first_offer_even_without_start_conf(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        cs.behaviour.fail_actions["StartTransaction"] = 1000  # the transactionId never comes
        sim(d).plug(1)
        await remote_start(cs, "R1", profile=charging_profile(3, "TxProfile", 10))
        await wait_status(cs, "Charging")
        view = sim(d).view(1)
        assert view.contactor_closed
        assert view.offer_at_close_a is not None and view.offer_at_close_a <= 10
        assert view.offer_a == 10
        assert sim(d).peak_total_offer_a <= 10


async def test_remote_start_profile_is_bound_to_the_transaction_once_its_id_is_known(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        sim(d).plug(1)
        await remote_start(cs, "R1", profile=charging_profile(3, "TxProfile", 10))
        await wait_status(cs, "Charging")
        tx_id = await transaction_id(d)
        assert sim(d).view(1).offer_at_close_a == 10
        await wait_until(
            lambda: [p.tx_id for p in d.store.profiles()] == [tx_id], what="profile bound"
        )


@pytest.mark.parametrize(
    "bad",
    [
        {"chargingProfilePurpose": "TxDefaultProfile"},
        {"chargingProfilePurpose": "ChargePointMaxProfile"},
        {"transactionId": 5},
        {
            "chargingSchedule": {
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 10, "limit": 10}],
            }
        },
        {"stackLevel": 99},
    ],
    ids=["tx-default", "cp-max", "with-transaction-id", "first-period-not-at-0", "stack-level"],
)
async def test_remote_start_with_an_invalid_profile_is_rejected_and_starts_nothing(
    cs: CentralSystem, tmp_path: Path, bad: dict[str, Any]
) -> None:
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        sim(d).plug(1)
        await remote_start(cs, "R1", profile=charging_profile(3, "TxProfile", 10, **bad),
                           expect="Rejected")
        # nothing started: a later, valid start is the first and only transaction
        await remote_start(cs, "R2")
        await wait_status(cs, "Charging")
        # the queued StartTransaction goes out once durable: the status may overtake it (§3.7)
        await cs.wait_for("StartTransaction")
        assert [p["idTag"] for p in cs.received("StartTransaction")] == ["R2"]


@pytest.mark.parametrize("start_conf", [True, False], ids=["bound", "unbound"])
async def test_remote_start_profile_survives_a_restart_with_resume(
    cs: CentralSystem, tmp_path: Path, start_conf: bool
) -> None:
    """Bound: the transactionId came before the restart. Unbound: StartTransaction.conf never
    came before it."""
    cfg = resume_config(tmp_path, cs.url)
    async with running(cfg) as d:
        await booted(cs)
        if not start_conf:
            cs.behaviour.fail_actions["StartTransaction"] = 1000
        sim(d).plug(1)
        await remote_start(cs, "R1", profile=charging_profile(3, "TxProfile", 10))
        await wait_status(cs, "Charging")
        assert sim(d).view(1).offer_a == 10
    cs.messages.clear()
    async with running(cfg, plugged=(1,)) as d:  # the EV is still there after the restart
        await wait_status(cs, "Charging")
        view = sim(d).view(1)
        assert view.offer_at_close_a is not None and view.offer_at_close_a <= 10
        assert view.offer_a == 10
        assert sim(d).peak_total_offer_a <= 10
        if not start_conf:
            # still unbound, still limited (its queued StartTransaction waits for its retry
            # time; binding when the id arrives is the test above)
            assert [p.tx_id for p in d.store.profiles()] == [None]
            return
        tx_id = await transaction_id(d)
        await wait_until(
            lambda: [p.tx_id for p in d.store.profiles()] == [tx_id], what="profile bound"
        )
        assert sim(d).view(1).offer_a == 10


async def test_tx_default_limit_holds_from_the_first_ampere_after_a_restart(
    cs: CentralSystem, tmp_path: Path
) -> None:
    """A sibling: stored profiles were applied only after the resumed session got energy."""
    cfg = resume_config(tmp_path, cs.url)
    async with running(cfg) as d:
        await booted(cs)
        await set_profile(cs, 1, charging_profile(4, "TxDefaultProfile", 12))
        await charge(cs, d, "TAG1", at=1)
        await wait_until(lambda: sim(d).view(1).offer_a == 12, what="12 A")
    cs.messages.clear()
    async with running(cfg, plugged=(1,)) as d:
        await wait_status(cs, "Charging")
        assert sim(d).view(1).offer_at_close_a == 12
        assert sim(d).peak_total_offer_a <= 12


# --- re-sharing when an EV draws less, driven by the injected clock -------------------------------


async def test_an_ev_that_draws_less_than_offered_frees_its_share_then_gets_it_back(
    tmp_path: Path,
) -> None:
    """The station on the simulator with a real store; the meter clock and the station's
    monotonic clock are one fake clock, so "for a minute" is stepped, not waited for."""
    from ocppd.core.sharing import DRAW_SETTLE_S
    from ocppd.hw.base import PilotState
    from ocppd.hw.sim import build_sim_hardware
    from ocppd.ocpp.v16.keys import Keys, V16Policy, standard_keys
    from ocppd.station import Station
    from ocppd.storage import Store

    cfg = sim_config(
        tmp_path,
        "ws://127.0.0.1:9/ocpp",
        connectors=2,
        hardware={"max_current_a": 16.0},
        ocpp={"AllowOfflineTxForUnknownId": True},
    )
    now = [1000.0]
    hw = build_sim_hardware(cfg, clock=lambda: now[0])
    store = Store.open(cfg.storage.path)
    keys = Keys(store, standard_keys(connectors=2), cfg.ocpp)
    station = Station(cfg=cfg, store=store, hw=hw, policy=V16Policy(keys), mono=lambda: now[0])
    board = hw.sim
    assert board is not None
    await station.start()
    try:
        for cid in (1, 2):
            board.plug(cid)
            await wait_until(lambda cid=cid: station.connectors[cid].pilot.plugged, what="plug")
            await station.swipe(f"TAG{cid}", cid)
        both_charging = lambda: all(board.view(c).current_a > 0 for c in (1, 2))  # noqa: E731
        await wait_until(both_charging, what="both charging")
        assert (board.view(1).offer_a, board.view(2).offer_a) == (8, 8)
        board.set_ev_state(2, PilotState.B)  # EV 2 stops drawing (it stays plugged, in B)
        await wait_until(lambda: station.connectors[2].pilot is PilotState.B, what="EV 2 in B")
        await station.sample_now(None, "poll")
        now[0] += DRAW_SETTLE_S / 2
        await station.sample_now(None, "poll")
        assert board.view(1).offer_a == 8  # not for long enough yet
        now[0] += DRAW_SETTLE_S / 2
        await station.sample_now(None, "poll")
        # EV 2 keeps the 6 A minimum (it can resume at once), EV 1 gets the rest
        assert (board.view(1).offer_a, board.view(2).offer_a) == (10, 6)
        assert board.peak_total_offer_a <= 16
        board.set_ev_state(2, PilotState.C)  # EV 2 asks again: equal shares at once
        await wait_until(
            lambda: (board.view(1).offer_a, board.view(2).offer_a) == (8, 8), what="8 + 8"
        )
        assert board.peak_total_offer_a <= 16
    finally:
        await station.close(stop_transactions=None)
        store.close()


async def test_tx_profile_of_a_transaction_closed_by_power_loss_does_not_outlive_it(
    cs: CentralSystem, tmp_path: Path
) -> None:
    """A sibling: transactions stopped at start-up (power_loss = "stop") left their TxProfiles
    stored for ever, taking MaxChargingProfilesInstalled slots."""
    cfg = resume_config(tmp_path, cs.url)
    async with running(cfg) as d:
        await booted(cs)
        await charge(cs, d, "TAG1", at=1)
        tx_id = await transaction_id(d)
        await set_profile(cs, 1, charging_profile(9, "TxProfile", 10, tx_id=tx_id))
        assert [p.profile_id for p in d.store.profiles()] == [9]
    async with running(cfg) as d:  # the EV left meanwhile: the transaction is closed
        await cs.wait_for("StopTransaction")
        assert d.store.profiles() == []
        assert d.smart is not None and len(d.smart.profiles) == 0


async def test_a_clock_set_forward_applies_the_schedule_period_of_the_new_time(
    cs: CentralSystem, tmp_path: Path
) -> None:
    """A schedule change armed on the old clock (16 A now, 8 A in an hour); the clock is set
    forward past it (NTP on a Pi without a real-time clock): 8 A now (ocppd/wallclock.py)."""
    async with running(sim_config(tmp_path, cs.url)) as d:
        await booted(cs)
        conf = await cs.call(CP_ID, call.SetChargingProfile(
            connector_id=1, cs_charging_profiles=charging_profile(
                1, "TxDefaultProfile", 16, kind="Absolute",
                periods=[{"startPeriod": 0, "limit": 16}, {"startPeriod": 3600, "limit": 8}])))
        assert conf.status == "Accepted"
        await charge(cs, d, "TAG1")
        await wait_until(lambda: sim(d).view(1).offer_a == 16, what="16 A")
        d.wall.offset = timedelta(hours=1, seconds=1)
        assert d.station.clock_steps.check()  # what the station's watch does every 5 s
        await wait_until(lambda: sim(d).view(1).offer_a == 8, what="8 A on the new clock")
