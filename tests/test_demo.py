"""The README's first command: `make demo` charges a car on the simulator and says OK.

It runs the daemon against the test-side Central System (tests/csms.py), so it needs the
`ocpp` package like the integration tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ocpp", reason="the demo's Central System needs the `ocpp` package")

ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_charges_a_car_and_says_ok() -> None:
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, check=False)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    summary = out[out.rindex("=== summary ==="):]
    assert "result              OK" in summary, summary
    assert "current offered     32 A, then 10 A" in summary, summary
    assert "stop reason         Local" in summary, summary
