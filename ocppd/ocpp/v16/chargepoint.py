"""The OCPP 1.6 adapter: registration, heartbeats, the transaction outbox and the Central System's
commands, on top of the Link (transport, RPC, validation) and the Station (the charger).

It implements station.CentralPort. Rules it follows, with the spec section where they live:
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
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import StrEnum
from typing import Any

from ocppd import security
from ocppd.config import Config
from ocppd.core.auth import Credential
from ocppd.core.model import Status, StopReason
from ocppd.errors import StorageError
from ocppd.hw.base import Fault, MeterReading
from ocppd.ocpp.link import Link
from ocppd.ocpp.rpc import CallErrorCode, CallTimeout, LinkDown, NoReply, OcppCallError, Reply
from ocppd.ocpp.v16 import mapping
from ocppd.ocpp.v16.keys import ChangeResult, Keys
from ocppd.ocpp.validate import Validator
from ocppd.privacy import scrub, tag
from ocppd.station import Station
from ocppd.storage import AuthEntry, OutboxItem, Store, TxRecord
from ocppd.tasks import TaskSet

log = logging.getLogger("ocppd.ocpp")

OUTBOX_BATCH = 64  # queued messages read at once by the sender

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | Reply]]
DataTransferHandler = Callable[[str | None, str | None], Awaitable[tuple[str, str | None]]]


async def _call_soon(fn: Callable[[str], None], arg: str) -> None:
    fn(arg)


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


class Registration(StrEnum):
    NONE = "none"
    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class ChargePoint:
    def __init__(
        self,
        *,
        cfg: Config,
        store: Store,
        station: Station,
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
        self.station = station
        self.keys = keys
        self.link: Link = link  # type: ignore[assignment]  # set by app before run()
        self.validator = validator or Validator()
        self.wall = wall
        self.on_reset = on_reset
        # the time the outbox waits by (injected in tests): never the wall clock (§3.7.1)
        self._monotonic = monotonic
        self._sleep = sleep
        self._retry_due: dict[int, float] = {}  # outbox seq -> monotonic time of next attempt
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

    def enqueue_start(self, tx: TxRecord) -> None:
        payload: dict[str, Any] = {
            "connectorId": tx.connector_id,
            "idTag": tx.id_tag,
            "meterStart": tx.meter_start_wh,
            "timestamp": mapping.iso(tx.started_at),
        }
        if tx.reservation_id is not None:
            payload["reservationId"] = tx.reservation_id
        self._queue("StartTransaction", payload, tx.local_id, "start")

    def enqueue_stop(self, tx: TxRecord) -> None:
        assert tx.meter_stop_wh is not None and tx.stopped_at is not None
        payload: dict[str, Any] = {
            "meterStop": tx.meter_stop_wh,
            "timestamp": mapping.iso(tx.stopped_at),
            "reason": mapping.STOP_REASON[StopReason(tx.stop_reason or "other")],
        }
        if tx.tx_id is not None:
            payload["transactionId"] = tx.tx_id
        if tx.stop_id_tag:
            payload["idTag"] = tx.stop_id_tag
        samples = self.store.tx_samples(tx.local_id)
        if samples:  # StopTxnSampledData / StopTxnAlignedData (§3.16.1), Begin and End included
            payload["transactionData"] = samples
        self._queue("StopTransaction", payload, tx.local_id, "stop")

    def meter_sample(
        self,
        *,
        connector_id: int,
        tx: TxRecord | None,
        reading: MeterReading,
        at: datetime,
        context: str,
        offered_a: float | None,
    ) -> None:
        keys = self.keys
        if tx is not None:
            stop_list = {
                "begin": keys.get_list("StopTxnSampledData"),
                "end": keys.get_list("StopTxnSampledData"),
                "periodic": keys.get_list("StopTxnSampledData"),
                "clock": keys.get_list("StopTxnAlignedData"),
            }.get(context, [])
            if stop_list:
                values = mapping.sampled_values(
                    reading, stop_list, context=context, offered_a=offered_a
                )
                if values:
                    self.store.add_tx_sample(
                        tx.local_id, at, {"timestamp": mapping.iso(at), "sampledValue": values}
                    )
        if context in ("begin", "end", "poll"):
            return
        measurands = keys.get_list(
            "MeterValuesAlignedData" if context == "clock" else "MeterValuesSampledData"
        ) or ["Energy.Active.Import.Register"]
        values = mapping.sampled_values(reading, measurands, context=context, offered_a=offered_a)
        if not values:
            return
        payload: dict[str, Any] = {
            "connectorId": connector_id,
            "meterValue": [{"timestamp": mapping.iso(at), "sampledValue": values}],
        }
        if tx is not None and context in ("periodic", "clock"):
            if tx.tx_id is not None:
                payload["transactionId"] = tx.tx_id
            self._queue("MeterValues", payload, tx.local_id, "meter")
        else:
            if tx is not None and tx.tx_id is not None:
                payload["transactionId"] = tx.tx_id
            self._spawn(self._send_direct("MeterValues", payload))

    def register_data_transfer(
        self, vendor_id: str, message_id: str | None, handler: DataTransferHandler
    ) -> None:
        """Route DataTransfer(vendorId, messageId) to ``handler`` (message_id None: any).

        ``handler(message_id, data)`` returns (status, data): status one of Accepted, Rejected,
        UnknownMessageId, UnknownVendorId (§7.19).
        """
        self.data_transfer.setdefault(vendor_id, {})[message_id] = handler

    def _queue(self, action: str, payload: dict[str, Any], local_tx_id: int, kind: str) -> None:
        """Validate once, then write to the outbox (the sender does not validate again)."""
        probe = payload if "transactionId" in payload or kind != "stop" else {
            **payload, "transactionId": 0}  # the id is filled in when known
        try:
            self.validator.check_request(action, probe)
        except OcppCallError as exc:
            # Our own bug: never queued (it could never be accepted), logged loudly, counted.
            if self.link is not None:
                self.link.stats.outgoing_invalid += 1
            log.error("not queueing invalid %s: %s", action, exc.description)
            return
        self.store.outbox_put(action=action, payload=payload, local_tx_id=local_tx_id, kind=kind)
        self._outbox_wake.set()

    def status_changed(self, connector_id: int, status: Status, fault: Fault | None) -> None:
        self._changed()
        if not self.online:
            return  # sent after (re)connection if it differs from what was last sent (§4.9)
        old = self._status_tasks.pop(connector_id, None)
        if old is not None:
            old.cancel()  # a status shorter than MinimumStatusDuration is not reported
        delay = self.keys.get_int("MinimumStatusDuration") + self.cfg.system.min_status_duration_s
        self._status_tasks[connector_id] = self._spawn(self._send_status(connector_id, delay))

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
        """Wait until the outbox is empty (before a reset or shutdown). True if it emptied."""
        deadline = time.monotonic() + timeout_s
        while self.store.outbox_count() and time.monotonic() < deadline:
            if not self.online:
                return False
            await asyncio.sleep(0.05)
        return self.store.outbox_count() == 0

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
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._boot_wake.wait(), timeout=seconds)

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

    # --- statuses ---------------------------------------------------------------------------------

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

    def _current(self, connector_id: int) -> tuple[Status, Fault | None]:
        if connector_id == 0:
            st = self.station.charger_status or Status.AVAILABLE
            return st, next(iter(self.station.charger_faults), None)
        c = self.station.connectors[connector_id]
        return (c.status or Status.AVAILABLE), next(
            iter(c.all_faults(self.station.charger_faults)), None
        )

    async def _send_status(
        self, connector_id: int, delay_s: float = 0.0, *, force: bool = False
    ) -> None:
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        status, fault = self._current(connector_id)
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

    # --- outbox -----------------------------------------------------------------------------------

    async def _sender(self) -> None:
        # Queued messages are read in batches and delivered strictly in order (§3.7): the
        # head waits out its retry interval before anything behind it is sent.
        while True:
            await self._accepted.wait()
            batch = self.store.outbox_items(limit=OUTBOX_BATCH)
            if not batch:
                self._outbox_wake.clear()
                if self.store.outbox_count() == 0:
                    await self._outbox_wake.wait()
                continue
            for item in batch:
                if not self._accepted.is_set():
                    break
                wait_s = self._retry_wait_s(item)
                if wait_s > 0:
                    await self._sleep(wait_s)
                    break  # read again: the head may have changed meanwhile
                try:
                    await self.store.durable()  # never send what a power cut could undo
                    delivered = await self._deliver(item)
                except StorageError as exc:
                    # e.g. a full disk: the message stays queued; try again later, loudly
                    log.error("outbox: storage failed: %s; retrying in 5 s", exc)
                    await asyncio.sleep(5)
                    break
                if not delivered:
                    break
                self._retry_due.pop(item.seq, None)

    def _retry_wait_s(self, item: OutboxItem) -> float:
        """How long the queued message must still wait before its next attempt (§3.7.1).

        Timed on the monotonic clock: a wall clock stepped back (NTP on a Pi without RTC)
        must not stall the queue. The stored wall time only matters for a message retried in
        an earlier run, and is bounded by the interval it can have come from.
        """
        if item.next_attempt_at is None:
            return 0.0
        due = self._retry_due.get(item.seq)
        if due is None:
            bound_s = float(self.keys.get_int("TransactionMessageRetryInterval") * item.attempts)
            left_s = min(max(0.0, item.next_attempt_at - self.wall().timestamp()), bound_s)
            due = self._retry_due[item.seq] = self._monotonic() + left_s
        return max(0.0, due - self._monotonic())

    def _prepared(self, item: OutboxItem) -> str:
        """The payload to send, as JSON text: as stored, unless a transactionId must be added."""
        if item.kind == "start" or '"transactionId"' in item.payload_json or not item.local_tx_id:
            return item.payload_json
        payload = item.payload
        tx = self.store.transaction(item.local_tx_id)
        if tx is not None and tx.tx_id is not None:
            payload["transactionId"] = tx.tx_id
        elif item.kind == "stop":
            # Only when the StartTransaction was given up after all attempts: the Central
            # System must still learn that the session ended.
            payload["transactionId"] = -1
        else:
            return item.payload_json
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)

    async def _deliver(self, item: OutboxItem) -> bool:
        """Send one queued message; True when it is done with (confirmed or given up)."""
        payload = self._prepared(item)
        try:
            # validated when it was queued (enqueue_*, meter_sample): not again per replay
            conf = await self.link.call(item.action, payload, validated=True)
        except LinkDown:
            if not self.link.connected:
                self._accepted.clear()  # wait for the next registration, no busy loop
            else:
                await asyncio.sleep(0.1)
            return False  # a lost connection does not use up attempts
        except (CallTimeout, OcppCallError) as exc:
            if isinstance(exc, CallTimeout) and not self.link.connected:
                return False
            return self._failed_attempt(item, str(exc))
        if item.kind == "start":
            tx_id = int(conf["transactionId"])
            cred = mapping.credential(conf["idTagInfo"])
            assert item.local_tx_id is not None
            with self.store.atomic():  # a confirmed start is never sent again
                self.store.set_transaction_id(item.local_tx_id, tx_id)
                self.store.outbox_assign_tx_id(item.local_tx_id, tx_id)
                self.store.outbox_confirm(item.seq, item.kind)
            tx = self.store.transaction(item.local_tx_id)
            if tx is not None:
                self.station.note_id_tag_info(tx.id_tag, cred)
            self.station.on_start_confirmed(item.local_tx_id, tx_id, cred)
            return True
        if item.kind == "stop" and "idTagInfo" in conf:
            id_tag = item.payload.get("idTag")
            if id_tag:
                self.station.note_id_tag_info(id_tag, mapping.credential(conf["idTagInfo"]))
        self.store.outbox_confirm(item.seq, item.kind)
        return True

    def _failed_attempt(self, item: OutboxItem, why: str) -> bool:
        max_attempts = self.keys.get_int("TransactionMessageAttempts")
        retry_s = self.keys.get_int("TransactionMessageRetryInterval")
        attempts = item.attempts + 1
        if attempts >= max_attempts:
            log.error(
                "%s (queued #%d) failed %d times (%s): discarded as §3.7.1 says",
                item.action,
                item.seq,
                attempts,
                why,
            )
            self.store.log_event(self.wall(), "outbox_discarded",
                                 scrub(f"{item.action} {item.payload}"))
            self.store.outbox_remove(item.seq)
            self._retry_due.pop(item.seq, None)
            return True
        # §3.7.1: wait TransactionMessageRetryInterval × the number of preceding transmissions;
        # the wall time is stored for the record, the wait is timed on the monotonic clock
        delay_s = float(retry_s * attempts)
        self._retry_due[item.seq] = self._monotonic() + delay_s
        self.store.outbox_record_attempt(
            item.seq, next_attempt_at=self.wall().timestamp() + delay_s)
        log.warning(
            "%s failed (%s); attempt %d of %d, next in %d s",
            item.action,
            why,
            attempts,
            max_attempts,
            retry_s * attempts,
        )
        return False

    # --- incoming calls ---------------------------------------------------------------------------

    async def handle(self, action: str, payload: dict[str, Any]) -> dict[str, Any] | Reply:
        if self.registration is Registration.REJECTED:
            raise NoReply()  # §4.2: Rejected, do not respond to Central System requests
        handler = self.handlers.get(action)
        if handler is None:
            raise OcppCallError(CallErrorCode.NotSupported, f"{action} is not supported")
        return await handler(payload)

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
        ok = self.station.remote_stop(int(p["transactionId"]))
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

    # --- TriggerMessage (§5.17) and ExtendedTriggerMessage (Security Whitepaper) ---------------

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

    async def _reserve_now(self, p: dict[str, Any]) -> dict[str, Any]:
        from ocppd.storage import Reservation

        cid, rid = int(p["connectorId"]), int(p["reservationId"])
        expiry = mapping.parse_iso(p["expiryDate"])
        if cid == 0:
            if not self.keys.get_bool("ReserveConnectorZeroSupported"):
                return {"status": "Rejected"}
            picked = self.station._pick_free(None, None)
            if picked is None:
                return {"status": "Occupied"}
            cid = picked.id
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
