"""The OCPP 1.6 adapter: registration, heartbeats, the transaction outbox and the Central System's
commands, on top of the Link (transport, RPC, validation) and the station (ports.StationApi).

It implements ports.CentralPort. Rules it follows, with the spec section where they live:
- BootNotification first after every start; nothing else initiated until Accepted; in Pending
  only answers (and triggered messages); in Rejected nothing at all; the next attempt after the
  ``interval`` given (§4.2). Again on reconnect only if OcppdBootNotificationOnReconnect
  (OCPP-J §5.4).
- Heartbeat only after the link was idle for HeartbeatInterval (§4.6: any message resets it).
- Transaction messages are written to the outbox before sending and removed only when their
  CALLRESULT arrives, in chronological order; other messages may overtake them (§3.7). Retries:
  TransactionMessageAttempts, waiting TransactionMessageRetryInterval × preceding attempts
  (§3.7.1); a CALLERROR counts as a failed attempt, a dead link does not.
- StatusNotification honours MinimumStatusDuration, except when triggered (§4.9, §5.17).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from ocppd.config import Config
from ocppd.core.auth import Credential
from ocppd.core.evse import Fault
from ocppd.core.model import Status
from ocppd.core.records import TxRecord
from ocppd.ocpp.link import Link
from ocppd.ocpp.rpc import CallErrorCode, CallTimeout, LinkDown, NoReply, OcppCallError, Reply
from ocppd.ocpp.v16 import mapping
from ocppd.ocpp.v16.core_profile import CoreProfileMixin
from ocppd.ocpp.v16.cpbase import DataTransferHandler, Registration
from ocppd.ocpp.v16.keys import Keys
from ocppd.ocpp.v16.local_auth import LocalAuthMixin
from ocppd.ocpp.v16.registration import RegistrationMixin
from ocppd.ocpp.v16.reservation import ReservationMixin
from ocppd.ocpp.v16.statuses import StatusMixin
from ocppd.ocpp.v16.trigger import TriggerMixin
from ocppd.ocpp.v16.txmessages import TxMessagesMixin
from ocppd.ocpp.validate import Validator
from ocppd.ports import StationApi, TxEventLog
from ocppd.privacy import tag
from ocppd.storage import Store
from ocppd.tasks import TaskSet

log = logging.getLogger("ocppd.ocpp")


__all__ = ["ChargePoint", "DataTransferHandler", "Registration"]

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | Reply]]


class ChargePoint(
    RegistrationMixin,
    TxMessagesMixin,
    StatusMixin,
    CoreProfileMixin,
    TriggerMixin,
    LocalAuthMixin,
    ReservationMixin,
):
    """One charge point towards one Central System. Each responsibility is a mixin in its own
    module (registration.py, txmessages.py, statuses.py, core_profile.py, trigger.py,
    local_auth.py, reservation.py); this class holds the shared state, the CentralPort entry
    points the station calls, and the table of incoming calls."""

    def __init__(
        self,
        *,
        cfg: Config,
        store: Store,
        events: TxEventLog,
        station: StationApi,
        keys: Keys,
        link: Link | None = None,
        validator: Validator | None = None,
        wall: Callable[[], datetime],
        on_reset: Callable[[bool], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.events = events
        self.station = station
        self.keys = keys
        self.link: Link = link  # type: ignore[assignment]  # set by app before run()
        self.validator = validator or Validator()
        self.wall = wall
        self.on_reset = on_reset
        # the time the outbox waits by (injected in tests): never the wall clock (§3.7.1)
        self._monotonic = monotonic
        self._sleep = sleep
        self._retry_due: dict[int, float] = {}  # event seq -> monotonic time of next attempt
        self._tx_cache: dict[int, TxRecord | None] = {}  # txmessages.py
        self._checked_shapes: set[tuple[Any, ...]] = set()  # ... MeterValues shapes validated
        self._in_change = False  # a ChangeConfiguration is being applied
        self._reconnect_reason: str | None = None  # ... and asked for a reconnect
        self._registration = Registration.NONE
        # called whenever connection, registration or a connector status changes (STATUS=)
        self.on_change: list[Callable[[], None]] = []
        self._accepted = asyncio.Event()
        self._outbox_wake = asyncio.Event()
        self._tasks = TaskSet(log, "OCPP")
        self._status_tasks: dict[int, asyncio.Task[Any]] = {}
        self._sent: dict[int, tuple[Status, Fault | None]] = {}
        self._boot_task: asyncio.Task[Any] | None = None
        self._boot_wake = asyncio.Event()
        self.data_transfer: dict[str, dict[str | None, DataTransferHandler]] = {}
        self.load_plugins: Callable[[], object] | None = None  # run once, when first needed
        # the Smart Charging profile, loaded on first use (app.py); None: not available
        self.smart: Callable[[], Any] | None = None
        # called each time BootNotification is Accepted (firmware: report Installed after restart)
        self.on_accepted: list[Callable[[], None]] = []
        self.diagnostics_status = "Idle"
        self.firmware_status = "Idle"
        # what a triggered SignedFirmwareStatusNotification / LogStatusNotification report
        self.firmware_request_id: int | None = None
        self.log_status = "Idle"
        self.log_request_id: int | None = None
        # sends a new CSR (ExtendedTriggerMessage SignChargePointCertificate); set by app.py
        self.request_csr: Callable[[], None] | None = None
        self.handlers: dict[str, Handler] = {
            "ChangeAvailability": self._change_availability,
            "ChangeConfiguration": self._change_configuration,
            "ClearCache": self._clear_cache,
            "DataTransfer": self._data_transfer,
            "GetConfiguration": self._get_configuration,
            "RemoteStartTransaction": self._remote_start,
            "RemoteStopTransaction": self._remote_stop,
            "Reset": self._reset,
            "UnlockConnector": self._unlock,
            "TriggerMessage": self._trigger,
            "ExtendedTriggerMessage": self._extended_trigger,
            "GetLocalListVersion": self._get_local_list_version,
            "SendLocalList": self._send_local_list,
            "ReserveNow": self._reserve_now,
            "CancelReservation": self._cancel_reservation,
        }

    @property
    def registration(self) -> Registration:
        return self._registration

    @registration.setter
    def registration(self, value: Registration) -> None:
        if value is not self._registration:
            self._registration = value
            self._changed()

    def _changed(self) -> None:
        for hook in self.on_change:
            hook()

    # --- CentralPort ------------------------------------------------------------------------------

    @property
    def online(self) -> bool:
        return (
            self.link is not None
            and self.link.connected
            and self.registration is Registration.ACCEPTED
        )

    async def authorize(self, id_tag: str) -> Credential | None:
        if not self.online:
            return None
        try:
            conf = await self.link.call("Authorize", {"idTag": id_tag})
        except (LinkDown, CallTimeout, OcppCallError) as exc:
            log.warning("Authorize for %s failed: %s", tag(id_tag), exc)
            return None
        return mapping.credential(conf["idTagInfo"])


    def register_data_transfer(
        self, vendor_id: str, message_id: str | None, handler: DataTransferHandler
    ) -> None:
        """Route DataTransfer(vendorId, messageId) to ``handler`` (message_id None: any).

        ``handler(message_id, data)`` returns (status, data): status one of Accepted, Rejected,
        UnknownMessageId, UnknownVendorId (§7.19).
        """
        self.data_transfer.setdefault(vendor_id, {})[message_id] = handler


    # --- running ----------------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        return self._tasks.spawn(coro)

    async def run(self) -> None:
        """Run link, outbox sender and heartbeat until cancelled."""
        sender = self._spawn(self._sender())
        heart = self._spawn(self._heartbeat())
        try:
            await self.link.run()
        finally:
            sender.cancel()
            heart.cancel()

    async def close(self) -> None:
        await self._tasks.cancel_all()
        await self.link.close()

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every transaction event is delivered (before a reset or shutdown). True
        if they all were."""
        deadline = time.monotonic() + timeout_s
        while self.events.tx_events_count() and time.monotonic() < deadline:
            if not self.online:
                return False
            await asyncio.sleep(0.05)
        return self.events.tx_events_count() == 0


    # --- statuses ---------------------------------------------------------------------------------


    async def send(self, action: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Send a non-transaction message now if registered; None if it could not be delivered."""
        if not self.online:
            return None
        return await self._send_direct(action, payload)

    async def _fire(self, action: str, payload: dict[str, Any]) -> None:
        await self._send_direct(action, payload)

    async def _send_direct(self, action: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """A message outside the outbox: sent if possible, not retried (§3.7 non-transaction)."""
        try:
            return await self.link.call(action, payload)
        except (LinkDown, CallTimeout, OcppCallError) as exc:
            log.info("%s not delivered: %s", action, exc)
            return None

    # --- incoming calls ---------------------------------------------------------------------------

    async def handle(self, action: str, payload: dict[str, Any]) -> dict[str, Any] | Reply:
        if self.registration is Registration.REJECTED:
            raise NoReply()  # §4.2: Rejected, do not respond to Central System requests
        handler = self.handlers.get(action)
        if handler is None:
            raise OcppCallError(CallErrorCode.NotSupported, f"{action} is not supported")
        return await handler(payload)


