"""Importing ocppd configures no logging: the daemon's one handler (ocppd.systemd.setup_logging)
is the only one. Some library versions Debian ships do configure it at import (pymodbus 3.0
calls logging.basicConfig in pymodbus.constants), which under systemd printed every line twice
in the journal: once through the journal handler, once through stderr."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import importlib, logging, pkgutil, sys
import ocppd
root = logging.getLogger()
before = list(root.handlers)
for mod in pkgutil.walk_packages(ocppd.__path__, "ocppd."):
    if mod.name.endswith("__main__"):
        continue  # runs the daemon
    try:
        importlib.import_module(mod.name)
    except ImportError:
        pass  # an optional backend not installed here
    added = [h for h in root.handlers if h not in before]
    if added:
        sys.exit(f"importing {mod.name} added {added} to the root logger")
print("ok")
"""


def test_importing_ocppd_adds_no_log_handler() -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr
