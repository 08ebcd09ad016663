#!/usr/bin/env python3
"""`make demo`: a charging session you can watch, on a fresh machine, with nothing to set up.

Starts a local Central System on loopback (test-side code built on the `ocpp` package), starts
the real ocppd daemon on the simulator, and drives one session through ocppctl: plug in, swipe
a card, charge with meter values, a current limit from the Central System, stop, unplug.
Prints the OCPP messages both ways, the daemon's state changes and a summary; exits 0 when the
session went as expected, and leaves no process behind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from csms import CentralSystem, Message, call  # noqa: E402

CP_ID = "DEMO-CP-1"
MEASURANDS = ",".join(
    [
        "Energy.Active.Import.Register",
        "Power.Active.Import",
        "Current.Import",
        "Current.Offered",
        "SoC",
    ]
)
T0 = time.monotonic()


def stamp() -> str:
    return f"{time.monotonic() - T0:6.2f}s"


def show_message(m: Message) -> None:
    arrow = "CP -> CS" if m.direction == "in" else "CS -> CP"
    body = json.dumps(m.payload, separators=(",", ":"))
    if len(body) > 150:
        body = body[:147] + "..."
    print(f"{stamp()}  {arrow}  {m.action:<28} {body}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp: Path, url: str, web_port: int) -> Path:
    cfg = tmp / "ocppd.toml"
    cfg.write_text(f"""
[charge_point]
id = "{CP_ID}"
vendor = "ocppd"
model = "demo"

[central_system]
url = "{url}"

[hardware]
driver = "sim"

[[connectors]]
max_current_a = 32.0

[sim]
ev_max_current_a = 32.0
battery_capacity_wh = 60000.0
initial_soc_pct = 40.0
time_factor = 60.0          # one simulated minute of charging per second

[storage]
path = "{tmp / "ocppd.db"}"

[control]
socket = "{tmp / "control.sock"}"

[web]
enabled = true
listen = "127.0.0.1"
port = {web_port}
password_file = "{tmp / "web-password"}"

[logging]
level = "info"

[ocpp]
MeterValueSampleInterval = 2
MeterValuesSampledData = "{MEASURANDS}"
HeartbeatInterval = 60
""")
    return cfg


async def ctl(cfg: Path, *args: str) -> str:
    print(f"{stamp()}  $ ocppctl {' '.join(args)}", flush=True)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ocppd.ctl",
        "--config",
        str(cfg),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    text = out.decode().rstrip()
    for line in text.splitlines():
        print(f"{'':9}  | {line}", flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"demo: ocppctl {' '.join(args)} failed ({proc.returncode})")
    return text


async def pump_logs(stream: asyncio.StreamReader) -> None:
    while line := await stream.readline():
        text = line.decode(errors="replace").rstrip()
        # show state changes and warnings, not every debug line
        if any(
            k in text
            for k in ("connector", "transaction", "registered", "WARNING", "ERROR", "running")
        ):
            print(f"{stamp()}  ocppd   {text.split(' ', 1)[-1]}", flush=True)


async def status_json(cfg: Path) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ocppd.ctl",
        "--config",
        str(cfg),
        "status",
        "--json",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    return json.loads(out)


async def wait_status(cfg: Path, want: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        st = await status_json(cfg)
        if st["connectors"][0]["status"] == want:
            return st
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: connector 1 did not reach {want}: {st['connectors'][0]}")
        await asyncio.sleep(0.2)


async def web_answers(port: int) -> str:
    """Whether the daemon's web page answers (plain HTTP: no browser needed)."""
    import aiohttp

    try:
        async with aiohttp.ClientSession() as http, http.get(
            f"http://127.0.0.1:{port}/login", timeout=aiohttp.ClientTimeout(total=5)
        ) as r:
            return "answers" if r.status == 200 else f"answered HTTP {r.status}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"does not answer: {exc}"


async def demo(charge_s: float, hold_s: float = 0.0) -> int:
    with tempfile.TemporaryDirectory(prefix="ocppd-demo-") as tmpdir:
        tmp = Path(tmpdir)
        async with CentralSystem(on_message=show_message) as cs:
            web_port = free_port()
            cfg = write_config(tmp, cs.url, web_port)
            from ocppd.web.auth import write_password_file

            web_password = secrets.token_urlsafe(9)
            write_password_file(tmp / "web-password", web_password)
            print(f"{stamp()}  Central System listening on {cs.url}", flush=True)
            print(f"{stamp()}  Web page: http://127.0.0.1:{web_port}/  (password "
                  f"{web_password}; open it in a browser while the demo runs, "
                  f"--hold-seconds N keeps it up after the session)", flush=True)
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            env.pop("NOTIFY_SOCKET", None)
            daemon = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "ocppd",
                "--config",
                str(cfg),
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
            assert daemon.stderr is not None
            logs = asyncio.ensure_future(pump_logs(daemon.stderr))
            try:
                await cs.wait_for("StatusNotification", lambda p: p["connectorId"] == 1)
                print(f"\n{stamp()}  --- the driver plugs in ---", flush=True)
                await ctl(cfg, "plug", "1")
                await wait_status(cfg, "Preparing")
                print(f"\n{stamp()}  --- the driver swipes a card ---", flush=True)
                await ctl(cfg, "swipe", "04A2B3C4D5E6F7")
                start = await cs.wait_for("StartTransaction")
                await wait_status(cfg, "Charging")
                await asyncio.sleep(charge_s / 2)
                await ctl(cfg, "status")
                print(
                    f"\n{stamp()}  --- the Central System limits the current to 10 A ---",
                    flush=True,
                )
                st = await status_json(cfg)
                # the station shows the Central System's id as text; 1.6's is an integer
                tx_id = int(st["connectors"][0]["transaction_id"])
                result = await cs.call(
                    CP_ID,
                    call.SetChargingProfile(
                        connector_id=1,
                        cs_charging_profiles={
                            "chargingProfileId": 1,
                            "stackLevel": 0,
                            "transactionId": tx_id,
                            "chargingProfilePurpose": "TxProfile",
                            "chargingProfileKind": "Relative",
                            "chargingSchedule": {
                                "chargingRateUnit": "A",
                                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10.0}],
                            },
                        },
                    ),
                )
                print(f"{stamp()}  SetChargingProfile answered {result.status}", flush=True)
                await asyncio.sleep(charge_s / 2)
                await ctl(cfg, "status")
                print(f"\n{stamp()}  --- the driver swipes again to stop ---", flush=True)
                await ctl(cfg, "swipe", "04A2B3C4D5E6F7")
                stop = await cs.wait_for("StopTransaction")
                await wait_status(cfg, "Finishing")
                print(f"\n{stamp()}  --- the driver unplugs ---", flush=True)
                await ctl(cfg, "unplug", "1")
                await wait_status(cfg, "Available")
                await ctl(cfg, "tx")
                meters = cs.received("MeterValues")
                energy_wh = stop[0]["meterStop"] - start[0]["meterStart"]
                offered = [
                    float(sv["value"])
                    for mv in meters
                    for v in mv["meterValue"]
                    for sv in v["sampledValue"]
                    if sv.get("measurand") == "Current.Offered"
                ]
                print("\n=== summary ===")
                print(f"transaction id      {tx_id}")
                print(
                    f"energy delivered    {energy_wh / 1000:.3f} kWh "
                    f"(meterStart {start[0]['meterStart']} Wh, meterStop {stop[0]['meterStop']} Wh)"
                )
                print(f"meter values sent   {len(meters)}")
                print(
                    "current offered     "
                    f"{max(offered, default=0):.0f} A, then {min(offered, default=0):.0f} A"
                )
                print(f"stop reason         {stop[0].get('reason')}")
                print(f"OCPP messages       {len(cs.messages)}")
                ok = energy_wh > 0 and len(meters) > 0 and min(offered, default=99) <= 10
                print(f"web page            http://127.0.0.1:{web_port}/ "
                      f"({await web_answers(web_port)})")
                print("result              " + ("OK" if ok else "UNEXPECTED"))
                if hold_s > 0:
                    print(f"{stamp()}  holding for {hold_s:g} s: the web page stays up",
                          flush=True)
                    await asyncio.sleep(hold_s)
                return 0 if ok else 1
            finally:
                if daemon.returncode is None:
                    daemon.send_signal(signal.SIGTERM)
                    try:
                        code = await asyncio.wait_for(daemon.wait(), 10)
                    except TimeoutError:
                        daemon.kill()
                        code = await daemon.wait()
                    print(f"{stamp()}  ocppd stopped (exit {code})", flush=True)
                logs.cancel()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--charge-seconds", type=float, default=8.0)
    p.add_argument("--hold-seconds", type=float, default=0.0,
                   help="keep the daemon (and its web page) running this long at the end")
    args = p.parse_args()
    try:
        return asyncio.run(demo(args.charge_seconds, args.hold_seconds))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
