"""ExtendedTriggerMessage (OCPP 1.6 Security Whitepaper), end to end: every message it names is
sent after the answer, with the same Accepted / Rejected rules as TriggerMessage (§5.17)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from csms import CentralSystem, call
from fwpeers import WebPeer
from harness import CP_ID, booted, running, sim_config

pytestmark = pytest.mark.asyncio

# requested message -> what the Central System then receives
SENT = {
    "BootNotification": "BootNotification",
    "Heartbeat": "Heartbeat",
    "StatusNotification": "StatusNotification",
    "MeterValues": "MeterValues",
    "FirmwareStatusNotification": "SignedFirmwareStatusNotification",
    "LogStatusNotification": "LogStatusNotification",
    "SignChargePointCertificate": "SignCertificate",
}


async def extended(cs: CentralSystem, what: str, connector_id: int | None = None) -> str:
    conf = await cs.call(CP_ID, call.ExtendedTriggerMessage(requested_message=what,
                                                            connector_id=connector_id))
    return str(conf.status)


async def test_every_extended_trigger_sends_its_message_after_the_answer(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url, connectors=2)):
        await booted(cs, connectors=2)
        for what, action in SENT.items():
            before, mark = len(cs.received(action)), len(cs.messages)
            cid = 1 if what in ("MeterValues", "StatusNotification") else None
            assert await extended(cs, what, cid) == "Accepted", what
            got = await cs.wait_for(action, count=before + 1)
            answered = next(i for i, m in enumerate(cs.messages)
                            if i >= mark and m.action == "ExtendedTriggerMessage.conf")
            sent_at = max(i for i, m in enumerate(cs.messages)
                          if m.direction == "in" and m.action == action)
            assert sent_at > answered, f"{action} before the answer"
            if what == "StatusNotification":
                assert got[-1]["connectorId"] == 1
        # nothing in progress: Idle, and no requestId (whitepaper: only while busy)
        assert cs.received("SignedFirmwareStatusNotification")[-1] == {"status": "Idle"}
        assert cs.received("LogStatusNotification")[-1] == {"status": "Idle"}


async def test_extended_trigger_for_a_connector_that_does_not_exist_is_rejected(
    cs: CentralSystem, tmp_path: Path
) -> None:
    async with running(sim_config(tmp_path, cs.url)):
        await booted(cs)
        for what in ("StatusNotification", "MeterValues", "Heartbeat"):
            assert await extended(cs, what, 7) == "Rejected"
        statuses = len(cs.received("StatusNotification"))
        assert await extended(cs, "StatusNotification") == "Accepted"  # all: 0 and 1
        await cs.wait_for("StatusNotification", count=statuses + 2)


async def test_triggered_log_status_during_an_upload_carries_its_request_id(
    cs: CentralSystem, tmp_path: Path
) -> None:
    """While a GetLog upload runs, a triggered LogStatusNotification says Uploading with the
    request's id (the Central System holds its answer to Uploading to keep the upload busy)."""
    gate = cs.behaviour.hold["LogStatusNotification"] = asyncio.Event()
    async with WebPeer() as web, running(sim_config(tmp_path, cs.url)):
        await booted(cs)
        conf = await cs.call(CP_ID, call.GetLog(log_type="SecurityLog", request_id=31,
                                                log={"remoteLocation": f"{web.url}/upload/"}))
        assert conf.status == "Accepted"
        await cs.wait_for("LogStatusNotification")
        assert await extended(cs, "LogStatusNotification") == "Accepted"
        gate.set()
        await cs.wait_for("LogStatusNotification", lambda p: p["status"] == "Uploaded")
    statuses = [(p["status"], p.get("requestId")) for p in cs.received("LogStatusNotification")]
    assert statuses == [("Uploading", 31), ("Uploading", 31), ("Uploaded", 31)]
