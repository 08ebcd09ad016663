"""Board drivers as plugins: selection by name, the driver's own table, --check-config, and a
driver shipped as its own package (tests/driver_example/lineevse) found through its entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from harness import sim_config_text

from ocppd import config
from ocppd.errors import ConfigError
from ocppd.hw import drivers

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "tests" / "driver_example" / "lineevse"


def install_example(site: Path, *, name: str = "lineevse") -> None:
    """What pip leaves behind for the example package: its metadata and its entry point."""
    info = site / "lineevse_ocppd-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lineevse-ocppd\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[ocppd.drivers]\n{name} = lineevse_ocppd:DRIVER\n")


def config_text(tmp_path: Path, hardware: str) -> str:
    text = sim_config_text(tmp_path, "ws://127.0.0.1:9/ocpp")
    return text.replace('[hardware]\ndriver = "sim"\n', hardware)


def check_config(tmp_path: Path, text: str, site: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "ocppd.toml"
    path.write_text(text)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(EXAMPLE), str(ROOT)]))
    return subprocess.run([sys.executable, "-m", "ocppd", "--config", str(path),
                           "--check-config"], capture_output=True, text=True, env=env,
                          timeout=60)


def problems(tmp_path: Path, hardware: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        config.from_dict(__import__("tomllib").loads(config_text(tmp_path, hardware)))
    return [line.removeprefix("<config>: ") for line in err.value.problems]


def test_installed_driver_package_is_selected_by_name_and_its_table_checked(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    install_example(site)
    good = '[hardware]\ndriver = "lineevse"\n[hardware.lineevse]\nport = "/dev/ttyAMA0"\n'
    done = check_config(tmp_path, config_text(tmp_path, good), site)
    assert done.returncode == 0, done.stderr
    bad = ('[hardware]\ndriver = "lineevse"\n[hardware.lineevse]\nport = "/dev/ttyAMA0"\n'
           'baudrate = 1234\nspeed = 3\n')
    done = check_config(tmp_path, config_text(tmp_path, bad), site)
    assert done.returncode == 78
    lines = sorted(done.stderr.strip().splitlines())
    where = tmp_path / "ocppd.toml"
    assert lines == [
        f"{where}: hardware.lineevse.baudrate: must be one of 9600, 19200, 115200, got 1234",
        f"{where}: hardware.lineevse.speed: unknown key",
    ]
    bad_port = '[hardware]\ndriver = "lineevse"\n[hardware.lineevse]\nport = "COM3"\n'
    done = check_config(tmp_path, config_text(tmp_path, bad_port), site)
    assert done.returncode == 78
    assert done.stderr.strip() == (f"{where}: hardware.lineevse.port: not a device path: "
                                   f"'COM3'")


def test_unknown_driver_is_one_line_naming_the_installed_ones(tmp_path: Path) -> None:
    assert problems(tmp_path, '[hardware]\ndriver = "nosuch"\n') == [
        "hardware.driver: unknown driver 'nosuch'; installed: "
        + ", ".join(sorted(drivers.available()))]


def test_evse_wb_table_gets_one_line_per_key(tmp_path: Path) -> None:
    hw = ('[hardware]\ndriver = "evse_wb"\n[hardware.evse_wb]\npoll_interval_s = 0.0\n'
          'unit_id = 3\n')
    assert sorted(problems(tmp_path, hw)) == [
        "hardware.evse_wb.bus: required key is missing",
        "hardware.evse_wb.poll_interval_s: must be at least 0.05, got 0.0",
        "hardware.evse_wb.unit_id: unknown key (did you mean 'unit_ids'?)",
    ]
    hw = ('[buses.rs485]\ntype = "tcp"\nhost = "10.0.0.9"\n[meters.m1]\nmodel = "sdm630"\n'
          'bus = "rs485"\n[hardware]\ndriver = "evse_wb"\n[hardware.evse_wb]\nbus = "rs485"\n'
          'unit_ids = [1, 1]\n')
    assert sorted(problems(tmp_path, hw)) == [
        "hardware.evse_wb.bus: the boards speak Modbus RTU: use a type = 'rtu' bus",
        "hardware.evse_wb.unit_ids: each board needs its own unit id",
        "hardware.evse_wb.unit_ids: one unit id per connector: 1 connector(s), 2 id(s)",
        "meters.m1.unit_id: unit 1 is an EVSE board on bus rs485",
    ]


def test_a_driver_without_settings_refuses_a_table(tmp_path: Path) -> None:
    assert problems(tmp_path, '[hardware]\ndriver = "sim"\n[hardware.sim]\nx = 1\n') == [
        "hardware.sim: the sim driver takes no settings table"]


def test_a_plugin_cannot_take_a_builtin_name(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    install_example(tmp_path, name="sim")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(EXAMPLE))
    assert drivers.available()["sim"] == "ocppd.hw.sim:DRIVER"
    assert drivers.find("sim").summary.startswith("the built-in simulator")


def test_example_driver_package_passes_the_conformance_kit() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(EXAMPLE), str(ROOT)]))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(EXAMPLE / "tests")], capture_output=True, text=True, env=env,
                          cwd=EXAMPLE, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "7 passed" in done.stdout


def test_readme_shows_the_example_driver_as_it_is() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "## Write your own driver" in readme
    for rel in ("pyproject.toml", "lineevse_ocppd/__init__.py"):
        body = (EXAMPLE / rel).read_text().rstrip()
        assert f"`tests/driver_example/lineevse/{rel}`:\n\n```" in readme
        assert body in readme, f"README copy of {EXAMPLE / rel} is out of date"


def test_driver_table_problems_come_with_the_others(tmp_path: Path) -> None:
    hw = '[hardware]\ndriver = "evse_wb"\nnominal_voltage_v = 9\n[hardware.evse_wb]\nbus = 3\n'
    assert sorted(problems(tmp_path, hw)) == [
        "hardware.evse_wb.bus: must be a string, got 3",
        "hardware.nominal_voltage_v: must be at least 100, got 9.0",
    ]
