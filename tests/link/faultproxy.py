"""A TCP proxy on loopback that breaks the network on demand, for link-failure tests.

    async with FaultProxy(upstream_port) as proxy:       # listens on 127.0.0.1:proxy.port
        ... connect through proxy.port ...
        await proxy.set_mode(Mode.BLACKHOLE)             # existing connections go half-open

Modes (switchable at run time; each applies at once):

- PASS: forward bytes both ways.
- BLACKHOLE: keep every TCP connection open but drop all bytes both ways, like a network
  partition or a NAT that forgot the flow. Connections open while in BLACKHOLE stay dead even
  after switching back to PASS (half-open for good); new connections then work again.
- RESET: reset (TCP RST) every connection, and every new one as soon as it is accepted.
- REFUSE: stop listening, so connects get "connection refused"; open connections are reset.
  Switching away from REFUSE listens on the same port again.

``accepted`` counts connections; ``wait_accepted(n)`` waits for the n-th one.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from enum import StrEnum
from types import TracebackType


class Mode(StrEnum):
    PASS = "pass"
    BLACKHOLE = "blackhole"
    RESET = "reset"
    REFUSE = "refuse"


class _Pipe:
    """One client connection and its upstream connection."""

    def __init__(self, proxy: FaultProxy, client: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.dead = False  # lost bytes in a blackhole: never forwards again
        self.tasks: list[asyncio.Task[None]] = []

    async def pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if self.proxy.mode is Mode.BLACKHOLE:
                    self.dead = True
                if self.dead:
                    continue  # swallowed: the peer never learns
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not self.dead:
                self.close()

    def reset(self) -> None:
        for w in (self.client, self.upstream):
            if w is not None:
                _rst(w)
        self.close()

    def close(self) -> None:
        for w in (self.client, self.upstream):
            if w is not None and not w.is_closing():
                w.close()


def _rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            # SO_LINGER with a zero timeout: close() sends RST instead of FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    def __init__(self, upstream_port: int, *, upstream_host: str = "127.0.0.1",
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.host = host
        self.port = port
        self.mode = Mode.PASS
        self.accepted = 0
        self._server: asyncio.base_events.Server | None = None
        self._pipes: set[_Pipe] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Condition()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def set_mode(self, mode: Mode) -> None:
        previous, self.mode = self.mode, mode
        if mode is Mode.BLACKHOLE:
            for pipe in self._pipes:
                pipe.dead = True
        if mode in (Mode.RESET, Mode.REFUSE):
            for pipe in list(self._pipes):
                pipe.reset()
        if mode is Mode.REFUSE and self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        elif previous is Mode.REFUSE and mode is not Mode.REFUSE:
            await self.start()

    async def wait_accepted(self, n: int, timeout_s: float = 5.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: self.accepted >= n), timeout_s)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            async with self._changed:
                self.accepted += 1
                self._changed.notify_all()
            if self.mode is Mode.RESET:
                _rst(writer)
                return
            pipe = _Pipe(self, writer)
            self._pipes.add(pipe)
            try:
                up_reader, up_writer = await asyncio.open_connection(self.upstream_host,
                                                                     self.upstream_port)
            except OSError:
                _rst(writer)
                return
            pipe.upstream = up_writer
            pipe.tasks = [asyncio.ensure_future(pipe.pump(reader, up_writer)),
                          asyncio.ensure_future(pipe.pump(up_reader, writer))]
            try:
                await asyncio.gather(*pipe.tasks)
            finally:
                for t in pipe.tasks:
                    t.cancel()
                pipe.close()
                self._pipes.discard(pipe)
        finally:
            self._handlers.discard(task)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pipe in list(self._pipes):
            pipe.reset()
        for task in list(self._handlers):
            task.cancel()
        for task in list(self._handlers):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
