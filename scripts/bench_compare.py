#!/usr/bin/env python3
"""Before and after in one run: the benchmark of an earlier commit, then of this checkout.

    .venv/bin/python scripts/bench_compare.py REF [--quick] [--only STEP,...] [--json FILE]

REF is checked out into a temporary git worktree and measured with its own benchmark (its
scripts/bench.py, its daemon), then this checkout with its own, one after the other on the same
machine with the same Python and libraries. Each measures its floor in its own run, so the
ratios to the floor are what to compare when the machine's load changed in between. Prints the
figures both versions have, side by side (`make bench-compare REF=...`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def run_bench(tree: Path, out: Path, extra: list[str]) -> dict[str, Any]:
    """The tree's own benchmark, importing the tree's own ocppd (PYTHONPATH before the
    editable install), with its figures as JSON."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(tree), *filter(None, [os.environ.get("PYTHONPATH")])]))
    cmd = [sys.executable, str(tree / "scripts" / "bench.py"), "--json", str(out), *extra]
    print(f"== {tree}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    # the return code says whether every target was met; the figures are what we want
    subprocess.run(cmd, cwd=tree, env=env, check=False)
    if not out.exists():
        raise SystemExit(f"bench_compare: the benchmark of {tree} wrote no results")
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def table(before: dict[str, Any], after: dict[str, Any], ref: str) -> str:
    rows = [("figure", "unit", f"{ref}", "ratio", "now", "ratio", "now/before")]
    for key, now in after["figures"].items():
        old = before["figures"].get(key)
        if old is None:
            continue
        change = now["ocppd"] / old["ocppd"] if old["ocppd"] else None
        rows.append((now["name"], now["unit"], fmt(old["ocppd"]), fmt(old.get("ratio")),
                     fmt(now["ocppd"]), fmt(now.get("ratio")), fmt(change)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ref", help="the commit to compare with (e.g. a tag or a hash)")
    ap.add_argument("--quick", action="store_true", help="each benchmark in its quick mode")
    ap.add_argument("--only", metavar="STEP,...", help="steps both benchmarks know")
    ap.add_argument("--json", type=Path, help="write both results here")
    args = ap.parse_args(argv)
    extra = (["--quick"] if args.quick else []) + (["--only", args.only] if args.only else [])
    with tempfile.TemporaryDirectory(prefix="ocppd-compare-") as tmp:
        old_tree = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet",
                        str(old_tree), args.ref], check=True)
        try:
            before = run_bench(old_tree, Path(tmp) / "before.json", extra)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(old_tree)], check=False)
        after = run_bench(REPO, Path(tmp) / "after.json", extra)
    print()
    print(table(before, after, args.ref))
    for name, data in (("before", before), ("now", after)):
        meta = data["meta"]
        print(f"{name}: commit {meta.get('commit')}, {meta.get('mode')} mode,"
              f" {meta.get('duration_s')} s")
    if args.json:
        args.json.write_text(json.dumps({"ref": args.ref, "before": before, "now": after},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
