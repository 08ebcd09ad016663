"""Status reporting (OCPP 1.6 §4.9): a StatusNotification per change, held back for
MinimumStatusDuration except when triggered (§5.17); after (re)registration, what changed."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ocppd.core.evse import Fault
from ocppd.core.model import Status
from ocppd.ocpp.v16 import mapping
from ocppd.ocpp.v16.cpbase import ChargePointBase

log = logging.getLogger("ocppd.ocpp")


class StatusMixin(ChargePointBase):
    def status_changed(
        self, connector_id: int, status: Status, fault: Fault | None
    ) -> None:
        self._changed()
        if not self.online:
            return  # sent after (re)connection if it differs from what was last sent (§4.9)
        old = self._status_tasks.pop(connector_id, None)
        if old is not None:
            old.cancel()  # a status shorter than MinimumStatusDuration is not reported
        delay = self.keys.get_int("MinimumStatusDuration") + self.cfg.system.min_status_duration_s
        self._status_tasks[connector_id] = self._spawn(self._send_status(connector_id, delay))

    def _status_payload(
        self, connector_id: int, status: Status, fault: Fault | None
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "connectorId": connector_id,
            "status": mapping.STATUS[status],
            "errorCode": mapping.ERROR_CODE[fault] if fault else "NoError",
            "timestamp": mapping.iso(self.wall()),
        }
        if fault is not None and fault in mapping.VENDOR_ERROR:
            payload["vendorErrorCode"] = mapping.VENDOR_ERROR[fault]
        return payload

    async def _send_status(
        self, connector_id: int, delay_s: float = 0.0, *, force: bool = False
    ) -> None:
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        status, fault = self.station.status_of(connector_id)
        if not force and self._sent.get(connector_id) == (status, fault):
            return
        self._sent[connector_id] = (status, fault)
        await self._send_direct(
            "StatusNotification", self._status_payload(connector_id, status, fault)
        )

    def _send_all_statuses(self) -> None:
        # TC_001: after Accepted, a StatusNotification for connector 0 and every connector
        for cid in [0, *self.station.connectors]:
            self._spawn(self._send_status(cid, force=True))

    def _send_changed_statuses(self) -> None:
        for cid in [0, *self.station.connectors]:
            self._spawn(self._send_status(cid))
