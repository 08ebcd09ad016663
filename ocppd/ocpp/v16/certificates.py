"""OCPP 1.6 Security Whitepaper, certificate management: InstallCertificate, DeleteCertificate
and GetInstalledCertificateIds for CentralSystemRootCertificate and ManufacturerRootCertificate.

Rules followed:
- InstallCertificate: Rejected for what is not a CA certificate in its validity period (a root
  must also verify its own signature), and when the store already holds
  CertificateStoreMaxLength certificates; Failed when it cannot be stored; the same certificate
  twice is Accepted once stored. The store survives restarts (storage/certs.py).
- GetInstalledCertificateIds: the CertificateHashData (SHA-256, OCSP CertID style) of each
  certificate of the type asked for; NotFound when there is none.
- DeleteCertificate: NotFound when no certificate has that hash data; Failed for the last
  CentralSystemRootCertificate while TLS (security profile 2 or 3) is in use: without it the
  next connection could not verify the Central System.
- Every change of the trust anchors is a ReconfigurationOfSecurityParameters security event.
- Installed CentralSystemRootCertificates are what the link trusts from the next connection on
  (app.py ``_central_system_ca``). With AdditionalRootCertificateCheck false (the default) a
  new root is added to the trusted ones at once. With it true (set in /etc/ocppd.toml; the key
  is read-only) a new root is Rejected unless the installed root issued it, and under TLS it
  replaces that root only after a connection verified with it alone, else the old root comes
  back (root_trial.py; the charge point reconnects after answering to find out).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from ocppd import pki
from ocppd.config import Config
from ocppd.errors import StorageError
from ocppd.ocpp.rpc import Reply
from ocppd.ocpp.v16.keys import Keys
from ocppd.ocpp.v16.root_trial import RootTrial
from ocppd.security import SecurityEventType, security_event
from ocppd.storage import Store

log = logging.getLogger("ocppd.certificates")

#: OCPP CertificateUseEnumType -> the store's use
USE = {"CentralSystemRootCertificate": "central_system_root",
       "ManufacturerRootCertificate": "manufacturer_root"}
TYPE_OF = {v: k for k, v in USE.items()}


def hash_data_payload(h: pki.HashData) -> dict[str, str]:
    return {"hashAlgorithm": h.hash_algorithm, "issuerNameHash": h.issuer_name_hash,
            "issuerKeyHash": h.issuer_key_hash, "serialNumber": h.serial_number}


def trusted_roots(store: Store, use: str) -> list[Any]:
    """The installed certificates of ``use``, parsed (an unreadable one is skipped, logged)."""
    out = []
    for c in store.certificates(use):
        try:
            out.append(pki.load_pem_chain(c.pem)[0])
        except pki.CertificateError as exc:
            log.error("installed certificate #%d unreadable, ignored: %s", c.id, exc)
    return out


class CertificateService:
    def __init__(self, *, cfg: Config, store: Store, keys: Keys,
                 wall: Callable[[], datetime], root_trial: RootTrial | None = None,
                 profile: Callable[[], int] | None = None,
                 reconnect: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.keys = keys
        self.wall = wall
        self.root_trial = root_trial  # AdditionalRootCertificateCheck
        self._profile = profile or (lambda: cfg.central_system.security_profile)
        self._reconnect = reconnect
        #: called after a CentralSystemRootCertificate was installed or deleted
        self.on_central_system_roots_changed: list[Callable[[], None]] = []

    def register(self, handlers: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]]) -> None:
        handlers["InstallCertificate"] = self._install
        handlers["GetInstalledCertificateIds"] = self._get_ids
        handlers["DeleteCertificate"] = self._delete

    async def _install(self, p: dict[str, Any]) -> dict[str, Any] | Reply:
        kind, use = p["certificateType"], USE[p["certificateType"]]
        try:
            cert = pki.load_pem_chain(p["certificate"])[0]
            pki.check_root(cert, self.wall())
        except pki.CertificateError as exc:
            log.warning("InstallCertificate %s rejected: %s", kind, exc)
            return {"status": "Rejected"}
        fp = pki.fingerprint(cert)
        known = any(c.fingerprint == fp for c in self.store.certificates(use))
        if use == "central_system_root" and not known and self._root_check():
            return self._install_replacing_root(cert, fp)
        limit = self.keys.get_int("CertificateStoreMaxLength")
        if not known and self.store.certificate_count() >= limit:
            log.warning("InstallCertificate %s rejected: the store holds its maximum of %d"
                        " (CertificateStoreMaxLength)", kind, limit)
            return {"status": "Rejected"}
        try:
            self.store.certificate_put(use=use, fingerprint=fp, pem=pki.to_pem(cert),
                                       at=self.wall())
        except StorageError as exc:
            log.error("InstallCertificate %s failed: %s", kind, exc)
            return {"status": "Failed"}
        if not known:
            log.info("installed %s %s (sha256 %s)", kind, cert.subject.rfc4514_string(), fp)
            security_event(SecurityEventType.RECONFIGURATION_OF_SECURITY_PARAMETERS,
                           f"{kind} installed: {cert.subject.rfc4514_string()}")
            self._changed(use)
        return {"status": "Accepted"}

    def _root_check(self) -> bool:
        return self.root_trial is not None and self.keys.get_bool("AdditionalRootCertificateCheck")

    def _install_replacing_root(self, cert: Any, fp: str) -> dict[str, Any] | Reply:
        """AdditionalRootCertificateCheck: the new root must be issued by the installed one,
        one replacement at a time, and is tried before the old one goes."""
        assert self.root_trial is not None
        kind = "CentralSystemRootCertificate"
        if self.root_trial.pending is not None:
            log.warning("InstallCertificate %s rejected: another new root is still on trial",
                        kind)
            return {"status": "Rejected"}
        old = trusted_roots(self.store, "central_system_root")
        if old and not any(pki.issued_by(cert, o) for o in old):
            log.warning("InstallCertificate %s rejected: not issued by the installed root"
                        " (AdditionalRootCertificateCheck)", kind)
            security_event(SecurityEventType.INVALID_CENTRAL_SYSTEM_CERTIFICATE,
                           f"new {kind} {cert.subject.rfc4514_string()} not issued by the"
                           " installed root")
            return {"status": "Rejected"}
        try:
            self.store.certificate_put(use="central_system_root", fingerprint=fp,
                                       pem=pki.to_pem(cert), at=self.wall())
        except StorageError as exc:
            log.error("InstallCertificate %s failed: %s", kind, exc)
            return {"status": "Failed"}
        subject = cert.subject.rfc4514_string()
        if not old or self._profile() < 2 or self._reconnect is None:
            # nothing to fall back to, or no TLS to prove it with: it replaces the old at once
            for c in self.store.certificates("central_system_root"):
                if c.fingerprint != fp:
                    self.store.certificate_delete(c.id)
            security_event(SecurityEventType.RECONFIGURATION_OF_SECURITY_PARAMETERS,
                           f"{kind} installed: {subject}")
            self._changed("central_system_root")
            return {"status": "Accepted"}
        log.warning("new %s %s installed: reconnecting to try it before the old one goes",
                    kind, subject)
        self.root_trial.start(fp)
        reconnect = self._reconnect

        async def try_it() -> None:
            reconnect("new Central System root certificate")

        return Reply({"status": "Accepted"}, then=try_it)

    async def _get_ids(self, p: dict[str, Any]) -> dict[str, Any]:
        roots = trusted_roots(self.store, USE[p["certificateType"]])
        if not roots:
            return {"status": "NotFound"}
        return {"status": "Accepted",
                "certificateHashData": [hash_data_payload(pki.hash_data(c)) for c in roots]}

    async def _delete(self, p: dict[str, Any]) -> dict[str, Any]:
        d = p["certificateHashData"]
        want = pki.HashData(hash_algorithm=d["hashAlgorithm"],
                            issuer_name_hash=d["issuerNameHash"],
                            issuer_key_hash=d["issuerKeyHash"], serial_number=d["serialNumber"])
        for stored in self.store.certificates():
            try:
                cert = pki.load_pem_chain(stored.pem)[0]
            except pki.CertificateError:
                continue
            if not pki.same_hash_data(pki.hash_data(cert, algorithm=want.hash_algorithm), want):
                continue
            if stored.use == "central_system_root" and self._last_root_in_use():
                log.warning("DeleteCertificate refused: the last CentralSystemRootCertificate,"
                            " needed to verify the Central System (security profile >= 2)")
                return {"status": "Failed"}
            try:
                self.store.certificate_delete(stored.id)
            except StorageError as exc:
                log.error("DeleteCertificate failed: %s", exc)
                return {"status": "Failed"}
            kind = TYPE_OF[stored.use]
            log.info("deleted %s %s", kind, cert.subject.rfc4514_string())
            security_event(SecurityEventType.RECONFIGURATION_OF_SECURITY_PARAMETERS,
                           f"{kind} deleted: {cert.subject.rfc4514_string()}")
            self._changed(stored.use)
            return {"status": "Accepted"}
        return {"status": "NotFound"}

    def _changed(self, use: str) -> None:
        if use == "central_system_root":
            for hook in self.on_central_system_roots_changed:
                hook()

    def _last_root_in_use(self) -> bool:
        profile = max(self.cfg.central_system.security_profile,
                      self.keys.get_int("SecurityProfile"))
        return profile >= 2 and len(self.store.certificates("central_system_root")) <= 1
