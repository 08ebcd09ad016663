"""The certificate store (Security Whitepaper: InstallCertificate, DeleteCertificate,
GetInstalledCertificateIds): PEM texts by use, kept across restarts. What a certificate is and
whether it may be installed is decided above (ocppd.pki, ocpp/v16/certificates.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ocppd.storage.db import Database
from ocppd.storage.records import dt_from_text, dt_to_text

USES = ("central_system_root", "manufacturer_root")


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredCertificate:
    id: int
    use: str
    fingerprint: str
    pem: str
    installed_at: datetime


class CertificatesMixin:
    _db: Database

    def certificates(self, use: str | None = None) -> list[StoredCertificate]:
        rows = self._db.rows("read certificates",
                             "SELECT id, use, fingerprint, pem, installed_at FROM certificates"
                             " WHERE ?1 IS NULL OR use = ?1 ORDER BY id", (use,))
        return [StoredCertificate(id=r[0], use=r[1], fingerprint=r[2], pem=r[3],
                                  installed_at=dt_from_text(r[4])) for r in rows]

    def certificate_count(self) -> int:
        row = self._db.one("count certificates", "SELECT count(*) FROM certificates")
        assert row is not None
        return int(row[0])

    def certificate_put(self, *, use: str, fingerprint: str, pem: str, at: datetime) -> bool:
        """Store a certificate; False when the same one was already there for that use."""
        if use not in USES:
            raise ValueError(f"certificate use must be one of {USES}, not {use!r}")
        with self._db.write("install a certificate"):
            cur = self._db.exec(
                "INSERT OR IGNORE INTO certificates(use, fingerprint, pem, installed_at)"
                " VALUES (?, ?, ?, ?)", (use, fingerprint, pem, dt_to_text(at)))
            return cur.rowcount == 1

    def certificate_delete(self, cert_id: int) -> None:
        with self._db.write("delete a certificate"):
            self._db.exec("DELETE FROM certificates WHERE id = ?", (cert_id,))
