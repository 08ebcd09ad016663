"""The charge point's own client certificate for security profile 3 (OCPP 1.6 Security
Whitepaper, edition 3: §3.2 "Update Charge Point certificate by request of Central System",
SignCertificate, CertificateSigned; ExtendedTriggerMessage SignChargePointCertificate).

Rules followed, and where:
- The key pair is made here, on the charge point (``request``): ECDSA P-256, written to a file
  of mode 0600 in the state directory, never sent anywhere; only the CSR leaves. The CSR's
  subject: organizationName from CpoName, commonName the charge point identity.
- CertificateSigned (``_signed``): Rejected, with an InvalidChargePointCertificate security
  event, when the chain is longer than CertificateSignedMaxChainSize (characters of the PEM
  text), is not PEM, does not chain up to a trusted Central System root (the installed
  CentralSystemRootCertificates and central_system.ca_file), is outside its validity period,
  does not certify the key of our last CSR, or names another charge point.
- The new certificate is used from the next connection. At security profile 3 the charge point
  reconnects with it after answering, on trial: the previous certificate stays until the new
  one has connected, and comes back when it does not (ocpp/v16/trial.py, the same fallback as
  a new SecurityProfile). Below profile 3 it is simply stored for when profile 3 is used.
- The expiry of the certificate in use is watched (``check_expiry``, at each accepted boot and
  every CHECK_EVERY_S): RENEW_BEFORE its end a new CSR is sent; WARN_BEFORE its end an
  InvalidChargePointCertificate security event says it is about to expire.

Files, in ``<state directory>/client-certificate/`` (mode 0700):
  client.pem  key and chain in use; trial.pem  key and chain on trial; csr.key  key of the
  last CSR. Key and chain share one file so that switching certificates is one rename.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ocppd.config import Config
from ocppd.ocpp.rpc import Reply
from ocppd.ocpp.v16.keys import Keys
from ocppd.ocpp.v16.trial import LinkTrial
from ocppd.security import SecurityEventType, security_event
from ocppd.storage import Store
from ocppd.tasks import TaskSet, wait_event

if TYPE_CHECKING:
    from cryptography import x509

log = logging.getLogger("ocppd.certificates")

DIR_NAME = "client-certificate"
IN_USE, ON_TRIAL, CSR_KEY = "client.pem", "trial.pem", "csr.key"
TRIAL_SETTING = "link.client_certificate_trial"
#: a new CSR this long before the certificate ends (at most a fifth of its whole lifetime, so a
#: short-lived certificate is not renewed the moment it arrives)
RENEW_BEFORE = timedelta(days=30)
#: a security event this long before the end: the operator has a week to act
WARN_BEFORE = timedelta(days=7)
CHECK_EVERY_S = 6 * 3600.0


class ClientCertificates:
    """SignCertificate, CertificateSigned and the certificate the link presents."""

    def __init__(
        self,
        *,
        cfg: Config,
        store: Store,
        keys: Keys,
        cp: Any,
        wall: Callable[[], datetime],
        roots: Callable[[], list[x509.Certificate]],
        profile: Callable[[], int],
        on_changed: Callable[[], None],
    ) -> None:
        self.cfg = cfg
        self.keys = keys
        self.cp = cp  # ChargePoint: send(), link, online, on_accepted
        self.wall = wall
        self._roots = roots  # the trusted Central System roots
        self._profile = profile  # the security profile in use
        self._on_changed = on_changed  # the link's settings must be rebuilt
        self.directory = cfg.storage.path.parent / DIR_NAME
        self.trial = LinkTrial(store=store, setting=TRIAL_SETTING,
                               what="the new client certificate", on_confirm=self._confirmed,
                               on_revert=self._reverted)
        self._tasks = TaskSet(log, "client certificate")
        self._csr: asyncio.Task[bool] | None = None
        self._warned_for: str | None = None  # the certificate the expiry event was raised for
        self._wake = asyncio.Event()
        cp.on_accepted.append(self._wake.set)

    def register(self, handlers: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]]) -> None:
        handlers["CertificateSigned"] = self._signed

    # --- what the link presents -------------------------------------------------------------------

    def files(self) -> Path | None:
        """The PEM file (key and chain) the link presents at profile 3; None: the configured
        central_system.client_cert_file and client_key_file."""
        trial, in_use = self.directory / ON_TRIAL, self.directory / IN_USE
        if self.trial.undo is not None and trial.is_file():
            return trial
        return in_use if in_use.is_file() else None

    def _in_use_pem(self) -> bytes | None:
        path = self.files() or self.cfg.central_system.client_cert_file
        if path is None:
            return None
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            log.error("client certificate %s unreadable: %s", path, exc)
            return None

    # --- SignCertificate --------------------------------------------------------------------------

    def request_soon(self) -> None:
        """Send a new CSR (ExtendedTriggerMessage SignChargePointCertificate, renewal); one at a
        time."""
        if self._csr is None or self._csr.done():
            self._csr = self._tasks.spawn(self.request())

    async def request(self) -> bool:
        """Make a new key and send its CSR; True when the Central System accepted it."""
        from ocppd import pki

        self._ensure_directory()
        key = pki.new_private_key()
        pki.write_secret_file(self.directory / CSR_KEY, pki.private_key_pem(key))
        csr = pki.make_csr(key, common_name=self.cfg.charge_point.id,
                           organization=self.keys.get("CpoName") or None)
        conf = await self.cp.send("SignCertificate", {"csr": csr})
        status = None if conf is None else conf.get("status")
        if status == "Accepted":
            log.info("certificate signing request sent and accepted; waiting for"
                     " CertificateSigned")
            return True
        log.warning("certificate signing request %s", "not delivered" if conf is None
                    else f"answered {status}")
        return False

    def _ensure_directory(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory.chmod(0o700)

    # --- CertificateSigned ------------------------------------------------------------------------

    async def _signed(self, p: dict[str, Any]) -> dict[str, Any] | Reply:
        text: str = p["certificateChain"]
        try:
            chain_pem, chain_info = self._check(text)
        except ValueError as exc:
            log.warning("CertificateSigned rejected: %s", exc)
            security_event(SecurityEventType.INVALID_CHARGE_POINT_CERTIFICATE, str(exc))
            return {"status": "Rejected"}
        key_pem = (self.directory / CSR_KEY).read_bytes()
        if self._profile() < 3:
            # not presented before profile 3: stored for then (that switch has its own trial)
            self._install(self.directory / IN_USE, key_pem + chain_pem)
            self.trial.forget()
            log.info("client certificate %s stored for security profile 3", chain_info)
            self._on_changed()
            return {"status": "Accepted"}
        self._install(self.directory / ON_TRIAL, key_pem + chain_pem)
        self.trial.start(chain_info)
        log.warning("client certificate %s accepted: reconnecting with it", chain_info)
        self._on_changed()
        link = self.cp.link

        async def reconnect() -> None:
            link.reconnect_now("new client certificate")

        return Reply({"status": "Accepted"}, then=reconnect)

    def _check(self, text: str) -> tuple[bytes, str]:
        """The chain as PEM and a description of its leaf; ValueError saying what is wrong."""
        from ocppd import pki

        limit = self.keys.get_int("CertificateSignedMaxChainSize")
        if len(text) > limit:
            raise ValueError(f"certificate chain of {len(text)} characters, more than"
                             f" CertificateSignedMaxChainSize {limit}")
        chain = pki.load_pem_chain(text)  # CertificateError is a ValueError
        pki.verify_chain(chain, self._roots(), self.wall())
        leaf = chain[0]
        try:
            csr_key = pki.load_private_key(self.directory / CSR_KEY)
        except pki.PrivateKeyError:
            raise ValueError("no certificate signing request of ours is waiting") from None
        if not pki.same_public_key(leaf, csr_key):
            raise ValueError("the certificate is not for the key of our last signing request")
        if pki.common_name(leaf) != self.cfg.charge_point.id:
            raise ValueError(f"the certificate names {pki.common_name(leaf)!r}, not this"
                             f" charge point {self.cfg.charge_point.id!r}")
        pem = "".join(pki.to_pem(c) for c in chain).encode("ascii")
        return pem, f"serial {format(leaf.serial_number, 'x')} valid until" \
                    f" {pki.not_after(leaf).date().isoformat()}"

    def _install(self, path: Path, data: bytes) -> None:
        from ocppd import pki

        self._ensure_directory()
        pki.write_secret_file(path, data)
        with contextlib.suppress(FileNotFoundError):
            (self.directory / CSR_KEY).unlink()  # its certificate came: the key moved on
        self._warned_for = None

    def _confirmed(self, info: str) -> None:
        try:
            (self.directory / ON_TRIAL).replace(self.directory / IN_USE)
        except FileNotFoundError:  # removed by hand meanwhile: what is in use stays
            log.error("client certificate on trial vanished; keeping the one in use")
            return
        security_event(SecurityEventType.RECONFIGURATION_OF_SECURITY_PARAMETERS,
                       f"new client certificate in use: {info}")
        self._on_changed()

    def _reverted(self, info: str, reason: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.directory / ON_TRIAL).unlink()
        security_event(SecurityEventType.RECONFIGURATION_OF_SECURITY_PARAMETERS,
                       f"new client certificate ({info}) did not connect ({reason});"
                       " back to the previous one")
        self._on_changed()

    # --- expiry -----------------------------------------------------------------------------------

    def check_expiry(self) -> None:
        """Renew or warn about the certificate in use, as its end comes near (profile 3)."""
        if self._profile() < 3 or self.trial.undo is not None:
            return
        pem = self._in_use_pem()
        if pem is None:
            return
        from ocppd import pki

        try:
            leaf = pki.load_pem_chain(pem)[0]
        except pki.CertificateError as exc:
            log.error("client certificate unreadable: %s", exc)
            return
        now, end = self.wall(), pki.not_after(leaf)
        lifetime = end - pki.not_before(leaf)
        if end - now <= min(RENEW_BEFORE, lifetime / 5):
            log.warning("client certificate ends %s: requesting a new one", end.isoformat())
            self.request_soon()
        fp = pki.fingerprint(leaf)
        if end - now <= WARN_BEFORE and self._warned_for != fp:
            self._warned_for = fp
            security_event(SecurityEventType.INVALID_CHARGE_POINT_CERTIFICATE,
                           f"client certificate expires {end.isoformat()}")

    async def run(self) -> None:
        """Watch the expiry, for ever (cancelled at shutdown)."""
        try:
            while True:
                self._wake.clear()
                if self.cp.online:
                    self.check_expiry()
                await wait_event(self._wake, CHECK_EVERY_S)
        finally:
            await self._tasks.cancel_all()


__all__ = ["ClientCertificates"]
