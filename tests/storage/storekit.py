"""Helpers shared by the store tests: a fixed clock and small builders."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


def at(seconds: float) -> datetime:
    """An instant ``seconds`` after T0 (the tests' fixed clock)."""
    return T0 + timedelta(seconds=seconds)


def child_env() -> dict[str, str]:
    """Environment for a child python that imports ocppd from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def run_child(code: str, *args: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=child_env(), timeout=timeout_s, check=False)
