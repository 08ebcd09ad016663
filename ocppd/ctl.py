"""ocppctl: look at and drive a running ocppd through its control socket.

(Above 400 lines: one small function per verb and its output format; the verbs share
the argument parser and the socket client, nothing else.)

    ocppctl [--socket PATH | --config PATH] [--timeout S] VERB ...

The socket is found in this order: ``--socket``; ``control.socket`` of an explicit
``--config``; ``$OCPPCTL_SOCKET``; ``control.socket`` of /etc/ocppd.toml; /run/ocppd/control.sock.

Exit status: 0 done; 1 refused, or the daemon cannot be reached; 2 usage error. The wire
protocol and the shape of every answer are described in ocppd.control.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ocppd import __version__, config
from ocppd.control import EV_STATES, MAX_LIMIT_A, MAX_REQUEST_BYTES, MAX_TRANSACTIONS
from ocppd.errors import ConfigError

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2
DEFAULT_SOCKET = Path("/run/ocppd/control.sock")
DEFAULT_TIMEOUT_S = 10.0
# An ocppctl swipe may wait for an Authorize round trip to the Central System
SWIPE_TIMEOUT_S = 60.0
# OCPP 1.6 §9.1.4 ChangeConfiguration answers
CONFIG_SET_OK = ("Accepted", "RebootRequired")


class CtlError(Exception):
    """Something to tell the user on stderr, with the exit status to leave with."""

    def __init__(self, message: str, exit_code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --- finding and talking to the daemon ----------------------------------------------------------


def _socket_from_config(path: Path) -> Path | None:
    try:
        return config.load(path).control.socket
    except ConfigError:
        pass
    # A config with an unrelated problem (a missing directory on this machine) still names the
    # socket: read just that key.
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        value = data.get("control", {}).get("socket")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError):
        return None
    return Path(value) if isinstance(value, str) and value else None


def socket_path(sock: str | None, config_path: str | None) -> Path:
    if sock:
        return Path(sock)
    if config_path:
        found = _socket_from_config(Path(config_path))
        if found is None:
            print(f"ocppctl: cannot read control.socket from {config_path}; "
                  f"trying {DEFAULT_SOCKET}", file=sys.stderr)
        return found or DEFAULT_SOCKET
    env = os.environ.get("OCPPCTL_SOCKET")
    if env:
        return Path(env)
    return _socket_from_config(config.DEFAULT_PATH) or DEFAULT_SOCKET


def call(path: Path, cmd: str, args: dict[str, Any], *, timeout_s: float) -> Any:
    """Send one request and return its result; raises CtlError for anything else."""
    request = json.dumps({"cmd": cmd, "args": args}).encode("utf-8") + b"\n"
    if len(request) > MAX_REQUEST_BYTES:
        raise CtlError(f"request too large ({len(request)} bytes)", EXIT_USAGE)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise CtlError(f"ocppd is not running (no socket at {path})") from None
        except PermissionError:
            raise CtlError(
                f"permission denied on {path}: run as root or a member of group ocppd") from None
        except TimeoutError:
            raise CtlError(f"ocppd does not accept connections on {path} "
                           f"(no answer within {timeout_s:g} s)") from None
        except OSError as exc:
            raise CtlError(f"cannot connect to {path}: {exc.strerror or exc}") from None
        try:
            sock.sendall(request)
            answer = _read_line(sock)
        except TimeoutError:
            raise CtlError(f"no answer from ocppd within {timeout_s:g} s") from None
        except OSError as exc:
            raise CtlError(f"lost the connection to ocppd: {exc.strerror or exc}") from None
    try:
        response = json.loads(answer)
        ok = response["ok"]
    except (ValueError, TypeError, KeyError):
        raise CtlError("ocppd sent an answer ocppctl does not understand") from None
    if ok:
        return response.get("result")
    kind, error = response.get("kind"), response.get("error", "")
    if kind == "usage":
        raise CtlError(error, EXIT_USAGE)
    if kind == "internal":
        raise CtlError(f"ocppd failed: {error} (see its log)")
    raise CtlError(error)


def _read_line(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise CtlError("ocppd closed the connection without answering")
        chunks.append(chunk)
        if b"\n" in chunk:
            return b"".join(chunks).split(b"\n", 1)[0]


# --- rendering ----------------------------------------------------------------------------------


def _fmt(value: Any, scale: float = 1.0, digits: int | None = None) -> str:
    if value is None:
        return "-"
    if digits is not None:
        return f"{float(value) / scale:.{digits}f}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """Columns two spaces apart; the columns numbered in ``right`` are right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def render(cells: Sequence[str]) -> str:
        out = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(
            zip(cells, widths, strict=True))]
        return "  ".join(out).rstrip()

    return "\n".join([render(headers), *(render(r) for r in rows)])


def render_status(st: dict[str, Any]) -> str:
    conn = st.get("connection", {})
    lines = [f"{st.get('charge_point_id', '?')}  ocppd {st.get('version', '?')}  "
             f"driver {st.get('driver', '?')}"]
    state = conn.get("state", "?")
    where = {"connected": "to", "connecting": "to"}.get(state, "from")
    line = f"connection: {state} {where} {conn.get('url', '?')}, " \
           f"registration {conn.get('registration', '?')}"
    if conn.get("since"):
        line += f", since {conn['since']}"
    lines.append(line)
    if conn.get("last_error"):
        lines.append(f"last error: {conn['last_error']}")
    outbox = f"outbox: {st.get('outbox', 0)} waiting"
    if st.get("outgoing_invalid"):
        outbox += f", {st['outgoing_invalid']} refused by the central system"
    lines += [outbox, ""]
    rows = []
    for c in st.get("connectors", []):
        tx = c.get("transaction_id")
        if tx is None and c.get("local_tx_id") is not None:
            tx = f"local:{c['local_tx_id']}"  # started offline, no transactionId yet
        rows.append([
            str(c.get("id")), str(c.get("status", "?")), str(c.get("error", "?")), _fmt(tx),
            _fmt(c.get("id_tag")), _fmt(c.get("energy_wh"), 1000, 3),
            _fmt(c.get("power_w"), 1000, 2), _fmt(c.get("limit_a"), 1, 1), _fmt(c.get("pilot")),
        ])
    headers = ["ID", "STATUS", "ERROR", "TX", "ID TAG", "ENERGY kWh", "POWER kW", "LIMIT A",
               "PILOT"]
    lines.append(table(headers, rows, right=(3, 5, 6, 7)))
    return "\n".join(lines)


def render_transactions(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no transactions"
    headers = ["LOCAL", "TX", "CONN", "ID TAG", "START", "STOP", "ENERGY kWh", "REASON"]
    body = [[
        _fmt(r.get("local_id")), _fmt(r.get("transaction_id")), _fmt(r.get("connector_id")),
        _fmt(r.get("id_tag")), _fmt(r.get("start")), _fmt(r.get("stop")),
        _fmt(r.get("energy_wh"), 1000, 3), _fmt(r.get("reason")),
    ] for r in rows]
    return table(headers, body, right=(0, 1, 2, 6))


def render_keys(result: dict[str, Any]) -> str:
    body = [[str(k.get("key")), _fmt(k.get("value")), "read-only" if k.get("readonly") else "rw"]
            for k in result.get("keys", [])]
    return table(["KEY", "VALUE", "ACCESS"], body) if body else "no keys"


def config_answer(key: str, answer: str, hint: str | None) -> str:
    """The line for a config set answer; a rejected value says what the key takes."""
    if answer == "Rejected" and hint == "read-only":
        return f"{key}: Rejected (read-only)"
    if answer == "Rejected" and hint:
        return f"{key}: Rejected (expects {hint})"
    if answer == "RebootRequired":
        return f"{key}: RebootRequired (takes effect after a restart)"
    return f"{key}: {answer}"


def render_checks(result: list[dict[str, Any]]) -> str:
    rows = [[str(c["connector_id"]), i["name"], _fmt(i["value"]), i["verdict"].upper(), i["why"]]
            for c in result for i in c["items"]]
    return table(["CONN", "CHECK", "VALUE", "VERDICT", "WHY"], rows)


def render_event(ev: dict[str, Any]) -> str:
    """One event as a line for people (``watch`` without --json)."""
    at = str(ev.get("at", ""))[11:23]
    kind = ev.get("kind")
    cid = ev.get("connector_id")
    match kind:
        case "snapshot":
            st = ev.get("status", {})
            conn = st.get("connection", {})
            parts = [f"{c.get('id')}:{c.get('status')}" for c in st.get("connectors", [])]
            text = f"{conn.get('state')}, registration {conn.get('registration')}; " \
                   f"connectors {' '.join(parts)}"
        case "connection":
            text = f"connection {ev.get('state')}, registration {ev.get('registration')}"
            if ev.get("last_error"):
                text += f" ({ev['last_error']})"
        case "status":
            text = f"connector {cid}: {ev.get('status')} (pilot {ev.get('pilot')}, " \
                   f"contactor {ev.get('contactor')}, offer {_fmt(ev.get('limit_a'), 1, 1)} A)"
        case "fault":
            state = "raised" if ev.get("active") else "cleared"
            text = f"connector {cid}: fault {ev.get('error')} {state}"
        case "reading":
            text = f"connector {cid}: {_fmt(ev.get('power_w'), 1000, 2)} kW, " \
                   f"{_fmt(ev.get('energy_wh'), 1000, 3)} kWh this session"
        case "session_started":
            text = f"connector {cid}: transaction {ev.get('local_tx_id')} started for " \
                   f"{ev.get('id_tag')} at {ev.get('meter_start_wh')} Wh"
        case "session_confirmed":
            text = f"connector {cid}: transaction {ev.get('local_tx_id')} is " \
                   f"{ev.get('transaction_id')} at the central system"
        case "session_stopped":
            text = f"connector {cid}: transaction {ev.get('local_tx_id')} stopped " \
                   f"({ev.get('reason')}), {_fmt(ev.get('energy_wh'), 1000, 3)} kWh"
        case "ocpp":
            arrow = ">>" if ev.get("direction") == "out" else "<<"
            text = f"{arrow} {ev.get('frame')}"
        case "overflow":
            text = f"(too slow: {ev.get('lost')} events lost)"
        case _:
            text = json.dumps(ev, sort_keys=True)
    return f"{at}  {text}"


def watch(path: Path, *, frames: bool, as_json: bool, timeout_s: float) -> int:
    """Follow the event stream until interrupted or the daemon goes away."""
    request = json.dumps({"cmd": "watch", "args": {"frames": frames}}).encode() + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(path))
            sock.sendall(request)
        except (FileNotFoundError, ConnectionRefusedError):
            raise CtlError(f"ocppd is not running (no socket at {path})") from None
        except PermissionError:
            raise CtlError(
                f"permission denied on {path}: run as root or a member of group ocppd") from None
        except OSError as exc:
            raise CtlError(f"cannot connect to {path}: {exc.strerror or exc}") from None
        sock.settimeout(None)  # events come when they happen
        stream = sock.makefile("rb")
        first = stream.readline()
        try:
            answer = json.loads(first)
        except ValueError:
            raise CtlError("ocppd closed the connection without answering") from None
        if not answer.get("ok"):
            raise CtlError(answer.get("error", "watch refused"))
        for line in stream:
            try:
                event = json.loads(line)["event"]
            except (ValueError, KeyError, TypeError):
                continue
            text = json.dumps(event, separators=(",", ":")) if as_json else render_event(event)
            print(text, flush=True)
    print("ocppctl: ocppd closed the event stream", file=sys.stderr)
    return EXIT_REFUSED


# --- the command line ---------------------------------------------------------------------------


def _connector(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a connector number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("connectors are numbered from 1")
    return value


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_TRANSACTIONS:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_TRANSACTIONS}")
    return value


def _amps(text: str) -> float | None:
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a current in amperes: {text!r}") from None
    if not 0 <= value <= MAX_LIMIT_A:
        raise argparse.ArgumentTypeError(f"must be 0 to {MAX_LIMIT_A:g} A, or none")
    return value


def _show_id_tags_option(verb: argparse.ArgumentParser) -> None:
    verb.add_argument("--show-id-tags", action="store_true",
                      help="idTags in clear, not as pseudonyms (root and group ocppd only)")


def _id_tags(args: argparse.Namespace) -> dict[str, Any]:
    """The request's show_id_tags, sent only when asked: pseudonyms are the daemon's default."""
    return {"show_id_tags": True} if args.show_id_tags else {}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ocppctl", description="Control a running ocppd.")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--socket", metavar="PATH", help="control socket of the daemon")
    where.add_argument("--config", metavar="PATH", help="read control.socket from this config")
    p.add_argument("--timeout", metavar="S", type=float, help="seconds to wait for an answer")
    p.add_argument("--version", action="version", version=f"ocppctl {__version__}")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)

    v = verbs.add_parser("status", help="connection and connectors")
    v.add_argument("--json", action="store_true")
    _show_id_tags_option(v)
    v = verbs.add_parser("swipe", help="present an RFID card")
    v.add_argument("id_tag", metavar="IDTAG")
    v.add_argument("--connector", type=_connector, metavar="N")
    v = verbs.add_parser("plug", help="plug a simulated EV in")
    v.add_argument("connector", type=_connector, metavar="N")
    v = verbs.add_parser("unplug", help="unplug a simulated EV")
    v.add_argument("connector", type=_connector, metavar="N")
    v = verbs.add_parser("ev", help="set a simulated EV's pilot state (IEC 61851 A-F)")
    v.add_argument("connector", type=_connector, metavar="N")
    v.add_argument("state", type=str.upper, choices=EV_STATES, metavar="STATE",
                   help="one of " + ", ".join(EV_STATES))
    v = verbs.add_parser("tx", help="recent transactions")
    v.add_argument("--limit", type=_limit, default=20, metavar="N")
    v.add_argument("--json", action="store_true")
    _show_id_tags_option(v)
    v = verbs.add_parser("config", help="OCPP configuration keys")
    ops = v.add_subparsers(dest="op", metavar="OP", required=True)
    o = ops.add_parser("get", help="show keys (all by default)")
    o.add_argument("keys", nargs="*", metavar="KEY")
    o.add_argument("--json", action="store_true")
    o = ops.add_parser("set", help="change a key as ChangeConfiguration would")
    o.add_argument("key", metavar="KEY")
    o.add_argument("value", metavar="VALUE")
    v = verbs.add_parser("stop", help="stop the transaction on a connector")
    v.add_argument("connector", type=_connector, metavar="N")
    v = verbs.add_parser("unlock", help="unlock a socket's cable (stops its transaction)")
    v.add_argument("connector", type=_connector, metavar="N")
    v = verbs.add_parser("available", help="make a connector (0: all) available")
    v.add_argument("connector", type=int, metavar="N")
    v = verbs.add_parser("unavailable", help="make a connector (0: all) unavailable")
    v.add_argument("connector", type=int, metavar="N")
    v = verbs.add_parser("limit", help="limit a connector's current locally ('none': lift)")
    v.add_argument("connector", type=_connector, metavar="N")
    v.add_argument("amps", type=_amps, metavar="A")
    v = verbs.add_parser("meter", help="read the meters now and send the values")
    v.add_argument("connector", type=_connector, metavar="N", nargs="?")
    v = verbs.add_parser("check", help="the set-up check: inputs and their verdicts")
    v.add_argument("--json", action="store_true")
    v = verbs.add_parser("watch", help="follow events as they happen (Ctrl-C ends)")
    v.add_argument("--json", action="store_true", help="one JSON object per line")
    v.add_argument("--frames", action="store_true", help="OCPP frames too")
    return p


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True)


def run(args: argparse.Namespace) -> int:
    path = socket_path(args.socket, args.config)
    timeout_s = args.timeout or (SWIPE_TIMEOUT_S if args.verb == "swipe" else DEFAULT_TIMEOUT_S)

    def ask(cmd: str, **kw: Any) -> Any:
        return call(path, cmd, kw, timeout_s=timeout_s)

    match args.verb:
        case "status":
            st = ask("status", **_id_tags(args))
            print(_dump(st) if args.json else render_status(st))
        case "swipe":
            print(ask("swipe", id_tag=args.id_tag, connector_id=args.connector))
        case "plug":
            ask("plug", connector_id=args.connector)
            print(f"connector {args.connector}: EV plugged in")
        case "unplug":
            ask("unplug", connector_id=args.connector)
            print(f"connector {args.connector}: EV unplugged")
        case "ev":
            ask("ev", connector_id=args.connector, state=args.state)
            print(f"connector {args.connector}: pilot state {args.state}")
        case "tx":
            rows = ask("transactions", limit=args.limit, **_id_tags(args))
            print(_dump(rows) if args.json else render_transactions(rows))
        case "config" if args.op == "get":
            result = ask("config_get", keys=args.keys or None)
            print(_dump(result) if args.json else render_keys(result))
            if result.get("unknown"):
                print(f"ocppctl: unknown key(s): {', '.join(result['unknown'])}", file=sys.stderr)
                return EXIT_REFUSED
        case "config":
            answer = ask("config_set", key=args.key, value=args.value)
            hint = ask("config_hint", key=args.key) if answer == "Rejected" else None
            print(config_answer(args.key, answer, hint))
            return EXIT_OK if answer in CONFIG_SET_OK else EXIT_REFUSED
        case "stop" | "unlock":
            print(ask(args.verb, connector_id=args.connector))
        case "available" | "unavailable":
            answer = ask("availability", connector_id=args.connector,
                         operative=args.verb == "available")
            print(f"connector {args.connector}: {args.verb} {answer}")
        case "limit":
            ask("limit", connector_id=args.connector, limit_a=args.amps)
            what = "none" if args.amps is None else f"{args.amps:g} A"
            print(f"connector {args.connector}: local limit {what}")
        case "meter":
            ask("meter", connector_id=args.connector)
            print("meters read; values sent")
        case "check":
            result = ask("checks")
            print(_dump(result) if args.json else render_checks(result))
        case "watch":
            return watch(path, frames=args.frames, as_json=args.json, timeout_s=timeout_s)
        case _:  # pragma: no cover - argparse only lets known verbs through
            raise CtlError(f"unknown verb {args.verb}", EXIT_USAGE)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 2 for usage errors, 0 for --help/--version
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return run(args)
    except CtlError as exc:
        print(f"ocppctl: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
