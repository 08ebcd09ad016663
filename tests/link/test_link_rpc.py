"""RPC over a real WebSocket: CALLERROR codes, call correlation, one outstanding CALL, replies."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from linkkit import Pair, settings_for

from ocppd.ocpp.link import Link
from ocppd.ocpp.rpc import (
    CallErrorCode,
    CallErrorReceived,
    CallTimeout,
    InvalidResponse,
    LinkDown,
    NoReply,
    OcppCallError,
    OutgoingInvalid,
    Reply,
)

BOOT = {"chargePointVendor": "ocppd", "chargePointModel": "test"}
BOOT_CONF = {"status": "Accepted", "currentTime": "2024-01-01T00:00:00Z", "interval": 300}


def _raises(code: CallErrorCode, description: str = "") -> Any:
    async def fn(_a: str, _p: dict[str, Any]) -> dict[str, Any]:
        raise OcppCallError(code, description)

    return fn


async def _crash(_a: str, _p: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("boom")


# --- every CALLERROR code from a crafted CALL ---------------------------------------------------

CRAFTED = [
    pytest.param('[2,"m1","NoSuchAction",{}]', CallErrorCode.NotImplemented, id="NotImplemented"),
    pytest.param('[2,"m2","ReserveNow",{"connectorId":1,"expiryDate":"2030-01-01T00:00:00Z",'
                 '"idTag":"T","reservationId":1}]', CallErrorCode.NotSupported, id="NotSupported"),
    pytest.param('[2,"m3","Reset"]', CallErrorCode.ProtocolError, id="ProtocolError-incomplete"),
    pytest.param('[2,"m5","Reset",{"type":"Hard","x":1}]', CallErrorCode.FormationViolation,
                 id="FormationViolation-extra"),
    pytest.param('[2,"m6","Reset",[]]', CallErrorCode.FormationViolation,
                 id="FormationViolation-array"),
    pytest.param('[2, "m7", "Reset", {"type": ', CallErrorCode.FormationViolation,
                 id="FormationViolation-truncated"),
    pytest.param('[2,"m8","Reset",{"type":"Medium"}]', CallErrorCode.PropertyConstraintViolation,
                 id="PropertyConstraintViolation"),
    pytest.param('[2,"m9","Reset",{}]', CallErrorCode.OccurenceConstraintViolation,
                 id="OccurenceConstraintViolation"),
    pytest.param('[2,"m10","ChangeAvailability",{"connectorId":"1","type":"Operative"}]',
                 CallErrorCode.TypeConstraintViolation, id="TypeConstraintViolation"),
    pytest.param('[2,"m11","ClearCache",{}]', CallErrorCode.InternalError, id="InternalError"),
    pytest.param('[2,"m12","DataTransfer",{"vendorId":"x"}]', CallErrorCode.GenericError,
                 id="GenericError"),
    pytest.param('[2,"m13","GetConfiguration",{}]', CallErrorCode.SecurityError,
                 id="SecurityError"),
]


@pytest.mark.parametrize(("frame", "code"), CRAFTED)
async def test_crafted_call_gets_its_callerror_code(pair: Pair, frame: str,
                                                    code: CallErrorCode) -> None:
    pair.handlers.set("ReserveNow", _raises(CallErrorCode.NotSupported))
    pair.handlers.set("ClearCache", _crash)
    pair.handlers.set("DataTransfer", _raises(CallErrorCode.GenericError, "vendor says no"))
    pair.handlers.set("GetConfiguration", _raises(CallErrorCode.SecurityError))
    mid = json.loads(frame[: frame.index(",", frame.index(",") + 1)] + "]")[1]
    answer = await pair.conn.request_raw(frame, mid)
    assert answer[0] == 4 and answer[1] == mid
    assert answer[2] == code.value
    assert isinstance(answer[3], str) and isinstance(answer[4], dict)
    assert pair.link.connected and pair.link.stats.connects == 1  # the link stays up


async def test_handler_crash_is_logged_with_traceback(pair: Pair,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    pair.handlers.set("ClearCache", _crash)
    with caplog.at_level(logging.ERROR, logger="ocppd.link"):
        answer = await pair.conn.call("ClearCache", {})
    assert answer[2] == "InternalError" and "boom" not in answer[3]  # short, no internals
    assert any(r.exc_info and "ClearCache" in r.getMessage() for r in caplog.records)


async def test_invalid_response_of_ours_becomes_internal_error_and_is_counted(pair: Pair) -> None:
    pair.handlers.returns("ClearCache", {"status": "Maybe"})
    answer = await pair.conn.call("ClearCache", {})
    assert answer[0] == 4 and answer[2] == "InternalError"
    assert pair.link.stats.outgoing_invalid == 1


async def test_valid_call_is_answered_with_handler_payload(pair: Pair) -> None:
    pair.handlers.returns("ClearCache", {"status": "Accepted"})
    answer = await pair.conn.call("ClearCache", {})
    assert answer[0] == 3 and answer[2] == {"status": "Accepted"}
    assert pair.handlers.seen == [("ClearCache", {})]


async def test_no_reply_sends_nothing(pair: Pair) -> None:
    async def silent(_a: str, _p: dict[str, Any]) -> dict[str, Any]:
        raise NoReply

    pair.handlers.set("ClearCache", silent)
    pair.handlers.returns("GetLocalListVersion", {"listVersion": 3})
    with pytest.raises(TimeoutError):
        await pair.conn.call("ClearCache", {}, timeout_s=0.3)
    # the next CALL is answered, and nothing arrived for the silent one
    answer = await pair.conn.call("GetLocalListVersion", {})
    assert answer[2] == {"listVersion": 3}
    assert pair.conn.stray.empty()


async def test_reply_then_runs_after_the_callresult_is_sent(pair: Pair) -> None:
    async def triggered() -> None:
        await pair.link.call("StatusNotification", {"connectorId": 0, "errorCode": "NoError",
                                                    "status": "Available"})

    async def trigger(_a: str, _p: dict[str, Any]) -> Reply:
        return Reply({"status": "Accepted"}, then=triggered)

    pair.handlers.set("TriggerMessage", trigger)
    conf = await pair.conn.call("TriggerMessage", {"requestedMessage": "StatusNotification"})
    status = await pair.conn.next_call()
    await pair.conn.answer(status, {})
    # what the Central System received, in order: the .conf first, then the triggered message
    received = [json.loads(f) for f in pair.conn.frames]
    assert received[0] == conf and conf[0] == 3
    assert received[1][0] == 2 and received[1][2] == "StatusNotification"


# --- our CALLs ----------------------------------------------------------------------------------


async def test_call_returns_the_callresult_payload(pair: Pair) -> None:
    pair.cs.answers["BootNotification"] = BOOT_CONF
    assert await pair.link.call("BootNotification", BOOT) == BOOT_CONF
    frame = json.loads(pair.conn.frames[-1])
    assert frame[0] == 2 and frame[2] == "BootNotification" and len(frame[1]) <= 36


async def test_message_ids_are_unique(pair: Pair) -> None:
    pair.cs.answers["Heartbeat"] = {"currentTime": "2024-01-01T00:00:00Z"}
    for _ in range(20):
        await pair.link.call("Heartbeat", {})
    ids = [json.loads(f)[1] for f in pair.conn.frames]
    assert len(set(ids)) == 20 and all(len(i) <= 36 for i in ids)


async def test_callerror_answer_raises_call_error_received(pair: Pair) -> None:
    task = asyncio.ensure_future(pair.link.call("BootNotification", BOOT))
    frame = await pair.conn.next_call()
    await pair.conn.send(json.dumps([4, frame[1], "GenericError", "nope", {"k": 1}]))
    with pytest.raises(CallErrorReceived) as info:
        await task
    assert info.value.code is CallErrorCode.GenericError
    assert info.value.description == "nope" and info.value.details == {"k": 1}


async def test_invalid_response_from_cs_is_a_failure_to_process(pair: Pair) -> None:
    task = asyncio.ensure_future(pair.link.call("BootNotification", BOOT))
    frame = await pair.conn.next_call()
    await pair.conn.answer(frame, {"status": "Whatever", "interval": 1})
    with pytest.raises(InvalidResponse) as info:
        await task
    assert isinstance(info.value, OcppCallError)
    assert info.value.code is CallErrorCode.FormationViolation


async def test_outgoing_invalid_payload_is_never_sent_and_counted(
        pair: Pair, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="ocppd.link"), pytest.raises(OutgoingInvalid):
        await pair.link.call("BootNotification", {"chargePointVendor": "x" * 21,
                                                  "chargePointModel": "m"})
    assert pair.link.stats.outgoing_invalid == 1
    assert any("BootNotification" in r.getMessage() for r in caplog.records)
    pair.cs.answers["Heartbeat"] = {"currentTime": "2024-01-01T00:00:00Z"}
    await pair.link.call("Heartbeat", {})
    assert [json.loads(f)[2] for f in pair.conn.frames] == ["Heartbeat"]  # only the valid one


async def test_only_one_call_outstanding_at_a_time(pair: Pair) -> None:
    first = asyncio.ensure_future(pair.link.call("BootNotification", BOOT))
    second = asyncio.ensure_future(pair.link.call("Heartbeat", {}))
    f1 = await pair.conn.next_call()
    with pytest.raises(TimeoutError):  # the second CALL waits for the first answer
        await pair.conn.next_call(timeout_s=0.2)
    await pair.conn.answer(f1, BOOT_CONF)
    f2 = await pair.conn.next_call()
    assert (f1[2], f2[2]) == ("BootNotification", "Heartbeat")
    await pair.conn.answer(f2, {"currentTime": "2024-01-01T00:00:00Z"})
    assert (await first)["status"] == "Accepted"
    assert "currentTime" in await second


async def test_cs_call_is_answered_while_our_call_waits(pair: Pair) -> None:
    pair.handlers.returns("GetLocalListVersion", {"listVersion": 7})
    ours = asyncio.ensure_future(pair.link.call("BootNotification", BOOT))
    frame = await pair.conn.next_call()
    answer = await pair.conn.call("GetLocalListVersion", {}, timeout_s=1.0)
    assert answer[2] == {"listVersion": 7}
    assert not ours.done()
    await pair.conn.answer(frame, BOOT_CONF)
    await ours


async def test_handler_awaiting_link_call_does_not_deadlock(pair: Pair) -> None:
    async def remote_start(_a: str, p: dict[str, Any]) -> dict[str, Any]:
        conf = await pair.link.call("Authorize", {"idTag": p["idTag"]})
        return {"status": "Accepted" if conf["idTagInfo"]["status"] == "Accepted"
                else "Rejected"}

    pair.handlers.set("RemoteStartTransaction", remote_start)
    cs_call = asyncio.ensure_future(pair.conn.call("RemoteStartTransaction", {"idTag": "T1"}))
    authorize = await pair.conn.next_call()  # the handler's CALL got out
    assert authorize[2] == "Authorize"
    await pair.conn.answer(authorize, {"idTagInfo": {"status": "Accepted"}})
    answer = await asyncio.wait_for(cs_call, 5)
    assert answer[2] == {"status": "Accepted"}


async def test_call_times_out(pair: Pair) -> None:
    with pytest.raises(CallTimeout):
        await pair.link.call("Heartbeat", {}, timeout_s=0.2)
    # the late answer has an id nobody waits for: ignored, link still up
    late = await pair.conn.next_call()
    await pair.conn.answer(late, {"currentTime": "2024-01-01T00:00:00Z"})
    pair.cs.answers["Heartbeat"] = {"currentTime": "2024-01-01T00:00:00Z"}
    assert await pair.link.call("Heartbeat", {}) == {"currentTime": "2024-01-01T00:00:00Z"}


async def test_each_call_gets_its_own_timeout_from_the_shared_timer(pair: Pair) -> None:
    """One timer serves consecutive calls: a long timeout armed first must not delay a shorter
    one after it, and a timer that fires for an answered call must not fail the next."""
    loop = asyncio.get_running_loop()
    pair.cs.answers["Heartbeat"] = {"currentTime": "2024-01-01T00:00:00Z"}
    assert await pair.link.call("Heartbeat", {}, timeout_s=30.0)  # arms the timer at +30 s
    del pair.cs.answers["Heartbeat"]
    t0 = loop.time()
    with pytest.raises(CallTimeout):  # re-armed earlier: not at +30 s (bounded wait)
        await asyncio.wait_for(pair.link.call("Heartbeat", {}, timeout_s=0.2), 10)
    assert loop.time() - t0 >= 0.2  # a lower bound only: a loaded machine is never early
    await pair.conn.next_call()  # the unanswered frame
    # answered just before the timer of the first deadline fires; the next call outlives it
    pair.cs.answers["Heartbeat"] = {"currentTime": "2024-01-01T00:00:00Z"}
    assert await pair.link.call("Heartbeat", {}, timeout_s=0.3)
    await asyncio.sleep(0.2)
    delayed = asyncio.ensure_future(pair.link.call("Heartbeat", {}, timeout_s=0.6))
    del pair.cs.answers["Heartbeat"]
    t1 = loop.time()
    with pytest.raises(CallTimeout):
        await asyncio.wait_for(delayed, 10)  # the timer fired early for this one: re-armed
    assert loop.time() - t1 >= 0.5  # not failed by the earlier call's timer


async def test_answer_with_unknown_id_is_ignored(pair: Pair,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ocppd.link"):
        task = asyncio.ensure_future(pair.link.call("BootNotification", BOOT))
        frame = await pair.conn.next_call()
        await pair.conn.send(json.dumps([3, "not-the-id", BOOT_CONF]))
        await pair.conn.send(json.dumps([4, "also-not", "GenericError", "", {}]))
        await pair.conn.answer(frame, BOOT_CONF)
        assert (await task) == BOOT_CONF
    assert sum("unknown message id" in r.getMessage() for r in caplog.records) == 2
    assert pair.link.stats.incoming_errors == 2


async def test_call_when_not_connected_raises_link_down(cs: Any, handlers: Any) -> None:
    link = Link(settings_for(cs.url), handler=handlers, validator=None)
    with pytest.raises(LinkDown):
        await link.call("Heartbeat", {})


async def test_connection_lost_while_waiting_raises_link_down(pair: Pair) -> None:
    task = asyncio.ensure_future(pair.link.call("BootNotification", BOOT))
    await pair.conn.next_call()
    await pair.conn.ws.close()
    with pytest.raises(LinkDown):
        await asyncio.wait_for(task, 5)
    assert any(e.startswith("down:") for e in pair.events)
    await pair.cs.connection(2)  # and it comes back
    await asyncio.wait_for(pair.link.wait_connected(), 5)


async def test_binary_frame_is_answered_and_link_stays_up(pair: Pair) -> None:
    fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
    pair.conn.waiting["b1"] = fut
    await pair.conn.ws.send_bytes(b'[2,"b1","ClearCache",{}]')
    frame = await asyncio.wait_for(fut, 5)
    assert frame[0] == 4 and frame[2] == "FormationViolation"
    await pair.conn.ws.send_bytes(b"\xff\xfe\x00 not even text")
    pair.handlers.returns("ClearCache", {"status": "Accepted"})
    assert (await pair.conn.call("ClearCache", {}))[2] == {"status": "Accepted"}
    assert pair.link.stats.connects == 1


async def test_broken_answer_to_our_call_fails_it_as_invalid_response(pair: Pair) -> None:
    task = asyncio.ensure_future(pair.link.call("BootNotification", BOOT))
    frame = await pair.conn.next_call()
    await pair.conn.send(f'[3,"{frame[1]}",{{"status":')
    with pytest.raises(InvalidResponse) as info:
        await task
    assert info.value.code is CallErrorCode.FormationViolation
    assert pair.link.connected


async def test_unknown_message_type_is_ignored_and_the_link_stays_up(
        pair: Pair, caplog: pytest.LogCaptureFixture) -> None:
    """OCPP-J §4.1.3: a frame with an unknown MessageTypeId is ignored: no CALLERROR (a strict
    Central System counts one as a protocol violation), no disconnect."""
    pair.handlers.returns("Reset", {"status": "Accepted"})
    with caplog.at_level(logging.WARNING, logger="ocppd.link"):
        for frame in ('[5,"u1","Reset",{"type":"Hard"}]', '[1.5,"u2","Reset",{"type":"Hard"}]',
                      '[9,"u3","Reset",{"type":"Hard"}]', '["2","u4","Reset",{"type":"Hard"}]',
                      '[0,"u5"]'):
            await pair.conn.send(frame)
        # probes behind them: answered, so everything before them was read and handled
        for _ in range(2):
            assert (await pair.conn.call("Reset", {"type": "Soft"}))[2] == {"status": "Accepted"}
    answered = [json.loads(f)[1] for f in pair.conn.frames if isinstance(f, str)]
    assert not any(mid.startswith("u") for mid in answered), answered
    assert pair.handlers.seen == [("Reset", {"type": "Soft"})] * 2
    assert pair.link.connected and pair.link.stats.connects == 1
    assert sum("MessageTypeId" in r.getMessage() for r in caplog.records) == 5


async def test_abandoned_call_keeps_the_slot_until_answered(
        pair: Pair, caplog: pytest.LogCaptureFixture) -> None:
    """OCPP-J §4.1.1: a caller that gives up on its CALL (its task cancelled) does not free the
    one outstanding slot; the next CALL waits for the answer, which is not an unknown id."""
    hb = {"currentTime": "2024-01-01T00:00:00Z"}
    with caplog.at_level(logging.INFO, logger="ocppd.link"):
        first = asyncio.ensure_future(pair.link.call("Heartbeat", {}))
        f1 = await pair.conn.next_call()
        first.cancel()
        second = asyncio.ensure_future(pair.link.call("BootNotification", BOOT))
        await asyncio.wait_for(_until(lambda: pair.link.calls_waiting == 1), 5)
        assert pair.conn.calls.empty() and not second.done()  # still waiting for the slot
        await pair.conn.answer(f1, hb)  # the late answer frees it
        f2 = await pair.conn.next_call()
        assert f2[2] == "BootNotification"
        await pair.conn.answer(f2, BOOT_CONF)
        assert (await second)["status"] == "Accepted"
    assert first.cancelled()
    assert not any("unknown message id" in r.getMessage() for r in caplog.records)
    assert pair.link.stats.incoming_errors == 0


async def test_abandoned_call_frees_the_slot_at_its_deadline(pair: Pair) -> None:
    loop = asyncio.get_running_loop()
    first = asyncio.ensure_future(pair.link.call("Heartbeat", {}, timeout_s=0.3))
    await pair.conn.next_call()
    sent_at = loop.time()  # a little after the link sent it and armed its deadline
    first.cancel()
    pair.cs.answers["BootNotification"] = BOOT_CONF
    # no answer ever comes: the slot is held until the abandoned CALL's timeout, then freed
    assert (await asyncio.wait_for(pair.link.call("BootNotification", BOOT), 5))["status"] \
        == "Accepted"
    assert loop.time() - sent_at >= 0.25  # a lower bound only: not sent before the deadline
    sent = [json.loads(f) for f in pair.conn.frames if isinstance(f, str)]
    assert [f[2] for f in sent] == ["Heartbeat", "BootNotification"]


async def test_late_answer_after_timeout_is_not_an_unknown_id(
        pair: Pair, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="ocppd.link"):
        with pytest.raises(CallTimeout):
            await pair.link.call("Heartbeat", {}, timeout_s=0.2)
        late = await pair.conn.next_call()
        await pair.conn.answer(late, {"currentTime": "2024-01-01T00:00:00Z"})
        pair.cs.answers["BootNotification"] = BOOT_CONF
        await pair.link.call("BootNotification", BOOT)  # the late answer was read before this
    assert any("late answer" in r.getMessage() for r in caplog.records)
    assert not any("unknown message id" in r.getMessage() for r in caplog.records)
    assert pair.link.stats.incoming_errors == 0


async def _until(pred: Any) -> None:
    while not pred():
        await asyncio.sleep(0.005)
