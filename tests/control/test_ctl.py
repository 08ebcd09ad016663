"""ocppctl against a real control server (in the test's loop) backed by a fake station."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from controlkit import FakeStation

from ocppd import ctl
from ocppd.control import ControlServer
from ocppd.privacy import tag


async def ocppctl(
    capsys: pytest.CaptureFixture[str], *argv: str, sock: Path | None = None
) -> tuple[int, str, str]:
    """Run ocppctl's main() in a worker thread while the server keeps running on the loop."""
    prefix = ["--socket", str(sock)] if sock is not None else []
    code = await asyncio.to_thread(ctl.main, [*prefix, *argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- status -------------------------------------------------------------------------------------


async def test_status_shows_connection_outbox_and_a_connector_table(
    server: ControlServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await ocppctl(capsys, "status", sock=server.path)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "CP-0001  ocppd 0.1.0  driver sim"
    assert lines[1] == ("connection: connected to ws://127.0.0.1:9000/CP-0001, "
                        "registration accepted, since 2026-01-01T12:00:00Z")
    assert lines[2] == "outbox: 3 waiting"
    header, one, two = lines[4:7]
    assert header.split("  ")[0] == "ID" and "ENERGY kWh" in header and header.endswith("PILOT")
    assert one.split() == ["1", "Charging", "NoError", "4711", tag("ABC123"), "1.235", "7.36",
                           "32.0", "C"]
    assert two.split() == ["2", "Available", "NoError", "-", "-", "-", "-", "-", "A"]
    # numbers are right-aligned under their headings
    end = header.index("ENERGY kWh") + len("ENERGY kWh")
    assert one[:end].endswith("1.235") and two[:end].endswith("-")


async def test_status_json_is_the_daemons_answer_with_id_tags_pseudonymised(
    server: ControlServer, station: FakeStation, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await ocppctl(capsys, "status", "--json", sock=server.path)
    expected = await station.status()
    expected["connectors"][0]["id_tag"] = tag("ABC123")
    assert code == 0 and json.loads(out) == expected
    assert "ABC123" not in out


async def test_status_show_id_tags_prints_them_in_clear(
    server: ControlServer, station: FakeStation, capsys: pytest.CaptureFixture[str]
) -> None:
    """For an installer at the charger who must match a card (root or group ocppd only)."""
    code, out, _ = await ocppctl(capsys, "status", "--show-id-tags", sock=server.path)
    assert code == 0 and "ABC123" in out and "tag:" not in out
    code, out, _ = await ocppctl(capsys, "status", "--json", "--show-id-tags", sock=server.path)
    assert code == 0 and json.loads(out) == await station.status()


async def test_status_shows_offline_transactions_and_last_error(
    server: ControlServer, station: FakeStation, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    st = await station.status()
    st["connection"].update(state="disconnected", last_error="connection refused", since=None)
    st["outgoing_invalid"] = 2
    st["connectors"][0]["transaction_id"] = None
    async def fixed() -> dict[str, object]:
        return st

    monkeypatch.setattr(station, "status", fixed)
    code, out, _ = await ocppctl(capsys, "status", sock=server.path)
    assert code == 0
    lines = out.splitlines()
    assert lines[1] == ("connection: disconnected from ws://127.0.0.1:9000/CP-0001, "
                        "registration accepted")
    assert lines[2] == "last error: connection refused"
    assert lines[3] == "outbox: 3 waiting, 2 refused by the central system"
    assert lines[6].split()[3] == "local:12"


# --- actions ------------------------------------------------------------------------------------


async def test_swipe_prints_the_outcome(
    server: ControlServer, station: FakeStation, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await ocppctl(capsys, "swipe", "ABC123", "--connector", "2", sock=server.path)
    assert (code, out) == (0, "authorized ABC123 on connector 2\n")
    assert station.calls == [("swipe", "ABC123", 2)]


async def test_refused_swipe_exits_1_with_the_reason(
    server: ControlServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await ocppctl(capsys, "swipe", "BLOCKED", sock=server.path)
    assert (code, out, err) == (1, "", "ocppctl: idTag BLOCKED is Blocked\n")


async def test_plug_ev_unplug_drive_the_simulator(
    server: ControlServer, station: FakeStation, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (await ocppctl(capsys, "plug", "1", sock=server.path))[:2] == (
        0, "connector 1: EV plugged in\n")
    assert (await ocppctl(capsys, "ev", "1", "c", sock=server.path))[:2] == (
        0, "connector 1: pilot state C\n")
    assert (await ocppctl(capsys, "unplug", "1", sock=server.path))[0] == 0
    assert station.calls == [("plug", 1), ("ev", 1, "C"), ("unplug", 1)]


async def test_plug_on_real_hardware_is_refused(
    server: ControlServer, station: FakeStation, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = await ocppctl(capsys, "plug", "2", sock=server.path)
    assert code == 1 and err == "ocppctl: connector 2 has real hardware; plug a real cable\n"
    assert station.plugged[2] is False


@pytest.mark.parametrize("argv", [
    ["ev", "1", "G"], ["ev", "one", "C"], ["plug", "0"], ["frobnicate"], [], ["config"],
    ["tx", "--limit", "0"], ["config", "set", "HeartbeatInterval"],
])
async def test_usage_errors_exit_2_without_asking_the_daemon(
    server: ControlServer, station: FakeStation, capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    code, out, err = await ocppctl(capsys, *argv, sock=server.path)
    assert code == 2 and out == "" and "usage: ocppctl" in err
    assert station.calls == []


async def test_daemon_usage_error_exits_2(
    server: ControlServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = await ocppctl(capsys, "swipe", "X" * 70000, sock=server.path)
    assert code == 2 and err.startswith("ocppctl: request too large")


async def test_station_bug_is_reported_with_exit_1(
    server: ControlServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = await ocppctl(capsys, "config", "set", "Explode", "1", sock=server.path)
    assert code == 1
    assert err == "ocppctl: ocppd failed: RuntimeError: database is locked (see its log)\n"


# --- transactions and configuration -------------------------------------------------------------


async def test_tx_lists_recent_transactions(
    server: ControlServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await ocppctl(capsys, "tx", sock=server.path)
    assert code == 0
    header, first, second = out.splitlines()
    assert header.split() == ["LOCAL", "TX", "CONN", "ID", "TAG", "START", "STOP", "ENERGY",
                              "kWh", "REASON"]
    assert first.split() == ["12", "4711", "1", tag("ABC123"), "2026-01-01", "11:00:00+00:00",
                             "-", "1.235", "-"]
    assert second.split() == ["11", "-", "2", tag("DEF456"), "2025-12-31T08:00:00Z",
                              "2025-12-31T09:30:00Z", "10.500", "EVDisconnected"]


async def test_tx_show_id_tags_prints_them_in_clear(
    server: ControlServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await ocppctl(capsys, "tx", "--show-id-tags", sock=server.path)
    assert code == 0 and "tag:" not in out
    assert [row.split()[3] for row in out.splitlines()[1:]] == ["ABC123", "DEF456"]
    code, out, _ = await ocppctl(capsys, "tx", "--json", "--show-id-tags", sock=server.path)
    assert [r["id_tag"] for r in json.loads(out)] == ["ABC123", "DEF456"]


async def test_tx_json_honours_limit(
    server: ControlServer, station: FakeStation, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await ocppctl(capsys, "tx", "--limit", "1", "--json", sock=server.path)
    rows = json.loads(out)
    assert code == 0 and [r["local_id"] for r in rows] == [12]
    assert [r["id_tag"] for r in rows] == [tag("ABC123")]
    assert station.calls == [("transactions", 1)]


async def test_config_get_shows_all_keys(
    server: ControlServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await ocppctl(capsys, "config", "get", sock=server.path)
    assert code == 0
    assert [line.split() for line in out.splitlines()] == [
        ["KEY", "VALUE", "ACCESS"],
        ["HeartbeatInterval", "300", "rw"],
        ["MeterValueSampleInterval", "60", "rw"],
        ["NumberOfConnectors", "2", "read-only"],
    ]


async def test_config_get_unknown_key_exits_1(
    server: ControlServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await ocppctl(
        capsys, "config", "get", "HeartbeatInterval", "Nope", "--json", sock=server.path)
    assert code == 1 and err == "ocppctl: unknown key(s): Nope\n"
    assert json.loads(out) == {"keys": [{"key": "HeartbeatInterval", "value": "300",
                                         "readonly": False}], "unknown": ["Nope"]}


@pytest.mark.parametrize(("key", "value", "answer", "code"), [
    ("HeartbeatInterval", "60", "Accepted", 0),
    ("HeartbeatInterval", "soon", "Rejected (expects a whole number)", 1),
    ("NumberOfConnectors", "3", "Rejected (read-only)", 1),
    ("NoSuchKey", "1", "NotSupported", 1),
])
async def test_config_set_prints_the_answer_and_fails_unless_accepted(
    server: ControlServer, station: FakeStation, capsys: pytest.CaptureFixture[str],
    key: str, value: str, answer: str, code: int,
) -> None:
    got = await ocppctl(capsys, "config", "set", key, value, sock=server.path)
    assert got[:2] == (code, f"{key}: {answer}\n")
    assert (station.keys.get("HeartbeatInterval") == "60") is (answer == "Accepted")
    # a rejection says what the key takes (the daemon's config_hint); nothing else asks it
    assert ("config_hint" in [c[0] for c in station.calls]) is answer.startswith("Rejected")


# --- reaching the daemon ------------------------------------------------------------------------


def test_missing_socket_means_the_daemon_is_not_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "control.sock"
    assert ctl.main(["--socket", str(path), "status"]) == 1
    assert capsys.readouterr().err == f"ocppctl: ocppd is not running (no socket at {path})\n"


def test_leftover_socket_without_a_listener_means_not_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))
    assert ctl.main(["--socket", str(path), "plug", "1"]) == 1
    assert capsys.readouterr().err == f"ocppctl: ocppd is not running (no socket at {path})\n"


def _run_as_nobody(argv: list[str]) -> tuple[int, str]:
    """Run ctl.main in a forked child that dropped root, so the kernel really says EACCES."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 99
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            sys.stderr = os.fdopen(write_fd, "w")
            code = ctl.main(argv)
            sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        err = pipe.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), err


def test_socket_without_permission_says_how_to_get_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tmp_path.chmod(0o755)
    path = tmp_path / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen()
        path.chmod(0o000)
        argv = ["--socket", str(path), "status"]
        if os.geteuid() == 0:
            code, err = _run_as_nobody(argv)  # root ignores the mode bits
        else:
            code, err = ctl.main(argv), capsys.readouterr().err
    assert code == 1
    assert err == (f"ocppctl: permission denied on {path}: "
                   "run as root or a member of group ocppd\n")


async def test_silent_daemon_times_out_with_exit_1(
    server: ControlServer, station: FakeStation, capsys: pytest.CaptureFixture[str]
) -> None:
    station.swipe_gate = asyncio.Event()  # the swipe never finishes
    code, _, err = await ocppctl(capsys, "--timeout", "0.3", "swipe", "SLOW", sock=server.path)
    assert (code, err) == (1, "ocppctl: no answer from ocppd within 0.3 s\n")


async def test_socket_path_from_the_environment(
    server: ControlServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OCPPCTL_SOCKET", str(server.path))
    code, out, _ = await ocppctl(capsys, "status", "--json")
    assert code == 0 and json.loads(out)["charge_point_id"] == "CP-0001"


async def test_socket_path_from_the_config_file(
    server: ControlServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OCPPCTL_SOCKET", str(tmp_path / "not-this-one.sock"))
    # incomplete as a daemon config, but it names the socket, which is all ocppctl needs
    cfg = tmp_path / "ocppd.toml"
    cfg.write_text(f'[control]\nsocket = "{server.path}"\n')
    code, out, _ = await ocppctl(capsys, "--config", str(cfg), "status", "--json")
    assert code == 0 and json.loads(out)["charge_point_id"] == "CP-0001"


def test_unreadable_config_falls_back_to_the_default_socket(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if ctl.DEFAULT_SOCKET.exists():
        pytest.skip("a daemon's socket exists on this machine")
    code = ctl.main(["--config", str(tmp_path / "missing.toml"), "status"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.splitlines()[-1] == (
        f"ocppctl: ocppd is not running (no socket at {ctl.DEFAULT_SOCKET})")


async def test_module_runs_as_a_command(server: ControlServer) -> None:
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "ocppd.ctl", "--socket", str(server.path), "status"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "CP-0001" in result.stdout and "Charging" in result.stdout
    bad = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "ocppd.ctl", "--socket", str(server.path), "fly"],
        capture_output=True, text=True, timeout=30,
    )
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
