"""Configuration: every mistake is named with its key and the daemon exits 78, no traceback."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import typing
from pathlib import Path

import pytest

import ocppd
from ocppd import config
from ocppd.cli import main as ocppd_main
from ocppd.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "etc" / "ocppd.toml"


def minimal(tmp_path: Path, extra: str = "") -> str:
    return f"""
[charge_point]
id = "CP-1"
[central_system]
url = "ws://127.0.0.1:9000/ocpp"
[[connectors]]
[storage]
path = "{tmp_path / "db.sqlite"}"
[control]
socket = "{tmp_path / "ctl.sock"}"
{extra}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "ocppd.toml"
    p.write_text(text)
    return p


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, text))
    return info.value.problems


def test_minimal_config_loads_with_defaults(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, minimal(tmp_path)))
    assert cfg.charge_point.id == "CP-1"
    assert cfg.hardware.driver == "sim"
    assert cfg.connectors[0].max_current_a == 32.0
    assert cfg.central_system.reconnect_max_s == 300.0


def test_toml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, minimal(tmp_path) + "\n[broken\n")
    assert "TOML syntax error" in line and re.search(r"line \d+, column \d+", line), line


def test_unknown_key_is_an_error_with_a_hint(tmp_path: Path) -> None:
    text = minimal(tmp_path).replace('id = "CP-1"', 'id = "CP-1"\nvendr = "x"')
    (line,) = problems(tmp_path, text)
    assert "charge_point.vendr: unknown key" in line and "'vendor'" in line


def test_wrong_type_names_key_and_value(tmp_path: Path) -> None:
    (line,) = problems(
        tmp_path,
        minimal(tmp_path).replace("[[connectors]]", '[[connectors]]\nmax_current_a = "lots"'),
    )
    assert "connectors[1].max_current_a: must be a number, got 'lots'" in line


def test_out_of_range_value(tmp_path: Path) -> None:
    (line,) = problems(
        tmp_path, minimal(tmp_path).replace("[[connectors]]", "[[connectors]]\nmax_current_a = 100")
    )
    assert "connectors[1].max_current_a: must be at most 80" in line


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5", "hardware.max_current_a: must be at least 6, got 5.0"),
        ('"breaker"', "hardware.max_current_a: must be a number, got 'breaker'"),
    ],
)
def test_site_current_limit_is_checked_by_name(tmp_path: Path, value: str, message: str) -> None:
    text = minimal(tmp_path) + f"\n[hardware]\nmax_current_a = {value}\n"
    (line,) = problems(tmp_path, text)
    assert message in line, line
    ok = config.load(write(tmp_path, minimal(tmp_path) + "\n[hardware]\nmax_current_a = 25\n"))
    assert ok.hardware.max_current_a == 25.0
    assert config.load(write(tmp_path, minimal(tmp_path))).hardware.max_current_a is None


def test_missing_required_key(tmp_path: Path) -> None:
    text = minimal(tmp_path).replace('url = "ws://127.0.0.1:9000/ocpp"', "")
    assert any("central_system.url: required key is missing" in p for p in problems(tmp_path, text))


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    text = minimal(tmp_path).replace("[[connectors]]", '[[connectors]]\nphases = 2\ncable = "rope"')
    found = problems(tmp_path, text)
    assert len(found) == 2 and all(str(tmp_path) in p for p in found)


def test_secret_is_never_printed(tmp_path: Path) -> None:
    text = minimal(tmp_path).replace(
        "ws://127.0.0.1:9000/ocpp",
        'ws://127.0.0.1:9000/ocpp"\nsecurity_profile = 1\npassword = "short-secret-x',
    )
    found = problems(tmp_path, text)
    assert any("central_system.password" in p for p in found)
    assert not any("short-secret-x" in p for p in found)


def test_security_profile_must_match_url_scheme(tmp_path: Path) -> None:
    text = minimal(tmp_path).replace(
        'ws://127.0.0.1:9000/ocpp"',
        'ws://127.0.0.1:9000/ocpp"\nsecurity_profile = 2\npassword = "0123456789abcdef0123"',
    )
    assert any("needs a wss:// URL" in p for p in problems(tmp_path, text))


def test_meter_must_exist(tmp_path: Path) -> None:
    text = minimal(tmp_path).replace("[[connectors]]", '[[connectors]]\nmeter = "nope"')
    assert any("connectors[1].meter: no [meters.nope] table" in p for p in problems(tmp_path, text))


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path / "missing.toml")
    assert "cannot read" in info.value.problems[0]


def test_socket_directory_must_exist(tmp_path: Path) -> None:
    text = minimal(tmp_path).replace(str(tmp_path / "ctl.sock"), "/nonexistent/dir/ctl.sock")
    assert any(
        "control.socket: directory /nonexistent/dir does not exist" in p
        for p in problems(tmp_path, text)
    )


def test_unknown_ocpp_key_is_refused_at_startup(tmp_path: Path) -> None:
    """The [ocpp] table holds OCPP keys; a name that is not one is an error (exit 78)."""
    path = write(tmp_path, minimal(tmp_path, "[ocpp]\nHeartbeatIntervall = 30\n"))
    proc = subprocess.run(
        [sys.executable, "-m", "ocppd", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == os.EX_CONFIG, proc.stderr
    assert "ocpp.HeartbeatIntervall" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_config_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, minimal(tmp_path))
    assert ocppd_main(["--check-config", "--config", str(good)]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[charge_point\n")
    assert ocppd_main(["--check-config", "--config", str(bad)]) == os.EX_CONFIG
    err = capsys.readouterr().err
    assert "TOML syntax error" in err and "Traceback" not in err


def test_check_config_as_a_process_prints_one_line_per_problem(tmp_path: Path) -> None:
    bad = write(
        tmp_path,
        minimal(tmp_path).replace("[[connectors]]", "[[connectors]]\nphases = 2\nbogus = 1"),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "ocppd", "--check-config", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 78
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith(str(bad)) for line in lines)


def _all_keys(tp: typing.Any, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    hints = typing.get_type_hints(tp)
    for f in dataclasses.fields(tp):
        if f.metadata.get("internal"):
            continue
        name = f"{prefix}{f.name}"
        inner = hints[f.name]
        for arg in typing.get_args(inner) or (inner,):
            if dataclasses.is_dataclass(arg):
                keys |= _all_keys(arg, name + ".")
                break
            if typing.get_origin(arg) in (list, dict):
                (*_, item) = typing.get_args(arg)
                if dataclasses.is_dataclass(item):
                    keys |= _all_keys(item, name + ".")
                    break
        else:
            keys.add(name)
    return keys


def test_reference_config_documents_every_key() -> None:
    """etc/ocppd.toml mentions every key of the schema (set or commented out)."""
    text = REFERENCE.read_text()

    def documented(key: str) -> bool:
        leaf = re.escape(key.rsplit(".", 1)[-1])
        return bool(re.search(rf"^\s*#?\s*({leaf}\s*=|\[{re.escape(key)}\])", text, re.M))

    missing = [k for k in sorted(_all_keys(config.Config)) if not documented(k)]
    assert not missing, f"not documented in etc/ocppd.toml: {missing}"


def test_reference_config_is_valid(tmp_path: Path) -> None:
    text = REFERENCE.read_text()
    text = text.replace("/var/lib/ocppd/ocppd.db", str(tmp_path / "db.sqlite"))
    text = text.replace("/run/ocppd/control.sock", str(tmp_path / "ctl.sock"))
    cfg = config.load(write(tmp_path, text))
    assert cfg.hardware.driver == "sim" and len(cfg.connectors) == 1


# --- issue 15: a config check judges the config, and refuses what the daemon refuses -----------


def check_config(path: Path, **popen: typing.Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ocppd", "--check-config", "--config", str(path)],
        capture_output=True, text=True, timeout=30, **popen,
    )


def test_shipped_config_passes_the_check_whether_or_not_the_service_ran() -> None:
    """/var/lib/ocppd and /run/ocppd belong to the package (StateDirectory=, RuntimeDirectory=,
    tmpfiles.d): a stopped service or a fresh install must not make the config "invalid"."""
    proc = check_config(REFERENCE)
    assert proc.returncode == 0, proc.stderr
    assert "does not exist" not in proc.stdout + proc.stderr


def test_package_directories_need_not_exist_but_others_must(tmp_path: Path) -> None:
    text = minimal(tmp_path).replace(str(tmp_path / "ctl.sock"), "/run/ocppd/control.sock")
    text = text.replace(str(tmp_path / "db.sqlite"), "/var/lib/ocppd/sub/ocppd.db")
    assert config.load(write(tmp_path, text)).control.socket == Path("/run/ocppd/control.sock")
    text = text.replace("/var/lib/ocppd/sub/ocppd.db", "/nonexistent/ocppd.db")
    assert any("storage.path: directory /nonexistent does not exist" in p
               for p in problems(tmp_path, text))


def _as_nobody() -> None:
    os.setgid(65534)
    os.setgroups([])
    os.setuid(65534)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the check as another user")
def test_unreadable_config_explains_who_may_read_it(tmp_path: Path) -> None:
    python = "/usr/bin/python3"  # the venv's interpreter may sit where nobody cannot go
    if not os.access(python, os.X_OK):
        pytest.skip("no /usr/bin/python3")
    # nobody must reach the code but not the file: a copy of ocppd in a directory everyone may
    # enter (the checkout itself may sit in a directory only its owner can enter)
    base = Path(tempfile.mkdtemp(prefix="ocppd-nobody-"))
    try:
        base.chmod(0o755)
        # the ocppd under test: the checkout's, or the installed package's (Debian's suite)
        shutil.copytree(Path(ocppd.__file__).resolve().parent, base / "src" / "ocppd",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for d in (base / "src", *(p for p in (base / "src").rglob("*") if p.is_dir())):
            d.chmod(0o755)
        path = write(base, minimal(tmp_path))
        path.chmod(0o640)  # as installed: root:ocppd 0640
        proc = subprocess.run(
            [python, "-m", "ocppd", "--check-config", "--config", str(path)],
            capture_output=True, text=True, timeout=30, preexec_fn=_as_nobody, cwd="/",
            env={"PYTHONPATH": str(base / "src"), "PATH": "/usr/bin:/bin"},
        )
    finally:
        shutil.rmtree(base)
    assert proc.returncode == os.EX_CONFIG, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "Permission denied" in line and "sudo" in line, line


def meter_config(tmp_path: Path, model: str) -> str:
    return minimal(tmp_path).replace("[[connectors]]", '[[connectors]]\nmeter = "main"') + f"""
[buses.rs485]
type = "tcp"
host = "127.0.0.1"
[meters.main]
model = "{model}"
bus = "rs485"
"""


@pytest.mark.parametrize("model", ["sdm999", "/nonexistent/my-meter.toml"])
def test_check_config_refuses_a_meter_map_the_daemon_cannot_load(
    tmp_path: Path, model: str
) -> None:
    proc = check_config(write(tmp_path, meter_config(tmp_path, model)))
    assert proc.returncode == os.EX_CONFIG, proc.stdout + proc.stderr
    assert "meters.main.model" in proc.stderr and model in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_config_accepts_a_built_in_meter_map(tmp_path: Path) -> None:
    proc = check_config(write(tmp_path, meter_config(tmp_path, "sdm630")))
    assert proc.returncode == 0, proc.stderr


def test_check_config_refuses_an_unknown_ocpp_key(tmp_path: Path) -> None:
    proc = check_config(write(tmp_path, minimal(tmp_path, "[ocpp]\nHeartbeatIntervall = 30\n")))
    assert proc.returncode == os.EX_CONFIG, proc.stdout + proc.stderr
    assert "ocpp.HeartbeatIntervall" in proc.stderr


def test_check_config_refuses_an_invalid_ocpp_value(tmp_path: Path) -> None:
    proc = check_config(write(tmp_path, minimal(tmp_path, '[ocpp]\nHeartbeatInterval = "x"\n')))
    assert proc.returncode == os.EX_CONFIG, proc.stdout + proc.stderr
    assert "ocpp.HeartbeatInterval" in proc.stderr


def test_start_up_refusal_is_printed_once_and_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, meter_config(tmp_path, "sdm999"))
    proc = subprocess.run(
        [sys.executable, "-m", "ocppd", "--config", str(path)],
        capture_output=True, text=True, timeout=30, env=dict(os.environ, JOURNAL_STREAM=""),
    )
    assert proc.returncode == os.EX_CONFIG, proc.stderr
    out = proc.stdout + proc.stderr
    assert out.count("meters.main.model") == 1, out
    assert "meters.main.model" in out and "Traceback" not in out


# --- issue 15: the placeholder config says "not configured" instead of pretending -----------


def test_shipped_config_is_recognised_as_not_configured() -> None:
    cfg = config.load(REFERENCE)
    assert not cfg.configured
    proc = check_config(REFERENCE)
    assert "not configured" in proc.stdout + proc.stderr
    assert "charge_point.id" in proc.stdout + proc.stderr


def test_identity_without_central_system_is_an_error_not_unconfigured(tmp_path: Path) -> None:
    text = minimal(tmp_path).replace('url = "ws://127.0.0.1:9000/ocpp"', "")
    assert any("central_system.url: required key is missing" in p
               for p in problems(tmp_path, text))
    assert config.load(write(tmp_path, minimal(tmp_path))).configured
