"""The Reservation profile (OCPP 1.6 §5.13, §5.1): the station holds the connector and owns the
expiry; here the Central System's request is judged and answered."""

from __future__ import annotations

import logging
from typing import Any

from ocppd.core.model import Status
from ocppd.ocpp.v16 import mapping
from ocppd.ocpp.v16.cpbase import ChargePointBase

log = logging.getLogger("ocppd.ocpp")


class ReservationMixin(ChargePointBase):
    async def _reserve_now(self, p: dict[str, Any]) -> dict[str, Any]:
        from ocppd.storage import Reservation

        cid, rid = int(p["connectorId"]), int(p["reservationId"])
        expiry = mapping.parse_iso(p["expiryDate"])
        if cid == 0:
            if not self.keys.get_bool("ReserveConnectorZeroSupported"):
                return {"status": "Rejected"}
            picked = self.station.pick_free(None, None)
            if picked is None:
                return {"status": "Occupied"}
            cid = picked
        c = self.station.connectors.get(cid)
        if c is None:
            return {"status": "Rejected"}
        self.station.cancel_reservation(rid)  # the same id replaces (§5.13)
        if c.status is Status.FAULTED:
            return {"status": "Faulted"}
        if c.status is Status.UNAVAILABLE:
            return {"status": "Unavailable"}
        if (
            c.tx is not None
            or c.waiting is not None
            or c.reservation_id is not None
            or c.pilot.plugged
        ):
            return {"status": "Occupied"}
        # the station stores it and owns its one expiry timer
        self.station.reserve(
            Reservation(
                reservation_id=rid,
                connector_id=cid,
                id_tag=p["idTag"],
                parent_id_tag=p.get("parentIdTag"),
                expiry=expiry,
            )
        )
        return {"status": "Accepted"}

    async def _cancel_reservation(self, p: dict[str, Any]) -> dict[str, Any]:
        rid = int(p["reservationId"])
        if self.station.cancel_reservation(rid):
            return {"status": "Accepted"}
        return {"status": "Rejected"}
