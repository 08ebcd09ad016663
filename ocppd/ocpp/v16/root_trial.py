"""AdditionalRootCertificateCheck (OCPP 1.6 Security Whitepaper, edition 3, configuration keys
and InstallCertificate): with it true, a new CentralSystemRootCertificate must be issued by the
root it replaces, and replaces it only once a connection to the Central System was verified
with the new root alone; when that fails, the old root is trusted again and the new one is
dropped. The old root is the "temporary fallback certificate" of the whitepaper.

The trial itself is the common one (ocpp/v16/trial.py); this module says what is trusted while
it lasts (``trusted``) and what confirming or undoing it does to the certificate store. No
cryptography here: certificates are told apart by their fingerprints, so the link's settings
can be built at start-up without loading the X.509 code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ocppd.ocpp.v16.trial import LinkTrial
from ocppd.security import SecurityEventType, security_event
from ocppd.storage import Store
from ocppd.storage.certs import StoredCertificate

log = logging.getLogger("ocppd.certificates")

USE = "central_system_root"
TRIAL_SETTING = "link.central_system_root_trial"


class RootTrial:
    """A new Central System root on trial; the store holds it and the one it replaces."""

    def __init__(self, *, store: Store, on_changed: Callable[[], None]) -> None:
        self._store = store
        self._on_changed = on_changed  # the link's trust anchors must be rebuilt
        self.trial = LinkTrial(store=store, setting=TRIAL_SETTING,
                               what="the new Central System root certificate",
                               on_confirm=self._confirmed, on_revert=self._reverted)

    @property
    def pending(self) -> str | None:
        """The fingerprint of the root on trial, else None."""
        return self.trial.undo

    def trusted(self, roots: list[StoredCertificate]) -> list[StoredCertificate]:
        """Of the installed roots, those the link trusts now: the new one alone while on trial,
        so that a connection proves it."""
        pending = self.pending
        if pending is None:
            return roots
        new = [r for r in roots if r.fingerprint == pending]
        return new or roots  # deleted meanwhile: the trial has nothing left to prove

    def start(self, fingerprint: str) -> None:
        self.trial.start(fingerprint)
        self._on_changed()

    def _confirmed(self, fingerprint: str) -> None:
        old = [c for c in self._store.certificates(USE) if c.fingerprint != fingerprint]
        for c in old:
            self._store.certificate_delete(c.id)
        security_event(SecurityEventType.RECONFIGURATION_OF_SECURITY_PARAMETERS,
                       f"new CentralSystemRootCertificate in use (sha256 {fingerprint[:16]}),"
                       f" {len(old)} previous removed")
        self._on_changed()

    def _reverted(self, fingerprint: str, reason: str) -> None:
        for c in self._store.certificates(USE):
            if c.fingerprint == fingerprint:
                self._store.certificate_delete(c.id)
        security_event(SecurityEventType.RECONFIGURATION_OF_SECURITY_PARAMETERS,
                       f"new CentralSystemRootCertificate (sha256 {fingerprint[:16]}) did not"
                       f" connect ({reason}); back to the previous root")
        self._on_changed()


__all__ = ["RootTrial"]
