"""What the link is told (LinkSettings) and what it tells (LinkStats); shared by its parts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkSettings:
    """How to reach the Central System and how to behave on the connection."""

    url: str  # ws:// or wss:// base URL; "/" + percent-encoded charge point id is appended
    charge_point_id: str
    security_profile: int = 0  # Security Whitepaper §2: 0..3
    # AuthorizationKey, used as-is as the Basic password (user = charge point id); a callable is
    # asked on every connect so a ChangeConfiguration takes effect on the next one.
    password: Callable[[], str | None] | str | None = None
    ca_file: Path | str | None = None  # None: the system store
    client_cert_file: Path | str | None = None
    client_key_file: Path | str | None = None
    insecure_skip_tls_verify: bool = False
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 300.0
    stable_after_s: float = 60.0
    response_timeout_s: float = 30.0
    connect_timeout_s: float = 30.0
    max_frame_bytes: int = 1_048_576
    ping_interval_s: float = 60.0  # WebSocketPingInterval; 0 = off
    log_frames: bool = False

    def endpoint(self) -> str:
        return build_url(self.url, self.charge_point_id)

    def password_value(self) -> str | None:
        return self.password() if callable(self.password) else self.password

    def __repr__(self) -> str:  # never print the password
        return f"LinkSettings(url={self.url!r}, charge_point_id={self.charge_point_id!r}, " \
               f"security_profile={self.security_profile})"


@dataclass(slots=True)
class LinkStats:
    """Counters and state of the link, for ``ocppctl status``."""

    frames_in: int = 0
    frames_out: int = 0
    outgoing_invalid: int = 0  # our own payloads that failed validation (bugs), never sent
    incoming_errors: int = 0  # broken frames, invalid CALLs and responses, unknown ids
    connects: int = 0
    reconnects: int = 0  # connections made after the first
    last_error: str | None = None
    connected_since: datetime | None = None


def build_url(base: str, charge_point_id: str) -> str:
    """OCPP-J §3.1.1: the charge point id is the last path segment, percent-encoded."""
    return base.rstrip("/") + "/" + quote(charge_point_id, safe="")


__all__ = ["LinkSettings", "LinkStats", "build_url"]
