"""A small in-memory ControlApi and a raw client for the control socket and ocppctl tests."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ocppd.control import Refused

KEYS = {
    "HeartbeatInterval": ("300", False),
    "MeterValueSampleInterval": ("60", False),
    "NumberOfConnectors": ("2", True),
}


class FakeStation:
    """Two connectors; connector 2 has "real hardware" and refuses simulated plugs."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.plugged = {1: False, 2: False}
        self.pilot = {1: "C", 2: "A"}
        self.keys = {k: v for k, (v, _) in KEYS.items()}
        self.swipe_gate: asyncio.Event | None = None
        self.swipe_started = asyncio.Event()

    async def status(self) -> dict[str, Any]:
        return {
            "charge_point_id": "CP-0001",
            "version": "0.1.0",
            "driver": "sim",
            "connection": {
                "state": "connected",
                "url": "ws://127.0.0.1:9000/CP-0001",
                "registration": "accepted",
                "since": "2026-01-01T12:00:00Z",
                "last_error": None,
            },
            "outbox": 3,
            "outgoing_invalid": 0,
            "connectors": [
                {"id": 1, "status": "Charging", "error": "NoError", "transaction_id": 4711,
                 "local_tx_id": 12, "id_tag": "ABC123", "energy_wh": 1234.6, "power_w": 7360.0,
                 "limit_a": 32.0, "pilot": self.pilot[1]},
                {"id": 2, "status": "Available", "error": "NoError", "transaction_id": None,
                 "local_tx_id": None, "id_tag": None, "energy_wh": None, "power_w": None,
                 "limit_a": None, "pilot": self.pilot[2]},
            ],
        }

    async def swipe(self, id_tag: str, connector_id: int | None) -> str:
        self.calls.append(("swipe", id_tag, connector_id))
        self.swipe_started.set()
        if self.swipe_gate is not None:
            await self.swipe_gate.wait()
        if id_tag == "BLOCKED":
            raise Refused("idTag BLOCKED is Blocked")
        return f"authorized {id_tag} on connector {connector_id or 1}"

    def _connector(self, connector_id: int) -> None:
        if connector_id not in self.plugged:
            raise Refused(f"no connector {connector_id}")
        if connector_id == 2:
            raise Refused("connector 2 has real hardware; plug a real cable")

    def plug(self, connector_id: int) -> None:
        self._connector(connector_id)
        self.calls.append(("plug", connector_id))
        self.plugged[connector_id] = True

    def unplug(self, connector_id: int) -> None:
        self._connector(connector_id)
        self.calls.append(("unplug", connector_id))
        self.plugged[connector_id] = False

    def ev_state(self, connector_id: int, state: str) -> None:
        self._connector(connector_id)
        self.calls.append(("ev", connector_id, state))
        self.pilot[connector_id] = state

    def transactions(self, limit: int) -> list[dict[str, Any]]:
        self.calls.append(("transactions", limit))
        rows: list[dict[str, Any]] = [
            {"local_id": 12, "transaction_id": 4711, "connector_id": 1, "id_tag": "ABC123",
             "start": datetime(2026, 1, 1, 11, 0, tzinfo=UTC), "stop": None,
             "energy_wh": 1234.6, "reason": None},
            {"local_id": 11, "transaction_id": None, "connector_id": 2, "id_tag": "DEF456",
             "start": "2025-12-31T08:00:00Z", "stop": "2025-12-31T09:30:00Z",
             "energy_wh": 10500.0, "reason": "EVDisconnected"},
        ]
        return rows[:limit]

    def config_get(self, keys: list[str] | None) -> dict[str, Any]:
        wanted = keys if keys is not None else list(self.keys)
        return {
            "keys": [{"key": k, "value": self.keys[k], "readonly": KEYS[k][1]}
                     for k in wanted if k in self.keys],
            "unknown": [k for k in wanted if k not in self.keys],
        }

    def config_hint(self, key: str) -> str | None:
        self.calls.append(("config_hint", key))
        if key not in self.keys:
            return None
        return "read-only" if KEYS[key][1] else "a whole number"

    def config_set(self, key: str, value: str) -> str:
        if key == "Explode":  # a bug in the station
            raise RuntimeError("database is locked")
        if key not in self.keys:
            return "NotSupported"
        if KEYS[key][1] or not value.isdigit():
            return "Rejected"
        self.keys[key] = value
        return "Accepted"


async def request(path: str | Path, *lines: bytes) -> list[dict[str, Any]]:
    """Send raw request lines on one connection and read one JSON answer per line."""
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        answers = []
        for line in lines:
            writer.write(line)
            await writer.drain()
            answers.append(json.loads(await asyncio.wait_for(reader.readline(), 5.0)))
        return answers
    finally:
        writer.close()
        await writer.wait_closed()
