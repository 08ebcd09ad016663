"""The transaction-message sender (OCPP 1.6 §3.7, §3.16): Start/Stop/MeterValues written to the
outbox before sending and removed only when their CALLRESULT arrives, in chronological order.
Retries: TransactionMessageAttempts, waiting TransactionMessageRetryInterval × preceding
attempts (§3.7.1); a CALLERROR counts as a failed attempt, a dead link does not."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime
from typing import Any

from ocppd.core.evse import MeterReading
from ocppd.core.model import StopReason
from ocppd.errors import StorageError
from ocppd.ocpp.rpc import CallTimeout, LinkDown, OcppCallError
from ocppd.ocpp.v16 import mapping
from ocppd.ocpp.v16.cpbase import ChargePointBase
from ocppd.privacy import scrub
from ocppd.storage import OutboxItem, TxRecord

log = logging.getLogger("ocppd.ocpp")

OUTBOX_BATCH = 64  # queued messages read at once by the sender


class TxMessagesMixin(ChargePointBase):
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

    def _queue(
        self, action: str, payload: dict[str, Any], local_tx_id: int, kind: str
    ) -> None:
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
