"""The local control socket that ``ocppctl`` talks to.

(Above 400 lines: the wire protocol, the command table and the event subscriptions of one
socket; the commands are thin calls into the station and the adapter.)

A Unix stream socket (``control.socket``, mode ``control.mode``, default 0o660 so that root and
group ``ocppd`` may use it). The protocol is newline-delimited JSON, one request per line, any
number of requests per connection, answered in order::

    -> {"cmd": "plug", "args": {"connector_id": 1}}
    <- {"ok": true, "result": null}
    <- {"ok": false, "error": "connector 1 is faulted", "kind": "refused"}

``kind`` is ``"refused"`` (understood, but the station said no: ``Refused``), ``"usage"`` (bad
JSON, unknown command, missing or mistyped arguments, request over 64 KiB) or ``"internal"``
(a bug; logged with its traceback). A request over the size limit closes the connection after
the error reply; anything else leaves it open.

Commands and their ``args``:

============  ==========================================  ==============================
cmd           args                                        result
============  ==========================================  ==============================
status        {"show_id_tags": bool (default false)}      the status dict below
swipe         {"id_tag": str, "connector_id": int|null}   str: what happened, in words
plug          {"connector_id": int}                       null
unplug        {"connector_id": int}                       null
ev            {"connector_id": int, "state": "A".."F"}    null
transactions  {"limit": int (1..1000, default 20),        list of transaction dicts
              "show_id_tags": bool (default false)}
config_get    {"keys": [str, ...] | null}                 {"keys": [...], "unknown": [...]}
config_set    {"key": str, "value": str}                  "Accepted" | "Rejected" | ...
config_hint   {"key": str}                                str | null: the values it takes
config_show   {}                                          the effective TOML configuration
                                                          (secrets shown as "********")
stop          {"connector_id": int}                       str: what happened
unlock        {"connector_id": int}                       "unlocked" | "failed" | ...
availability  {"connector_id": int (0: all),              "accepted" | "scheduled" |
              "operative": bool}                          "rejected"
limit         {"connector_id": int,                       null (the installer's own limit;
              "limit_a": number | null}                   never raises another limit)
meter         {"connector_id": int | null}                null (read and send MeterValues)
checks        {}                                          list of set-up check dicts
events        {"limit": int (1..1000, default 50)}        faults and security events, newest
                                                          first: [{"at","kind","detail"}]
watch         {"frames": bool (default false)}            a stream, see below
============  ==========================================  ==============================

idTags are personal data: ``status`` and ``transactions`` give each as its pseudonym
(``tag:3f9a1c2b``, ocppd.privacy; in clear only where the installer set
security.reveal_id_tags), as the web page and ``watch`` do. ``"show_id_tags": true`` gives them in
clear to a client who may act on the charger: root, the daemon's own user, or a member of the
socket's group (``may_reveal_id_tags``), whatever ``control.mode`` lets connect; anyone else is
refused. The web page asks through ``dispatch`` too, and never for clear idTags.

``watch`` turns the connection into an event stream: the answer ``{"ok": true, "result":
"watching"}`` is followed by one line per event, ``{"event": {...}}``, until the client closes
the connection (the events are described in ocppd.events). The first event is a snapshot of
the status. With ``"frames": true`` the OCPP frames both ways are events too.

The status dict::

    {"charge_point_id": str, "version": str, "driver": "sim" | "gpio",
     "connection": {"state": "connected" | "connecting" | "disconnected", "url": str,
                    "registration": "accepted" | "pending" | "rejected" | "none",
                    "since": ISO 8601 str | None, "last_error": str | None},
     "outbox": int,              # messages waiting to be sent to the Central System
     "outgoing_invalid": int,    # messages the Central System answered with a CallError
     "connectors": [{"id": int, "status": str (OCPP 1.6 ChargePointStatus, e.g. "Charging"),
                     "error": str (ChargePointErrorCode, e.g. "NoError"),
                     "transaction_id": int | None, "local_tx_id": int | None,
                     "id_tag": str | None, "energy_wh": float | None (this session),
                     "power_w": float | None, "limit_a": float | None,
                     # energy and power: the meters are read for the answer (at most once a
                     # second), not taken from the last sample sent to the Central System
                     "pilot": str | None (IEC 61851 state "A".."F"),
                     # every limit on the offer, lowest first: why it offers what it does
                     "limits": [{"source": str, "limit_a": float}, ...]}]}

A transaction dict (``transactions``, newest first)::

    {"local_id": int, "transaction_id": int | None, "connector_id": int, "id_tag": str,
     "start": ISO 8601 str, "stop": ISO 8601 str | None, "energy_wh": float | None,
     "reason": str | None (OCPP 1.6 StopTransaction reason)}

Values that JSON cannot hold (datetimes, enums) are sent as ``str(value)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import pwd
import socket
import stat
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ocppd.errors import ConfigError, OcppdError
from ocppd.events import display_id_tag, safe_status

if TYPE_CHECKING:
    from ocppd.events import Subscription

log = logging.getLogger("ocppd.control")

MAX_REQUEST_BYTES = 64 * 1024
EV_STATES = ("A", "B", "C", "D", "E", "F")  # IEC 61851-1 control pilot states
MAX_TRANSACTIONS = 1000
MAX_LIMIT_A = 80.0  # IEC 61851-1 AC charging tops out at 80 A per phase


class Refused(OcppdError):
    """A control request that is understood but refused (no such connector, real hardware...)."""


class ControlApi(Protocol):
    """What the control socket needs from the station."""

    async def status(self) -> dict[str, Any]: ...

    async def swipe(self, id_tag: str, connector_id: int | None) -> str: ...

    def plug(self, connector_id: int) -> None: ...

    def unplug(self, connector_id: int) -> None: ...

    def ev_state(self, connector_id: int, state: str) -> None: ...

    def transactions(self, limit: int) -> list[dict[str, Any]]: ...

    def config_get(self, keys: list[str] | None) -> dict[str, Any]: ...

    def config_set(self, key: str, value: str) -> str: ...

    def config_hint(self, key: str) -> str | None: ...

    def config_show(self) -> dict[str, Any]: ...

    async def stop(self, connector_id: int) -> str: ...

    async def unlock(self, connector_id: int) -> str: ...

    def availability(self, connector_id: int, operative: bool) -> str: ...

    def limit(self, connector_id: int, limit_a: float | None) -> None: ...

    async def meter(self, connector_id: int | None) -> None: ...

    async def checks(self) -> list[dict[str, Any]]: ...

    def events(self, limit: int) -> list[dict[str, Any]]: ...

    async def subscribe(self, frames: bool) -> Subscription: ...


class UsageError(OcppdError):
    """A request the control socket cannot understand (maps to kind "usage")."""


# --- argument checks ----------------------------------------------------------------------------


def _arg_int(args: dict[str, Any], name: str, *, optional: bool = False) -> Any:
    value = args.get(name)
    if value is None and optional:
        return None
    # bool is an int in Python but never a connector number
    if not isinstance(value, int) or isinstance(value, bool):
        raise UsageError(f"{name} must be an integer")
    return value


def _arg_str(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str):
        raise UsageError(f"{name} must be a string")
    return value


def _show_id_tags(args: dict[str, Any], reveal_refused: str | None) -> bool:
    """Whether the request asks for idTags in clear, and may have them."""
    show = args.get("show_id_tags", False)
    if not isinstance(show, bool):
        raise UsageError("show_id_tags must be true or false")
    if show and reveal_refused is not None:
        raise Refused(reveal_refused)
    return show


async def dispatch(
    api: ControlApi, cmd: str, args: dict[str, Any], *, reveal_refused: str | None = None
) -> Any:
    """Run one request against ``api``. Raises UsageError, Refused, or whatever ``api`` raises.

    ``reveal_refused``: why this client may not see idTags in clear (None: it may).
    """
    match cmd:
        case "status":
            show = _show_id_tags(args, reveal_refused)
            status = await api.status()
            return status if show else safe_status(status)
        case "swipe":
            id_tag = _arg_str(args, "id_tag")
            return await api.swipe(id_tag, _arg_int(args, "connector_id", optional=True))
        case "plug":
            return api.plug(_arg_int(args, "connector_id"))
        case "unplug":
            return api.unplug(_arg_int(args, "connector_id"))
        case "ev":
            connector_id = _arg_int(args, "connector_id")
            state = _arg_str(args, "state").upper()
            if state not in EV_STATES:
                raise UsageError(f"state must be one of {', '.join(EV_STATES)}")
            return api.ev_state(connector_id, state)
        case "transactions":
            limit = args.get("limit", 20)
            if not isinstance(limit, int) or isinstance(limit, bool):
                raise UsageError("limit must be an integer")
            if not 1 <= limit <= MAX_TRANSACTIONS:
                raise UsageError(f"limit must be 1 to {MAX_TRANSACTIONS}")
            show = _show_id_tags(args, reveal_refused)
            rows = api.transactions(limit)
            return rows if show else [{**r, "id_tag": display_id_tag(r.get("id_tag"))}
                                      for r in rows]
        case "config_get":
            keys = args.get("keys")
            if keys is not None and not (
                isinstance(keys, list) and all(isinstance(k, str) for k in keys)
            ):
                raise UsageError("keys must be a list of strings")
            return api.config_get(keys or None)
        case "config_set":
            return api.config_set(_arg_str(args, "key"), _arg_str(args, "value"))
        case "config_hint":
            return api.config_hint(_arg_str(args, "key"))
        case "config_show":
            return api.config_show()
        case "stop":
            return await api.stop(_arg_int(args, "connector_id"))
        case "unlock":
            return await api.unlock(_arg_int(args, "connector_id"))
        case "availability":
            operative = args.get("operative")
            if not isinstance(operative, bool):
                raise UsageError("operative must be true or false")
            return api.availability(_arg_int(args, "connector_id"), operative)
        case "limit":
            limit = args.get("limit_a")
            if limit is not None and (
                not isinstance(limit, int | float) or isinstance(limit, bool)
                or not 0 <= limit <= MAX_LIMIT_A
            ):
                raise UsageError(f"limit_a must be a number of amperes, 0 to {MAX_LIMIT_A}, "
                                 "or null for none")
            return api.limit(_arg_int(args, "connector_id"),
                             None if limit is None else float(limit))
        case "meter":
            return await api.meter(_arg_int(args, "connector_id", optional=True))
        case "checks":
            return await api.checks()
        case "events":
            limit = args.get("limit", 50)
            if not isinstance(limit, int) or isinstance(limit, bool) or not (
                1 <= limit <= MAX_TRANSACTIONS
            ):
                raise UsageError(f"limit must be an integer 1 to {MAX_TRANSACTIONS}")
            return api.events(limit)
        case "watch":
            if not isinstance(args.get("frames", False), bool):
                raise UsageError("frames must be true or false")
            raise UsageError("watch is a stream: send it as the only request of a connection")
        case _:
            raise UsageError(f"unknown command {cmd!r}")


def _parse(line: bytes) -> tuple[str, dict[str, Any]]:
    try:
        request = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"request is not valid JSON: {exc}") from None
    if not isinstance(request, dict):
        raise UsageError("request must be a JSON object")
    cmd, args = request.get("cmd"), request.get("args", {})
    if not isinstance(cmd, str):
        raise UsageError('request needs "cmd" (a string)')
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise UsageError('"args" must be an object')
    return cmd, args


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": message, "kind": kind}


async def handle_line(
    api: ControlApi, line: bytes, *, reveal_refused: str | None = None
) -> dict[str, Any]:
    """One request line in, one response object out. Never raises (except CancelledError)."""
    cmd = "?"
    try:
        cmd, args = _parse(line)
        result = await dispatch(api, cmd, args, reveal_refused=reveal_refused)
    except UsageError as exc:
        return _error("usage", str(exc))
    except Refused as exc:
        return _error("refused", str(exc))
    except Exception as exc:
        # the command only, not its arguments: config_set may carry AuthorizationKey
        log.exception("control command %r failed", cmd)
        return _error("internal", f"{type(exc).__name__}: {exc}")
    return {"ok": True, "result": result}


def _encode(response: dict[str, Any]) -> bytes:
    return json.dumps(response, default=str, separators=(",", ":")).encode("utf-8") + b"\n"


# --- who may see idTags in clear ----------------------------------------------------------------


def may_reveal_id_tags(uid: int, gid: int, socket_gid: int) -> bool:
    """Whether a client may see idTags in clear: root, the daemon's own user, or a member of the
    socket's group (primary, or in the group database): those the socket as installed (0660,
    group ocppd) lets act on the charger, even where control.mode lets others connect."""
    if uid in (0, os.geteuid()) or gid == socket_gid:
        return True
    try:
        name = pwd.getpwuid(uid).pw_name
        return socket_gid in os.getgrouplist(name, gid)
    except (KeyError, OSError):
        return False  # a uid without a name has no supplementary groups to count


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _reveal_refused(writer: asyncio.StreamWriter, path: Path) -> str | None:
    """Why the client on ``writer`` may not see idTags in clear; None when it may."""
    sock = writer.get_extra_info("socket")
    try:
        # the credentials the client connected with (socket(7) SO_PEERCRED: pid, uid, gid)
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, gid = struct.unpack("3i", creds)
        socket_gid = path.stat().st_gid
    except (AttributeError, OSError):
        return "cannot tell who is asking: idTags are not shown in clear"
    if may_reveal_id_tags(uid, gid, socket_gid):
        return None
    return (f"idTags in clear are for root and group {_group_name(socket_gid)} only (those who "
            "may act on the charger)")


# --- the server ---------------------------------------------------------------------------------


def _cannot_create(path: Path, reason: str) -> ConfigError:
    return ConfigError([f"control.socket: cannot create {path}: {reason}"])


def _remove_stale(path: Path) -> None:
    """Remove a socket left by an earlier run; refuse anything that is not a dead socket."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _cannot_create(path, exc.strerror or str(exc)) from None
    if not stat.S_ISSOCK(st.st_mode):
        raise _cannot_create(path, "a file that is not a socket is in the way; not removing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)  # a listener with a full backlog would otherwise block start-up
    try:
        probe.connect(str(path))
    except TimeoutError:
        live = True  # a listener that is too busy to accept is still a listener
    except OSError:
        live = False  # nobody listening (ECONNREFUSED): stale
    else:
        live = True
    finally:
        probe.close()
    if live:
        raise _cannot_create(path, "another process is listening on it (is ocppd running?)")
    try:
        path.unlink()
    except OSError as exc:
        raise _cannot_create(path, exc.strerror or str(exc)) from None
    log.info("removed stale control socket %s", path)


class ControlServer:
    """Serves ``api`` on a Unix socket at ``path``. Use ``async with`` or start()/stop()."""

    def __init__(
        self,
        api: ControlApi,
        path: Path,
        *,
        mode: int = 0o660,
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ) -> None:
        self._api = api
        self.path = Path(path)
        self._mode = mode
        self._max_request_bytes = max_request_bytes
        self._server: asyncio.AbstractServer | None = None
        self._inode: tuple[int, int] | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind and listen. Raises ConfigError (exit 78) if the socket cannot be created."""
        _remove_stale(self.path)
        try:
            # limit + 1 so a line of exactly the limit (plus newline) still fits
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=self._max_request_bytes + 1
            )
        except OSError as exc:
            raise _cannot_create(self.path, exc.strerror or str(exc)) from None
        try:
            # mode after bind: the socket's permission bits are what connect(2) checks
            os.chmod(self.path, self._mode)
            st = self.path.stat()
        except OSError as exc:
            await self.stop()
            raise _cannot_create(self.path, exc.strerror or str(exc)) from None
        self._inode = (st.st_dev, st.st_ino)
        log.info("control socket listening on %s (mode %04o)", self.path, self._mode)

    async def stop(self) -> None:
        """Stop listening, close client connections and remove the socket file."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._clients):
            task.cancel()
        if self._clients:
            await asyncio.gather(*self._clients, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
        if self._inode is not None:
            # only our own socket: a new daemon may already have bound a fresh one here
            with contextlib.suppress(OSError):
                st = self.path.lstat()
                if (st.st_dev, st.st_ino) == self._inode:
                    self.path.unlink()
            self._inode = None

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            await self._converse(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away mid-request: nothing to answer
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reveal_refused = _reveal_refused(writer, self.path)
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                if not exc.partial.strip():
                    return  # clean end of conversation
                line = exc.partial  # last request without a newline: answer it, then finish
            except asyncio.LimitOverrunError:
                # the rest of the line is still coming; resynchronizing is guesswork, so close
                writer.write(_encode(_error(
                    "usage", f"request larger than {self._max_request_bytes} bytes")))
                await writer.drain()
                return
            if not line.strip():
                continue
            watch = _watch_request(line)
            if watch is not None:
                await self._stream(reader, writer, frames=watch)
                return
            writer.write(_encode(await handle_line(self._api, line,
                                                   reveal_refused=reveal_refused)))
            await writer.drain()
            if not line.endswith(b"\n"):
                return

    async def _stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, frames: bool
    ) -> None:
        """``watch``: events until the client hangs up (or sends anything: it is not read)."""
        try:
            sub = await self._api.subscribe(frames)
        except Exception as exc:
            log.exception("control command 'watch' failed")
            writer.write(_encode(_error("internal", f"{type(exc).__name__}: {exc}")))
            await writer.drain()
            return
        try:
            writer.write(_encode({"ok": True, "result": "watching"}))
            await writer.drain()
            gone = asyncio.ensure_future(reader.read())  # EOF: the watcher went away
            try:
                while True:
                    nxt = asyncio.ensure_future(sub.get())
                    done, _ = await asyncio.wait({nxt, gone},
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if nxt not in done:
                        nxt.cancel()
                        return
                    writer.write(_encode({"event": nxt.result()}))
                    await writer.drain()
            finally:
                gone.cancel()
        finally:
            sub.close()


def _watch_request(line: bytes) -> bool | None:
    """``frames`` of a well-formed watch request; None for any other request."""
    try:
        cmd, args = _parse(line)
    except UsageError:
        return None
    if cmd != "watch":
        return None
    frames = args.get("frames", False)
    return frames if isinstance(frames, bool) else None

