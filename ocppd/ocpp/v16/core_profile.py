"""The Core profile's commands from the Central System (OCPP 1.6 §5): availability,
configuration, cache, data transfer, remote start and stop, reset, unlock."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ocppd import security
from ocppd.core.model import StopReason
from ocppd.errors import StorageError
from ocppd.ocpp.rpc import Reply
from ocppd.ocpp.v16 import mapping
from ocppd.ocpp.v16.cpbase import ChargePointBase, Registration
from ocppd.ocpp.v16.keys import ChangeResult

log = logging.getLogger("ocppd.ocpp")


async def _call_soon(fn: Callable[[str], None], arg: str) -> None:
    fn(arg)


class CoreProfileMixin(ChargePointBase):
    async def _change_availability(self, p: dict[str, Any]) -> dict[str, Any]:
        operative = p["type"] == "Operative"
        result = self.station.change_availability(int(p["connectorId"]), operative)
        return {"status": result.capitalize()}

    async def _change_configuration(self, p: dict[str, Any]) -> dict[str, Any] | Reply:
        self._reconnect_reason = None
        self._in_change = True
        try:
            result = self.keys.change(p["key"], p["value"])
        finally:
            self._in_change = False
        if result in (ChangeResult.ACCEPTED, ChangeResult.REBOOT_REQUIRED):
            self.station.retime()
        reason, self._reconnect_reason = self._reconnect_reason, None
        if reason is not None:
            # Whitepaper (TC_073, TC_083): the answer goes out on the old connection first
            link = self.link
            return Reply({"status": result.value},
                         then=lambda: _call_soon(link.reconnect_now, reason))
        return {"status": result.value}

    def request_reconnect(self, reason: str) -> None:
        """Reconnect for a changed key: after the ChangeConfiguration answer if one is being
        handled, else at once (ocppctl config set)."""
        if self._in_change:
            self._reconnect_reason = reason
        else:
            self.link.reconnect_now(reason)

    def security_event(self, event_type: str, tech_info: str) -> None:
        """A security event (Security Whitepaper, security events list): logged at WARNING and
        kept in the store's event log. The one place that raises them, so that sending a
        SecurityEventNotification (queued like transaction messages) is wired in here."""
        log.warning("security event %s: %s", event_type, tech_info)
        security.security_event(event_type, tech_info)  # the security log, sent if critical
        try:
            self.store.log_event(self.wall(), "security_event", f"{event_type}: {tech_info}")
        except StorageError as exc:
            log.error("security event not stored: %s", exc)

    async def _clear_cache(self, p: dict[str, Any]) -> dict[str, Any]:
        self.store.cache_clear()
        return {"status": "Accepted"}

    async def _data_transfer(self, p: dict[str, Any]) -> dict[str, Any]:
        if p["vendorId"] not in self.data_transfer and self.load_plugins is not None:
            load, self.load_plugins = self.load_plugins, None
            load()
        vendor = self.data_transfer.get(p["vendorId"])
        if vendor is None:
            return {"status": "UnknownVendorId"}
        handler = vendor.get(p.get("messageId")) or vendor.get(None)
        if handler is None:
            return {"status": "UnknownMessageId"}
        status, data = await handler(p.get("messageId"), p.get("data"))
        out: dict[str, Any] = {"status": status}
        if data is not None:
            out["data"] = data
        return out

    async def _get_configuration(self, p: dict[str, Any]) -> dict[str, Any]:
        found, unknown = self.keys.lookup(p.get("key"))
        out: dict[str, Any] = {
            "configurationKey": [
                {"key": d.name, "readonly": d.access == "R", "value": value} for d, value in found
            ]
        }
        if unknown:
            out["unknownKey"] = unknown
        return out

    async def _remote_start(self, p: dict[str, Any]) -> dict[str, Any]:
        if self.registration is not Registration.ACCEPTED:
            return {"status": "Rejected"}  # §4.2: not allowed while Pending
        connector_id = p.get("connectorId")
        if connector_id == 0:
            return {"status": "Rejected"}  # TC_027: connectorId 0 shall not be used
        on_start = None
        if p.get("chargingProfile") is not None:
            # §5.11: a TxProfile, validated before Accepted; it limits the session from its
            # first ampere (installed as the transaction is recorded, even offline)
            if self.smart is None:
                return {"status": "Rejected"}
            smart = self.smart()
            profile = smart.remote_start_profile(p["chargingProfile"])
            if profile is None:
                return {"status": "Rejected"}
            on_start = smart.session_hook(profile)
        c = self.station.remote_start(p["idTag"], connector_id, on_start=on_start)
        if c is None:
            return {"status": "Rejected"}
        return {"status": "Accepted"}

    async def _remote_stop(self, p: dict[str, Any]) -> dict[str, Any]:
        ok = self.station.remote_stop(mapping.remote_id(p["transactionId"]))
        return {"status": "Accepted" if ok else "Rejected"}

    async def _reset(self, p: dict[str, Any]) -> Reply:
        hard = p["type"] == "Hard"
        return Reply({"status": "Accepted"}, then=lambda: self._do_reset(hard))

    async def _do_reset(self, hard: bool) -> None:
        # §5.14: StopTransaction for every ongoing transaction before the reset; queued if offline
        await self.station.stop_all(StopReason.HARD_RESET if hard else StopReason.SOFT_RESET)
        await self.flush(timeout_s=10.0)
        log.warning("%s reset requested by the Central System", "hard" if hard else "soft")
        if self.on_reset is not None:
            self.on_reset(hard)

    async def _unlock(self, p: dict[str, Any]) -> dict[str, Any]:
        result = await self.station.unlock(int(p["connectorId"]))
        return {
            "status": {
                "unlocked": "Unlocked",
                "failed": "UnlockFailed",
                "not_supported": "NotSupported",
            }[result]
        }

