"""What the benchmarks set up: the daemon's configuration, a pre-filled outbox, the control socket.

The configuration is the simulator with two connectors, logging at ``info`` (what a charger runs
with; ``debug`` would make every figure a measure of log formatting), production-like OCPP keys:
meter samples every 60 s during a transaction, WebSocket pings every 60 s, heartbeat as the
Central System says (300 s).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

CP_ID = "CP-BENCH-1"
METER_SAMPLE_INTERVAL_S = 60


def config_text(workdir: Path, url: str, *, cp_id: str = CP_ID, connectors: int = 2,
                ocpp: dict[str, int] | None = None) -> str:
    keys = {"MeterValueSampleInterval": METER_SAMPLE_INTERVAL_S, **(ocpp or {})}
    conn = "".join('\n[[connectors]]\nmax_current_a = 32.0\ncable = "socket"\n'
                   for _ in range(connectors))
    return f"""
[charge_point]
id = "{cp_id}"
vendor = "ocppd"
model = "bench"
[central_system]
url = "{url}"
reconnect_min_s = 0.2
reconnect_max_s = 1.0
response_timeout_s = 10.0
[hardware]
driver = "sim"
{conn}
[storage]
path = "{workdir / 'ocppd.db'}"
[control]
socket = "{workdir / 'control.sock'}"
[logging]
level = "info"
[system]
reboot_command = ["/bin/true"]
[ocpp]
""" + "".join(f"{k} = {v}\n" for k, v in keys.items())


def write_config(workdir: Path, url: str, **kw: Any) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "ocppd.toml"
    path.write_text(config_text(workdir, url, **kw))
    return path


def prefill_outbox(db_path: Path, n: int) -> None:
    """Queue n meter samples in the daemon's database before it starts (offline backlog): a
    finished transaction the Central System knows, its samples still to deliver (nothing but
    MeterValues: ocppd.storage.bench.prefill). The sender sends each and confirms it on its
    CALLRESULT (a watermark write, as for any periodic sample). n = 0: an empty database."""
    from ocppd.storage import Store
    from ocppd.storage.bench import prefill

    with Store.open(db_path, max_pending_events=max(n, 100)) as store:
        prefill(store, n)


class Control:
    """The daemon's control socket (newline-delimited JSON, see ocppd/control.py), in-process:
    an ``ocppctl`` process would add a Python start-up to every command we time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    @classmethod
    async def connect(cls, path: Path) -> Control:
        reader, writer = await asyncio.open_unix_connection(str(path))
        return cls(reader, writer)

    async def send(self, cmd: str, **args: Any) -> None:
        self._writer.write(json.dumps({"cmd": cmd, "args": args}).encode() + b"\n")
        await self._writer.drain()

    async def reply(self, timeout_s: float = 10.0) -> Any:
        answer = json.loads(await asyncio.wait_for(self._reader.readline(), timeout_s))
        if not answer.get("ok"):
            raise RuntimeError(f"control: {answer}")
        return answer.get("result")

    async def ask(self, cmd: str, **args: Any) -> Any:
        await self.send(cmd, **args)
        return await self.reply()

    async def close(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (ConnectionError, OSError):
            pass
