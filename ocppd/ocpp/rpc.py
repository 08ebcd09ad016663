"""OCPP-J 1.6 RPC framing: CALL / CALLRESULT / CALLERROR, error codes, and the errors of the link.

Pure functions and values, no I/O: ``parse()`` turns a text frame into a message object or raises
``FrameError`` saying which CALLERROR (if any) the frame deserves; ``Call.encode()`` and friends
produce the wire text.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

from ocppd.errors import OcppdError

#: OCPP-J 1.6 §4.1.4: a message id is a string of at most 36 characters.
MAX_MESSAGE_ID_LEN = 36


class MessageType(IntEnum):
    """OCPP-J 1.6 §4.1.3 MessageTypeNumber."""

    CALL = 2
    CALLRESULT = 3
    CALLERROR = 4


class CallErrorCode(StrEnum):
    """OCPP-J 1.6 §4.2.3 error codes, in their 1.6 wire spelling.

    The errata (§5.1/5.2, "won't fix") keep ``FormationViolation`` and
    ``OccurenceConstraintViolation`` as spelled: peers match on these strings.
    """

    NotImplemented = "NotImplemented"
    NotSupported = "NotSupported"
    InternalError = "InternalError"
    ProtocolError = "ProtocolError"
    SecurityError = "SecurityError"
    FormationViolation = "FormationViolation"
    PropertyConstraintViolation = "PropertyConstraintViolation"
    OccurenceConstraintViolation = "OccurenceConstraintViolation"
    TypeConstraintViolation = "TypeConstraintViolation"
    GenericError = "GenericError"


# --- errors -------------------------------------------------------------------------------------


class OcppCallError(OcppdError):
    """A CALLERROR: raised by a handler to answer one, or by ``Link.call`` when one arrives."""

    def __init__(
        self,
        code: CallErrorCode,
        description: str = "",
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{code}: {description}" if description else str(code))
        self.code = code
        self.description = description
        self.details: dict[str, Any] = details if details is not None else {}


class CallErrorReceived(OcppCallError):
    """The Central System answered our CALL with a CALLERROR."""


class OutgoingInvalid(OcppCallError):
    """Our own payload failed schema validation: a bug, so it was never sent."""


class InvalidResponse(OcppCallError):
    """The Central System's CALLRESULT failed validation: a failure to process (errata §3.3)."""


class CallTimeout(OcppdError, TimeoutError):
    """No answer to our CALL within the response timeout."""


class LinkDown(OcppdError, ConnectionError):
    """Not connected, or the connection was lost while waiting for the answer."""


class NoReply(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a handler to send nothing at all (e.g. while BootNotification is Rejected)."""


@dataclass(slots=True)
class Reply:
    """A handler's answer plus work that must start only after the CALLRESULT is on the wire.

    TriggerMessage (OCPP 1.6 §5.17): the .conf goes out before the triggered message.
    """

    payload: dict[str, Any]
    then: Callable[[], Awaitable[None]] | None = None


# --- messages -----------------------------------------------------------------------------------


_ID_PREFIX = os.urandom(6).hex()  # this process: 48 random bits
_id_counter = itertools.count(1)


def new_message_id() -> str:
    """OCPP-J §4.1.4: unique per sender and connection, at most 36 characters.

    A random prefix per process and a counter: unique across connections and restarts (the
    2025 errata ask for uniqueness per charge point identity), and cheaper than a uuid4 each.
    """
    return f"{_ID_PREFIX}-{next(_id_counter)}"


def _dumps(frame: list[Any]) -> str:
    text = json.dumps(frame, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate (from a peer's "\ud800" escape) cannot travel as UTF-8: escape it.
            text = json.dumps(frame, separators=(",", ":"), allow_nan=False)
    return text


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """A CALL frame: [2, id, action, payload]."""

    message_id: str
    action: str
    payload: dict[str, Any]

    def encode(self) -> str:
        return _dumps([MessageType.CALL.value, self.message_id, self.action, self.payload])


def encode_call(message_id: str, action: str, payload_json: str) -> str:
    """A CALL around a payload that is already JSON text (a queued message, sent as stored).
    The id and action are our own ASCII names, so they need no escaping."""
    return f'[{MessageType.CALL.value},"{message_id}","{action}",{payload_json}]'


@dataclass(frozen=True, slots=True, kw_only=True)
class CallResult:
    """A CALLRESULT frame: [3, id, payload]."""

    message_id: str
    payload: dict[str, Any]

    def encode(self) -> str:
        return _dumps([MessageType.CALLRESULT.value, self.message_id, self.payload])


@dataclass(frozen=True, slots=True, kw_only=True)
class CallError:
    """A CALLERROR frame: [4, id, code, description, details]."""

    message_id: str
    code: CallErrorCode
    description: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    raw_code: str = ""  # the code as received, when it is not a 1.6 code

    def encode(self) -> str:
        return _dumps(
            [MessageType.CALLERROR.value, self.message_id, self.code.value, self.description,
             self.details]
        )

    @classmethod
    def from_exception(cls, message_id: str, exc: OcppCallError) -> CallError:
        return cls(message_id=message_id, code=exc.code, description=exc.description,
                   details=exc.details)


Message = Call | CallResult | CallError


class FrameError(OcppdError):
    """A frame that is not a valid OCPP-J message.

    ``message_id`` is set when an id could be recovered and ``message_type`` says what the frame
    claimed to be: only a CALL is answered with a CALLERROR (OCPP-J §4.2.3); a broken answer to
    our own CALL fails that CALL instead.
    """

    def __init__(self, code: CallErrorCode, description: str, *, message_id: str | None = None,
                 message_type: int | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.message_id = message_id
        self.message_type = message_type

    @property
    def answer(self) -> CallError | None:
        """The CALLERROR to send back, if the frame was a CALL whose id we know."""
        if self.message_id is None or self.message_type not in (None, MessageType.CALL):
            return None
        return CallError(message_id=self.message_id, code=self.code,
                         description=self.description)


class UnknownMessageType(FrameError):
    """A frame whose MessageTypeId is not 2, 3 or 4 (or no number at all).

    OCPP-J 1.6 §4.1.3: such a message is ignored. It is never answered, not even with a
    CALLERROR: a strict Central System counts that answer as a protocol violation of ours.
    """

    def __init__(self, type_id: Any, *, message_id: str | None = None) -> None:
        super().__init__(CallErrorCode.ProtocolError,
                         f"unknown MessageTypeId {str(type_id)[:20]}", message_id=message_id)

    @property
    def answer(self) -> CallError | None:
        return None


_KNOWN_TYPES = frozenset(t.value for t in MessageType)


def _known_type(value: Any) -> bool:
    # bool is an int subclass and must not pass; 2.0 is not a MessageTypeId either
    return type(value) is int and value in _KNOWN_TYPES  # noqa: E721


# The start of a frame, for recovering the id of one that is not valid JSON: `[2, "id", ...`.
_HEAD = re.compile(r'^\s*\[\s*(\d+)\s*,\s*"([^"\\]{1,36})"')


def recover_head(text: str) -> tuple[int, str] | None:
    """(MessageTypeId, message id) from the start of a frame that does not parse, if present."""
    head = _HEAD.match(text)
    return (int(head.group(1)), head.group(2)) if head else None


def _reject_constant(name: str) -> Any:
    # RFC 8259 JSON has no NaN/Infinity; Python's json would accept them silently.
    raise ValueError(f"{name} is not JSON")


class _OutOfRange(Exception):
    """A number that overflows to inf (1e999): valid JSON, but no value a payload can carry."""


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _OutOfRange(text)
    return value


# One decoder for every frame: json.loads() with hooks would build a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def _loads(text: str) -> Any:
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def parse(text: str) -> Message:
    """Parse one text frame (OCPP-J §4.1). Raises FrameError with the CALLERROR it deserves."""
    try:
        frame = _loads(text)
    except _OutOfRange:
        head = recover_head(text)
        if head is not None and not _known_type(head[0]):
            raise UnknownMessageType(head[0], message_id=head[1]) from None
        raise FrameError(CallErrorCode.TypeConstraintViolation, "number out of range",
                         message_id=head[1] if head else None,
                         message_type=head[0] if head else None) from None
    except ValueError as exc:
        head = recover_head(text)
        if head is not None and not _known_type(head[0]):
            raise UnknownMessageType(head[0], message_id=head[1]) from None
        if head is None:
            raise FrameError(CallErrorCode.FormationViolation, f"not JSON: {exc}") from None
        raise FrameError(CallErrorCode.FormationViolation, f"not JSON: {exc}",
                         message_id=head[1], message_type=head[0]) from None
    if not isinstance(frame, list) or not frame:
        raise FrameError(CallErrorCode.FormationViolation, "not an OCPP-J array")
    type_id = frame[0]
    message_id = frame[1] if len(frame) > 1 and isinstance(frame[1], str) else None
    if not _known_type(type_id):
        raise UnknownMessageType(type_id, message_id=message_id)  # §4.1.3: ignored
    if message_id is not None and not 0 < len(message_id) <= MAX_MESSAGE_ID_LEN:
        # Echo it anyway: the peer can then match our error to its request.
        raise FrameError(CallErrorCode.FormationViolation, "message id must have 1..36 characters",
                         message_id=message_id or None, message_type=type_id)
    if message_id is None:
        raise FrameError(CallErrorCode.FormationViolation, "message id must be a string",
                         message_type=type_id)
    if type_id == MessageType.CALL:
        return _call(frame, message_id)
    if type_id == MessageType.CALLRESULT:
        if len(frame) != 3:
            raise FrameError(CallErrorCode.ProtocolError, "CALLRESULT must have 3 elements",
                             message_id=message_id, message_type=type_id)
        if not isinstance(frame[2], dict):
            raise FrameError(CallErrorCode.FormationViolation, "payload must be an object",
                             message_id=message_id, message_type=type_id)
        return CallResult(message_id=message_id, payload=frame[2])
    return _call_error(frame, message_id)


def _call(frame: list[Any], message_id: str) -> Call:
    if len(frame) != 4:
        # OCPP-J §4.2.3 ProtocolError: "Payload for Action is incomplete"
        raise FrameError(CallErrorCode.ProtocolError, "CALL must have 4 elements",
                         message_id=message_id, message_type=MessageType.CALL)
    action, payload = frame[2], frame[3]
    if not isinstance(action, str) or not action:
        raise FrameError(CallErrorCode.FormationViolation, "action must be a non-empty string",
                         message_id=message_id, message_type=MessageType.CALL)
    if not isinstance(payload, dict):
        # §4.2.1: an empty payload is {}, never null or a list
        raise FrameError(CallErrorCode.FormationViolation, "payload must be an object",
                         message_id=message_id, message_type=MessageType.CALL)
    return Call(message_id=message_id, action=action, payload=payload)


def _call_error(frame: list[Any], message_id: str) -> CallError:
    if len(frame) != 5:
        raise FrameError(CallErrorCode.ProtocolError, "CALLERROR must have 5 elements",
                         message_id=message_id, message_type=MessageType.CALLERROR)
    raw_code, description, details = frame[2], frame[3], frame[4]
    if not isinstance(raw_code, str) or not isinstance(description, str) or not isinstance(
        details, dict
    ):
        raise FrameError(CallErrorCode.FormationViolation, "malformed CALLERROR",
                         message_id=message_id, message_type=MessageType.CALLERROR)
    try:
        code = CallErrorCode(raw_code)
    except ValueError:
        code = CallErrorCode.GenericError  # keep going; the raw code is kept for the log
    return CallError(message_id=message_id, code=code, description=description, details=details,
                     raw_code=raw_code)
