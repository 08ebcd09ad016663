"""The daemon on the simulator with its web page on, against the test Central System."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ocppd import config
from ocppd.app import Daemon
from ocppd.web.auth import write_password_file

if TYPE_CHECKING:
    from csms import CentralSystem

PASSWORD = "correct horse battery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Web:
    daemon: Daemon
    url: str
    cfg_path: Path


def web_config(tmp_path: Path, url: str, *, web: dict[str, Any] | None = None,
               **kw: Any) -> Path:
    from harness import sim_config_text

    port = free_port()
    values = {"enabled": "true", "listen": '"127.0.0.1"', "port": str(port),
              "password_file": f'"{tmp_path / "web-password"}"',
              **(web or {})}
    text = sim_config_text(tmp_path, url, **kw) + "\n[web]\n" + "\n".join(
        f"{k} = {v}" for k, v in values.items()) + "\n"
    path = tmp_path / "ocppd.toml"
    path.write_text(text)
    write_password_file(tmp_path / "web-password", PASSWORD)
    return path


@pytest.fixture
async def cs() -> AsyncIterator[CentralSystem]:
    # the test-side Central System needs the `ocpp` package, which Debian does not ship: the
    # tests that need it skip there, the others run
    csms = pytest.importorskip("csms", reason="the ocpp package is not installed")
    async with csms.CentralSystem() as server:
        yield server


@pytest.fixture
async def web(tmp_path: Path, cs: CentralSystem) -> AsyncIterator[Web]:
    from harness import booted, running

    path = web_config(tmp_path, cs.url, sim={"time_factor": 60.0})
    cfg = config.load(path)
    async with running(cfg) as d:
        await booted(cs)
        assert d.web is not None and d.web.port is not None
        yield Web(daemon=d, url=f"http://127.0.0.1:{d.web.port}", cfg_path=path)
