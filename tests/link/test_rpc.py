"""OCPP-J framing without a socket: parse and encode."""

from __future__ import annotations

import json

import pytest

from ocppd.ocpp import rpc
from ocppd.ocpp.rpc import CallErrorCode, FrameError


def _error(text: str) -> FrameError:
    with pytest.raises(FrameError) as info:
        rpc.parse(text)
    return info.value


def test_parses_the_three_message_types() -> None:
    assert rpc.parse('[2,"a","Heartbeat",{}]') == rpc.Call(message_id="a", action="Heartbeat",
                                                            payload={})
    assert rpc.parse('[3,"a",{"x":1}]') == rpc.CallResult(message_id="a", payload={"x": 1})
    err = rpc.parse('[4,"a","NotSupported","no",{}]')
    assert isinstance(err, rpc.CallError) and err.code is CallErrorCode.NotSupported


def test_encode_round_trips() -> None:
    call = rpc.Call(message_id=rpc.new_message_id(), action="Authorize", payload={"idTag": "ä"})
    assert rpc.parse(call.encode()) == call
    assert json.loads(call.encode())[0] == 2
    err = rpc.CallError(message_id="x", code=CallErrorCode.OccurenceConstraintViolation)
    assert json.loads(err.encode()) == [4, "x", "OccurenceConstraintViolation", "", {}]


def test_wire_spellings_of_the_errata() -> None:
    assert CallErrorCode.FormationViolation.value == "FormationViolation"
    assert CallErrorCode.OccurenceConstraintViolation.value == "OccurenceConstraintViolation"
    assert len(CallErrorCode) == 10


def test_message_ids_are_unique_and_short() -> None:
    ids = {rpc.new_message_id() for _ in range(1000)}
    assert len(ids) == 1000 and max(map(len, ids)) <= rpc.MAX_MESSAGE_ID_LEN


def test_truncated_call_keeps_its_id_for_the_answer() -> None:
    exc = _error('[2, "abc", "Reset", {"type": ')
    assert exc.code is CallErrorCode.FormationViolation
    assert exc.answer is not None and exc.answer.message_id == "abc"


def test_garbage_without_id_gets_no_answer() -> None:
    for text in ("hello", "{}", "[]", "null", '"x"', "[2]", "[2, 5, \"Reset\", {}]"):
        assert _error(text).answer is None, text


def test_broken_answer_is_not_answered() -> None:
    assert _error('[3,"abc"').answer is None
    assert _error('[3,"abc",[]]').answer is None
    assert _error('[4,"abc","X"]').message_id == "abc"


@pytest.mark.parametrize(("text", "code"), [
    ('[2,"a","Reset"]', CallErrorCode.ProtocolError),
    ('[2,"a",7,{}]', CallErrorCode.FormationViolation),
    ('[2,"a","Reset",null]', CallErrorCode.FormationViolation),
    ('[2,"a","Reset",{"n":NaN}]', CallErrorCode.FormationViolation),
    ('[2,"a","Reset",{"n":1e999}]', CallErrorCode.TypeConstraintViolation),
    ('[2,"' + "x" * 37 + '","Reset",{}]', CallErrorCode.FormationViolation),
])
def test_malformed_call_gets_the_right_code(text: str, code: CallErrorCode) -> None:
    exc = _error(text)
    assert exc.code is code
    assert exc.answer is not None


@pytest.mark.parametrize("text", [
    '[5,"a","Reset",{}]',
    '[1.5,"a","Reset",{}]',
    '[0,"a"]',
    '["2","a","Reset",{}]',
    '[true,"a","Reset",{}]',
    '[null,"a","Reset",{}]',
    '[9,"' + "x" * 37 + '","Reset",{}]',
    '[7,"a","Reset",{"type":',
])
def test_unknown_message_type_is_ignored_not_answered(text: str) -> None:
    """OCPP-J §4.1.3: a MessageTypeId other than 2, 3 or 4 is ignored; a CALLERROR in answer
    is itself a protocol violation for a strict Central System."""
    exc = _error(text)
    assert isinstance(exc, rpc.UnknownMessageType)
    assert exc.answer is None


def test_deep_nesting_does_not_blow_the_stack() -> None:
    exc = _error('[2,"a","DataTransfer",' + "[" * 100_000 + "]" * 100_000 + "]")
    assert exc.code is CallErrorCode.FormationViolation and exc.message_id == "a"


def test_unknown_error_code_from_peer_becomes_generic_but_is_kept() -> None:
    err = rpc.parse('[4,"a","FormatViolation","x",{}]')
    assert isinstance(err, rpc.CallError)
    assert err.code is CallErrorCode.GenericError and err.raw_code == "FormatViolation"
