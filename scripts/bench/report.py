"""Turning the runs into figures: medians, ratios to the floor, targets, a table and JSON."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.figures import median
from bench.procs import REPO


@dataclass(frozen=True, slots=True, kw_only=True)
class Figure:
    key: str
    name: str
    unit: str
    ocppd: float
    floor: float | None
    target: str  # in words, e.g. "<= 1.3x floor"
    passed: bool | None  # None: informational, no target
    ocppd_runs: list[float]
    floor_runs: list[float] | None = None

    @property
    def ratio(self) -> float | None:
        if self.floor in (None, 0):
            return None
        assert self.floor is not None
        return self.ocppd / self.floor


def _fig(key: str, name: str, unit: str, ocppd_runs: list[float], floor_runs: list[float] | None,
         target: str, check: Callable[[float, float | None], bool] | None) -> Figure:
    o = median(ocppd_runs)
    f = median(floor_runs) if floor_runs else None
    return Figure(key=key, name=name, unit=unit, ocppd=o, floor=f, target=target,
                  passed=None if check is None else check(o, f),
                  ocppd_runs=ocppd_runs, floor_runs=floor_runs)


def _ratio_at_most(limit: float) -> Callable[[float, float | None], bool]:
    return lambda o, f: f is not None and o <= limit * f


def _ratio_at_least(limit: float) -> Callable[[float, float | None], bool]:
    return lambda o, f: f is not None and o >= limit * f


def _below(limit: float) -> Callable[[float, float | None], bool]:
    return lambda o, _f: o < limit


def col(rows: list[dict[str, Any]], key: str, scale: float = 1.0) -> list[float]:
    return [r[key] * scale for r in rows]


def figures(raw: dict[str, Any]) -> list[Figure]:
    """The figures of the steps that were measured (``--only`` may have skipped some)."""
    out: list[Figure] = []
    if su := raw.get("startup"):
        out += [
            _fig("boot_to_bootnotification_ms", "start -> BootNotification at CS", "ms",
                 col(su["ocppd"], "boot_s", 1e3), col(su["floor"], "boot_s", 1e3),
                 "<= 1.3x floor", _ratio_at_most(1.3)),
            _fig("boot_to_ready_ms", "start -> READY=1", "ms", col(su["ocppd"], "ready_s", 1e3),
                 col(su["floor"], "boot_s", 1e3), "info (floor: its Boot)", None),
        ]
    if imp := raw.get("imports"):
        out.append(_fig("import_ms", "import ocppd.app (floor: aiohttp)", "ms",
                        [x * 1e3 for x in imp["ocppd_app_s"]],
                        [x * 1e3 for x in imp["aiohttp_s"]], "info", None))
    if su:
        out.append(_fig("idle_rss_mib", "RSS booted, idle, 2 connectors", "MiB",
                        col(su["ocppd"], "rss_kb", 1 / 1024), col(su["floor"], "rss_kb", 1 / 1024),
                        "<= 1.3x floor", _ratio_at_most(1.3)))
    rp = raw.get("replay")
    if rp and su:
        out.append(_fig("queued_rss_mib", f"RSS booted, {rp['n']} MeterValues queued", "MiB",
                        col(rp["ocppd"], "queued_rss_kb", 1 / 1024),
                        col(su["floor"], "rss_kb", 1 / 1024), "<= 1.3x floor",
                        _ratio_at_most(1.3)))
        out.append(_fig("replay_peak_rss_mib", "peak RSS (VmHWM) after the replay", "MiB",
                        col(rp["ocppd"], "peak_rss_kb", 1 / 1024),
                        col(su["floor"], "rss_kb", 1 / 1024), "info", None))
    if idle := raw.get("idle_cpu"):
        out.append(_fig("idle_cpu_pct", f"idle CPU ({idle['slice_s']:g} s slices)", "%",
                        idle["slices_pct"]["ocppd"], idle["slices_pct"]["floor"], "< 0.2 %",
                        _below(0.2)))
    if calls := raw.get("calls"):
        for action in ("GetConfiguration", "DataTransfer"):
            o, f = calls["ocppd"][action], calls["floor"][action]
            out += [
                _fig(f"{action}_per_s", f"{action} from CS, answered/s", "1/s", col(o, "per_s"),
                     col(f, "per_s"), "info", None),
                _fig(f"{action}_p50_ms", f"{action} round trip p50", "ms", col(o, "p50_ms"),
                     col(f, "p50_ms"), "info", None),
                _fig(f"{action}_p99_ms", f"{action} round trip p99", "ms", col(o, "p99_ms"),
                     col(f, "p99_ms"), "< 5 ms", _below(5.0)),
            ]
        conc = calls["ocppd"]["GetConfiguration_concurrent"]
        out.append(_fig("GetConfiguration_concurrent_per_s",
                        f"GetConfiguration, {conc[0]['in_flight']} in flight, /s", "1/s",
                        col(conc, "per_s"),
                        col(calls["floor"]["GetConfiguration_concurrent"], "per_s"),
                        "info", None))
    if rp:
        out.append(_fig("replay_per_s", f"offline replay of {rp['n']} MeterValues", "1/s",
                        col(rp["ocppd"], "per_s"), col(rp["floor"], "per_s"), ">= 0.8x floor",
                        _ratio_at_least(0.8)))
    if sr := raw.get("storage_replay"):
        out.append(_fig("storage_replay_per_s", "  of which SQLite alone: read+confirm/s", "1/s",
                        sr["per_s"], None, "info", None))
    if idle:
        out.append(_fig("idle_written_kib_per_h", "written per idle hour (write_bytes)", "KiB",
                        [b / 1024 for b in idle["written_bytes_per_h_slices"]], None, "0",
                        lambda o, _f: o == 0))
    out += _wear_figures(raw)
    if re := raw.get("reaction"):
        out.append(_fig("swipe_to_contactor_ms", "swipe -> contactor closed (- CS time)", "ms",
                        col(re["runs"], "swipe_to_contactor_ms"), None, "< 50 ms",
                        _below(50.0)))
    return out


def _wear_figures(raw: dict[str, Any]) -> list[Figure]:
    from bench.wear import SAMPLES_PER_HOUR

    out: list[Figure] = []
    if wr := raw.get("wear"):
        per_h = [SAMPLES_PER_HOUR / r["samples"] for r in wr]
        out += [
            _fig("charging_written_mib_per_h",
                 "written per charging hour (write_bytes; floor: 1 KiB append+fdatasync)", "MiB",
                 [r["written_bytes"] * h / 2**20 for r, h in zip(wr, per_h, strict=True)],
                 [r["floor_written_bytes"] * h / 2**20 for r, h in zip(wr, per_h, strict=True)]
                 if all("floor_written_bytes" in r for r in wr) else None,
                 "<= 0.5 MiB", lambda o, _f: o <= 0.5),
            _fig("charging_file_growth_kib_per_h", "  database files' growth per hour", "KiB",
                 [r["file_growth_bytes"] * h / 1024 for r, h in zip(wr, per_h, strict=True)],
                 None, "info", None),
        ]
        if all(r["fsyncs"] is not None for r in wr):
            out.append(_fig("fsyncs_per_sample", "fsync+fdatasync per sample (strace)", "1",
                            [r["fsyncs"] / r["samples"] for r in wr], None, "<= 1",
                            lambda o, _f: o <= 1.0))
    sf = raw.get("slow_fsync")
    if sf and "skipped" not in sf:
        out.append(_fig("unplug_to_open_slow_fsync_ms",
                        f"unplug -> contactor open, fsync {sf['fsync_ms']} ms (floor: normal"
                        " disk)", "ms", sf["slow_ms"], sf["normal_ms"], "< 20 ms", _below(20.0)))
    if cold := raw.get("cold"):
        for what, name in (("DataTransfer", "first DataTransfer after start"),
                           ("GetConfiguration", "first GetConfiguration after start"),
                           ("swipe", "first swipe -> contactor after start")):
            out.append(_fig(f"{what}_cold_ms", f"{name} (floor: warm)", "ms",
                            col(cold["runs"], f"{what}_cold_ms"),
                            col(cold["runs"], f"{what}_warm_ms"), "<= warm + 2 ms",
                            lambda o, f: f is not None and o <= f + 2.0))
    return out


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}" if abs(v) < 0.1 else f"{v:.2f}"


def table(figs: list[Figure]) -> str:
    headers = ("figure", "unit", "ocppd", "floor", "ratio", "target", "result")
    rows = [(f.name, f.unit, _fmt(f.ocppd), _fmt(f.floor),
             "-" if f.ratio is None else f"{f.ratio:.2f}x", f.target,
             "" if f.passed is None else ("pass" if f.passed else "FAIL")) for f in figs]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i in (0, 1, 5, 6) else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()
    return "\n".join([line(headers), line(tuple("-" * w for w in widths)), *map(line, rows)])


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for row in Path("/proc/cpuinfo").read_text().splitlines():
            if row.startswith(("model name", "Model")):
                cpu = row.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in ("ocppd", "aiohttp", "yarl", "fastjsonschema", "websockets", "ocpp"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=False).stdout.strip() or None
    except OSError:  # no git (an installed package, a chroot)
        commit = None
    return {"cpu": cpu, "cpus": os.cpu_count(), "kernel": platform.release(),
            "machine": platform.machine(), "python": sys.version.split()[0],
            "python_executable": sys.executable, "packages": versions, "commit": commit}


def to_json(figs: list[Figure], raw: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "meta": meta,
        "figures": {f.key: {**asdict(f), "ratio": f.ratio} for f in figs},
        "all_targets_met": all(f.passed for f in figs if f.passed is not None),
        "runs": raw,
    }
