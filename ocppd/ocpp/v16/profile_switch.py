"""The SecurityProfile configuration key (OCPP 1.6 Security Whitepaper, edition 3, §2 and §7).

The rules, and where each one is kept:
- A ChangeConfiguration of SecurityProfile is Rejected when the new profile's prerequisites are
  missing (``missing_prerequisites``): profile 1 a password (AuthorizationKey); profile 2 a
  wss:// URL, a Central System root certificate (``ca_file``) and a password; profile 3 a
  wss:// URL, the root certificate and a client certificate with its key.
- It is Rejected for a value lower than the profile in use: never downgrade (TC_084).
- Otherwise it is Accepted, and the charge point reconnects with the new profile (TC_083). The
  previous profile is written to the store first; when the new one does not connect within
  ``TRIAL_ATTEMPTS`` attempts, the charge point goes back to it (ocpp/v16/trial.py). A restart
  during the trial resumes the trial, so a profile that cannot connect never cuts the charger
  off for good.
- Either way a security event is raised (``on_event``).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from ocppd.ocpp.link import LinkSettings
from ocppd.ocpp.v16.keys import ChangeResult, Keys
from ocppd.ocpp.v16.trial import TRIAL_ATTEMPTS, LinkTrial
from ocppd.storage import Store

log = logging.getLogger("ocppd.ocpp")

KEY = "SecurityProfile"
#: store setting: the profile to go back to while a new one is on trial
FALLBACK_SETTING = "link.security_profile_fallback"
#: the whitepaper's event type for a change of security settings (security events list)
EVENT_RECONFIGURED = "ReconfigurationOfSecurityParameters"


def _readable(path: Path | str | None) -> bool:
    if not path:
        return False
    try:
        with open(path, "rb"):
            return True
    except OSError:
        return False


def missing_prerequisites(profile: int, s: LinkSettings) -> list[str]:
    """What profile ``profile`` needs that settings ``s`` lack (empty: it may be used)."""
    missing: list[str] = []
    if profile in (1, 2) and not s.password_value():
        missing.append("a password (AuthorizationKey or central_system.password)")
    if profile >= 2:
        if urlsplit(s.url).scheme.lower() != "wss":
            missing.append("a wss:// URL (central_system.url)")
        if not _readable(s.ca_file):
            missing.append("a Central System root certificate (central_system.ca_file)")
    if profile >= 3:
        # the key may share the certificate's file (a certificate from CertificateSigned)
        if not (_readable(s.client_cert_file)
                and (s.client_key_file is None or _readable(s.client_key_file))):
            missing.append("a client certificate and key (central_system.client_cert_file,"
                           " client_key_file, or one from CertificateSigned)")
        else:
            try:  # a certificate that does not match its key would never connect
                ssl.create_default_context().load_cert_chain(
                    str(s.client_cert_file),
                    str(s.client_key_file) if s.client_key_file else None)
            except (OSError, ssl.SSLError) as exc:
                missing.append(f"a usable client certificate ({exc})")
    return missing


class SecurityProfileSwitch:
    """Guards, applies and, when it fails, undoes a change of SecurityProfile (the trial and
    its fallback: ``ocppd.ocpp.v16.trial``)."""

    def __init__(
        self,
        *,
        keys: Keys,
        store: Store,
        base_profile: int,
        settings_for: Callable[[int], LinkSettings],
        on_event: Callable[[str, str], None],
        attempts: int = TRIAL_ATTEMPTS,
    ) -> None:
        self._keys = keys
        self._base = base_profile  # [central_system] security_profile: the floor
        self._settings_for = settings_for
        self._on_event = on_event
        self.trial = LinkTrial(store=store, setting=FALLBACK_SETTING,
                               what="the new security profile", on_confirm=self._confirmed,
                               on_revert=self._reverted, attempts=attempts)
        keys.guards[KEY] = self.guard
        trial = self.trial_from
        if trial is not None:
            log.warning("security profile %d still on trial (the previous run ended before it"
                        " connected); back to %d if it does not connect", self.current, trial)

    @property
    def current(self) -> int:
        """The profile in use: the key, never below the configured one."""
        return max(self._base, self._keys.get_int(KEY))

    @property
    def trial_from(self) -> int | None:
        """The profile to fall back to while a new one is on trial, else None."""
        text = self.trial.undo
        return int(text) if text is not None else None

    def guard(self, value: str) -> ChangeResult | None:
        """Keys guard for SecurityProfile: REJECTED, or None to let the change through."""
        new, cur = int(value), self.current
        if new < cur:
            log.warning("SecurityProfile %d refused: lower than the profile in use (%d)", new, cur)
            return ChangeResult.REJECTED
        if new == cur:
            return None
        missing = missing_prerequisites(new, self._settings_for(new))
        if missing:
            log.warning("SecurityProfile %d refused: it needs %s", new, "; ".join(missing))
            return ChangeResult.REJECTED
        # Written before the key, so a crash in between leaves a trial that confirms at once.
        self.trial.start(str(cur))
        log.warning("SecurityProfile %d accepted (was %d): reconnecting with it", new, cur)
        return None

    def connected(self) -> None:
        """The link is up: a profile on trial has proven itself."""
        self.trial.connected()

    def connect_failed(self, reason: str) -> bool:
        """A connection attempt failed. True when this made the switch fall back (the caller
        gives the link the previous profile's settings)."""
        return self.trial.connect_failed(reason)

    def _confirmed(self, was: str) -> None:
        if int(was) != self.current:
            self._on_event(EVENT_RECONFIGURED, f"SecurityProfile {self.current} in use (was {was})")

    def _reverted(self, was: str, reason: str) -> None:
        new = self.current
        self._keys.restore(KEY, was)
        self._on_event(EVENT_RECONFIGURED,
                       f"SecurityProfile {new} did not connect ({reason}); back to {was}")


__all__ = ["SecurityProfileSwitch", "missing_prerequisites"]
