"""The ``ocppd`` command: argument parsing, config check, and running the daemon."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ocppd import __version__, config
from ocppd.errors import ConfigError, HardwareError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ocppd", description="OCPP-J 1.6 charge point daemon for Linux-based EV chargers."
    )
    p.add_argument(
        "--config",
        type=Path,
        default=config.DEFAULT_PATH,
        help=f"configuration file (default {config.DEFAULT_PATH})",
    )
    p.add_argument(
        "--check-config",
        action="store_true",
        help="validate the configuration and exit: 0 if valid, 78 otherwise",
    )
    p.add_argument(
        "--set-web-password",
        action="store_true",
        help="set the web page's password (asked for, or one line on stdin) and exit",
    )
    p.add_argument("--version", action="version", version=f"ocppd {__version__}")
    return p


def preflight(cfg: config.Config) -> list[str]:
    """What the daemon would refuse at start beyond the schema, one line per problem naming
    its key: the meter maps and the [ocpp] table. ``--check-config`` and the daemon both run
    it, so a configuration the check passes does not fail at start for these reasons."""
    from ocppd.hw.metermap import load_meter_map
    from ocppd.ocpp.v16.keys import initial_problems, standard_keys

    where = cfg.source or "<config>"
    problems: list[str] = []
    for name, meter in cfg.meters.items():
        try:
            load_meter_map(meter.model)
        except ConfigError as exc:
            problems.extend(f"{where}: meters.{name}.model: {p}" for p in exc.problems)
    defs = standard_keys(connectors=max(1, len(cfg.connectors)))
    problems.extend(f"{where}: {p}" for p in initial_problems(defs, cfg.ocpp))
    return problems


def set_web_password(cfg: config.Config) -> int:
    """Store the scrypt hash of a new web password in ``web.password_file``."""
    import getpass

    from ocppd.web.auth import PasswordError, check_password, write_password_file

    path = cfg.web.password_file
    if sys.stdin.isatty():
        password = getpass.getpass("New web password: ")
        if getpass.getpass("Again: ") != password:
            print("ocppd: the passwords differ; nothing changed", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        check_password(password)
        write_password_file(path, password)
    except PasswordError as exc:
        print(f"ocppd: {exc}; nothing changed", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"ocppd: web.password_file: cannot write {path}: {exc.strerror or exc}",
              file=sys.stderr)
        return os.EX_CANTCREAT
    print(f"web password stored in {path} (scrypt hash); it applies to the next login")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        cfg = config.load(args.config)
        problems = preflight(cfg)
    except ConfigError as exc:
        problems = exc.problems
    if problems:
        for line in problems:
            print(line, file=sys.stderr)
        return os.EX_CONFIG
    if args.set_web_password:
        return set_web_password(cfg)
    if args.check_config:
        if not cfg.configured:
            print(f"{args.config}: OK, but not configured: set "
                  f"{' and '.join(config.IDENTITY_KEYS)}; until then ocppd starts no charger")
        else:
            print(f"{args.config}: OK")
        return 0
    from ocppd import app
    from ocppd.systemd import setup_logging

    setup_logging(cfg.logging.level, log_frames=cfg.logging.log_frames)
    log = logging.getLogger("ocppd")
    # From here on the log is the one channel: under systemd stderr is the journal too, so a
    # line both logged and printed would appear twice.
    try:
        return app.run(cfg)
    except ConfigError as exc:
        for line in exc.problems:
            log.error("%s", line)
        return exc.exit_code
    except HardwareError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:  # pragma: no cover - SIGINT is handled inside the loop
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
