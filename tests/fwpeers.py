"""Real file-transfer peers for the firmware tests: an aiohttp web server and a pyftpdlib FTP
server, both on loopback, with failures that can be injected.

Web routes:
- GET  /fw/{name}         a file from ``files`` (404 if missing)
- GET  /truncated/{name}  Content-Length larger than the body, connection closed early, the
                          first ``truncate_times`` requests only; then the whole file
- GET  /hold/{name}       sends a little, then holds the connection until ``release`` is set
- PUT  /upload/{name}     stored in ``uploads``
- PUT  /postonly/{name}   405; POST (multipart, field "file") stores it
- PUT  /fail/{name}       500
Every request is recorded in ``hits`` as "METHOD path".

Both serve TLS when given a server certificate (``WebPeer(ssl=...)``: https://;
``FtpPeer(root, tls=(cert, key))``: explicit FTPS, AUTH TLS with protected data connections).
"""

from __future__ import annotations

import asyncio
import socket
import ssl as ssl_module
import threading
from pathlib import Path
from typing import Any

from aiohttp import web
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
from pyftpdlib.servers import FTPServer


class WebPeer:
    def __init__(self, ssl: ssl_module.SSLContext | None = None) -> None:
        self.ssl = ssl
        self.files: dict[str, bytes] = {}
        self.uploads: dict[str, bytes] = {}
        self.hits: list[str] = []
        self.truncate_times = 10**6
        self.release = asyncio.Event()
        self.holding = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl else 'http'}://127.0.0.1:{self.port}"

    async def __aenter__(self) -> WebPeer:
        app = web.Application()
        app.router.add_get("/fw/{name}", self._get)
        app.router.add_get("/truncated/{name}", self._truncated)
        app.router.add_get("/hold/{name}", self._hold)
        app.router.add_put("/upload/{name}", self._put)
        app.router.add_put("/postonly/{name}", self._refuse_put)
        app.router.add_post("/postonly/{name}", self._post)
        app.router.add_put("/fail/{name}", self._fail)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        assert self._runner is not None
        await self._runner.cleanup()

    def _hit(self, request: web.Request) -> None:
        self.hits.append(f"{request.method} {request.path}")

    def count(self, prefix: str) -> int:
        return sum(1 for h in self.hits if h.startswith(prefix))

    async def _get(self, request: web.Request) -> web.StreamResponse:
        self._hit(request)
        body = self.files.get(request.match_info["name"])
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body, content_type="application/octet-stream")

    async def _truncated(self, request: web.Request) -> web.StreamResponse:
        self._hit(request)
        body = self.files[request.match_info["name"]]
        if self.truncate_times <= 0:
            return web.Response(body=body)
        self.truncate_times -= 1
        resp = web.StreamResponse()
        resp.content_length = len(body) + 1000
        await resp.prepare(request)
        await resp.write(body[: len(body) // 2])
        assert request.transport is not None
        request.transport.close()  # the peer goes away mid-body
        return resp

    async def _hold(self, request: web.Request) -> web.StreamResponse:
        self._hit(request)
        resp = web.StreamResponse()
        resp.content_length = 10_000
        await resp.prepare(request)
        await resp.write(b"x" * 100)
        self.holding.set()
        await asyncio.wait_for(self.release.wait(), 10)
        return resp

    async def _put(self, request: web.Request) -> web.StreamResponse:
        self._hit(request)
        self.uploads[request.match_info["name"]] = await request.read()
        return web.Response(status=201)

    async def _refuse_put(self, request: web.Request) -> web.StreamResponse:
        self._hit(request)
        raise web.HTTPMethodNotAllowed("PUT", ["POST"])

    async def _post(self, request: web.Request) -> web.StreamResponse:
        self._hit(request)
        form: Any = await request.post()
        field = form["file"]
        self.uploads[field.filename] = field.file.read()
        return web.Response(status=204)

    async def _fail(self, request: web.Request) -> web.StreamResponse:
        self._hit(request)
        await request.read()
        raise web.HTTPInternalServerError()


class FtpPeer:
    """pyftpdlib in its own thread; user ``fw``/``pw`` with ``root`` as home. Use ``with``."""

    user, password = "fw", "pw"

    def __init__(self, root: Path, *, tls: tuple[Path, Path] | None = None,
                 user: str | None = None, password: str | None = None) -> None:
        self.root = root
        self.tls = tls
        self.user = user or self.user
        self.password = password or self.password
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        authorizer = DummyAuthorizer()
        authorizer.add_user(self.user, self.password, str(root), perm="elradfmwMT")
        attrs: dict[str, Any] = {"authorizer": authorizer, "passive_ports": None}
        if tls is not None:
            attrs.update(certfile=str(tls[0]), keyfile=str(tls[1]), tls_control_required=True,
                         tls_data_required=True)
        handler = type("Handler", (TLS_FTPHandler if tls else FTPHandler,), attrs)
        self._server = FTPServer(("127.0.0.1", 0), handler)
        self.port = self._server.socket.getsockname()[1]

    @property
    def url(self) -> str:
        scheme = "ftps" if self.tls else "ftp"
        return f"{scheme}://{self.user}:{self.password}@127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._server.serve_forever(timeout=0.05, blocking=False, handle_exit=False)
        self._server.close_all()

    def __enter__(self) -> FtpPeer:
        self._thread = threading.Thread(target=self._serve, name="fwpeers-ftp")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(5)


def refused_url() -> str:
    """A loopback URL nobody listens on (the port was bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
