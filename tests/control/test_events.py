"""The event bus on its own: diffs of status snapshots, frames on request, slow readers."""

from __future__ import annotations

import copy
from typing import Any

from ocppd import events
from ocppd.events import EventBus


def status(**conn: Any) -> dict[str, Any]:
    c = {"id": 1, "status": "Available", "error": "NoError", "pilot": "A", "contactor": "open",
         "limit_a": None, "local_tx_id": None, "power_w": None, "energy_wh": None,
         "id_tag": None, **conn}
    return {"connection": {"state": "connected", "registration": "accepted",
                           "last_error": None, "url": "ws://x"}, "connectors": [c]}


async def test_diff_turns_snapshots_into_events() -> None:
    current = [status()]

    async def snapshot() -> dict[str, Any]:
        return copy.deepcopy(current[0])

    bus = EventBus(snapshot)
    sub = await bus.subscribe()
    assert (await sub.get())["kind"] == "snapshot"
    old = current[0]
    current[0] = status(status="Faulted", error="GroundFailure")
    bus._diff(old, current[0])
    kinds = [(await sub.get())["kind"] for _ in range(2)]
    assert kinds == ["fault", "status"]
    bus._diff(current[0], status(status="Charging", local_tx_id=3, power_w=7000.0,
                                 energy_wh=12.0))
    got = [await sub.get() for _ in range(3)]
    assert [e["kind"] for e in got] == ["fault", "status", "reading"]
    assert got[0]["active"] is False and got[0]["error"] == "GroundFailure"
    assert got[2]["power_w"] == 7000.0
    assert sub.get_nowait() is None
    sub.close()
    assert bus.subscribers == 0
    await bus.close()


async def test_frames_only_for_those_who_ask_and_slow_readers_learn_what_they_lost(
    monkeypatch: Any,
) -> None:
    async def snapshot() -> dict[str, Any]:
        return status()

    monkeypatch.setattr(events, "QUEUE_MAX", 5)
    bus = EventBus(snapshot, redact=lambda s: s.replace("SECRET", "***"))
    plain = await bus.subscribe()
    framed = await bus.subscribe(frames=True)
    for sub in (plain, framed):
        assert (await sub.get())["kind"] == "snapshot"
    bus.frame("out", '[2,"1","Authorize",{"idTag":"SECRET"}]')
    assert plain.get_nowait() is None
    ev = await framed.get()
    assert ev["kind"] == "ocpp" and "SECRET" not in ev["frame"]
    for i in range(8):  # the queue holds 5: 3 are lost
        bus.publish("status", {"connector_id": 1, "n": i})
    seen = [plain.get_nowait() for _ in range(5)]
    assert all(e is not None for e in seen)
    bus.publish("status", {"connector_id": 1, "n": 99})
    lost = await plain.get()
    assert lost["kind"] == "overflow" and lost["lost"] == 3
    assert (await plain.get())["n"] == 99
    await bus.close()
