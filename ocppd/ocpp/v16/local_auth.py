"""The Local Auth List Management profile (OCPP 1.6 §5.10, §5.15, §3.5)."""

from __future__ import annotations

import logging
from typing import Any

from ocppd.ocpp.v16 import mapping
from ocppd.ocpp.v16.cpbase import ChargePointBase
from ocppd.storage import AuthEntry

log = logging.getLogger("ocppd.ocpp")


class LocalAuthMixin(ChargePointBase):
    async def _get_local_list_version(self, p: dict[str, Any]) -> dict[str, Any]:
        if not self.keys.get_bool("LocalAuthListEnabled"):
            return {"listVersion": -1}
        return {
            "listVersion": self.store.local_list_version() if self.store.local_list_count() else 0
        }

    async def _send_local_list(self, p: dict[str, Any]) -> dict[str, Any]:
        if not self.keys.get_bool("LocalAuthListEnabled"):
            return {"status": "NotSupported"}
        version, full = int(p["listVersion"]), p["updateType"] == "Full"
        items = p.get("localAuthorizationList", [])
        if len(items) > self.keys.get_int("SendLocalListMaxLength"):
            return {"status": "Failed"}
        if not full and version <= self.store.local_list_version():
            return {"status": "VersionMismatch"}
        upserts, deletes = [], []
        for item in items:
            info = item.get("idTagInfo")
            if info is None:
                deletes.append(item["idTag"])
                continue
            cred = mapping.credential(info)
            upserts.append(
                AuthEntry(
                    id_tag=item["idTag"],
                    status=cred.status.value,
                    expiry=cred.expiry,
                    parent_id_tag=cred.parent_id_tag,
                )
            )
        max_entries = self.keys.get_int("LocalAuthListMaxLength")
        try:
            if full:
                stored = self.store.local_list_replace(version, upserts, max_entries=max_entries)
            else:
                stored = self.store.local_list_update(
                    version, upserts, deletes, max_entries=max_entries
                )
            if not stored:
                return {"status": "Failed"}
        except Exception:  # noqa: BLE001 - a storage failure is reported as Failed
            log.exception("SendLocalList could not be stored")
            return {"status": "Failed"}
        return {"status": "Accepted"}
