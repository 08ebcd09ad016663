"""Registration and heartbeat (OCPP 1.6 §4.2, §4.6; OCPP-J §5.4): BootNotification first after
every start and until Accepted, the next attempt after the interval given; Heartbeat only after
the link was idle for HeartbeatInterval (any message resets it)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ocppd.ocpp.rpc import CallTimeout, LinkDown, OcppCallError
from ocppd.ocpp.v16 import mapping
from ocppd.ocpp.v16.cpbase import ChargePointBase, Registration
from ocppd.tasks import wait_event

log = logging.getLogger("ocppd.ocpp")


class RegistrationMixin(ChargePointBase):
    async def on_connected(self) -> None:
        self._changed()
        if (
            self.registration is Registration.ACCEPTED
            and not self.keys.get_bool("OcppdBootNotificationOnReconnect")
            and not self.cfg.central_system.boot_notification_on_reconnect
        ):
            self._accepted.set()
            self._send_changed_statuses()
            self._outbox_wake.set()
            return
        self.registration = Registration.NONE
        self._accepted.clear()
        if self._boot_task is None or self._boot_task.done():
            self._boot_task = self._spawn(self._boot_loop())

    def on_disconnected(self, reason: str) -> None:
        self._changed()
        log.info("link down: %s", reason)
        self._accepted.clear()

    def boot_payload(self) -> dict[str, Any]:
        """Every field comes from [charge_point], whose loader enforces the schema's limits
        (non-empty strings within maxLength): the payload is valid by construction, and is
        sent without a second check (tests/core/test_boot_payload.py holds the two together).
        """
        cp = self.cfg.charge_point
        payload: dict[str, Any] = {
            "chargePointVendor": cp.vendor,
            "chargePointModel": cp.model,
            "firmwareVersion": cp.firmware_version,
        }
        if cp.serial_number:
            payload["chargePointSerialNumber"] = cp.serial_number
        return payload

    async def _boot_loop(self) -> None:
        while True:
            try:
                conf = await self.link.call(
                    "BootNotification", self.boot_payload(), validated=True)
            except LinkDown:
                return  # on_connected starts again after reconnecting
            except (CallTimeout, OcppCallError) as exc:
                log.warning("BootNotification failed: %s; retrying in 30 s", exc)
                await self._boot_wait(30)
                continue
            self._take_time(conf.get("currentTime"))
            status, interval = conf["status"], int(conf["interval"])
            if status == "Accepted":
                self.registration = Registration.ACCEPTED
                if interval > 0:  # §4.2: the interval of an Accepted boot is the heartbeat interval
                    self.keys.change("HeartbeatInterval", str(interval))
                log.info("registered with the Central System (heartbeat %d s)", interval)
                self._accepted.set()
                for hook in self.on_accepted:
                    hook()
                self._send_all_statuses()
                self._outbox_wake.set()
                return
            self.registration = (
                Registration.PENDING if status == "Pending" else Registration.REJECTED
            )
            # §4.2: interval is the minimum wait; 0 lets us choose one that does not flood
            wait = interval if interval > 0 else 60
            log.warning("BootNotification %s; next attempt in %d s", status, wait)
            await self._boot_wait(wait)

    async def _boot_wait(self, seconds: float) -> None:
        self._boot_wake.clear()
        await wait_event(self._boot_wake, seconds)

    def _take_time(self, current_time: str | None) -> None:
        if current_time and self.cfg.system.set_clock_from_central_system:
            setter = getattr(self.wall, "set_offset_from", None)
            if setter is not None:
                setter(mapping.parse_iso(current_time))

    async def _heartbeat(self) -> None:
        while True:
            await self._accepted.wait()
            interval = self.keys.get_int("HeartbeatInterval")
            if interval <= 0:
                await asyncio.sleep(3600)
                continue
            idle = time.monotonic() - self.link.last_activity
            if idle < interval:
                await asyncio.sleep(interval - idle)
                continue
            try:
                conf = await self.link.call("Heartbeat", {})
                self._take_time(conf.get("currentTime"))
            except (LinkDown, CallTimeout, OcppCallError) as exc:
                log.info("Heartbeat failed: %s", exc)
                await asyncio.sleep(min(interval, 30))
