"""The link's RPC session on one connection after another (OCPP-J §4).

- At most one outstanding CALL of ours (OCPP-J §4.1.1), correlated by message id, with a
  deadline; an answer after the deadline is late (logged), not unknown (an error). A caller
  that gives up keeps the slot taken until the answer or the deadline.
- Incoming CALLs run each in their own task so a handler may itself await ``call()``; broken
  frames are answered with the CALLERROR OCPP-J §4.2.3 asks for.
- Every payload in or out is checked against the 1.6 schemas when a Validator is given; frames
  that fail are counted and reported as (rate-limited) InvalidMessages security events.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ocppd.ocpp import rpc
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
from ocppd.ocpp.settings import LinkSettings, LinkStats
from ocppd.ocpp.transport import Closed, Connection
from ocppd.ocpp.validate import Validator
from ocppd.security import SecurityEventType, security_event

log = logging.getLogger("ocppd.link")  # one logger for the whole link: the journal's name
frames_log = logging.getLogger("ocppd.ocpp.frames")  # ocppd.systemd.FRAMES_LOGGER

#: at most one InvalidMessages security event per this long (Security Whitepaper security
#: events): a broken or hostile Central System must not flood the bounded security log
INVALID_MESSAGES_EVENT_EVERY_S = 3600.0

Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any] | Reply]]

_SECRET_VALUE = re.compile(r'("value"\s*:\s*)"(?:[^"\\]|\\.)*"')


def _for_log(text: str) -> str:
    # ChangeConfiguration of AuthorizationKey carries the new password (Whitepaper §1.3.1)
    if "AuthorizationKey" in text:
        text = _SECRET_VALUE.sub(r'\1"***"', text)
    return text if len(text) <= 2000 else text[:2000] + "..."


@dataclass(slots=True)
class _Pending:
    """Our one outstanding CALL, waiting for its answer."""

    message_id: str
    action: str
    future: asyncio.Future[rpc.CallResult | rpc.CallError] = field(repr=False)
    deadline: float = math.inf  # loop time at which it times out (set once the CALL is sent)


class RpcSession:
    """CALLs out and in over the connection ``attach`` gives it; see the module docstring."""

    def __init__(self, *, settings: Callable[[], LinkSettings], handler: Handler,
                 validator: Validator | None, stats: LinkStats, clock: Callable[[], float],
                 connected: Callable[[], bool],
                 spawn: Callable[[Awaitable[Any], str], None]) -> None:
        self._settings = settings
        self._handler = handler
        self._validator = validator
        self._stats = stats
        self._clock = clock
        self._connected = connected
        self._spawn = spawn
        self.last_activity: float = clock()
        # observers of every frame, ("out" | "in", text): the local event stream (ocppd.events)
        self.on_frame: list[Callable[[str, str], None]] = []
        self._conn: Connection | None = None
        self._pending: _Pending | None = None
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._call_lock = asyncio.Lock()
        self.waiting = 0  # callers queued for the slot
        # ids of our CALLs that timed out: an answer to one is late, not unknown
        self._timed_out: collections.deque[str] = collections.deque(maxlen=16)
        self._invalid_unreported = 0  # invalid frames since the last InvalidMessages event
        self._invalid_reported_at = -math.inf  # link clock of that event

    def attach(self, conn: Connection | None) -> None:
        """The connection CALLs go out on from now (None: none)."""
        self._conn = conn

    def link_down(self, reason: str) -> None:
        """The connection is gone: the CALL in flight will get no answer."""
        pending = self._pending
        if pending is not None and not pending.future.done():
            pending.future.set_exception(LinkDown(f"connection lost: {reason}"))

    def close(self) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None

    # --- our CALLs --------------------------------------------------------------------------------

    async def call(self, action: str, payload: dict[str, Any] | str, *,
                   timeout_s: float | None = None, validated: bool = False) -> dict[str, Any]:
        """Send a CALL and return the CALLRESULT payload (Link.call says what it raises)."""
        if isinstance(payload, str) and not validated:
            raise TypeError("a JSON text payload must have been validated")
        if self._validator is not None and not validated:
            try:
                self._validator.check_request(action, payload)
            except OcppCallError as exc:
                self._stats.outgoing_invalid += 1
                log.error("not sending invalid %s: %s", action, exc.description)
                raise OutgoingInvalid(CallErrorCode.InternalError,
                                      f"invalid {action}: {exc.description}") from None
        wait_s = self._settings().response_timeout_s if timeout_s is None else timeout_s
        self.waiting += 1
        try:
            await self._call_lock.acquire()  # OCPP-J §4.1.1: one outstanding CALL at a time
        finally:
            self.waiting -= 1
        holds_slot = True
        try:
            conn = self._conn
            if conn is None or not self._connected():
                raise LinkDown("not connected to the Central System")
            message_id = rpc.new_message_id()
            if isinstance(payload, str):
                frame = rpc.encode_call(message_id, action, payload)
            else:
                frame = rpc.Call(message_id=message_id, action=action, payload=payload).encode()
            loop = asyncio.get_running_loop()
            future: asyncio.Future[rpc.CallResult | rpc.CallError] = loop.create_future()
            self._pending = pending = _Pending(message_id, action, future)
            try:
                try:
                    await self._send(conn, frame)
                finally:
                    # armed even when the send was interrupted: the frame may be on the wire
                    pending.deadline = loop.time() + wait_s
                    self._watch_deadline(pending.deadline)
                # shielded: a caller that gives up must not cancel the future, or the answer
                # would find nobody waiting (and be taken for an unknown id)
                answer = await asyncio.shield(future)
            except asyncio.CancelledError:
                if not future.done():
                    # The caller gave up (its task was cancelled) while the CALL is in flight.
                    # §4.1.1: the slot stays taken until the answer comes or the CALL times
                    # out (or the link drops); only then may the next CALL go out.
                    future.add_done_callback(lambda f: self._abandoned_done(pending, f))
                    holds_slot = False
                    log.info("%s abandoned in flight; the next CALL waits for its answer or"
                             " timeout", action)
                raise
            except TimeoutError:
                self._timed_out.append(message_id)
                raise CallTimeout(f"no answer to {action} within {wait_s:g} s") from None
        finally:
            if holds_slot:
                self._pending = None
                self._call_lock.release()
        if isinstance(answer, rpc.CallError):
            raw = f" ({answer.raw_code})" if answer.raw_code != answer.code.value else ""
            raise CallErrorReceived(answer.code, answer.description + raw, answer.details)
        if self._validator is not None:
            try:
                self._validator.check_response(action, answer.payload)
            except OcppCallError as exc:
                self._stats.incoming_errors += 1
                log.warning("invalid %s response from the Central System: %s", action,
                            exc.description)
                self._invalid_message(f"invalid {action} response: {exc.description}")
                raise InvalidResponse(CallErrorCode.FormationViolation, exc.description,
                                      exc.details) from None
        return answer.payload

    def _abandoned_done(self, pending: _Pending,
                        future: asyncio.Future[rpc.CallResult | rpc.CallError]) -> None:
        """The answer to (or the end of) a CALL whose caller gave up: free the slot now."""
        if not future.cancelled():
            exc = future.exception()  # retrieved: nobody else will
            if isinstance(exc, TimeoutError):
                self._timed_out.append(pending.message_id)
        log.debug("abandoned %s done: %s", pending.action,
                  "answered" if not future.cancelled() and future.exception() is None
                  else "no answer")
        if self._pending is pending:
            self._pending = None
        self._call_lock.release()

    def _watch_deadline(self, deadline: float) -> None:
        """Have a timer fire at ``deadline`` or before. One timer serves call after call (when
        it fires early it re-arms for the call then pending) instead of one created and
        cancelled per call: on a replay of thousands of messages that churn is measurable."""
        timer = self._deadline_timer
        if timer is not None:
            if timer.when() <= deadline:
                return
            timer.cancel()
        self._deadline_timer = asyncio.get_running_loop().call_at(deadline, self._deadline_due)

    def _deadline_due(self) -> None:
        self._deadline_timer = None
        pending = self._pending
        if pending is None or pending.future.done():
            return
        if asyncio.get_running_loop().time() >= pending.deadline:
            pending.future.set_exception(TimeoutError())
        else:
            self._watch_deadline(pending.deadline)

    # --- frames in --------------------------------------------------------------------------------

    async def receive_loop(self, conn: Connection) -> str:
        """Take the frames of ``conn`` until it ends; returns why it ended."""
        while True:
            item = await conn.receive()
            if isinstance(item, str):
                self._on_text(conn, item)
            elif isinstance(item, Closed):
                return item.reason
            else:
                self._on_binary(conn, item)

    async def _send(self, conn: Connection, text: str) -> None:
        if conn.closed:
            raise LinkDown("connection closed")
        if self._settings().log_frames:
            frames_log.debug(">> %s", _for_log(text))
        await conn.send(text)
        self._stats.frames_out += 1
        for observe in self.on_frame:
            observe("out", text)
        self.last_activity = self._clock()

    def _on_text(self, conn: Connection, text: str) -> None:
        self._stats.frames_in += 1
        self.last_activity = self._clock()
        if self._settings().log_frames:
            frames_log.debug("<< %s", _for_log(text))
        for observe in self.on_frame:
            observe("in", text)
        try:
            msg = rpc.parse(text)
        except rpc.FrameError as exc:
            self._on_bad_frame(conn, exc, text)
            return
        if isinstance(msg, rpc.Call):
            self._spawn(self._dispatch(conn, msg), msg.action)
            return
        pending = self._pending
        if pending is None or pending.message_id != msg.message_id or pending.future.done():
            if msg.message_id in self._timed_out:
                log.info("late answer to a CALL that had timed out (id %r) ignored",
                         msg.message_id[:40])
                return
            self._stats.incoming_errors += 1
            log.warning("answer with unknown message id %r ignored", msg.message_id[:40])
            return
        pending.future.set_result(msg)

    def _on_binary(self, conn: Connection, data: bytes) -> None:
        # OCPP-J §4.1: frames are text. Answer a CALL sent as binary so its sender stops waiting.
        self._stats.frames_in += 1
        self.last_activity = self._clock()
        text = data[:4096].decode("utf-8", errors="replace")
        head = rpc.recover_head(text)
        exc = rpc.FrameError(CallErrorCode.FormationViolation, "OCPP-J frames must be text",
                             message_id=head[1] if head else None,
                             message_type=head[0] if head else None)
        self._on_bad_frame(conn, exc, f"<binary frame, {len(data)} bytes>")

    def _invalid_message(self, what: str) -> None:
        """Count a frame that failed validation; an InvalidMessages security event for the
        first, then at most one per INVALID_MESSAGES_EVENT_EVERY_S with the count between."""
        self._invalid_unreported += 1
        now = self._clock()
        if now - self._invalid_reported_at < INVALID_MESSAGES_EVENT_EVERY_S:
            return
        more = self._invalid_unreported - 1
        self._invalid_unreported, self._invalid_reported_at = 0, now
        security_event(SecurityEventType.INVALID_MESSAGES,
                       what + (f" ({more} more since the last report)" if more else ""))

    def _on_bad_frame(self, conn: Connection, exc: rpc.FrameError, text: str) -> None:
        self._stats.incoming_errors += 1
        self._invalid_message(f"bad frame from the Central System: {exc.description}")
        if isinstance(exc, rpc.UnknownMessageType):
            log.warning("frame with an unknown MessageTypeId ignored (OCPP-J §4.1.3): %s",
                        _for_log(text)[:200])
            return
        log.warning("bad frame from the Central System (%s): %s", exc.description,
                    _for_log(text)[:200])
        pending = self._pending
        if (exc.message_type in (rpc.MessageType.CALLRESULT, rpc.MessageType.CALLERROR)
                and pending is not None and pending.message_id == exc.message_id
                and not pending.future.done()):
            # A broken answer to our CALL: a failure to process it (errata 2025-04 §3.3)
            pending.future.set_exception(InvalidResponse(exc.code, exc.description))
            return
        answer = exc.answer
        if answer is not None:
            self._spawn(self._send_quietly(conn, answer.encode()), "callerror")

    async def _send_quietly(self, conn: Connection, text: str) -> None:
        try:
            await self._send(conn, text)
        except LinkDown as exc:
            log.debug("answer not sent: %s", exc)

    # --- their CALLs ------------------------------------------------------------------------------

    async def _answer(self, call: rpc.Call) -> Reply:
        if self._validator is not None:
            try:
                self._validator.check_request(call.action, call.payload)
            except OcppCallError as exc:
                self._stats.incoming_errors += 1
                log.warning("invalid %s from the Central System: %s", call.action,
                            exc.description)
                self._invalid_message(f"invalid {call.action}: {exc.description}")
                raise
        result = await self._handler(call.action, call.payload)
        reply = result if isinstance(result, Reply) else Reply(result)
        if self._validator is not None:
            try:
                self._validator.check_response(call.action, reply.payload)
            except OcppCallError as exc:
                self._stats.outgoing_invalid += 1
                log.error("invalid %s response of ours, not sent: %s", call.action,
                          exc.description)
                raise OcppCallError(CallErrorCode.InternalError,
                                    "internal error building the response") from None
        return reply

    async def _dispatch(self, conn: Connection, call: rpc.Call) -> None:
        then: Callable[[], Awaitable[None]] | None = None
        try:
            reply = await self._answer(call)
            text = rpc.CallResult(message_id=call.message_id, payload=reply.payload).encode()
            then = reply.then
        except NoReply:
            return
        except OcppCallError as exc:
            text = rpc.CallError.from_exception(call.message_id, exc).encode()
        except Exception as exc:
            log.exception("handler for %s failed", call.action)
            text = rpc.CallError(message_id=call.message_id, code=CallErrorCode.InternalError,
                                 description=f"{type(exc).__name__} handling {call.action}"
                                 ).encode()
        try:
            await self._send(conn, text)
        except LinkDown as exc:
            log.info("answer to %s not sent: %s", call.action, exc)
            return
        if then is not None:  # only now: the CALLRESULT is on the wire (TriggerMessage §5.17)
            self._spawn(then(), f"{call.action} follow-up")


__all__ = ["INVALID_MESSAGES_EVENT_EVERY_S", "Handler", "RpcSession"]
