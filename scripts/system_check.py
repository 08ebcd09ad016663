"""The installed package under a real systemd: boot clean Debian containers with systemd as
PID 1 (systemd-nspawn --boot), `apt install` the built .deb, and check what an installer sees.

    sudo .venv/bin/python scripts/system_check.py [--suites bookworm trixie] [--arm64]
                                                  [--deb PATH]

Run by `make system-check` (never by `make test`). Needs root, systemd-container and
debootstrap. The containers share the host's network, so the test Central System
(tests/csms.py) listens on the host's loopback and the daemon inside connects to it. Booted
base roots are cached as tarballs in $OCPPD_SYSTEM_CACHE (default /var/cache/ocppd-system-check).
Prints one line per check and the time each suite took; exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

CACHE = Path(os.environ.get("OCPPD_SYSTEM_CACHE", "/var/cache/ocppd-system-check"))
MIRROR = os.environ.get("OCPPD_MIRROR", "http://deb.debian.org/debian")
CP_ID = "CP-SYSTEM-CHECK"
PATH_ENV = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"


def say(text: str) -> None:
    print(f"==> {text}", file=sys.stderr, flush=True)


def run(*cmd: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}")
    return proc


def base_tarball(suite: str) -> Path:
    """A minbase root with systemd as init, bootstrapped once."""
    tarball = CACHE / f"{suite}-boot.tar.gz"
    if tarball.is_file():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"bootstrap-{suite}-", dir=CACHE))
    tmp.chmod(0o755)  # the root directory of the system: mkdtemp's 0700 locks out every user
    t0 = time.monotonic()
    say(f"debootstrap {suite} with systemd (cached afterwards in {tarball})")
    try:
        run("debootstrap", "--variant=minbase", "--include=systemd,systemd-sysv,dbus", suite,
            str(tmp), MIRROR, timeout=1800)
        run("tar", "-C", str(tmp), "-czf", f"{tarball}.part", ".", timeout=600)
        os.replace(f"{tarball}.part", tarball)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"bootstrapped {suite} in {time.monotonic() - t0:.0f} s")
    return tarball


class Container:
    """A booted container; ``sh`` runs a command inside through nsenter."""

    def __init__(self, suite: str, root: Path) -> None:
        self.suite, self.root = suite, root
        self.proc: subprocess.Popen[bytes] | None = None
        self.init_pid = 0

    def boot(self) -> None:
        nspawn_dir = Path("/run/systemd/nspawn")
        nspawn_dir.mkdir(parents=True, exist_ok=True)
        # Without systemd on the host, nspawn cannot clean up its directory unless it is a tmpfs.
        if run("mountpoint", "-q", str(nspawn_dir), check=False).returncode != 0:
            run("mount", "-t", "tmpfs", "tmpfs", str(nspawn_dir))
        log = open(self.root.parent / f"nspawn-{self.suite}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "-D", str(self.root), "--boot", "--register=no", "--keep-unit",
             "--console=pipe", f"--machine=ocppd-{self.suite}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited {self.proc.returncode}")
            kids = run("pgrep", "-P", str(self.proc.pid), check=False).stdout.split()
            if kids:
                self.init_pid = int(kids[0])
                state = self.sh("systemctl is-system-running", check=False).stdout.strip()
                if state in ("running", "degraded"):
                    return
            time.sleep(0.5)  # polling another machine's boot: there is no event to wait on
        raise RuntimeError("the container did not finish booting in 90 s")

    def sh(self, script: str, *, check: bool = True, timeout: float = 600
           ) -> subprocess.CompletedProcess[str]:
        return run("nsenter", "-t", str(self.init_pid), "-a", "env", "-i", PATH_ENV,
                   "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive", "sh", "-c", script,
                   check=check, timeout=timeout)

    def show(self, *props: str) -> dict[str, str]:
        out = self.sh(f"systemctl show -p {','.join(props)} ocppd").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_unit(self, pred: Callable[[dict[str, str]], bool], *props: str,
                  timeout_s: float = 60) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.show(*props)
            if pred(state) or time.monotonic() > deadline:
                return state
            time.sleep(0.5)

    def poweroff(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # SIGRTMIN+4 asks systemd (PID 1 inside) to power off, without D-Bus.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.init_pid, signal.SIGRTMIN + 4)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                self.proc.wait(10)


class Checks:
    def __init__(self, suite: str) -> None:
        self.suite = suite
        self.failed: list[str] = []

    async def check(self, name: str, body: Callable[[], Awaitable[str | None]]) -> None:
        t0 = time.monotonic()
        try:
            detail = await body()
        except Exception as exc:  # noqa: BLE001 - a failed check is reported, the rest go on
            self.failed.append(name)
            print(f"  [{self.suite}] FAIL {name}: {exc}".rstrip(), flush=True)
            return
        extra = f" ({detail})" if detail else ""
        print(f"  [{self.suite}] ok   {name}{extra} [{time.monotonic() - t0:.1f} s]", flush=True)


def config_text(url: str, driver: str = "sim", extra: str = "") -> str:
    gpio = """
meter = "main"
[connectors.contactor]
pins = [17]
[connectors.pilot]
pwm = "sysfs"
[buses.rs485]
type = "tcp"
host = "127.0.0.1"
[meters.main]
model = "sdm630"
bus = "rs485"
""" if driver == "gpio" else ""
    return f"""
[charge_point]
id = "{CP_ID}"
[central_system]
url = "{url}"
reconnect_min_s = 0.5
reconnect_max_s = 2.0
[hardware]
driver = "{driver}"
[[connectors]]
max_current_a = 16.0
{gpio}
[sim]
time_factor = 20.0
[storage]
path = "/var/lib/ocppd/ocppd.db"
[control]
socket = "/run/ocppd/control.sock"
[ocpp]
MeterValueSampleInterval = 0
{extra}"""

# What an installer opts into to take firmware from a Central System that cannot sign it, served
# over plain HTTP by the check itself on the host's loopback (etc/ocppd.toml, [security]).
UNSIGNED_FIRMWARE = """
[security]
allow_unsigned_firmware = true
allow_insecure_firmware_download = true
"""


def upgrade_deb(deb: Path, out: Path, suffix: str = "+up1", *, new_firmware: bool = False
                ) -> Path:
    """The same package with a higher version: what `apt upgrade` would install. With
    ``new_firmware`` ocppd itself reports the new version too (firmwareVersion defaults to it),
    as a firmware image built from a newer release would."""
    with tempfile.TemporaryDirectory() as tree:
        run("dpkg-deb", "-R", str(deb), tree)
        control = Path(tree, "DEBIAN", "control")
        text = control.read_text()
        version = next(line.split(": ", 1)[1] for line in text.splitlines()
                       if line.startswith("Version: "))
        control.write_text(text.replace(f"Version: {version}", f"Version: {version}{suffix}"))
        if new_firmware:
            init = next(Path(tree).glob("usr/lib/python3*/dist-packages/ocppd/__init__.py"))
            code = init.read_text()
            old = next(ln for ln in code.splitlines() if ln.startswith("__version__ = "))
            init.write_text(code.replace(old, old[:-1] + f'{suffix}"'))
            # keep DEBIAN/md5sums true to the changed file (debsums would flag it otherwise)
            md5 = Path(tree, "DEBIAN", "md5sums")
            rel = str(init.relative_to(tree))
            digest = run("md5sum", str(init)).stdout.split()[0]
            md5.write_text("".join(f"{digest}  {rel}\n" if ln.endswith(f"  {rel}") else ln + "\n"
                                   for ln in md5.read_text().splitlines()))
        run("dpkg-deb", "--root-owner-group", "-b", tree, str(out))
    return out


@contextlib.asynccontextmanager
async def file_server(directory: Path) -> AsyncIterator[str]:
    """Plain HTTP on the host's loopback serving ``directory``; yields the base URL."""
    from aiohttp import web

    app = web.Application()
    app.router.add_static("/", directory)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def check_suite(suite: str, deb: Path) -> list[str]:  # noqa: C901 - one list of checks
    from csms import CentralSystem

    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f"system-{suite}-", dir=CACHE))
    root = work / "root"
    root.mkdir()
    run("tar", "-C", str(root), "-xzf", str(base_tarball(suite)), timeout=600)
    root.chmod(0o755)  # tarballs cached before this line was added carry mode 0700 for "/"
    shutil.copy(Path("/etc/resolv.conf"), root / "etc/resolv.conf")
    pkgs = root / "var/tmp/ocppd"  # /tmp is a fresh tmpfs once the container boots
    pkgs.mkdir(parents=True)
    shutil.copy(deb, pkgs / "ocppd.deb")
    upgrade_deb(deb, pkgs / "ocppd-upgrade.deb")
    served = work / "served"
    served.mkdir()
    firmware_deb = upgrade_deb(deb, served / "ocppd-firmware.deb", "+up2", new_firmware=True)
    box = Container(suite, root)
    c = Checks(suite)

    # The Central System runs on this event loop: commands inside the container that wait for
    # it (ocppctl swipe, a restart that reconnects) must not block the loop.
    async def sh(script: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(box.sh, script, check=check)

    async def unit(pred: Callable[[dict[str, str]], bool], *props: str,
                   timeout_s: float = 60) -> dict[str, str]:
        return await asyncio.to_thread(box.wait_unit, pred, *props, timeout_s=timeout_s)

    async def show(*props: str) -> dict[str, str]:
        return await asyncio.to_thread(box.show, *props)

    try:
        say(f"[{suite}] booting")
        await asyncio.to_thread(box.boot)
        async with CentralSystem() as cs:

            async def install() -> str:
                out = (await sh("apt-get update -q >/dev/null && apt-get install -y -q "
                                "--no-install-recommends /var/tmp/ocppd/ocppd.deb")).stdout
                return f"{out.count('Setting up')} packages"

            await c.check("apt install ./ocppd.deb", install)

            async def not_configured() -> str:
                st = await unit(lambda s: s["ActiveState"] == "active",
                                   "ActiveState", "StatusText", "NRestarts")
                assert st["ActiveState"] == "active", st
                assert st["StatusText"].startswith("not configured"), st
                assert st["NRestarts"] == "0", st
                return st["StatusText"][:60] + "..."

            await c.check("fresh install: active, STATUS=not configured, no restarts",
                          not_configured)

            async def check_config_stopped() -> str:
                await sh("systemctl stop ocppd")
                assert (await sh("test -d /run/ocppd", check=False)).returncode != 0
                out = (await sh("ocppd --check-config")).stdout
                assert "not configured" in out, out
                denied = await sh("runuser -u nobody -- ocppd --check-config 2>&1", check=False)
                assert denied.returncode == 78 and "sudo" in denied.stdout, denied.stdout
                return "exit 0 without /run/ocppd; hint for a non-member"

            await c.check("ocppd --check-config with the service stopped", check_config_stopped)

            async def gpio_without_pin_library() -> str:
                await sh(f"cat >/etc/ocppd.toml <<'EOF'\n{config_text(cs.url, 'gpio')}\nEOF")
                await sh("systemctl reset-failed ocppd; systemctl start ocppd", check=False)
                st = await unit(lambda s: s["ActiveState"] == "failed",
                                   "ActiveState", "ExecMainStatus", "NRestarts", timeout_s=30)
                assert st["ActiveState"] == "failed" and st["ExecMainStatus"] == "69", st
                # RestartSec=5s: had it been restarted, NRestarts would show it by now
                await asyncio.sleep(6)
                st = await show("ActiveState", "NRestarts")
                assert st["NRestarts"] == "0" and st["ActiveState"] == "failed", st
                journal = await sh("journalctl -o cat --no-pager _SYSTEMD_INVOCATION_ID="
                                   "$(systemctl show -p InvocationID --value ocppd)")
                lines = journal.stdout.strip().splitlines()
                errors = [ln for ln in lines if "GPIO17" in ln]
                assert len(errors) == 1 and "Traceback" not in "\n".join(lines), lines
                return errors[0][:90]

            await c.check("driver = gpio without a pin library: exit 69, no restart loop",
                          gpio_without_pin_library)

            async def configured() -> str:
                await sh(f"cat >/etc/ocppd.toml <<'EOF'\n{config_text(cs.url)}\nEOF")
                await sh("systemctl reset-failed ocppd; systemctl restart ocppd")
                await cs.wait_for("BootNotification", timeout=60)
                await cs.wait_for("StatusNotification", lambda p: p["connectorId"] == 1,
                                  timeout=30)
                st = await unit(lambda s: s["StatusText"].startswith("connected to"),
                                   "ActiveState", "SubState", "StatusText", "Type")
                # Type=notify: "active (running)" is only reached on READY=1
                assert st["ActiveState"] == "active" and st["SubState"] == "running", st
                assert st["StatusText"].startswith("connected to"), st
                return st["StatusText"]

            await c.check("configured: READY=1, STATUS= connected, BootNotification", configured)

            async def ocppctl_groups() -> str:
                await sh("id ctluser >/dev/null 2>&1 || useradd -M -G ocppd ctluser")
                ok = await sh("runuser -u ctluser -- ocppctl status", check=False)
                assert ok.returncode == 0, ok.stdout + ok.stderr
                refused = await sh("runuser -u nobody -- ocppctl status", check=False)
                assert refused.returncode != 0, refused.stdout
                return "group ocppd: ok; nobody: refused"

            await c.check("ocppctl for group ocppd only", ocppctl_groups)

            async def session() -> str:
                await sh("ocppctl plug 1 && ocppctl swipe CARD-SYSTEM-CHECK")
                start = (await cs.wait_for("StartTransaction", timeout=30))[0]
                await cs.wait_for("StatusNotification", lambda p: p["status"] == "Charging",
                                  timeout=30)
                return f"idTag {start['idTag']}, Charging"

            await c.check("a session charges (simulator)", session)

            async def upgrade_during_session() -> str:
                pid = (await show("MainPID"))["MainPID"]
                await sh("apt-get install -y -q --no-install-recommends "
                       "-o Dpkg::Options::=--force-confold /var/tmp/ocppd/ocppd-upgrade.deb")
                st = await unit(lambda s: s["MainPID"] not in ("0", pid) and
                                   s["StatusText"].startswith("connected"),
                                   "MainPID", "StatusText", "ActiveState")
                assert st["MainPID"] not in ("0", pid), st
                stops = cs.received("StopTransaction")
                assert not any(s.get("reason") == "Reboot" for s in stops), stops
                log = (await sh("journalctl -u ocppd -o cat --no-pager")).stdout
                assert "charging sessions stay open" in log, log[-800:]
                # The simulated EV lives in the daemon's process and is gone after the restart,
                # so the new daemon stops the session (PowerLoss) instead of resuming it; with a
                # real EV still plugged in it resumes (tests/integration/test_upgrade.py).
                after = await cs.wait_for("StopTransaction", timeout=30)
                return (f"old daemon left it open; new one stopped it as {after[0]['reason']} "
                        "(the simulated EV does not survive a restart)")

            await c.check("apt upgrade during a session: restart keeps the transaction open",
                          upgrade_during_session)

            async def soft_reset() -> str:
                from ocpp.v16 import call

                before = await show("NRestarts", "MainPID")
                conf = await cs.call(CP_ID, call.Reset(type="Soft"))
                assert conf.status == "Accepted", conf
                st = await unit(lambda s: s["NRestarts"] != before["NRestarts"] and
                                s["ActiveState"] == "active" and
                                s["StatusText"].startswith("connected"),
                                "NRestarts", "ActiveState", "StatusText", "MainPID")
                assert st["NRestarts"] != before["NRestarts"], st
                assert st["MainPID"] != before["MainPID"], st
                return f"exit 75, restarted by the unit (NRestarts {st['NRestarts']})"

            await c.check("Reset Soft: exit 75 and systemd restarts the daemon", soft_reset)

            async def hard_reset_allowed() -> str:
                pid = (await show("MainPID"))["MainPID"]
                ok = await sh(f"pkcheck --action-id org.freedesktop.login1.reboot "
                              f"--process {pid}", check=False)
                assert ok.returncode == 0, ok.stdout + ok.stderr
                # setpriv execs sleep as nobody, so $! is a process of user nobody
                other = await sh("setpriv --reuid=nobody --regid=nogroup --clear-groups "
                                 "sleep 30 >/dev/null 2>&1 & q=$!; sleep 0.5; "
                                 "[ \"$(stat -c %U /proc/$q)\" = nobody ] || exit 99; "
                                 "pkcheck --action-id org.freedesktop.login1.reboot "
                                 "--process $q; r=$?; kill $q; exit $r", check=False)
                assert other.returncode not in (0, 99), other.stdout + other.stderr
                return "polkit allows the daemon to reboot, not user nobody"

            await c.check("Reset Hard: polkit lets the daemon (only) reboot", hard_reset_allowed)

            async def watchdog() -> str:
                before = await show("NRestarts", "MainPID")
                await sh(f"kill -STOP {before['MainPID']}")
                st = await unit(lambda s: s["NRestarts"] != before["NRestarts"] and
                                   s["ActiveState"] == "active", "NRestarts", "ActiveState",
                                   "MainPID", timeout_s=150)
                assert st["NRestarts"] != before["NRestarts"], st
                log = (await sh("journalctl -u ocppd -o cat --no-pager")).stdout
                assert "Watchdog timeout" in log, log[-600:]
                return f"restarted after SIGSTOP, NRestarts {st['NRestarts']}"

            await c.check("the watchdog restarts a hung daemon", watchdog)

            async def remove_purge() -> str:
                await sh("apt-get remove -y -q ocppd")
                assert (await show("ActiveState"))["ActiveState"] == "inactive"
                assert (await sh("test -f /var/lib/ocppd/ocppd.db", check=False)).returncode == 0
                await sh("apt-get purge -y -q ocppd")
                assert (await sh("test -e /var/lib/ocppd", check=False)).returncode != 0
                assert (await sh("test -e /etc/ocppd.toml", check=False)).returncode != 0
                return "remove keeps the database, purge deletes it"

            async def firmware_through_its_unit() -> str:
                from csms import now_iso
                from ocpp.v16 import call

                # The installer's opt-in for unsigned images over HTTP; the image is a newer
                # ocppd package, so installing it restarts ocppd from inside the firmware unit.
                await sh(f"cat >/etc/ocppd.toml <<'EOF'\n"
                         f"{config_text(cs.url, extra=UNSIGNED_FIRMWARE)}\nEOF")
                boots = len(cs.received("BootNotification"))
                await sh("systemctl restart ocppd")
                await cs.wait_for("BootNotification", count=boots + 1, timeout=60)
                await cs.wait_connected(CP_ID, timeout=30)
                async with file_server(served) as base:
                    await cs.call(CP_ID, call.UpdateFirmware(
                        location=f"{base}/{firmware_deb.name}", retrieve_date=now_iso(),
                        retries=1))
                    await cs.wait_for("FirmwareStatusNotification",
                                      lambda p: p["status"] == "Installing", timeout=60)
                # Installed comes from the new daemon, after the package's restart of ocppd.
                await cs.wait_for("FirmwareStatusNotification",
                                       lambda p: p["status"] in ("Installed",
                                                                 "InstallationFailed",
                                                                 "DownloadFailed"),
                                       timeout=240)
                statuses = [p["status"] for p in cs.received("FirmwareStatusNotification")]
                assert statuses == ["Downloading", "Downloaded", "Installing", "Installed"], (
                    statuses)
                version = (await sh("dpkg-query -W -f='${Version}' ocppd")).stdout
                assert version.endswith("+up2"), version
                boot = cs.received("BootNotification")[-1]
                assert boot.get("firmwareVersion", "").endswith("+up2"), boot
                # The new daemon may be up before apt (in the unit) has finished: wait for the
                # one-shot to end, successfully.
                fw_unit = f"ocppd-firmware-install@{firmware_deb.name}.service"
                deadline = time.monotonic() + 120
                while True:
                    out = (await sh(f"systemctl show -p ActiveState,Result {fw_unit}")).stdout
                    fw_state = dict(ln.split("=", 1) for ln in out.splitlines() if "=" in ln)
                    if fw_state.get("ActiveState") != "activating" or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.5)
                assert fw_state.get("Result") == "success", fw_state
                unit_log = (await sh(f"journalctl -o cat --no-pager -u {fw_unit}")).stdout
                assert f"Setting up ocppd ({version})" in unit_log, unit_log[-1500:]
                st = await unit(lambda s: s["ActiveState"] == "active" and
                                s["StatusText"].startswith("connected"),
                                "ActiveState", "StatusText")
                assert st["ActiveState"] == "active", st
                return f"{' -> '.join(statuses)}; ocppd {version} installed by {fw_unit}"

            await c.check("UpdateFirmware (unsigned, opted in): installed through its unit",
                          firmware_through_its_unit)

            await c.check("remove and purge", remove_purge)
    finally:
        await asyncio.to_thread(box.poweroff)
        if run("grep", "-q", f" {work}/", "/proc/mounts", check=False).returncode != 0:
            shutil.rmtree(work, ignore_errors=True)
    say(f"[{suite}] {'FAILED: ' + ', '.join(c.failed) if c.failed else 'passed'} "
        f"in {time.monotonic() - t0:.0f} s")
    return c.failed


def arm64_tarball(suite: str) -> Path:
    """A minbase arm64 root, bootstrapped once through qemu user-mode emulation."""
    tarball = CACHE / f"{suite}-arm64-minbase.tar.gz"
    if tarball.is_file():
        return tarball
    tmp = Path(tempfile.mkdtemp(prefix=f"bootstrap-{suite}-arm64-", dir=CACHE))
    tmp.chmod(0o755)
    say(f"debootstrap --arch=arm64 {suite} (qemu; cached afterwards in {tarball})")
    try:
        run("debootstrap", "--arch=arm64", "--variant=minbase", "--foreign", suite, str(tmp),
            MIRROR, timeout=1800)
        run("chroot", str(tmp), "/debootstrap/debootstrap", "--second-stage", timeout=1800)
        run("tar", "-C", str(tmp), "-czf", f"{tarball}.part", ".", timeout=600)
        os.replace(f"{tarball}.part", tarball)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tarball


async def check_arm64(suite: str, deb: Path) -> list[str]:
    """Install and a short session in an arm64 root by qemu user-mode emulation: a chroot, not
    a booted system (systemd under qemu-user is not what a Pi runs either way), so the daemon
    runs in the foreground as user ocppd."""
    from csms import CentralSystem

    t0 = time.monotonic()
    name = f"{suite}-arm64"
    work = Path(tempfile.mkdtemp(prefix=f"system-{name}-", dir=CACHE))
    root = work / "root"
    root.mkdir(mode=0o755)
    run("tar", "-C", str(root), "-xzf", str(arm64_tarball(suite)), timeout=600)
    root.chmod(0o755)
    shutil.copy(Path("/etc/resolv.conf"), root / "etc/resolv.conf")
    (root / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")  # no services here
    (root / "usr/sbin/policy-rc.d").chmod(0o755)
    shutil.copy(deb, root / "tmp/ocppd.deb")
    mounts: list[Path] = []
    c = Checks(name)
    daemon: subprocess.Popen[bytes] | None = None

    def chroot(script: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("chroot", str(root), "env", "-i", PATH_ENV, "LANG=C.UTF-8",
                   "DEBIAN_FRONTEND=noninteractive", "sh", "-c", script, check=check,
                   timeout=1200)

    async def sh(script: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(chroot, script, check=check)

    def start_daemon() -> subprocess.Popen[bytes]:
        """ocppd in the foreground as user ocppd (setpriv execs it: signals reach it)."""
        with open(work / "ocppd-arm64.log", "wb") as log:
            return subprocess.Popen(
                ["chroot", str(root), "env", "-i", PATH_ENV, "LANG=C.UTF-8",
                 "setpriv", "--reuid=ocppd", "--regid=ocppd", "--init-groups",
                 "ocppd", "--config", "/etc/ocppd.toml"],
                stdout=log, stderr=subprocess.STDOUT)

    try:
        for target, args in (("proc", ("-t", "proc", "proc")), ("dev/pts", ("--bind", "/dev/pts"))):
            run("mount", *args, str(root / target))
            mounts.append(root / target)
        async with CentralSystem() as cs:

            async def install() -> str:
                out = (await sh("apt-get update -q >/dev/null && apt-get install -y -q "
                                "--no-install-recommends /tmp/ocppd.deb")).stdout
                arch = (await sh("uname -m; python3 --version")).stdout.split()
                return f"{out.count('Setting up')} packages on {arch[0]}, Python {arch[-1]}"

            await c.check("apt install ./ocppd.deb", install)

            async def check_config() -> str:
                out = (await sh("ocppd --check-config")).stdout
                assert "not configured" in out, out
                return out.strip()[-40:]

            await c.check("ocppd --check-config on the installed file", check_config)

            async def session() -> str:
                nonlocal daemon
                await sh(f"cat >/etc/ocppd.toml <<'EOF'\n{config_text(cs.url)}\nEOF")
                await sh("install -d -o ocppd -g ocppd -m 0750 /run/ocppd /var/lib/ocppd")
                daemon = await asyncio.to_thread(start_daemon)
                await cs.wait_for("BootNotification", timeout=120)
                await cs.wait_for("StatusNotification", lambda p: p["connectorId"] == 1,
                                  timeout=60)
                await sh("ocppctl plug 1 && ocppctl swipe CARD-ARM64")
                await cs.wait_for("StartTransaction", timeout=60)
                await cs.wait_for("StatusNotification", lambda p: p["status"] == "Charging",
                                  timeout=60)
                daemon.terminate()
                code = await asyncio.to_thread(daemon.wait, 60)
                stop = (await cs.wait_for("StopTransaction", timeout=10))[0]
                assert code == 0, code
                return f"Charging, then SIGTERM: exit {code}, StopTransaction {stop['reason']}"

            await c.check("a session on the simulator (user ocppd)", session)
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        for m in reversed(mounts):
            run("umount", str(m), check=False)
        if run("grep", "-q", f" {work}/", "/proc/mounts", check=False).returncode != 0:
            shutil.rmtree(work, ignore_errors=True)
    say(f"[{name}] {'FAILED: ' + ', '.join(c.failed) if c.failed else 'passed'} "
        f"in {time.monotonic() - t0:.0f} s")
    return c.failed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suites", nargs="*", default=["bookworm", "trixie"])
    p.add_argument("--arm64", action="store_true",
                   help="also install and run a session in an arm64 bookworm root (qemu)")
    p.add_argument("--deb", type=Path, help="default: the newest dist/ocppd_*_all.deb")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("system_check: needs root (debootstrap, systemd-nspawn, nsenter)", file=sys.stderr)
        return 2
    for tool in ("systemd-nspawn", "debootstrap", "nsenter"):
        if shutil.which(tool) is None:
            print(f"system_check: {tool} missing: apt-get install systemd-container "
                  "debootstrap", file=sys.stderr)
            return 2
    deb = args.deb or max(ROOT.glob("dist/ocppd_*_all.deb"), key=lambda q: q.stat().st_mtime,
                          default=None)
    if deb is None:
        print("system_check: no dist/ocppd_*_all.deb: run make deb first", file=sys.stderr)
        return 2
    if args.arm64 and not Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").is_file():
        print("system_check: --arm64 needs qemu: apt-get install qemu-user-static "
              "binfmt-support; update-binfmts --enable qemu-aarch64", file=sys.stderr)
        return 2
    CACHE.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    failed = {s: asyncio.run(check_suite(s, deb)) for s in args.suites}
    if args.arm64:
        failed["arm64"] = asyncio.run(check_arm64("bookworm", deb))
    bad = [f"{s}: {', '.join(f)}" for s, f in failed.items() if f]
    checked = " ".join([*args.suites, *(["arm64"] if args.arm64 else [])])
    say(f"system check {'FAILED' if bad else 'passed'} for {checked} "
        f"in {time.monotonic() - t0:.0f} s" + (f" ({'; '.join(bad)})" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
