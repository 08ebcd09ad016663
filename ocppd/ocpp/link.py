"""The OCPP-J 1.6 link: one WebSocket to the Central System, kept up forever, carrying RPC frames.

(Above 400 lines: transport, keepalive and the RPC session of one connection share its
lifetime and state here; separating them into three modules is still to do.)

What it does, and the rule behind each part:

- Connects to ``url/<percent-encoded charge point id>`` with subprotocol ``ocpp1.6`` (OCPP-J §3.1,
  §3.1.2) and the transport security of the 1.6 Security Whitepaper profile (0: ws; 1: ws + Basic;
  2: wss + Basic; 3: wss + client certificate). Reconnects with capped exponential backoff and
  jitter, reset once a connection has been stable.
- WebSocket pings (OCPP-J §5.3 WebSocketPingInterval) find a dead link within about 1.5 intervals:
  a ping after ``interval`` with nothing received, any frame (the pong) due within half of it,
  else the socket is shut down and the link reconnects. One timer per interval, nothing per frame
  (aiohttp's own heartbeat reschedules on every frame received).
- At most one outstanding CALL of ours (OCPP-J §4.1.1), correlated by message id; incoming CALLs
  run each in their own task so a handler may itself await ``call()``.
- Every payload in or out is checked against the 1.6 schemas when a Validator is given.

This module is the only one that imports aiohttp.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import random
import re
import socket
import ssl
import time
from base64 import b64encode
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp
from yarl import URL

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
from ocppd.ocpp.validate import Validator
from ocppd.security import SecurityEventType, security_event

log = logging.getLogger("ocppd.link")
frames_log = logging.getLogger("ocppd.ocpp.frames")  # ocppd.systemd.FRAMES_LOGGER

SUBPROTOCOL = "ocpp1.6"  # OCPP-J 1.6 §3.1.2
#: while the backoff is shorter than this, every failed connection attempt is a WARNING line
SHORT_BACKOFF_S = 60.0
#: after that, one "still offline" line per this long at most (and one when the error changes):
#: the journal shows the charger is still trying without a line per attempt
OFFLINE_REPORT_EVERY_S = 600.0
#: at most one InvalidMessages security event per this long (Security Whitepaper security
#: events): a broken or hostile Central System must not flood the bounded security log
INVALID_MESSAGES_EVENT_EVERY_S = 3600.0
_T = TypeVar("_T")

Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any] | Reply]]


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkSettings:
    """How to reach the Central System and how to behave on the connection."""

    url: str  # ws:// or wss:// base URL; "/" + percent-encoded charge point id is appended
    charge_point_id: str
    security_profile: int = 0  # Security Whitepaper §2: 0..3
    # AuthorizationKey, used as-is as the Basic password (user = charge point id); a callable is
    # asked on every connect so a ChangeConfiguration takes effect on the next one.
    password: Callable[[], str | None] | str | None = None
    ca_file: Path | str | None = None  # None: the system store
    client_cert_file: Path | str | None = None
    client_key_file: Path | str | None = None
    insecure_skip_tls_verify: bool = False
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 300.0
    stable_after_s: float = 60.0
    response_timeout_s: float = 30.0
    connect_timeout_s: float = 30.0
    max_frame_bytes: int = 1_048_576
    ping_interval_s: float = 60.0  # WebSocketPingInterval; 0 = off
    log_frames: bool = False

    def endpoint(self) -> str:
        return build_url(self.url, self.charge_point_id)

    def password_value(self) -> str | None:
        return self.password() if callable(self.password) else self.password

    def __repr__(self) -> str:  # never print the password
        return f"LinkSettings(url={self.url!r}, charge_point_id={self.charge_point_id!r}, " \
               f"security_profile={self.security_profile})"


@dataclass(slots=True)
class LinkStats:
    """Counters and state of the link, for ``ocppctl status``."""

    frames_in: int = 0
    frames_out: int = 0
    outgoing_invalid: int = 0  # our own payloads that failed validation (bugs), never sent
    incoming_errors: int = 0  # broken frames, invalid CALLs and responses, unknown ids
    connects: int = 0
    reconnects: int = 0  # connections made after the first
    last_error: str | None = None
    connected_since: datetime | None = None


def build_url(base: str, charge_point_id: str) -> str:
    """OCPP-J §3.1.1: the charge point id is the last path segment, percent-encoded."""
    return base.rstrip("/") + "/" + quote(charge_point_id, safe="")


def backoff_delay_s(failures: int, settings: LinkSettings, rand: Callable[[], float]) -> float:
    """Capped exponential backoff with "equal jitter": half fixed, half random.

    The random half spreads a fleet of chargers that lost the Central System at the same moment.
    """
    lo, hi = settings.reconnect_min_s, max(settings.reconnect_min_s, settings.reconnect_max_s)
    cap = min(hi, lo * 2.0 ** min(failures, 32))
    return max(lo, cap / 2 + rand() * cap / 2)


def _basic_auth(user: str, password: str) -> str:
    # RFC 7617 with UTF-8; built by hand because aiohttp.BasicAuth refuses a ":" in the user.
    return "Basic " + b64encode(f"{user}:{password}".encode()).decode("ascii")


class _Setup(Exception):  # noqa: N818 - internal: a problem found before connecting
    pass


# Security Whitepaper ed. 3 §2.1 (TLS): TLS 1.2 or newer only, and for TLS 1.2 the suites of
# the whitepaper's list (TLS_ECDHE_ECDSA_WITH_AES_128/256_GCM_SHA256/384 and
# TLS_RSA_WITH_AES_128/256_GCM_SHA256/384), with TLS_ECDHE_RSA_WITH_AES_128/256_GCM_* for a
# Central System with an RSA certificate, forward-secret suites first. TLS 1.3 suites are
# OpenSSL's (all AEAD). Nothing else is offered, so an older or weaker server is refused.
TLS_MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
TLS12_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
    "AES128-GCM-SHA256", "AES256-GCM-SHA384",
))
# OpenSSL's reasons for a handshake the server refused over the TLS version or the suites
_TLS_VERSION_REASONS = {"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL",
                        "WRONG_VERSION_NUMBER", "TLSV1_ALERT_INSUFFICIENT_SECURITY"}
_TLS_CIPHER_REASONS = {"NO_CIPHERS_AVAILABLE", "NO_SHARED_CIPHER", "WRONG_CIPHER_RETURNED",
                       "SSLV3_ALERT_HANDSHAKE_FAILURE"}


def _ssl_context(s: LinkSettings) -> ssl.SSLContext:
    try:
        # ca_file pins the Central System's CA (Whitepaper: CentralSystemRootCertificate);
        # without it the system store (Debian ca-certificates) is used. The server's name is
        # checked against its certificate (check_hostname, the default of this context).
        ctx = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise _Setup(f"cannot load ca_file {s.ca_file}: {exc}") from None
    ctx.minimum_version = TLS_MINIMUM_VERSION
    ctx.set_ciphers(TLS12_CIPHERS)
    # RFC 5280 conformance (e.g. keyUsage on CA certificates), on every Python: 3.13 (Debian 13)
    # sets it in create_default_context, 3.11 (Debian 12) does not.
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    if s.ca_file:
        # Every installed root is a trust anchor as it is, also one issued by another root
        # (AdditionalRootCertificateCheck: the new root is issued by the one it replaces)
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if s.security_profile >= 3:
        if not s.client_cert_file:
            raise _Setup("security profile 3 needs client_cert_file (and client_key_file)")
        try:
            ctx.load_cert_chain(str(s.client_cert_file),
                                str(s.client_key_file) if s.client_key_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise _Setup(f"cannot load client certificate {s.client_cert_file}: {exc}") from None
    if s.insecure_skip_tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _security_event_of(exc: BaseException, message: str, profile: int) -> None:
    """Security Whitepaper security events a failed connect may be."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        security_event(SecurityEventType.INVALID_CENTRAL_SYSTEM_CERTIFICATE, message)
    elif isinstance(exc, aiohttp.WSServerHandshakeError) and exc.status == 401:
        security_event(SecurityEventType.FAILED_TO_AUTHENTICATE_AT_CENTRAL_SYSTEM, message)
    elif (reason := _tls_reason(exc)) in _TLS_VERSION_REASONS:
        security_event(SecurityEventType.INVALID_TLS_VERSION, message)
    elif reason in _TLS_CIPHER_REASONS and profile < 3:
        # at profile 3 a handshake failure may as well be our client certificate refused
        security_event(SecurityEventType.INVALID_TLS_CIPHER_SUITE, message)


def _tls_reason(exc: BaseException) -> str | None:
    """OpenSSL's reason of a failed TLS handshake, wrapped or not by aiohttp."""
    for e in (getattr(exc, "os_error", None), exc, exc.__cause__, exc.__context__):
        reason = getattr(e, "reason", None) if isinstance(e, ssl.SSLError) else None
        if isinstance(reason, str) and reason:
            return reason
    return None


def _explain(exc: BaseException, s: LinkSettings, url: str) -> str:
    """One line an installer can act on, for a failed connect."""
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        status = exc.status
        if status == 401:
            who = "wrong password (AuthorizationKey)" if s.security_profile in (1, 2) else (
                "the Central System wants credentials (security profile 1 or 2?)")
            return f"HTTP 401 Unauthorized at {url}: {who}"
        if status == 403:
            return f"HTTP 403 Forbidden at {url}: the Central System refuses this charge point"
        if status == 404:
            return f"HTTP 404 Not Found at {url}: unknown charge point id or wrong URL"
        return f"WebSocket handshake refused at {url}: HTTP {status} {exc.message}"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        where = f"ca_file {s.ca_file}" if s.ca_file else "the system CA store (or set ca_file)"
        return (f"TLS: certificate verify failed for {url}: {exc.certificate_error}; "
                f"check {where}, the host name and the clock")
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        hint = "; the Central System may refuse our client certificate" if (
            s.security_profile >= 3) else ""
        return f"TLS error with {url}: {exc}{hint}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {url}: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, TimeoutError):
        return f"no handshake with {url} within {s.connect_timeout_s:g} s"
    if isinstance(exc, aiohttp.ServerDisconnectedError) and s.security_profile >= 3:
        return f"{url} closed the connection during the handshake (client certificate refused?)"
    return f"cannot connect to {url}: {type(exc).__name__}: {exc}"


_SECRET_VALUE = re.compile(r'("value"\s*:\s*)"(?:[^"\\]|\\.)*"')


def _for_log(text: str) -> str:
    # ChangeConfiguration of AuthorizationKey carries the new password (Whitepaper §1.3.1)
    if "AuthorizationKey" in text:
        text = _SECRET_VALUE.sub(r'\1"***"', text)
    return text if len(text) <= 2000 else text[:2000] + "..."


def _secs(value_s: float) -> str:
    return f"{value_s:.1f}" if value_s < 10 else f"{value_s:.0f}"


@dataclass(slots=True)
class _Offline:
    """An outage, for the journal: since when, how many attempts, what was last reported."""

    since: datetime  # wall time, only for the log line
    attempts: int = 0
    reported_at: float = -math.inf  # link clock of the last "still offline" line
    reported_error: str | None = None


@dataclass(slots=True)
class _Pending:
    """Our one outstanding CALL, waiting for its answer."""

    message_id: str
    action: str
    future: asyncio.Future[rpc.CallResult | rpc.CallError] = field(repr=False)
    deadline: float = math.inf  # loop time at which it times out (set once the CALL is sent)


class Link:
    """One OCPP-J connection, kept up by ``run()``; see the module docstring."""

    def __init__(
        self,
        settings: LinkSettings,
        *,
        handler: Handler,
        validator: Validator | None = None,
        on_connected: Callable[[], Awaitable[None]] | None = None,
        on_disconnected: Callable[[str], None] | None = None,
        on_connect_failed: Callable[[str], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._handler = handler
        self._validator = validator
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self.on_connect_failed = on_connect_failed  # called with the reason of each failure
        self._sleep = sleep
        self._rand = rand
        self._clock = clock
        self.stats = LinkStats()
        self.last_activity: float = clock()
        # observers of every frame, ("out" | "in", text): the local event stream (ocppd.events)
        self.on_frame: list[Callable[[str, str], None]] = []
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._pending: _Pending | None = None
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._rx_at = 0.0  # monotonic time the last frame of any kind was received
        self._ping_timer: asyncio.TimerHandle | None = None
        self._call_lock = asyncio.Lock()
        self._waiting = 0  # callers queued for the slot
        # ids of our CALLs that timed out: an answer to one is late, not unknown
        self._timed_out: collections.deque[str] = collections.deque(maxlen=16)
        self._connected = asyncio.Event()
        self._wake = asyncio.Event()
        self._closing = False
        self._running = False
        self._stopped = asyncio.Event()
        self._drop_reason: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._offline: _Offline | None = _Offline(since=datetime.now(UTC))  # until connected
        self._invalid_unreported = 0  # invalid frames since the last InvalidMessages event
        self._invalid_reported_at = -math.inf  # link clock of that event

    # --- public -----------------------------------------------------------------------------------

    @property
    def settings(self) -> LinkSettings:
        return self._settings

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    def update(self, settings: LinkSettings) -> None:
        """New settings. A new ping interval applies at once; the rest from the next connect
        on (call ``reconnect_now`` to apply them now)."""
        old_interval = self._settings.ping_interval_s
        self._settings = settings
        ws = self._ws
        if ws is not None and settings.ping_interval_s != old_interval:
            self._stop_keepalive()
            self._schedule_ping(ws)

    def reconnect_now(self, reason: str) -> None:
        """Drop the connection (if any) and connect again without waiting out the backoff."""
        self._drop_reason = reason
        ws = self._ws
        if ws is not None:
            log.info("reconnecting: %s", reason)
            self._spawn(self._close_ws(ws), "close")
        self._wake.set()

    async def run(self) -> None:
        """Connect and reconnect until ``close()``."""
        if self._running:
            raise RuntimeError("Link.run() is already running")
        self._running = True
        self._stopped.clear()
        failures = 0
        try:
            while not self._closing:
                self._wake.clear()
                self._drop_reason = None
                opened = await self._unless_woken(self._open(self._settings))
                if opened is not None and (self._closing or self._drop_reason is not None):
                    # close() or reconnect_now() came while the handshake completed
                    await self._close_ws(opened[1])
                    await opened[0].close()
                    continue
                if opened is not None:
                    started = self._clock()
                    await self._serve(*opened)
                    if self._clock() - started >= self._settings.stable_after_s:
                        failures = 0  # a stable connection: the next outage starts afresh
                    if not self._closing:
                        self._offline = _Offline(since=datetime.now(UTC))
                if self._closing:
                    break
                if self._wake.is_set() and self._drop_reason is not None:
                    continue  # reconnect_now(): connect again at once with the new settings
                delay_s = backoff_delay_s(failures, self._settings, self._rand)
                failures += 1
                if opened is None:
                    self._report_failed_attempt(delay_s)
                else:
                    log.debug("next connect attempt in %.1f s", delay_s)
                await self._unless_woken(self._sleep(delay_s))
        finally:
            self._running = False
            self._stopped.set()

    async def close(self) -> None:
        """Stop ``run()``, close the connection, cancel every task of the link."""
        self._closing = True
        self._wake.set()
        ws = self._ws
        if ws is not None:
            await self._close_ws(ws)
        if self._running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), timeout=5.0)
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None

    async def call(self, action: str, payload: dict[str, Any] | str, *,
                   timeout_s: float | None = None, validated: bool = False) -> dict[str, Any]:
        """Send a CALL and return the CALLRESULT payload.

        Raises OutgoingInvalid (our bug, nothing sent), LinkDown, CallTimeout, CallErrorReceived
        (the Central System answered CALLERROR) or InvalidResponse. ``validated``: the caller
        already checked this payload against the schema (queued messages are checked once);
        a ``str`` payload is JSON text sent as it is, and must come ``validated``.
        """
        if isinstance(payload, str) and not validated:
            raise TypeError("a JSON text payload must have been validated")
        if self._validator is not None and not validated:
            try:
                self._validator.check_request(action, payload)
            except OcppCallError as exc:
                self.stats.outgoing_invalid += 1
                log.error("not sending invalid %s: %s", action, exc.description)
                raise OutgoingInvalid(CallErrorCode.InternalError,
                                      f"invalid {action}: {exc.description}") from None
        wait_s = self._settings.response_timeout_s if timeout_s is None else timeout_s
        self._waiting += 1
        try:
            await self._call_lock.acquire()  # OCPP-J §4.1.1: one outstanding CALL at a time
        finally:
            self._waiting -= 1
        holds_slot = True
        try:
            ws = self._ws
            if ws is None or not self.connected:
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
                    await self._send(ws, frame)
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
                self.stats.incoming_errors += 1
                log.warning("invalid %s response from the Central System: %s", action,
                            exc.description)
                self._invalid_message(f"invalid {action} response: {exc.description}")
                raise InvalidResponse(CallErrorCode.FormationViolation, exc.description,
                                      exc.details) from None
        return answer.payload

    @property
    def calls_waiting(self) -> int:
        """CALLs of ours waiting for the one outstanding slot (OCPP-J §4.1.1)."""
        return self._waiting

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

    # --- connection -------------------------------------------------------------------------------

    async def _unless_woken(self, coro: Awaitable[_T]) -> _T | None:
        """Run ``coro`` unless ``close()``/``reconnect_now()`` come first (then None)."""
        task = asyncio.ensure_future(coro)
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({task, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (task, waker):
                if not t.done():
                    t.cancel()
            with contextlib.suppress(BaseException):
                await waker
        if not task.done() or task.cancelled():
            with contextlib.suppress(BaseException):
                await task
            return None
        return task.result()

    def _fail(self, message: str) -> None:
        """A connection attempt failed; ``run`` reports it (``_report_failed_attempt``)."""
        self.stats.last_error = message
        if self.on_connect_failed is not None:
            try:
                self.on_connect_failed(message)
            except Exception:
                log.exception("on_connect_failed failed")

    def _report_failed_attempt(self, delay_s: float) -> None:
        """The journal while offline: every attempt while the backoff is short, then one line
        per OFFLINE_REPORT_EVERY_S (or when the error changes), never one per attempt."""
        off = self._offline
        if off is None:
            off = self._offline = _Offline(since=datetime.now(UTC))
        off.attempts += 1
        error = self.stats.last_error or "no connection"
        if delay_s < SHORT_BACKOFF_S:
            log.warning("connection attempt %d failed: %s; next attempt in %s s",
                        off.attempts, error, _secs(delay_s))
            return
        now = self._clock()
        if error == off.reported_error and now - off.reported_at < OFFLINE_REPORT_EVERY_S:
            log.debug("connection attempt %d failed: %s; next attempt in %s s",
                      off.attempts, error, _secs(delay_s))
            return
        log.warning("still offline since %s: %d failed attempts, last: %s; next attempt in"
                    " %s s", off.since.isoformat(timespec="seconds"), off.attempts, error,
                    _secs(delay_s))
        off.reported_at, off.reported_error = now, error

    async def _open(
        self, s: LinkSettings
    ) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse] | None:
        url = s.endpoint()
        kwargs: dict[str, Any] = {}
        headers: dict[str, str] = {}
        try:
            scheme = urlsplit(url).scheme.lower()
            if scheme not in ("ws", "wss"):
                raise _Setup(f"URL must start with ws:// or wss://, not {url}")
            if s.security_profile >= 2 and scheme != "wss":
                raise _Setup(f"security profile {s.security_profile} needs a wss:// URL")
            if scheme == "wss":
                kwargs["ssl"] = _ssl_context(s)
                if s.insecure_skip_tls_verify:
                    log.warning("TLS certificate verification is OFF (insecure_skip_tls_verify)")
            if s.security_profile in (1, 2):
                password = s.password_value()
                if password:
                    headers["Authorization"] = _basic_auth(s.charge_point_id, password)
                else:
                    log.warning("security profile %d but no password (AuthorizationKey) set",
                                s.security_profile)
        except _Setup as exc:
            self._fail(str(exc))
            return None
        session = aiohttp.ClientSession()
        try:
            ws = await asyncio.wait_for(
                session.ws_connect(URL(url, encoded=True), protocols=(SUBPROTOCOL,),
                                   headers=headers, max_msg_size=s.max_frame_bytes,
                                   autoping=False, **kwargs),
                timeout=s.connect_timeout_s)
        except asyncio.CancelledError:
            await session.close()
            raise
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            await session.close()
            message = _explain(exc, s, url)
            if message != self.stats.last_error:  # a change of error, not every retry
                _security_event_of(exc, message, s.security_profile)
            self._fail(message)
            return None
        if ws.protocol != SUBPROTOCOL:
            # OCPP-J §3.1.2: without the agreed subprotocol the server may speak anything
            await self._close_ws(ws, code=aiohttp.WSCloseCode.PROTOCOL_ERROR,
                                 message=b"ocpp1.6 required")
            await session.close()
            self._fail(f"{url} did not agree to subprotocol {SUBPROTOCOL} "
                       f"(answered {ws.protocol or 'none'}); closed")
            return None
        return session, ws

    async def _close_ws(self, ws: aiohttp.ClientWebSocketResponse, *,
                        code: int = aiohttp.WSCloseCode.OK, message: bytes = b"") -> None:
        # Bounded: a dead peer never answers the close frame.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(code=code, message=message), timeout=2.0)

    async def _serve(self, session: aiohttp.ClientSession,
                     ws: aiohttp.ClientWebSocketResponse) -> None:
        s = self._settings
        self._ws = ws
        self.stats.connects += 1
        if self.stats.connects > 1:
            self.stats.reconnects += 1
        self.stats.connected_since = datetime.now(UTC)
        self.stats.last_error = None
        self.last_activity = self._clock()
        self._connected.set()
        off, self._offline = self._offline, None
        if off is not None and off.attempts:
            log.info("back online: connected to %s (security profile %d) after %d failed"
                     " attempts, offline since %s", s.endpoint(), s.security_profile,
                     off.attempts, off.since.isoformat(timespec="seconds"))
        else:
            log.info("connected to %s (security profile %d)", s.endpoint(), s.security_profile)
        if self._on_connected is not None:
            self._spawn(self._on_connected(), "on_connected")
        reason = "connection closed"
        self._rx_at = time.monotonic()
        self._schedule_ping(ws)
        try:
            reason = await self._receive_loop(ws)
        finally:
            self._stop_keepalive()
            self._connected.clear()
            self._ws = None
            self.stats.connected_since = None
            reason = self._drop_reason or reason
            self.stats.last_error = reason
            if not self._closing:
                log.warning("connection to the Central System lost: %s", reason)
            # Tell the owner first, so that a caller woken by LinkDown below already finds
            # the link marked down (and waits for the next connection instead of retrying).
            if self._on_disconnected is not None:
                try:
                    self._on_disconnected(reason)
                except Exception:
                    log.exception("on_disconnected failed")
            pending = self._pending
            if pending is not None and not pending.future.done():
                pending.future.set_exception(LinkDown(f"connection lost: {reason}"))
            await self._close_ws(ws)
            await session.close()

    async def _receive_loop(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        while True:
            msg = await ws.receive()
            self._rx_at = time.monotonic()
            if msg.type == aiohttp.WSMsgType.TEXT:
                self._on_text(ws, msg.data)
            elif msg.type == aiohttp.WSMsgType.PING:
                with contextlib.suppress(Exception):  # a broken link shows up in receive()
                    await ws.pong(msg.data)
            elif msg.type == aiohttp.WSMsgType.PONG:
                pass  # its arrival (above) is what the keepalive looks for
            elif msg.type == aiohttp.WSMsgType.BINARY:
                self._on_binary(ws, msg.data)
            elif msg.type == aiohttp.WSMsgType.CLOSE:
                extra = f": {msg.extra}" if msg.extra else ""
                return f"closed by the Central System (code {msg.data}{extra})"
            elif msg.type == aiohttp.WSMsgType.ERROR:
                exc = ws.exception() or msg.data
                if isinstance(exc, aiohttp.WebSocketError) and exc.code == 1009:
                    return f"frame larger than max_frame_bytes {self._settings.max_frame_bytes}"
                return f"{type(exc).__name__}: {exc}"
            elif msg.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                code = ws.close_code
                return "connection closed" + (f" (code {code})" if code else "")

    # --- keepalive (OCPP-J §5.3 WebSocketPingInterval) -------------------------------------------

    def _schedule_ping(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Arm the keepalive for one interval after the last frame received."""
        interval = self._settings.ping_interval_s
        if interval > 0 and self._ws is ws:
            delay_s = interval - (time.monotonic() - self._rx_at)
            self._ping_timer = asyncio.get_running_loop().call_later(
                max(0.0, delay_s), self._ping_due, ws)

    def _stop_keepalive(self) -> None:
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None

    def _ping_due(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """``interval`` after the last frame received: ping, unless something came meanwhile."""
        self._ping_timer = None
        interval = self._settings.ping_interval_s
        if self._ws is not ws or interval <= 0:
            return
        if time.monotonic() - self._rx_at < interval:
            self._schedule_ping(ws)  # something came meanwhile: one interval after it
            return
        sent_at = time.monotonic()
        self._spawn(self._ping(ws), "ping")
        self._ping_timer = asyncio.get_running_loop().call_later(
            interval / 2, self._pong_due, ws, sent_at)

    async def _ping(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        with contextlib.suppress(Exception):  # a failed ping is judged by the missing pong
            await ws.ping()

    def _pong_due(self, ws: aiohttp.ClientWebSocketResponse, sent_at: float) -> None:
        self._ping_timer = None
        if self._ws is not ws:
            return
        interval = self._settings.ping_interval_s
        if self._rx_at >= sent_at:  # the pong, or any other frame: the link is alive
            self._schedule_ping(ws)
            return
        self._drop_reason = (f"no answer to a WebSocket ping within {interval / 2:g} s"
                             " (half-open connection?)")
        # A dead peer would never answer a close frame: end the connection at the socket, so
        # receive() returns at once and the link reconnects.
        sock = ws.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # --- frames -----------------------------------------------------------------------------------

    async def _send(self, ws: aiohttp.ClientWebSocketResponse, text: str) -> None:
        if ws.closed:
            raise LinkDown("connection closed")
        if self._settings.log_frames:
            frames_log.debug(">> %s", _for_log(text))
        try:
            await ws.send_str(text)
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            raise LinkDown(f"send failed: {exc}") from None
        self.stats.frames_out += 1
        for observe in self.on_frame:
            observe("out", text)
        self.last_activity = self._clock()

    def _on_text(self, ws: aiohttp.ClientWebSocketResponse, text: str) -> None:
        self.stats.frames_in += 1
        self.last_activity = self._clock()
        if self._settings.log_frames:
            frames_log.debug("<< %s", _for_log(text))
        for observe in self.on_frame:
            observe("in", text)
        try:
            msg = rpc.parse(text)
        except rpc.FrameError as exc:
            self._on_bad_frame(ws, exc, text)
            return
        if isinstance(msg, rpc.Call):
            self._spawn(self._dispatch(ws, msg), msg.action)
            return
        pending = self._pending
        if pending is None or pending.message_id != msg.message_id or pending.future.done():
            if msg.message_id in self._timed_out:
                log.info("late answer to a CALL that had timed out (id %r) ignored",
                         msg.message_id[:40])
                return
            self.stats.incoming_errors += 1
            log.warning("answer with unknown message id %r ignored", msg.message_id[:40])
            return
        pending.future.set_result(msg)

    def _on_binary(self, ws: aiohttp.ClientWebSocketResponse, data: bytes) -> None:
        # OCPP-J §4.1: frames are text. Answer a CALL sent as binary so its sender stops waiting.
        self.stats.frames_in += 1
        self.last_activity = self._clock()
        text = data[:4096].decode("utf-8", errors="replace")
        head = rpc.recover_head(text)
        exc = rpc.FrameError(CallErrorCode.FormationViolation, "OCPP-J frames must be text",
                             message_id=head[1] if head else None,
                             message_type=head[0] if head else None)
        self._on_bad_frame(ws, exc, f"<binary frame, {len(data)} bytes>")

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

    def _on_bad_frame(self, ws: aiohttp.ClientWebSocketResponse, exc: rpc.FrameError,
                      text: str) -> None:
        self.stats.incoming_errors += 1
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
            self._spawn(self._send_quietly(ws, answer.encode()), "callerror")

    async def _send_quietly(self, ws: aiohttp.ClientWebSocketResponse, text: str) -> None:
        try:
            await self._send(ws, text)
        except LinkDown as exc:
            log.debug("answer not sent: %s", exc)

    async def _answer(self, call: rpc.Call) -> Reply:
        if self._validator is not None:
            try:
                self._validator.check_request(call.action, call.payload)
            except OcppCallError as exc:
                self.stats.incoming_errors += 1
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
                self.stats.outgoing_invalid += 1
                log.error("invalid %s response of ours, not sent: %s", call.action,
                          exc.description)
                raise OcppCallError(CallErrorCode.InternalError,
                                    "internal error building the response") from None
        return reply

    async def _dispatch(self, ws: aiohttp.ClientWebSocketResponse, call: rpc.Call) -> None:
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
            await self._send(ws, text)
        except LinkDown as exc:
            log.info("answer to %s not sent: %s", call.action, exc)
            return
        if then is not None:  # only now: the CALLRESULT is on the wire (TriggerMessage §5.17)
            self._spawn(then(), f"{call.action} follow-up")

    # --- tasks ------------------------------------------------------------------------------------

    def _spawn(self, aw: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(aw)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, name))

    def _done(self, task: asyncio.Task[Any], name: str) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("%s failed: %s", name, exc, exc_info=exc)


__all__ = ["Handler", "Link", "LinkSettings", "LinkStats", "backoff_delay_s", "build_url"]
