"""The first calls after a start find their work done: idle time after the boot compiles the
everyday schemas and loads the DataTransfer plugins (ocppd/warmup.py), so the first DataTransfer,
GetConfiguration or swipe is as fast as later ones (the cold figures of ``make bench``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from csms import CentralSystem, call
from harness import CP_ID, booted, running, sim_config, wait_until

from ocppd.warmup import FROM_CENTRAL_SYSTEM, FROM_CHARGE_POINT

pytestmark = pytest.mark.asyncio


def install_plugin(site: Path) -> None:
    (site / "warm_dt").mkdir(parents=True)
    (site / "warm_dt" / "__init__.py").write_text(
        "async def hello(message_id, data):\n"
        "    return 'Accepted', 'hi'\n"
        "def register(add):\n"
        "    add('com.warm', 'hello', hello)\n"
    )
    dist = site / "warm_dt-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: warm-dt\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[ocppd.data_transfer]\nwarm = warm_dt:register\n")


async def test_idle_time_after_the_boot_prepares_the_first_calls(
    cs: CentralSystem, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    try:
        async with running(sim_config(tmp_path, cs.url)) as d:
            await booted(cs)
            assert d.cp is not None
            # before the Central System asked for anything
            await wait_until(lambda: "warm_dt" in sys.modules, 10, "the plugin scan, idle")
            everyday = {f"{a}{r}" for a in FROM_CENTRAL_SYSTEM + FROM_CHARGE_POINT
                        for r in ("", "Response")}
            await wait_until(lambda: everyday <= d.cp.validator.compiled, 10,
                             "the everyday schemas compiled, idle")
            conf = await cs.call(CP_ID, call.DataTransfer(vendor_id="com.warm",
                                                          message_id="hello"))
            assert (conf.status, conf.data) == ("Accepted", "hi")
    finally:
        sys.modules.pop("warm_dt", None)
