"""The benchmark harness, in its quick mode: it runs, reports every figure and cleans up.

The figures themselves are not judged here (a loaded CI machine says nothing about ocppd);
what is checked is that every figure was measured, with runs behind each median, and that no
daemon or floor client outlives the benchmark.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FIGURES = {
    "boot_to_bootnotification_ms", "boot_to_ready_ms", "idle_rss_mib", "queued_rss_mib",
    "replay_peak_rss_mib", "idle_cpu_pct",
    "GetConfiguration_per_s", "GetConfiguration_p50_ms", "GetConfiguration_p99_ms",
    "DataTransfer_per_s", "DataTransfer_p50_ms", "DataTransfer_p99_ms",
    "GetConfiguration_concurrent_per_s", "replay_per_s", "swipe_to_contactor_ms",
    "import_ms", "storage_replay_per_s",
    "idle_written_kib_per_h", "charging_written_mib_per_h", "charging_file_growth_kib_per_h",
    "DataTransfer_cold_ms", "GetConfiguration_cold_ms", "swipe_cold_ms",
}
WITH_TARGET = {"boot_to_bootnotification_ms", "idle_rss_mib", "queued_rss_mib", "idle_cpu_pct",
               "GetConfiguration_p99_ms", "DataTransfer_p99_ms", "replay_per_s",
               "swipe_to_contactor_ms", "idle_written_kib_per_h", "charging_written_mib_per_h",
               "DataTransfer_cold_ms", "GetConfiguration_cold_ms", "swipe_cold_ms",
               "fsyncs_per_sample", "unplug_to_open_slow_fsync_ms"}
NO_FLOOR = {"swipe_to_contactor_ms", "storage_replay_per_s", "idle_written_kib_per_h",
            "charging_written_mib_per_h", "charging_file_growth_kib_per_h", "fsyncs_per_sample"}
# figures that need a tool the machine may lack
if shutil.which("strace"):
    FIGURES.add("fsyncs_per_sample")
if shutil.which("gcc") or shutil.which("cc"):
    FIGURES.add("unplug_to_open_slow_fsync_ms")


def _processes_of_run(tmp_path: Path) -> list[str]:
    """Processes this bench run started and left behind: every one of them has the run's
    directory in its command line or as its TMPDIR (other benchmarks on the machine do not)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(tmp_path) in cmdline or f"TMPDIR={tmp_path}".encode() in environ:
            found.append(f"{entry.name}: {cmdline}")
    return found


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory: control sockets inside must fit AF_UNIX's 108-byte path limit,
    which pytest's numbered tmp_path directories can exceed."""
    path = Path(tempfile.mkdtemp(prefix="ob-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_quick_bench_reports_every_figure_and_leaves_no_process(short_tmp: Path) -> None:
    tmp_path = short_tmp
    out = tmp_path / "bench.json"
    env = dict(os.environ, TMPDIR=str(tmp_path))  # the daemons' working files land here
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "bench.py"), "--quick",
                           "--quiet", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr + done.stdout

    result = json.loads(out.read_text())
    assert set(result["figures"]) == FIGURES
    for key, fig in result["figures"].items():
        assert math.isfinite(fig["ocppd"]), key
        assert len(fig["ocppd_runs"]) >= 2, f"{key}: a median needs several runs"
        assert (fig["passed"] is not None) == (key in WITH_TARGET), key
        if key not in NO_FLOOR:
            assert fig["floor"] is not None and fig["floor_runs"], key
    assert result["figures"]["boot_to_bootnotification_ms"]["ocppd"] > 0
    assert result["figures"]["replay_per_s"]["ocppd"] > 0
    meta = result["meta"]
    assert meta["python"] and meta["cpu"] and meta["packages"]["aiohttp"]
    assert meta["mode"] == "quick"
    # the table names every figure with a pass/fail column
    assert "swipe -> contactor closed" in done.stdout and "result" in done.stdout

    assert _processes_of_run(tmp_path) == []


def test_only_measures_the_steps_asked_for(short_tmp: Path) -> None:
    out = short_tmp / "bench.json"
    env = dict(os.environ, TMPDIR=str(short_tmp))
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "bench.py"), "--quick",
                           "--quiet", "--only", "startup", "--json", str(out)],
                          capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr + done.stdout
    figures = json.loads(out.read_text())["figures"]
    assert set(figures) == {"boot_to_bootnotification_ms", "boot_to_ready_ms", "idle_rss_mib"}
    assert "replay" not in done.stdout

    wrong = subprocess.run([sys.executable, str(REPO / "scripts" / "bench.py"), "--only", "nope"],
                           capture_output=True, text=True, timeout=60, cwd=REPO)
    assert wrong.returncode == 2 and "unknown step(s) nope" in wrong.stderr
