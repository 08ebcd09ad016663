"""Security events: the one function every part of ocppd calls when something security-relevant
happens, ``security_event(kind, tech_info)``.

The event types are those of the OCPP 1.6 Security Whitepaper (edition 3, §"Security events",
the same list as OCPP 2.0.1 Appendix "Security Events"), with its Critical column: critical
events are also sent to the Central System (SecurityEventNotification), every event is kept in
the persistent security log (storage/seclog.py).

Who records them is decided once, by app.py, with ``attach()``; events that happen before that
(or in a unit test without a daemon) are kept in a small buffer and handed over at ``attach()``,
so none is lost to start-up order. The caller never waits and never sees an error: a security
event must not break the operation that observed it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum

from ocppd import privacy

log = logging.getLogger("ocppd.security")

TECH_INFO_MAX = 255  # SecurityEventNotification.techInfo is a CiString255
PENDING_MAX = 100  # events kept in memory until a recorder is attached


class SecurityEventType(StrEnum):
    """Security Whitepaper ed. 3, security events (the spelling is the wire spelling)."""

    FIRMWARE_UPDATED = "FirmwareUpdated"
    FAILED_TO_AUTHENTICATE_AT_CENTRAL_SYSTEM = "FailedToAuthenticateAtCentralSystem"
    CENTRAL_SYSTEM_FAILED_TO_AUTHENTICATE = "CentralSystemFailedToAuthenticate"
    SETTING_SYSTEM_TIME = "SettingSystemTime"
    STARTUP_OF_THE_DEVICE = "StartupOfTheDevice"
    RESET_OR_REBOOT = "ResetOrReboot"
    SECURITY_LOG_WAS_CLEARED = "SecurityLogWasCleared"
    RECONFIGURATION_OF_SECURITY_PARAMETERS = "ReconfigurationOfSecurityParameters"
    MEMORY_EXHAUSTION = "MemoryExhaustion"
    INVALID_MESSAGES = "InvalidMessages"
    ATTEMPTED_REPLAY_ATTACKS = "AttemptedReplayAttacks"
    TAMPER_DETECTION_ACTIVATED = "TamperDetectionActivated"
    INVALID_FIRMWARE_SIGNATURE = "InvalidFirmwareSignature"
    INVALID_FIRMWARE_SIGNING_CERTIFICATE = "InvalidFirmwareSigningCertificate"
    INVALID_CENTRAL_SYSTEM_CERTIFICATE = "InvalidCentralSystemCertificate"
    INVALID_CHARGE_POINT_CERTIFICATE = "InvalidChargePointCertificate"
    INVALID_TLS_VERSION = "InvalidTLSVersion"
    INVALID_TLS_CIPHER_SUITE = "InvalidTLSCipherSuite"


# The whitepaper's "Critical" column: these are pushed to the Central System.
CRITICAL: frozenset[SecurityEventType] = frozenset({
    SecurityEventType.FIRMWARE_UPDATED,
    SecurityEventType.SETTING_SYSTEM_TIME,
    SecurityEventType.STARTUP_OF_THE_DEVICE,
    SecurityEventType.RESET_OR_REBOOT,
    SecurityEventType.SECURITY_LOG_WAS_CLEARED,
    SecurityEventType.MEMORY_EXHAUSTION,
    SecurityEventType.TAMPER_DETECTION_ACTIVATED,
})

#: recorder(kind, tech_info, at): what app.py attaches (the security log and its sender)
Recorder = Callable[[SecurityEventType, str | None, datetime], None]

_recorder: Recorder | None = None
_pending: deque[tuple[SecurityEventType, str | None, datetime]] = deque(maxlen=PENDING_MAX)


def security_event(kind: SecurityEventType | str, tech_info: str | None = None) -> None:
    """Record a security event; ``tech_info`` is free text for the operator (secrets and idTags
    in it are scrubbed, it is cut to 255 characters). Never raises."""
    try:
        kind = SecurityEventType(kind)
    except ValueError:
        log.error("not a security event type: %r (event dropped)", kind)
        return
    info = None
    if tech_info:
        info = privacy.scrub(tech_info)
        if len(info) > TECH_INFO_MAX:
            info = info[: TECH_INFO_MAX - 3] + "..."
    at = datetime.now(UTC)
    # INFO: the part that observed the event logs it at its own level; this line ties the two
    log.info("security event %s%s", kind.value, f": {info}" if info else "")
    if _recorder is None:
        _pending.append((kind, info, at))
        return
    try:
        _recorder(kind, info, at)
    except Exception:  # noqa: BLE001 - the observer's operation must go on
        log.exception("security event %s could not be recorded", kind.value)


def is_critical(kind: SecurityEventType) -> bool:
    return kind in CRITICAL


def attach(recorder: Recorder) -> None:
    """Send every later event to ``recorder``, after those that happened before this call."""
    global _recorder
    _recorder = recorder
    while _pending:
        kind, info, at = _pending.popleft()
        try:
            recorder(kind, info, at)
        except Exception:  # noqa: BLE001
            log.exception("security event %s could not be recorded", kind.value)


def detach() -> None:
    """Stop recording (daemon shutdown); later events wait in the buffer again."""
    global _recorder
    _recorder = None


def clear_pending() -> None:
    """Forget buffered events (tests)."""
    _pending.clear()
