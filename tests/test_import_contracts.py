"""The import contracts of pyproject.toml ([tool.importlinter]) hold: the core imports no
adapter, adapters do not import each other, each third-party library sits in one module.

import-linter is in the test extra (so `make test` and CI run this); Debian does not ship it,
so the suite run against Debian's libraries (scripts/deb.sh check) skips it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept() -> None:
    pytest.importorskip("importlinter", reason="import-linter (test extra) is not installed")
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe is not None, "import-linter is installed without its lint-imports command"
    run = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "BROKEN" not in run.stdout and "KEPT" in run.stdout
