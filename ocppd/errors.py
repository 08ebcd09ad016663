"""The error hierarchy. Every error ocppd raises on purpose derives from OcppdError."""

from __future__ import annotations

import os


class OcppdError(Exception):
    """Root of all errors ocppd raises on purpose."""


class ConfigError(OcppdError, ValueError):
    """A configuration problem. ``problems`` holds one line per problem."""

    exit_code = os.EX_CONFIG  # 78: systemd's RestartPreventExitStatus stops a restart loop

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class StorageError(OcppdError):
    """The persistent store cannot be opened, read or written (corrupt file, full disk, ...)."""


class HardwareError(OcppdError):
    """A hardware device cannot be set up or does not answer."""

    # 69 (EX_UNAVAILABLE): a device or the library to drive it is missing at start. The unit
    # lists it in RestartPreventExitStatus: restarting cannot install a library.
    exit_code = os.EX_UNAVAILABLE


class MeterError(HardwareError):
    """An energy meter gave no reading or an implausible one."""
