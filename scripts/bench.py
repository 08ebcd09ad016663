#!/usr/bin/env python3
"""ocppd's benchmark suite: start-up, memory, idle CPU, call throughput, replay, reaction.

    .venv/bin/python scripts/bench.py [--json FILE] [--quick]

Every figure is the median of several runs and is set against a floor measured in the same run:
a minimal aiohttp client (scripts/bench/floor_client.py, its own process, the same Python) that
only connects, sends BootNotification and, for the throughput figures, answers calls with a
fixed reply or replays the same MeterValues frames without persistence. The Central System is a
light aiohttp server in this process (scripts/bench/cs.py). Prints a table; ``--json`` writes
every value, every run and the machine's details. Exits 0 when it measured everything (targets
missed or not: the table says which), 1 when a measurement failed.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bench/ helper package

from bench import procs, report, wear  # noqa: E402
from bench.cs import CentralSystem  # noqa: E402
from bench.figures import FULL, QUICK, Bench, Settings  # noqa: E402

STEPS = ("startup", "imports", "idle_cpu", "storage_replay", "calls", "replay", "reaction",
         "wear", "slow_fsync", "cold")


async def measure(settings: Settings, workdir: Path, say: bool,
                  only: frozenset[str] = frozenset(STEPS)) -> dict[str, object]:
    raw: dict[str, object] = {}
    async with CentralSystem() as cs:
        bench = Bench(cs, workdir, settings)
        try:
            async def storage() -> object:
                return bench.storage_replay()
            async def wear_step() -> object:
                if not shutil.which("strace"):
                    print("  wear: strace not found, the fsync count is skipped"
                          " (apt-get install strace)", file=sys.stderr)
                return [await wear.charging_wear(bench, settings.wear_samples)
                        for _ in range(settings.runs)]

            async def slow_step() -> object:
                if not wear.have_compiler():
                    print("  slow_fsync: skipped, no C compiler for the fsync-delaying library",
                          file=sys.stderr)
                    return {"skipped": "no C compiler"}
                return await wear.slow_fsync(bench, settings.reaction_runs)

            async def cold_step() -> object:
                return await wear.cold_calls(bench, settings.runs)
            steps = (("startup", bench.startup), ("imports", bench.import_times),
                     ("idle_cpu", bench.idle_cpu), ("storage_replay", storage),
                     ("calls", bench.calls), ("replay", bench.replay), ("reaction", bench.reaction),
                     ("wear", wear_step), ("slow_fsync", slow_step), ("cold", cold_step))
            for name, step in steps:
                if name not in only:
                    continue
                t0 = time.monotonic()
                raw[name] = await step()
                if say:
                    print(f"  {name}: {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
        finally:
            await procs.stop_all()
    return raw


def byte_compile_ocppd() -> None:
    """Measure ocppd as installed: the Debian package byte-compiles it when it is installed, so
    no start pays for compiling sources (with PYTHONDONTWRITEBYTECODE set, a checkout would
    otherwise compile every module on every start: about 40 ms on the development machine)."""
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("ocppd")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("bench: ocppd is not importable")
    for where in spec.submodule_search_locations:
        if os.access(where, os.W_OK):  # an installed package is compiled already
            compileall.compile_dir(where, quiet=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", metavar="FILE", type=Path, help="write all values here")
    ap.add_argument("--quick", action="store_true",
                    help="a few seconds: fewer runs, short idle window, small backlog (smoke test)")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    ap.add_argument("--only", metavar="STEP,...", default=",".join(STEPS),
                    help=f"measure only these steps (of {', '.join(STEPS)})")
    args = ap.parse_args(argv)
    only = frozenset(x.strip() for x in args.only.split(",") if x.strip())
    if unknown := only - set(STEPS):
        ap.error(f"--only: unknown step(s) {', '.join(sorted(unknown))}")
    settings = QUICK if args.quick else FULL
    atexit.register(procs.kill_all_now)
    byte_compile_ocppd()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ocppd-bench-") as tmp:
        try:
            raw = asyncio.run(measure(settings, Path(tmp), not args.quiet, only))
        except (RuntimeError, OSError, TimeoutError) as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
    figs = report.figures(raw)
    meta = {**report.machine(), "mode": "quick" if args.quick else "full",
            "settings": {k: getattr(settings, k) for k in settings.__slots__},
            "duration_s": round(time.monotonic() - t0, 1),
            "central_system": "aiohttp (scripts/bench/cs.py)",
            "floor": "aiohttp client (scripts/bench/floor_client.py)"}
    print(report.table(figs))
    print(f"\n{meta['cpu']} ({meta['cpus']} CPUs), Python {meta['python']}, "
          f"aiohttp {meta['packages']['aiohttp']}; {meta['mode']} mode, {meta['duration_s']} s")
    if args.json:
        args.json.write_text(json.dumps(report.to_json(figs, raw, meta), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
