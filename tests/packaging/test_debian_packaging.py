"""The Debian package and the systemd unit, checked without building anything.

The build itself, lintian and the installs into clean Debian chroots are `make deb-check`
(scripts/deb.sh); these are the fast checks that belong in every test run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import ocppd
from ocppd import config

ROOT = Path(__file__).resolve().parents[2]
DEBIAN = ROOT / "debian"
UNIT = ROOT / "systemd" / "ocppd.service"
FIRMWARE_UNIT = ROOT / "systemd" / "ocppd-firmware-install@.service"
INSTALL_FIRMWARE = ROOT / "scripts" / "install-firmware"

if not DEBIAN.is_dir():  # e.g. only tests/ copied somewhere
    pytest.skip("no debian/ next to the tests", allow_module_level=True)


def unit_entries(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, in order: systemd keys may repeat."""
    entries: list[tuple[str, str, str]] = []
    section = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        entries.append((section, key.strip(), value.strip()))
    return entries


def values(key: str, path: Path = UNIT) -> list[str]:
    return [v for _, k, v in unit_entries(path) if k == key]


def one(key: str) -> str:
    found = values(key)
    assert len(found) == 1, f"{key} set {len(found)} times in {UNIT.name}"
    return found[0]


def runnable_copy(src: Path, dest: Path) -> Path:
    """The unit with its programs replaced by one that exists here (verify checks them)."""
    true = shutil.which("true") or "/bin/true"
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={true}", src.read_text(encoding="utf-8"),
                  flags=re.M)
    dest.write_text(text, encoding="utf-8")
    return dest


def systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60, check=False)


# --- version -----------------------------------------------------------------------------------


def test_changelog_version_matches_package_version() -> None:
    first = (DEBIAN / "changelog").read_text(encoding="utf-8").splitlines()[0]
    m = re.match(r"^ocppd \(([^)]+)\) \S+; urgency=\w+$", first)
    assert m, f"unexpected first changelog line: {first!r}"
    deb_version = m.group(1)
    # Native package: the same version, or the same plus "+N" for a packaging-only change.
    assert deb_version == ocppd.__version__ or deb_version.startswith(ocppd.__version__ + "+"), (
        f"debian/changelog has {deb_version}, ocppd/__init__.py has {ocppd.__version__}"
    )


# --- systemd unit ------------------------------------------------------------------------------


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = runnable_copy(UNIT, tmp_path / "ocppd.service")
    result = systemd_analyze("verify", "--man=no", str(unit))
    complaints = [line for line in result.stderr.splitlines() if unit.name in line]
    assert result.returncode == 0, result.stderr
    # Unknown keys or misplaced ones are only warnings with rc=0: they must not be there either.
    assert complaints == []


def test_firmware_template_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = runnable_copy(FIRMWARE_UNIT, tmp_path / "ocppd-firmware-install@fw.deb.service")
    result = systemd_analyze("verify", "--man=no", str(unit))
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if "ocppd-firmware" in line] == []


def test_unit_exposure_is_in_the_ok_band(tmp_path: Path) -> None:
    unit = runnable_copy(UNIT, tmp_path / "ocppd.service")
    result = systemd_analyze("security", "--offline=yes", "--no-pager", str(unit))
    if result.returncode != 0 and "offline" in result.stderr:
        pytest.skip("systemd-analyze security has no --offline here")
    m = re.search(r"Overall exposure level for ocppd\.service: (\d+\.\d+)", result.stdout)
    assert m, result.stdout[-500:] + result.stderr
    assert float(m.group(1)) < 4.0


def test_unit_runs_the_daemon_as_a_notify_service_with_a_watchdog() -> None:
    assert one("Type") == "notify"
    assert one("ExecStart") == "/usr/bin/ocppd --config /etc/ocppd.toml"
    assert re.fullmatch(r"\d+s", one("WatchdogSec"))
    assert one("Restart") == "on-failure"
    assert "HUP" in one("ExecReload")


def test_unit_restart_codes_match_the_daemon() -> None:
    soft_reset = config.SystemConfig().soft_reset_exit_code
    assert str(soft_reset) in one("RestartForceExitStatus").split()
    assert str(os.EX_CONFIG) in one("RestartPreventExitStatus").split()


def test_unit_runs_unprivileged_with_its_directories() -> None:
    assert one("User") == "ocppd"
    assert one("StateDirectory") == "ocppd"
    assert one("RuntimeDirectory") == "ocppd"
    assert one("ConfigurationDirectory") == "ocppd"
    assert set(one("SupplementaryGroups").split()) == {"gpio", "spi", "dialout"}
    assert one("UMask") in ("0007", "0027")
    # The daemon's defaults live where the unit puts its directories.
    assert config.StorageConfig().path.parent == Path("/var/lib/ocppd")
    assert config.ControlConfig().socket.parent == Path("/run/ocppd")


def test_unit_sandbox_directives() -> None:
    expected = {
        "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
        "NoNewPrivileges": "yes", "CapabilityBoundingSet": "", "DevicePolicy": "closed",
        "SystemCallArchitectures": "native", "ProtectKernelModules": "yes",
        "ProtectKernelTunables": "yes", "ProtectControlGroups": "yes", "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes", "RestrictRealtime": "yes", "RestrictNamespaces": "yes",
        "RestrictSUIDSGID": "yes", "ProtectClock": "yes", "ProtectHostname": "yes",
    }
    assert {key: one(key) for key in expected} == expected
    assert one("RestrictAddressFamilies").split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    assert "@system-service" in values("SystemCallFilter")


def test_unit_allows_exactly_the_charger_devices() -> None:
    allowed = {v.split()[0]: v.split()[1] for v in values("DeviceAllow")}
    for device in ("char-gpiochip", "/dev/gpiomem", "char-spi", "char-ttyS", "char-ttyAMA",
                   "char-ttyUSB", "char-ttyACM"):
        assert allowed.get(device) == "rw", device
    assert all(d.startswith(("char-", "/dev/")) and "block" not in d for d in allowed)
    # Hardware PWM (control pilot) is written under /sys/devices/platform.
    assert "-/sys/devices/platform" in " ".join(values("ReadWritePaths")).split()


def test_hard_reset_goes_through_polkit_not_sudo() -> None:
    # sudo is setuid, and NoNewPrivileges=yes disables setuid: it could never work.
    reboot = config.SystemConfig().reboot_command
    assert "sudo" not in " ".join(reboot)
    assert reboot == ["/usr/bin/systemctl", "reboot"]
    rules = (ROOT / "systemd" / "50-ocppd.rules").read_text(encoding="utf-8")
    assert 'subject.user !== "ocppd"' in rules
    assert '"org.freedesktop.login1.reboot"' in rules
    # Only starting the firmware template may be allowed among unit operations.
    assert 'action.lookup("verb") === "start"' in rules
    assert "^ocppd-firmware-install@" in rules


def test_sysusers_creates_the_user_in_every_unit_group() -> None:
    lines = [line.split() for line in (ROOT / "systemd" / "ocppd.sysusers")
             .read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    assert ["u", "ocppd", "-"] == lines[0][:3]
    member_of = {fields[2] for fields in lines if fields[0] == "m" and fields[1] == "ocppd"}
    assert set(one("SupplementaryGroups").split()) <= member_of


# --- debian/ -----------------------------------------------------------------------------------


def control_field(package: str, field: str) -> str:
    stanzas = (DEBIAN / "control").read_text(encoding="utf-8").split("\n\n")
    stanza = next(s for s in stanzas if re.search(rf"^Package: {package}$", s, re.M))
    m = re.search(rf"^{field}:(.*(?:\n[ \t].*)*)", stanza, re.M)
    assert m, f"no {field} in {package}"
    return " ".join(m.group(1).split())


def test_depends_are_versioned_debian_packages() -> None:
    relation = re.compile(r"^[a-z0-9][a-z0-9+.-]+ \((>=|>>|=) [0-9][^)]*\)$")
    names = set()
    for item in filter(None, (i.strip() for i in control_field("ocppd", "Depends").split(","))):
        if item.startswith("${"):
            continue
        for alternative in item.split("|"):
            assert relation.match(alternative.strip()), alternative
            names.add(alternative.split()[0])
    assert {"python3-aiohttp", "python3-gpiozero", "python3-serial", "python3-pymodbus",
            "python3-systemd", "python3-fastjsonschema", "python3-serial-asyncio"} <= names
    # Debian does not ship the test-side OCPP library, so the daemon must not need it.
    assert "python3-ocpp" not in names
    assert control_field("ocppd", "Architecture") == "all"


def test_config_is_installed_as_a_conffile_under_etc() -> None:
    install = (DEBIAN / "ocppd.install").read_text(encoding="utf-8").split("\n")
    # Everything under /etc is a conffile (dh_installdeb): local edits survive upgrades.
    assert "etc/ocppd.toml etc/" in install
    assert "scripts/install-firmware usr/lib/ocppd/" in install
    assert config.SystemConfig().firmware_install_command == ["/usr/lib/ocppd/install-firmware"]


@pytest.mark.parametrize(("name", "section"), [("ocppd", 8), ("ocppctl", 8), ("ocppd.toml", 5)])
def test_man_page_exists(name: str, section: int) -> None:
    page = DEBIAN / "man" / f"{name}.{section}"
    assert page.read_text(encoding="utf-8").startswith(f".TH {name.upper()} {section} ")
    listed = (DEBIAN / "ocppd.manpages").read_text(encoding="utf-8").split()
    assert f"debian/man/{name}.{section}" in listed


def test_ocppd_man_page_documents_options_and_exit_codes() -> None:
    text = (DEBIAN / "man" / "ocppd.8").read_text(encoding="utf-8").replace("\\-", "-")
    for word in ("--config", "--check-config", "--version", "SIGHUP", "SIGTERM",
                 "/etc/ocppd.toml", "/var/lib/ocppd/ocppd.db", "/run/ocppd/control.sock"):
        assert word in text, word
    for code in ("0", "69", "75", "78"):
        assert f"\n.B {code}\n" in text, code


def test_ocppctl_man_page_documents_every_verb() -> None:
    from ocppd import ctl

    text = (DEBIAN / "man" / "ocppctl.8").read_text(encoding="utf-8")
    parser = ctl.build_parser()
    sub = next(a for a in parser._actions if a.dest == "verb")  # argparse has no public getter
    verbs = set(sub.choices)  # type: ignore[arg-type]
    assert {"status", "swipe", "plug", "unplug", "ev", "tx", "config"} <= verbs
    for verb in verbs:
        assert re.search(rf"^\.B[IR]? \"?{verb}\b", text, re.M), verb
    for code in ("0", "1", "2"):
        assert f"\n.B {code}\n" in text, code


def test_man_pages_render_without_warnings() -> None:
    groff = shutil.which("groff")
    if groff is None:
        pytest.skip("groff is not installed")
    for page in sorted((DEBIAN / "man").iterdir()):
        result = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-z", str(page)],
                                capture_output=True, text=True, timeout=30, check=False)
        assert (result.returncode, result.stderr) == (0, ""), page.name


def test_shell_scripts_parse() -> None:
    scripts = [ROOT / "scripts" / "deb.sh", INSTALL_FIRMWARE, ROOT / "tests" / "packaging" /
               "chroot-check.sh", DEBIAN / "ocppd.postinst", DEBIAN / "ocppd.postrm"]
    for script in scripts:
        shell = "bash" if script.name == "deb.sh" else "sh"
        subprocess.run([shell, "-n", str(script)], check=True, timeout=30)
        assert os.access(script, os.X_OK), f"{script.name} is not executable"


# --- install-firmware --------------------------------------------------------------------------


def run_install_firmware(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(INSTALL_FIRMWARE), *args], capture_output=True, text=True,
                          timeout=30, check=False)


def test_install_firmware_without_a_file_is_a_usage_error(tmp_path: Path) -> None:
    assert run_install_firmware().returncode == 2
    assert run_install_firmware(str(tmp_path / "missing.deb")).returncode == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="the direct install path is for root")
def test_install_firmware_runs_a_script_as_root(tmp_path: Path) -> None:
    marker = tmp_path / "installed"
    script = tmp_path / "update.sh"
    script.write_text(f"#!/bin/sh\necho done > {marker}\n", encoding="utf-8")
    result = run_install_firmware(str(script))
    assert result.returncode == 0, result.stderr
    assert marker.read_text(encoding="utf-8") == "done\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="the direct install path is for root")
def test_install_firmware_refuses_other_files_and_reports_failure(tmp_path: Path) -> None:
    data = tmp_path / "firmware.bin"
    data.write_bytes(b"\x7fELF not a script")
    assert run_install_firmware(str(data)).returncode == 2
    failing = tmp_path / "fail.sh"
    failing.write_text("#!/bin/sh\nexit 3\n", encoding="utf-8")
    assert run_install_firmware(str(failing)).returncode == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="the privileged path is for root")
def test_install_firmware_privileged_accepts_only_the_firmware_dir(tmp_path: Path) -> None:
    # What ocppd-firmware-install@.service runs: a file elsewhere must never be executed.
    marker = tmp_path / "ran"
    script = tmp_path / "evil.sh"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n", encoding="utf-8")
    result = run_install_firmware("--privileged", str(script))
    assert result.returncode == 2
    assert "outside /var/lib/ocppd/firmware" in result.stderr
    assert not marker.exists()


POLKIT_HARNESS = """
const fs = require("fs");
let rule = null;
const polkit = {Result: {YES: "yes", NO: "no", NOT_HANDLED: "not handled"},
                addRule: (f) => { rule = f; }};
eval(fs.readFileSync(process.argv[1], "utf8"));
const cases = JSON.parse(process.argv[2]);
console.log(JSON.stringify(cases.map(([user, id, details]) =>
    rule({id: id, lookup: (k) => details[k]}, {user: user}))));
"""


def test_polkit_rule_allows_only_reboot_and_the_firmware_unit_to_ocppd() -> None:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("no JavaScript interpreter to evaluate the polkit rule")
    units = "org.freedesktop.systemd1.manage-units"
    cases = [
        ("ocppd", "org.freedesktop.login1.reboot", {}),
        ("ocppd", "org.freedesktop.login1.reboot-multiple-sessions", {}),
        ("ocppd", units, {"verb": "start", "unit": "ocppd-firmware-install@fw-1.2.deb.service"}),
        ("nobody", "org.freedesktop.login1.reboot", {}),
        ("ocppd", "org.freedesktop.login1.power-off", {}),
        ("ocppd", units, {"verb": "stop", "unit": "ocppd-firmware-install@fw.deb.service"}),
        ("ocppd", units, {"verb": "start", "unit": "ssh.service"}),
        ("ocppd", units, {"verb": "start", "unit": "ocppd-firmware-install@a/b.service"}),
    ]
    result = subprocess.run(
        [node, "-e", POLKIT_HARNESS, str(ROOT / "systemd" / "50-ocppd.rules"), json.dumps(cases)],
        capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(result.stdout) == ["yes"] * 3 + ["not handled"] * 5
