"""The link's transport: one WebSocket to the Central System, opened with the rules of the spec.

- Connects to ``url/<percent-encoded charge point id>`` with subprotocol ``ocpp1.6`` (OCPP-J
  §3.1, §3.1.2) and the transport security of the 1.6 Security Whitepaper profile (0: ws;
  1: ws + Basic; 2: wss + Basic; 3: wss + client certificate), TLS 1.2+ with the whitepaper's
  suites only.
- Capped exponential backoff with jitter between attempts, and the journal lines of an outage.
- ``Connection`` hides aiohttp from the rest of the link: text and binary frames in and out,
  pings, and the time the last frame of any kind came in (what the keepalive watches).

The only module of the link that imports aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import ssl
from base64 import b64encode
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from ocppd.ocpp.rpc import LinkDown
from ocppd.ocpp.settings import LinkSettings
from ocppd.security import SecurityEventType, security_event
from ocppd.tasks import within

log = logging.getLogger("ocppd.link")  # one logger for the whole link: the journal's name

SUBPROTOCOL = "ocpp1.6"  # OCPP-J 1.6 §3.1.2
#: while the backoff is shorter than this, every failed connection attempt is a WARNING line
SHORT_BACKOFF_S = 60.0
#: after that, one "still offline" line per this long at most (and one when the error changes):
#: the journal shows the charger is still trying without a line per attempt
OFFLINE_REPORT_EVERY_S = 600.0


def backoff_delay_s(failures: int, settings: LinkSettings, rand: Callable[[], float]) -> float:
    """Capped exponential backoff with "equal jitter": half fixed, half random.

    The random half spreads a fleet of chargers that lost the Central System at the same moment.
    """
    lo, hi = settings.reconnect_min_s, max(settings.reconnect_min_s, settings.reconnect_max_s)
    cap = min(hi, lo * 2.0 ** min(failures, 32))
    return max(lo, cap / 2 + rand() * cap / 2)


# --- the journal while offline ---------------------------------------------------------------


def _secs(value_s: float) -> str:
    return f"{value_s:.1f}" if value_s < 10 else f"{value_s:.0f}"


@dataclass(slots=True)
class _Offline:
    """An outage, for the journal: since when, how many attempts, what was last reported."""

    since: datetime  # wall time, only for the log line
    attempts: int = 0
    reported_at: float = -math.inf  # link clock of the last "still offline" line
    reported_error: str | None = None


class OfflineJournal:
    """The journal lines of an outage: every attempt while the backoff is short, then one line
    per OFFLINE_REPORT_EVERY_S (or when the error changes), never one per attempt."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._offline: _Offline | None = _Offline(since=datetime.now(UTC))  # until connected

    def went_offline(self) -> None:
        self._offline = _Offline(since=datetime.now(UTC))

    def attempt_failed(self, error: str, delay_s: float) -> None:
        off = self._offline
        if off is None:
            off = self._offline = _Offline(since=datetime.now(UTC))
        off.attempts += 1
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

    def back_online(self, s: LinkSettings) -> None:
        off, self._offline = self._offline, None
        if off is not None and off.attempts:
            log.info("back online: connected to %s (security profile %d) after %d failed"
                     " attempts, offline since %s", s.endpoint(), s.security_profile,
                     off.attempts, off.since.isoformat(timespec="seconds"))
        else:
            log.info("connected to %s (security profile %d)", s.endpoint(), s.security_profile)


# --- TLS and credentials (Security Whitepaper) -------------------------------------------------


def _basic_auth(user: str, password: str) -> str:
    # RFC 7617 with UTF-8; built by hand because aiohttp.BasicAuth refuses a ":" in the user.
    return "Basic " + b64encode(f"{user}:{password}".encode()).decode("ascii")


class ConnectFailed(Exception):
    """A connection attempt failed; the message is one line an installer can act on."""


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
        raise ConnectFailed(f"cannot load ca_file {s.ca_file}: {exc}") from None
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
            raise ConnectFailed("security profile 3 needs client_cert_file (and client_key_file)")
        try:
            ctx.load_cert_chain(str(s.client_cert_file),
                                str(s.client_key_file) if s.client_key_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed(
                f"cannot load client certificate {s.client_cert_file}: {exc}") from None
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


# --- the connection ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Closed:
    """The end of a connection, with the reason for the journal."""

    reason: str


class Connection:
    """One open WebSocket: what the keepalive and the RPC session need of it, nothing more."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse, *,
                 max_frame_bytes: int, clock: Callable[[], float]) -> None:
        self._session = session
        self._ws = ws
        self._max_frame_bytes = max_frame_bytes
        self._clock = clock
        self.received_at = clock()  # link clock of the last frame of any kind received

    @property
    def closed(self) -> bool:
        return self._ws.closed

    async def send(self, text: str) -> None:
        if self._ws.closed:
            raise LinkDown("connection closed")
        try:
            await self._ws.send_str(text)
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            raise LinkDown(f"send failed: {exc}") from None

    async def receive(self) -> str | bytes | Closed:
        """The next text (str) or binary (bytes) frame, or the end of the connection; pings
        are answered here, and every frame, pongs too, moves ``received_at``."""
        ws = self._ws
        while True:
            msg = await ws.receive()
            self.received_at = self._clock()
            kind = msg.type
            if kind == aiohttp.WSMsgType.TEXT:
                return msg.data  # type: ignore[no-any-return]
            if kind == aiohttp.WSMsgType.PING:
                with contextlib.suppress(Exception):  # a broken link shows up in receive()
                    await ws.pong(msg.data)
            elif kind == aiohttp.WSMsgType.PONG:
                pass  # its arrival (above) is what the keepalive looks for
            elif kind == aiohttp.WSMsgType.BINARY:
                return msg.data  # type: ignore[no-any-return]
            elif kind == aiohttp.WSMsgType.CLOSE:
                extra = f": {msg.extra}" if msg.extra else ""
                return Closed(f"closed by the Central System (code {msg.data}{extra})")
            elif kind == aiohttp.WSMsgType.ERROR:
                exc = ws.exception() or msg.data
                if isinstance(exc, aiohttp.WebSocketError) and exc.code == 1009:
                    return Closed(f"frame larger than max_frame_bytes {self._max_frame_bytes}")
                return Closed(f"{type(exc).__name__}: {exc}")
            elif kind in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                code = ws.close_code
                return Closed("connection closed" + (f" (code {code})" if code else ""))

    async def ping(self) -> None:
        with contextlib.suppress(Exception):  # a failed ping is judged by the missing pong
            await self._ws.ping()

    def abort(self) -> None:
        """End the connection at the socket: a dead peer would never answer a close frame, and
        this way receive() returns at once."""
        sock = self._ws.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    async def close(self, *, code: int = aiohttp.WSCloseCode.OK, message: bytes = b"") -> None:
        # Bounded: a dead peer never answers the close frame.
        with contextlib.suppress(Exception):
            await within(self._ws.close(code=code, message=message), timeout=2.0)

    async def release(self) -> None:
        """Close the WebSocket and its HTTP session."""
        await self.close()
        await self._session.close()


async def connect(s: LinkSettings, *, previous_error: str | None,
                  clock: Callable[[], float]) -> Connection:
    """Open the WebSocket of ``s``, or raise ConnectFailed. A failure that differs from
    ``previous_error`` is also the security event it may be (a change, not every retry)."""
    url = s.endpoint()
    kwargs: dict[str, Any] = {}
    headers: dict[str, str] = {}
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("ws", "wss"):
        raise ConnectFailed(f"URL must start with ws:// or wss://, not {url}")
    if s.security_profile >= 2 and scheme != "wss":
        raise ConnectFailed(f"security profile {s.security_profile} needs a wss:// URL")
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
    session = aiohttp.ClientSession()
    try:
        ws = await within(
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
        if message != previous_error:
            _security_event_of(exc, message, s.security_profile)
        raise ConnectFailed(message) from None
    conn = Connection(session, ws, max_frame_bytes=s.max_frame_bytes, clock=clock)
    if ws.protocol != SUBPROTOCOL:
        # OCPP-J §3.1.2: without the agreed subprotocol the server may speak anything
        await conn.close(code=aiohttp.WSCloseCode.PROTOCOL_ERROR, message=b"ocpp1.6 required")
        await session.close()
        raise ConnectFailed(f"{url} did not agree to subprotocol {SUBPROTOCOL} "
                            f"(answered {ws.protocol or 'none'}); closed")
    return conn


__all__ = ["OFFLINE_REPORT_EVERY_S", "SHORT_BACKOFF_S", "SUBPROTOCOL", "Closed", "ConnectFailed",
           "Connection", "OfflineJournal", "backoff_delay_s", "connect"]
