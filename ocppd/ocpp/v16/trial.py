"""A change of the link's security settings on probation.

The Security Whitepaper (edition 3) asks the same of three changes: a raised SecurityProfile
(§2 and the key's description), a new client certificate from CertificateSigned (§3.2, "keep
the old certificate until the new one is used successfully") and, with
AdditionalRootCertificateCheck, a new Central System root (§3.3): each is tried on the next
connection, and the charge point goes back to what it had when it cannot connect with it.

The pattern, in one place for all three:
- ``start(undo)`` before the change takes effect: what is needed to undo it is written to the
  store first, so a restart during the trial resumes the trial (and a crash between the two
  writes leaves a trial that confirms at once);
- ``connected()``: the first connection made confirms the change, the undo is forgotten;
- ``connect_failed(reason)``: after ``attempts`` failed connections in a row the change is
  undone (``on_revert``) and the caller hands the link its previous settings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ocppd.storage import Store

log = logging.getLogger("ocppd.ocpp")

#: connection attempts a change gets before the charge point falls back
TRIAL_ATTEMPTS = 3


class LinkTrial:
    """One kind of change on probation; see the module docstring."""

    def __init__(
        self,
        *,
        store: Store,
        setting: str,
        what: str,
        on_confirm: Callable[[str], None],
        on_revert: Callable[[str, str], None],
        attempts: int = TRIAL_ATTEMPTS,
    ) -> None:
        self._store = store
        self.setting = setting  # store setting holding the undo while on trial
        self.what = what  # for the log: "security profile 3", "the new client certificate"
        self._on_confirm = on_confirm  # (undo)
        self._on_revert = on_revert  # (undo, reason)
        self._attempts = attempts
        self._failures = 0

    @property
    def undo(self) -> str | None:
        """What to go back to while a change is on trial, else None."""
        return self._store.get_setting(self.setting)

    def start(self, undo: str) -> None:
        self._store.set_setting(self.setting, undo)
        self._failures = 0

    def forget(self) -> None:
        """End the trial without confirming or undoing (the change was replaced)."""
        self._store.delete_setting(self.setting)
        self._failures = 0

    def connected(self) -> bool:
        """The link is up: a change on trial has proven itself. True when one was confirmed."""
        undo = self.undo
        if undo is None:
            return False
        self.forget()
        log.info("%s confirmed by a successful connection", self.what)
        self._on_confirm(undo)
        return True

    def connect_failed(self, reason: str) -> bool:
        """A connection attempt failed. True when this undid the change (the caller gives the
        link its previous settings)."""
        undo = self.undo
        if undo is None:
            return False
        self._failures += 1
        if self._failures < self._attempts:
            return False
        self.forget()
        log.warning("%s did not connect %d times (%s): going back", self.what, self._attempts,
                    reason)
        self._on_revert(undo, reason)
        return True


__all__ = ["TRIAL_ATTEMPTS", "LinkTrial"]
