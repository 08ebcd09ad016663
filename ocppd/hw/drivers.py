"""Board drivers as plugins: the registry that ``[hardware] driver = "NAME"`` is looked up in.

A driver is a ``Driver`` value. Built-in ones (``sim``, ``gpio``, ``evse_wb``) and those of
other installed packages register the same way, through the entry-point group
``ocppd.drivers`` (a package's ``pyproject.toml``)::

    [project.entry-points."ocppd.drivers"]
    myboard = "myboard_ocppd:DRIVER"

The driver's own settings live in ``[hardware.NAME]``. It declares them as a frozen dataclass
(``Driver.options``) whose fields carry the same metadata as ocppd's own configuration
(``lo``/``hi``/``choices``/``doc``, see ``setting()``), so a mistake there gets the same one
line per key and exit code 78, from ``ocppd --check-config`` as at start-up. ``Driver.check``
adds checks across tables (a bus that must exist, one unit id per connector).

Built-ins win over a plugin with the same name: a package cannot replace the simulator or the
GPIO driver by accident. A plugin that fails to import is reported as a configuration error
only when it is the one selected.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import logging
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ocppd.config import Config
from ocppd.hw.base import Hardware

log = logging.getLogger(__name__)

GROUP = "ocppd.drivers"

# The built-in drivers, by the same "module:attribute" form an entry point uses. They are listed
# here as well as in pyproject.toml so a source checkout that was never installed still works.
BUILTIN: dict[str, str] = {
    "sim": "ocppd.hw.sim:DRIVER",
    "gpio": "ocppd.hw.realboard:DRIVER",
    "evse_wb": "ocppd.hw.evsewb:DRIVER",
}

# Keys of [hardware] itself: a driver of that name would have no table of its own.
RESERVED = frozenset({"driver", "nominal_voltage_v", "emergency_stop", "leds"})

Problems = list[tuple[str, str]]  # (key, message), reported as "<file>: <key>: <message>"


@dataclass(frozen=True, slots=True, kw_only=True)
class Driver:
    """What a driver package exports (the object its entry point names)."""

    name: str
    summary: str  # one line: the boards it drives
    build: Callable[[Config, Any], Hardware]  # (whole config, parsed [hardware.NAME]) -> parts
    options: type | None = None  # frozen dataclass for [hardware.NAME]; None: takes no table
    check: Callable[[Config, Any], Problems] | None = None  # checks across tables
    # What the board does when ocppd stops talking to it (contract obligation 6, base.py).
    fail_safe: str = ""


def setting(default: Any = dataclasses.MISSING, *, lo: float | None = None,
            hi: float | None = None, choices: tuple[Any, ...] | None = None,
            doc: str = "") -> Any:
    """A field of a driver's options dataclass, validated like ocppd's own settings."""
    meta: dict[str, Any] = {"doc": doc}
    if lo is not None:
        meta["lo"] = lo
    if hi is not None:
        meta["hi"] = hi
    if choices is not None:
        meta["choices"] = choices
    if isinstance(default, list | dict):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def available() -> dict[str, str]:
    """Every driver name that can be selected -> where it comes from ("module:attribute")."""
    found = dict(BUILTIN)
    for ep in importlib.metadata.entry_points(group=GROUP):
        if ep.name in found:
            if found[ep.name] != ep.value:
                log.warning("driver %s from %s ignored: the name is taken by %s",
                            ep.name, ep.value, found[ep.name])
            continue
        found[ep.name] = ep.value
    return found


class DriverNotFound(LookupError):
    pass


def find(name: str) -> Driver:
    """Load the driver ``name``. Raises DriverNotFound with a one-line reason.

    A built-in name is loaded without scanning the installed packages (that scan costs
    start-up time on a small board); other names are looked up among the entry points.
    """
    where = BUILTIN.get(name) or available().get(name)
    if where is None:
        names = ", ".join(sorted(available()))
        raise DriverNotFound(f"unknown driver {name!r}; installed: {names}")
    module_name, _, attr = where.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:  # noqa: BLE001 - a broken plugin is a config problem, not a crash
        raise DriverNotFound(f"driver {name!r} ({where}) failed to load: "
                             f"{type(exc).__name__}: {exc}") from None
    if not isinstance(obj, Driver):
        raise DriverNotFound(f"driver {name!r} ({where}) is not an ocppd.hw.drivers.Driver")
    if obj.name != name:
        raise DriverNotFound(f"driver {name!r} ({where}) calls itself {obj.name!r}")
    return obj


def parse_options(name: str, table: dict[str, Any] | None, cfg: Config | None,
                  problems: list[str], where: str) -> Any:
    """Validate ``[hardware.NAME]`` for the driver ``name``; return its parsed options.

    Called by the configuration loader (config.from_dict) for every file, so these problems
    are reported together with the others; ``cfg`` is None when the rest of the file has
    problems, and then the driver's checks across tables are left for the next round.
    Appends one line per problem to ``problems``.
    """
    from ocppd.config import _convert  # the loader's own converter: the same error lines

    key = f"hardware.{name}"
    if name in RESERVED:
        problems.append(f"{where}: hardware.driver: {name!r} is a [hardware] key, not a driver")
        return None
    try:
        driver = find(name)
    except DriverNotFound as exc:
        problems.append(f"{where}: hardware.driver: {exc}")
        return None
    options: Any = None
    if driver.options is None:
        if table is not None:
            problems.append(f"{where}: {key}: the {name} driver takes no settings table")
            return None
    else:
        _resolve_types(driver.options)
        before = len(problems)
        options = _convert(driver.options, table or {}, key, problems, where)
        if len(problems) > before:
            return None
    if driver.check is not None and cfg is not None:
        for sub, msg in driver.check(cfg, options):
            problems.append(f"{where}: {sub}: {msg}")
    return options


def _resolve_types(cls: type) -> None:
    """Turn string annotations (``from __future__ import annotations`` in the driver's module)
    into the types the loader walks, in this dataclass and the ones nested in it."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        f.type = hints[f.name]
        for inner in (f.type, *typing.get_args(f.type)):
            if dataclasses.is_dataclass(inner) and isinstance(inner, type):
                _resolve_types(inner)


def build_hardware(cfg: Config) -> Hardware:
    """The hardware for ``cfg``, built by its driver (the config loader validated it)."""
    driver = find(cfg.hardware.driver)
    hardware = driver.build(cfg, cfg.hardware.options)
    # After the build: a set-up failure is its one line alone (HardwareError, exit 69).
    log.info("board driver %s: %s; when ocppd stops: %s", driver.name, driver.summary,
             driver.fail_safe or "not stated by the driver")
    return hardware
