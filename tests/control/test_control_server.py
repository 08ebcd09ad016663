"""The control socket: a real Unix stream server in tmp_path, spoken to over real connections."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from controlkit import FakeStation, request

from ocppd.control import MAX_REQUEST_BYTES, ControlServer, may_reveal_id_tags
from ocppd.errors import ConfigError
from ocppd.privacy import tag


def line(cmd: str, **args: object) -> bytes:
    return json.dumps({"cmd": cmd, "args": args}).encode() + b"\n"


# --- the socket file ----------------------------------------------------------------------------


async def test_default_mode_is_applied_after_bind(server: ControlServer) -> None:
    st = server.path.stat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660


async def test_configured_mode_is_applied(tmp_path: Path, station: FakeStation) -> None:
    old_umask = os.umask(0o022)  # would give 0o755 without the chmod
    try:
        async with ControlServer(station, tmp_path / "c.sock", mode=0o600) as srv:
            assert stat.S_IMODE(srv.path.stat().st_mode) == 0o600
    finally:
        os.umask(old_umask)


async def test_socket_file_is_removed_at_stop(tmp_path: Path, station: FakeStation) -> None:
    path = tmp_path / "c.sock"
    async with ControlServer(station, path):
        assert path.exists()
    assert not path.exists()


async def test_stale_socket_from_a_crashed_run_is_replaced(
    tmp_path: Path, station: FakeStation
) -> None:
    path = tmp_path / "c.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))  # bound, never listening, then closed: the file stays behind
    assert stat.S_ISSOCK(path.lstat().st_mode)
    async with ControlServer(station, path):
        [answer] = await request(path, line("status"))
    assert answer["ok"] and answer["result"]["charge_point_id"] == "CP-0001"


async def test_socket_of_a_running_daemon_is_not_stolen(
    server: ControlServer, station: FakeStation
) -> None:
    with pytest.raises(ConfigError) as err:
        await ControlServer(station, server.path).start()
    assert err.value.problems == [
        f"control.socket: cannot create {server.path}: another process is listening on it "
        "(is ocppd running?)"
    ]
    [answer] = await request(server.path, line("status"))  # the first server still serves
    assert answer["ok"]


async def test_regular_file_at_the_path_is_refused_and_kept(
    tmp_path: Path, station: FakeStation
) -> None:
    path = tmp_path / "c.sock"
    path.write_text("important\n")
    with pytest.raises(ConfigError) as err:
        await ControlServer(station, path).start()
    assert err.value.exit_code == 78
    [problem] = err.value.problems
    assert problem.startswith(f"control.socket: cannot create {path}: ")
    assert "not a socket" in problem
    assert path.read_text() == "important\n"


async def test_missing_directory_is_a_config_error(tmp_path: Path, station: FakeStation) -> None:
    path = tmp_path / "missing" / "c.sock"
    with pytest.raises(ConfigError) as err:
        await ControlServer(station, path).start()
    assert err.value.problems == [
        f"control.socket: cannot create {path}: No such file or directory"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
async def test_unwritable_directory_is_a_config_error(
    tmp_path: Path, station: FakeStation
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(ConfigError) as err:
        await ControlServer(station, locked / "c.sock").start()
    assert "Permission denied" in err.value.problems[0]


# --- requests -----------------------------------------------------------------------------------


async def test_several_requests_share_one_connection(
    server: ControlServer, station: FakeStation
) -> None:
    answers = await request(
        server.path,
        line("plug", connector_id=1),
        line("ev", connector_id=1, state="c"),
        line("status"),
        line("unplug", connector_id=1),
    )
    assert [a["ok"] for a in answers] == [True] * 4
    assert answers[0]["result"] is None
    assert answers[2]["result"]["connectors"][0]["pilot"] == "C"
    assert station.calls == [("plug", 1), ("ev", 1, "C"), ("unplug", 1)]


async def test_swipe_is_awaited_and_its_message_returned(
    server: ControlServer, station: FakeStation
) -> None:
    [answer] = await request(server.path, line("swipe", id_tag="ABC123", connector_id=None))
    assert answer == {"ok": True, "result": "authorized ABC123 on connector 1"}
    assert station.calls == [("swipe", "ABC123", None)]


async def test_refusal_has_kind_refused(server: ControlServer) -> None:
    answers = await request(
        server.path, line("plug", connector_id=2), line("swipe", id_tag="BLOCKED"))
    assert answers == [
        {"ok": False, "error": "connector 2 has real hardware; plug a real cable",
         "kind": "refused"},
        {"ok": False, "error": "idTag BLOCKED is Blocked", "kind": "refused"},
    ]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json\n", "request is not valid JSON"),
        (b"\xff\xfe\n", "request is not valid JSON"),
        (b"[1, 2]\n", "request must be a JSON object"),
        (b'{"args": {}}\n', 'request needs "cmd"'),
        (b'{"cmd": "plug", "args": [1]}\n', '"args" must be an object'),
        (b'{"cmd": "reboot"}\n', "unknown command 'reboot'"),
        (line("plug"), "connector_id must be an integer"),
        (line("plug", connector_id="1"), "connector_id must be an integer"),
        (line("plug", connector_id=True), "connector_id must be an integer"),
        (line("ev", connector_id=1, state="G"), "state must be one of A, B, C, D, E, F"),
        (line("swipe", id_tag=17), "id_tag must be a string"),
        (line("transactions", limit=0), "limit must be 1 to 1000"),
        (line("config_get", keys="HeartbeatInterval"), "keys must be a list of strings"),
        (line("config_set", key="HeartbeatInterval"), "value must be a string"),
    ],
)
async def test_bad_requests_are_usage_errors_and_the_connection_stays_usable(
    server: ControlServer, station: FakeStation, raw: bytes, message: str
) -> None:
    bad, good = await request(server.path, raw, line("status"))
    assert bad["ok"] is False and bad["kind"] == "usage"
    assert bad["error"].startswith(message), bad["error"]
    assert good["ok"] is True
    assert not [c for c in station.calls if c[0] != "transactions"]


async def test_oversize_request_is_answered_then_the_connection_closed(
    server: ControlServer,
) -> None:
    reader, writer = await asyncio.open_unix_connection(str(server.path))
    try:
        writer.write(b'{"cmd": "status", "pad": "' + b"x" * (MAX_REQUEST_BYTES + 10) + b'"}\n')
        answer = json.loads(await asyncio.wait_for(reader.readline(), 5.0))
        assert answer == {"ok": False, "kind": "usage",
                          "error": f"request larger than {MAX_REQUEST_BYTES} bytes"}
        assert await asyncio.wait_for(reader.read(), 5.0) == b""  # closed cleanly
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):  # the server left our tail unread
            await writer.wait_closed()
    [answer] = await request(server.path, line("status"))  # the server itself is fine
    assert answer["ok"]


async def test_request_of_exactly_the_limit_is_served(tmp_path: Path, station: FakeStation) -> None:
    base = line("status")[:-2] + b', "pad": ""}'
    padded = base[:-2] + b"x" * (200 - len(base)) + b'"}' + b"\n"
    assert len(padded) == 201
    async with ControlServer(station, tmp_path / "c.sock", max_request_bytes=200) as srv:
        [answer] = await request(srv.path, padded)
    assert answer["ok"]


async def test_station_bug_is_an_internal_error_logged_with_traceback(
    server: ControlServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="ocppd.control"):
        bad, good = await request(
            server.path, line("config_set", key="Explode", value="1"), line("status"))
    assert bad == {"ok": False, "kind": "internal", "error": "RuntimeError: database is locked"}
    assert good["ok"]
    [record] = [r for r in caplog.records if r.name == "ocppd.control"]
    assert record.exc_info is not None
    assert record.getMessage() == "control command 'config_set' failed"  # arguments may be secret


async def test_results_json_cannot_hold_are_sent_as_text(server: ControlServer) -> None:
    [answer] = await request(server.path, line("transactions", limit=1))
    assert answer["ok"] and answer["result"][0]["start"] == "2026-01-01 11:00:00+00:00"


async def test_last_request_without_newline_is_answered(server: ControlServer) -> None:
    reader, writer = await asyncio.open_unix_connection(str(server.path))
    try:
        writer.write(line("status").rstrip(b"\n"))
        writer.write_eof()
        answer = json.loads(await asyncio.wait_for(reader.readline(), 5.0))
        assert answer["ok"] and answer["result"]["outbox"] == 3
    finally:
        writer.close()
        await writer.wait_closed()


async def test_stop_closes_idle_connections(tmp_path: Path, station: FakeStation) -> None:
    srv = ControlServer(station, tmp_path / "c.sock")
    await srv.start()
    reader, writer = await asyncio.open_unix_connection(str(srv.path))
    try:
        [answer] = await request(srv.path, line("status"))  # the server has accepted clients
        assert answer["ok"]
        await srv.stop()
        assert await asyncio.wait_for(reader.read(), 5.0) == b""
    finally:
        writer.close()
        await writer.wait_closed()


async def test_stop_cancels_a_request_in_progress(tmp_path: Path, station: FakeStation) -> None:
    station.swipe_gate = asyncio.Event()  # never set: the swipe waits for ever
    srv = ControlServer(station, tmp_path / "c.sock")
    await srv.start()
    reader, writer = await asyncio.open_unix_connection(str(srv.path))
    try:
        writer.write(line("swipe", id_tag="SLOW"))
        await writer.drain()
        await asyncio.wait_for(station.swipe_started.wait(), 5.0)
        await srv.stop()
        assert await asyncio.wait_for(reader.read(), 5.0) == b""
        assert not srv.path.exists()
    finally:
        writer.close()
        await writer.wait_closed()


async def test_watch_streams_events_until_the_client_hangs_up(
    tmp_path: Path, station: FakeStation
) -> None:
    from ocppd.events import EventBus

    bus = EventBus(station.status)
    station.subscribe = lambda frames: bus.subscribe(frames=frames)  # type: ignore[attr-defined]
    async with ControlServer(station, tmp_path / "c.sock") as srv:
        bad = await request(srv.path, b'{"cmd": "watch", "args": {"frames": "yes"}}\n')
        assert bad == [{"ok": False, "kind": "usage", "error": "frames must be true or false"}]
        reader, writer = await asyncio.open_unix_connection(srv.path)
        writer.write(b'{"cmd": "watch"}\n')
        line = await asyncio.wait_for(reader.readline(), 5.0)
        assert json.loads(line) == {"ok": True, "result": "watching"}
        first = json.loads(await asyncio.wait_for(reader.readline(), 5.0))["event"]
        assert first["kind"] == "snapshot"
        assert first["status"]["connectors"][0]["id_tag"].startswith("tag:")  # not ABC123
        bus.publish("session_started", {"connector_id": 1})
        ev = json.loads(await asyncio.wait_for(reader.readline(), 5.0))["event"]
        assert (ev["kind"], ev["seq"]) == ("session_started", first["seq"] + 1)
        assert bus.subscribers == 1
        writer.close()
        await writer.wait_closed()
        for _ in range(100):  # the server notices the hang-up at its next read
            if bus.subscribers == 0:
                break
            await asyncio.sleep(0.01)
        assert bus.subscribers == 0
    await bus.close()


# --- idTags are personal data: pseudonyms unless asked for, and only for those who may act -----

NOBODY = 65534  # uid and gid of the unprivileged user Debian ships (nobody, nogroup)
CLIENT = """
import json, socket, sys
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
    s.connect(sys.argv[1])
    s.sendall(sys.argv[2].encode() + b"\\n")
    print(s.makefile("rb").readline().decode(), end="")
"""


async def test_status_and_transactions_show_pseudonyms_by_default(server: ControlServer) -> None:
    status, txs = await request(server.path, line("status"), line("transactions"))
    assert status["result"]["connectors"][0]["id_tag"] == tag("ABC123")
    assert status["result"]["connectors"][1]["id_tag"] is None
    assert [r["id_tag"] for r in txs["result"]] == [tag("ABC123"), tag("DEF456")]
    assert "ABC123" not in json.dumps([status, txs])


async def test_show_id_tags_gives_them_in_clear(server: ControlServer) -> None:
    status, txs = await request(server.path, line("status", show_id_tags=True),
                                line("transactions", show_id_tags=True))
    assert status["result"]["connectors"][0]["id_tag"] == "ABC123"
    assert [r["id_tag"] for r in txs["result"]] == ["ABC123", "DEF456"]


async def test_show_id_tags_must_be_true_or_false(server: ControlServer) -> None:
    answers = await request(server.path, line("status", show_id_tags="yes"),
                            line("transactions", show_id_tags=1))
    assert [a["kind"] for a in answers] == ["usage", "usage"]
    assert answers[0]["error"] == "show_id_tags must be true or false"


@pytest.mark.parametrize(
    ("uid", "gid", "socket_gid", "allowed"),
    [
        (0, 0, 1234, True),  # root
        (NOBODY, 1234, 1234, True),  # primary group is the socket's group
        (NOBODY, NOBODY, 1234, False),  # a user outside the group
    ],
    ids=["root", "group", "other"],
)
def test_who_may_see_id_tags_in_clear(uid: int, gid: int, socket_gid: int, allowed: bool) -> None:
    assert may_reveal_id_tags(uid, gid, socket_gid) is allowed


def _nobody_python() -> str | None:
    """An interpreter the unprivileged user can run (the venv's may live under /root)."""
    for candidate in (os.path.realpath(sys.executable), "/usr/bin/python3"):
        try:
            ok = subprocess.run([candidate, "-I", "-c", ""], user=NOBODY, group=NOBODY,
                                extra_groups=[], capture_output=True, check=False, timeout=10)
        except OSError:
            continue  # not executable for that user
        if ok.returncode == 0:
            return candidate
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root")
async def test_a_user_outside_the_group_gets_pseudonyms_but_not_the_clear_tags(
    station: FakeStation,
) -> None:
    """control.mode opened wider than 0660 lets others connect; the clear idTags still stay with
    root and the socket's group, who may act on the charger."""
    python = _nobody_python()
    if python is None:
        pytest.skip("no Python the unprivileged user may run")
    with tempfile.TemporaryDirectory() as where:
        os.chmod(where, 0o755)
        async with ControlServer(station, Path(where) / "c.sock", mode=0o666) as srv:

            async def ask(gid: int, request_line: bytes) -> dict[str, object]:
                proc = await asyncio.create_subprocess_exec(
                    python, "-I", "-c", CLIENT, str(srv.path), request_line.decode().strip(),
                    user=NOBODY, group=gid, extra_groups=[], stdout=asyncio.subprocess.PIPE)
                out, _ = await asyncio.wait_for(proc.communicate(), 10.0)
                answer: dict[str, object] = json.loads(out)
                return answer

            os.chown(srv.path, -1, 0)  # group root: nobody is not in it
            plain = await ask(NOBODY, line("status"))
            assert plain["ok"] and "ABC123" not in json.dumps(plain)
            refused = await ask(NOBODY, line("transactions", show_id_tags=True))
            assert refused == {"ok": False, "kind": "refused", "error": (
                "idTags in clear are for root and group root only (those who may act on the "
                "charger)")}
            os.chown(srv.path, -1, NOBODY)  # now the socket's group is the caller's
            clear = await ask(NOBODY, line("transactions", show_id_tags=True))
            assert clear["ok"] and "ABC123" in json.dumps(clear)
