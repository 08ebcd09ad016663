"""File transfers for Firmware Management and logs: HTTP(S) with aiohttp (download GET; upload
PUT, POST multipart/form-data if the server answers 405), FTP(S) with ftplib in a worker
thread, and the retry rules of §5.19 / §5.8.

For FTP the URL's path is relative to the login directory (RFC 1738) and an upload location is
a directory; for HTTP the file name is appended only when the location ends with "/".
https:// and ftps:// are verified with ``tls_context`` (see firmware.py, "Security"); error
messages never carry URL credentials (``privacy.scrub``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ftplib
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, TypeVar
from urllib.parse import unquote, urlsplit

import aiohttp

from ocppd import privacy
from ocppd.config import Config
from ocppd.errors import OcppdError
from ocppd.privacy import redact_url

log = logging.getLogger("ocppd.firmware")

_T = TypeVar("_T")

DEFAULT_ATTEMPTS = 3  # §5.19: when retries is absent "the Charge Point decides"
DEFAULT_RETRY_INTERVAL_S = 60
CONNECT_TIMEOUT_S = 30.0
READ_TIMEOUT_S = 60.0
CHUNK_BYTES = 64 * 1024


class TransferError(OcppdError):
    """A download or upload failed (HTTP status, truncated body, refused connection, FTP)."""


class UnsupportedProtocol(TransferError):
    """The location's scheme is none of ftp, ftps, http, https: retrying cannot help."""


class TlsSetupError(TransferError):
    """The CA file for file transfers cannot be loaded: retrying cannot help."""


# what aiohttp, ftplib and the file system raise; translated to TransferError once, below
_LIBRARY_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError, OSError, TimeoutError, *ftplib.all_errors)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    attempts: int
    interval_s: float

    @classmethod
    def from_request(cls, p: dict[str, Any]) -> RetryPolicy:
        retries = p.get("retries")
        interval = p.get("retryInterval")
        return cls(attempts=DEFAULT_ATTEMPTS if retries is None else max(1, int(retries)),
                   interval_s=float(DEFAULT_RETRY_INTERVAL_S if interval is None
                                    else max(0, interval)))

    async def run(self, what: str, transfer: Callable[[], Awaitable[_T]]) -> _T | None:
        """``transfer()`` until it succeeds, at most ``attempts`` times ``interval_s`` apart; an
        unsupported protocol is not retried. None when every attempt failed (each is logged)."""
        for attempt in range(1, self.attempts + 1):
            try:
                return await transfer()
            except (TransferError, OSError) as exc:
                log.warning("%s failed (attempt %d of %d): %s", what, attempt, self.attempts, exc)
                if isinstance(exc, UnsupportedProtocol | TlsSetupError):
                    break
                if attempt < self.attempts:
                    await asyncio.sleep(self.interval_s)
        log.error("%s failed", what)
        return None


# --- transfers ------------------------------------------------------------------------------------


def _scheme(url: str) -> str:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https", "ftp", "ftps"):
        raise UnsupportedProtocol(
            f"unsupported protocol {scheme or '(none)'!r} in {redact_url(url)}")
    return scheme


def tls_context(cfg: Config) -> ssl.SSLContext:
    """The verifying context for HTTPS and FTPS file servers (see the module docstring)."""
    ca_file = cfg.security.transfer_ca_file or cfg.central_system.ca_file
    try:
        ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"cannot load the CA file {ca_file}: {exc}") from None
    # create_default_context already sets CERT_REQUIRED and check_hostname; said again here
    # because FTP_TLS would otherwise run without either.
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # Security Whitepaper: TLS 1.2 or newer
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT  # as the OCPP link does, on every Python
    return ctx


def _timeout() -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S,
                                 sock_read=READ_TIMEOUT_S)


def _ftp_login(url: str, tls: ssl.SSLContext | None) -> tuple[ftplib.FTP, str]:
    u = urlsplit(url)
    ftp: ftplib.FTP
    if u.scheme.lower() == "ftps":
        if tls is None:
            raise TlsSetupError("ftps:// needs a TLS context")
        # explicit FTPS (RFC 4217): AUTH TLS on the control connection at login, then PROT P
        # for the data connections; both verified with ``tls`` against the host name
        ftp = ftplib.FTP_TLS(context=tls, timeout=READ_TIMEOUT_S)
    else:
        ftp = ftplib.FTP(timeout=READ_TIMEOUT_S)
    try:
        ftp.connect(u.hostname or "", u.port or 21, timeout=CONNECT_TIMEOUT_S)
        ftp.login(unquote(u.username or "anonymous"), unquote(u.password or ""))
        if isinstance(ftp, ftplib.FTP_TLS):
            ftp.prot_p()
    except BaseException:
        ftp.close()
        raise
    return ftp, unquote(u.path).lstrip("/")  # RFC 1738: relative to the login directory


def _private_file(path: Path) -> BinaryIO:
    """``path`` opened for writing, created (or truncated) with mode 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    return os.fdopen(fd, "wb")


def _ftp_get(url: str, dest: Path, tls: ssl.SSLContext | None) -> int:
    ftp, path = _ftp_login(url, tls)
    with contextlib.closing(ftp), _private_file(dest) as f:
        try:
            expected: int | None = ftp.size(path)
        except ftplib.error_perm:
            expected = None  # SIZE is optional (RFC 3659)
        ftp.retrbinary(f"RETR {path}", f.write, blocksize=CHUNK_BYTES)
        got = f.tell()
        with contextlib.suppress(*ftplib.all_errors):
            ftp.quit()
    if expected is not None and got != expected:
        raise TransferError(f"truncated download: {got} of {expected} bytes")
    return got


def _ftp_put(url: str, src: Path, name: str, tls: ssl.SSLContext | None) -> None:
    ftp, directory = _ftp_login(url, tls)
    target = str(PurePosixPath(directory) / name) if directory else name
    with contextlib.closing(ftp), src.open("rb") as f:
        ftp.storbinary(f"STOR {target}", f, blocksize=CHUNK_BYTES)
        with contextlib.suppress(*ftplib.all_errors):
            ftp.quit()


async def download(url: str, dest: Path, tls: ssl.SSLContext | None = None) -> int:
    """Fetch ``url`` into ``dest`` (through a .part file, mode 0600); the number of bytes.
    ``tls`` verifies https:// and ftps:// servers. TransferError."""
    scheme = _scheme(url)
    part = dest.with_name(dest.name + ".part")
    try:
        if scheme in ("ftp", "ftps"):
            got = await asyncio.to_thread(_ftp_get, url, part, tls)
        else:
            got = await _http_get(url, part, tls)
        part.replace(dest)
        return got
    except TransferError:
        raise
    except _LIBRARY_ERRORS as exc:
        raise TransferError(privacy.scrub(f"{type(exc).__name__}: {exc}")) from exc
    finally:
        part.unlink(missing_ok=True)


def _ssl_arg(tls: ssl.SSLContext | None) -> ssl.SSLContext | bool:
    # aiohttp: a context verifies with it; True verifies with the system store
    return tls if tls is not None else True


async def _http_get(url: str, part: Path, tls: ssl.SSLContext | None) -> int:
    async with aiohttp.ClientSession(timeout=_timeout()) as session, \
            session.get(url, ssl=_ssl_arg(tls)) as resp:
        if resp.status != 200:
            raise TransferError(f"HTTP {resp.status} {resp.reason}")
        expected, got = resp.content_length, 0
        with _private_file(part) as f:
            async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
                f.write(chunk)
                got += len(chunk)
    if expected is not None and got != expected:
        raise TransferError(f"truncated download: {got} of {expected} bytes")
    return got


async def upload(url: str, src: Path, name: str, tls: ssl.SSLContext | None = None) -> None:
    """Send ``src`` as ``name`` to the location ``url``. TransferError."""
    scheme = _scheme(url)
    try:
        if scheme in ("ftp", "ftps"):
            await asyncio.to_thread(_ftp_put, url, src, name, tls)
        else:
            await _http_put(url + name if url.endswith("/") else url, src, name, tls)
    except TransferError:
        raise
    except _LIBRARY_ERRORS as exc:
        raise TransferError(privacy.scrub(f"{type(exc).__name__}: {exc}")) from exc


async def _http_put(url: str, src: Path, name: str, tls: ssl.SSLContext | None) -> None:
    body = await asyncio.to_thread(src.read_bytes)  # a diagnostics archive: small
    async with aiohttp.ClientSession(timeout=_timeout()) as session:
        async with session.put(url, data=body, ssl=_ssl_arg(tls),
                               headers={"Content-Type": "application/octet-stream"}) as resp:
            status, reason = resp.status, resp.reason
        if status == 405:  # the server only takes form uploads
            form = aiohttp.FormData()
            form.add_field("file", body, filename=name, content_type="application/octet-stream")
            async with session.post(url, data=form, ssl=_ssl_arg(tls)) as resp:
                status, reason = resp.status, resp.reason
    if not 200 <= status < 300:
        raise TransferError(f"HTTP {status} {reason}")
