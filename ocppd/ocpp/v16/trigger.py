"""The Remote Trigger profile (OCPP 1.6 §5.17, TriggerMessage) and the Security Whitepaper's
ExtendedTriggerMessage: the same rules, two tables of what each request makes us send."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ocppd.ocpp.rpc import Reply
from ocppd.ocpp.v16.cpbase import ChargePointBase, Registration

log = logging.getLogger("ocppd.ocpp")

#: TriggerMessage.requestedMessage (§7.41) -> the message it makes us send
TRIGGERED = {m: m for m in ("BootNotification", "DiagnosticsStatusNotification",
                            "FirmwareStatusNotification", "Heartbeat", "MeterValues",
                            "StatusNotification")}
#: ExtendedTriggerMessage.requestedMessage (Security Whitepaper, MessageTriggerEnumType) -> the
#: message: firmware status is reported as SignedFirmwareStatusNotification there, and
#: SignChargePointCertificate asks for a SignCertificate
EXTENDED_TRIGGERED = {
    "BootNotification": "BootNotification",
    "LogStatusNotification": "LogStatusNotification",
    "FirmwareStatusNotification": "SignedFirmwareStatusNotification",
    "Heartbeat": "Heartbeat",
    "MeterValues": "MeterValues",
    "SignChargePointCertificate": "SignCertificate",
    "StatusNotification": "StatusNotification",
}


class TriggerMixin(ChargePointBase):
    async def _trigger(self, p: dict[str, Any]) -> dict[str, Any] | Reply:
        return self._triggered(p, TRIGGERED)

    async def _extended_trigger(self, p: dict[str, Any]) -> dict[str, Any] | Reply:
        return self._triggered(p, EXTENDED_TRIGGERED)

    def _triggered(self, p: dict[str, Any], sends: dict[str, str]) -> dict[str, Any] | Reply:
        """The rules both share: Rejected for a connector that does not exist, NotImplemented
        for what cannot be sent, else Accepted and the message sent after the answer."""
        what, cid = p["requestedMessage"], p.get("connectorId")
        if cid is not None and cid != 0 and cid not in self.station.connectors:
            return {"status": "Rejected"}
        action = sends.get(what)
        send = None if action is None else self._trigger_sender(action, cid)
        if send is None:
            return {"status": "NotImplemented"}
        return Reply({"status": "Accepted"}, then=send)

    def _trigger_sender(self, action: str,
                        cid: int | None) -> Callable[[], Awaitable[None]] | None:
        """What sends ``action`` for a trigger; None when it cannot be sent."""
        if action == "BootNotification":

            async def boot() -> None:
                conf = await self._send_direct("BootNotification", self.boot_payload())
                if conf is not None and conf.get("status") == "Accepted":
                    was = self.registration
                    self.registration = Registration.ACCEPTED
                    self._accepted.set()
                    if was is not Registration.ACCEPTED:
                        self._boot_wake.set()
                        self._send_all_statuses()

            return boot
        if action == "Heartbeat":
            return lambda: self._fire("Heartbeat", {})
        if action == "StatusNotification":
            targets = [cid] if cid is not None else [0, *self.station.connectors]

            async def statuses() -> None:
                for t in targets:  # triggered: no MinimumStatusDuration (open-ocpp #46)
                    await self._send_status(t, force=True)

            return statuses
        if action == "MeterValues":
            return lambda: self.station.sample_now(cid, "trigger")
        if action == "DiagnosticsStatusNotification":
            return lambda: self._fire("DiagnosticsStatusNotification",
                                      {"status": self.diagnostics_status})
        if action == "FirmwareStatusNotification":
            return lambda: self._fire("FirmwareStatusNotification",
                                      {"status": self.firmware_status})
        if action in ("SignedFirmwareStatusNotification", "LogStatusNotification"):
            status, request_id = ((self.firmware_status, self.firmware_request_id)
                                  if action.startswith("Signed")
                                  else (self.log_status, self.log_request_id))
            payload: dict[str, Any] = {"status": status}
            if status != "Idle" and request_id is not None:
                payload["requestId"] = request_id  # whitepaper: only while busy
            return lambda: self._fire(action, payload)
        if action == "SignCertificate" and self.request_csr is not None:
            request = self.request_csr

            async def csr() -> None:
                request()

            return csr
        return None
