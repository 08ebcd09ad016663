"""The transaction-message sender (OCPP 1.6 §3.7, §3.16): the station records transaction events
(started, meter sample, ended: ports.TxEventLog); this turns each into its 1.6 message when it is
sent (StartTransaction, MeterValues, StopTransaction with its transactionData) and reports it
delivered when the CALLRESULT arrives, strictly in order. Retries: TransactionMessageAttempts,
waiting TransactionMessageRetryInterval × preceding attempts (§3.7.1); a CALLERROR counts as a
failed attempt, a dead link does not.

The messages are made at send time from what was recorded, with the configuration of that
moment: the measurands of MeterValuesSampledData / MeterValuesAlignedData and StopTxnSampledData /
StopTxnAlignedData, and the transactionId the Central System gave (which a start queued while
offline did not have yet)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ocppd.core.evse import MeterReading, reading_from_data
from ocppd.core.model import StopReason
from ocppd.core.records import TxEvent, TxRecord
from ocppd.errors import StorageError
from ocppd.ocpp.rpc import CallTimeout, LinkDown, OcppCallError, OutgoingInvalid
from ocppd.ocpp.v16 import mapping
from ocppd.ocpp.v16.cpbase import ChargePointBase
from ocppd.privacy import scrub

log = logging.getLogger("ocppd.ocpp")

OUTBOX_BATCH = 64  # pending events read at once by the sender


class _NotYet:
    """An event that cannot make its message yet (the queue waits for the next event)."""


NOT_YET = _NotYet()
ENERGY = "Energy.Active.Import.Register"
# where a recorded reading goes in StopTransaction.transactionData (§3.16.1), by event
_STOP_DATA = {"started": ("begin", "StopTxnSampledData"), "ended": ("end", "StopTxnSampledData"),
              "periodic": ("periodic", "StopTxnSampledData"),
              "clock": ("clock", "StopTxnAlignedData")}


class TxMessagesMixin(ChargePointBase):
    def tx_events_added(self) -> None:
        self._outbox_wake.set()

    def meter_sample(
        self,
        *,
        connector_id: int,
        tx: TxRecord | None,
        reading: MeterReading,
        at: Any,
        context: str,
        offered_a: float | None,
    ) -> None:
        """A sample that is no recorded event (no transaction, or TriggerMessage): sent once,
        not queued (§3.7 queues transaction-related messages only)."""
        values = mapping.sampled_values(reading, self._measurands(context), context=context,
                                        offered_a=offered_a)
        if not values:
            return
        payload: dict[str, Any] = {
            "connectorId": connector_id,
            "meterValue": [{"timestamp": mapping.iso(at), "sampledValue": values}],
        }
        if (tx_id := mapping.transaction_id(tx)) is not None:
            payload["transactionId"] = tx_id
        self._spawn(self._send_direct("MeterValues", payload))

    def _measurands(self, context: str) -> list[str]:
        key = "MeterValuesAlignedData" if context == "clock" else "MeterValuesSampledData"
        return self.keys.get_list(key) or [ENERGY]

    # --- from events to messages -----------------------------------------------------------------

    def _tx_of(self, local_tx_id: int | None) -> TxRecord | None:
        """The event's transaction, read once per batch (a replay sends thousands of samples
        of one transaction; the cache is dropped with each batch and when a start is
        confirmed, the only change the sender makes)."""
        if local_tx_id is None:
            return None
        if local_tx_id not in self._tx_cache:
            self._tx_cache[local_tx_id] = self.events.transaction(local_tx_id)
        return self._tx_cache[local_tx_id]

    def _message(self, event: TxEvent) -> tuple[str, dict[str, Any]] | None | _NotYet:
        """The 1.6 message of an event; None when it makes none (e.g. a sample with none of
        the configured measurands)."""
        tx = self._tx_of(event.local_tx_id)
        if event.legacy_action is not None:  # queued as a 1.6 message by an earlier version
            return self._legacy(event, tx)
        if tx is None:
            log.error("transaction event #%d: its transaction is gone; skipped", event.seq)
            return None
        if event.kind == "started":
            if tx.id_tag is None:  # begun before its idTag (never with 1.6's points): wait
                return NOT_YET
            return "StartTransaction", self._start_payload(tx)
        if event.kind == "authorized":  # 1.6 has no message for it: StartTransaction has it
            return None
        if event.kind == "ended":
            return "StopTransaction", self._stop_payload(tx)
        reading, offered_a = reading_from_data(event.data)
        context = event.trigger or "periodic"
        if reading is None:
            return None
        values = mapping.sampled_values(reading, self._measurands(context), context=context,
                                        offered_a=offered_a)
        if not values:
            return None
        payload: dict[str, Any] = {
            "connectorId": tx.connector_id,
            "meterValue": [{"timestamp": mapping.iso(event.at), "sampledValue": values}],
        }
        if (tx_id := mapping.transaction_id(tx)) is not None:
            payload["transactionId"] = tx_id
        return "MeterValues", payload

    @staticmethod
    def _start_payload(tx: TxRecord) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "connectorId": tx.connector_id,
            "idTag": tx.id_tag,
            "meterStart": tx.meter_start_wh,
            "timestamp": mapping.iso(tx.started_at),
        }
        if tx.reservation_id is not None:
            payload["reservationId"] = tx.reservation_id
        return payload

    def _stop_payload(self, tx: TxRecord) -> dict[str, Any]:
        assert tx.meter_stop_wh is not None and tx.stopped_at is not None
        payload: dict[str, Any] = {
            # -1 only when the StartTransaction was given up after all attempts: the Central
            # System must still learn that the session ended
            "transactionId": tx_id if (tx_id := mapping.transaction_id(tx)) is not None else -1,
            "meterStop": tx.meter_stop_wh,
            "timestamp": mapping.iso(tx.stopped_at),
            "reason": mapping.STOP_REASON[StopReason(tx.stop_reason or "other")],
        }
        if tx.stop_id_tag:
            payload["idTag"] = tx.stop_id_tag
        data = self._transaction_data(tx)
        if data:  # StopTxnSampledData / StopTxnAlignedData (§3.16.1), Begin and End included
            payload["transactionData"] = data
        return payload

    def _transaction_data(self, tx: TxRecord) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        for event in self.events.tx_events_of(tx.local_id):
            if event.legacy_action == "transactionData" and event.data:
                entries.append(event.data)  # recorded as 1.6 by an earlier version
                continue
            where = _STOP_DATA.get(event.trigger or event.kind)
            if event.legacy_action is not None or where is None:
                continue
            context, key = where
            measurands = self.keys.get_list(key)
            reading, offered_a = reading_from_data(event.data)
            if not measurands or reading is None:
                continue
            values = mapping.sampled_values(reading, measurands, context=context,
                                            offered_a=offered_a)
            if values:
                entries.append({"timestamp": mapping.iso(event.at), "sampledValue": values})
        cap = self.cfg.storage.stop_txn_data_max_samples
        if len(entries) > cap:  # the first (Transaction.Begin) and the newest
            entries = entries[:1] + entries[len(entries) - cap + 1:]
        return entries

    @staticmethod
    def _legacy(event: TxEvent, tx: TxRecord | None) -> tuple[str, dict[str, Any]] | None:
        action = event.legacy_action
        if action == "transactionData" or not event.data or action is None:
            return None
        payload = dict(event.data)
        if event.kind != "started" and "transactionId" not in payload:
            if (tx_id := mapping.transaction_id(tx)) is not None:
                payload["transactionId"] = tx_id
            elif event.kind == "ended":
                payload["transactionId"] = -1
        return action, payload

    # --- delivery --------------------------------------------------------------------------------

    async def _sender(self) -> None:
        # Pending events are read in batches and delivered strictly in order (§3.7): the head
        # waits out its retry interval before anything behind it is sent.
        while True:
            await self._accepted.wait()
            batch = self.events.tx_events_pending(limit=OUTBOX_BATCH)
            self._tx_cache.clear()
            if not batch:
                self._outbox_wake.clear()
                if self.events.tx_events_count() == 0:
                    await self._outbox_wake.wait()
                continue
            for event in batch:
                if not self._accepted.is_set():
                    break
                wait_s = self._retry_wait_s(event)
                if wait_s > 0:
                    await self._sleep(wait_s)
                    break  # read again: the head may have changed meanwhile
                try:
                    await self.events.durable()  # never send what a power cut could undo
                    delivered = await self._deliver(event)
                    if delivered is None:  # not ready: in order, nothing behind it goes
                        self._outbox_wake.clear()
                        await self._outbox_wake.wait()
                        break
                except StorageError as exc:
                    # e.g. a full disk: the event stays pending; try again later, loudly
                    log.error("transaction events: storage failed: %s; retrying in 5 s", exc)
                    await asyncio.sleep(5)
                    break
                if not delivered:
                    break
                self._retry_due.pop(event.seq, None)

    def _retry_wait_s(self, event: TxEvent) -> float:
        """How long the event must still wait before its next attempt (§3.7.1).

        Timed on the monotonic clock: a wall clock stepped back (NTP on a Pi without RTC)
        must not stall the queue. The stored wall time only matters for an event retried in
        an earlier run, and is bounded by the interval it can have come from.
        """
        if event.next_attempt_at is None:
            return 0.0
        due = self._retry_due.get(event.seq)
        if due is None:
            bound_s = float(self.keys.get_int("TransactionMessageRetryInterval") * event.attempts)
            left_s = min(max(0.0, event.next_attempt_at - self.wall().timestamp()), bound_s)
            due = self._retry_due[event.seq] = self._monotonic() + left_s
        return max(0.0, due - self._monotonic())

    async def _deliver(self, event: TxEvent) -> bool | None:
        """Send one event's message; True when the event is done with (confirmed, given up or
        nothing to send), None when it cannot be sent until something else is recorded."""
        message = self._message(event)
        if isinstance(message, _NotYet):
            return None
        if message is None:
            self.events.tx_event_delivered(event)
            return True
        action, payload = message
        try:
            validated = self._checked_shape(action, payload)
            conf = await self.link.call(action, payload, validated=validated)
        except OutgoingInvalid:
            # our own bug (logged and counted): it could never be accepted
            self.events.tx_event_delivered(event)
            return True
        except LinkDown:
            if not self.link.connected:
                self._accepted.clear()  # wait for the next registration, no busy loop
            else:
                await asyncio.sleep(0.1)
            return False  # a lost connection does not use up attempts
        except (CallTimeout, OcppCallError) as exc:
            if isinstance(exc, CallTimeout) and not self.link.connected:
                return False
            return self._failed_attempt(event, action, payload, str(exc))
        if action == "StartTransaction":
            cred = mapping.credential(conf["idTagInfo"])
            self.station.note_id_tag_info(payload["idTag"], cred)
            # records the id and the delivery in one commit: a start is never sent twice
            self.station.on_start_confirmed(event, mapping.remote_id(conf["transactionId"]),
                                            cred)
            self._tx_cache.clear()
            return True
        if action == "StopTransaction" and "idTagInfo" in conf and payload.get("idTag"):
            self.station.note_id_tag_info(payload["idTag"], mapping.credential(conf["idTagInfo"]))
        self.events.tx_event_delivered(event)
        return True

    def _checked_shape(self, action: str, payload: dict[str, Any]) -> bool:
        """True when a MeterValues of this shape passed the schema already in this run, so
        this one need not be checked again; raises OutgoingInvalid when a new shape fails.

        What varies from sample to sample in a MeterValues made here is the values, which
        mapping always renders as strings, and the timestamp, always in one format: what the
        schema can reject is the shape (measurands, units, phases, contexts, locations), fixed
        by the configuration. So each shape is checked once; a replay of thousands of samples
        does not validate each (StartTransaction and StopTransaction are always checked, by
        the link)."""
        if action != "MeterValues":
            return False
        shape = (tuple(sorted(payload)), tuple(
            tuple((k, v) for k, v in sorted(sv.items()) if k != "value")
            for mv in payload["meterValue"] for sv in mv["sampledValue"]))
        if shape in self._checked_shapes:
            return True
        try:
            self.validator.check_request(action, payload)
        except OcppCallError as exc:
            if self.link is not None:
                self.link.stats.outgoing_invalid += 1
            log.error("not sending invalid %s: %s", action, exc.description)
            raise OutgoingInvalid(exc.code, f"invalid {action}: {exc.description}") from None
        self._checked_shapes.add(shape)
        return True

    def _failed_attempt(self, event: TxEvent, action: str, payload: dict[str, Any],
                        why: str) -> bool:
        max_attempts = self.keys.get_int("TransactionMessageAttempts")
        retry_s = self.keys.get_int("TransactionMessageRetryInterval")
        attempts = event.attempts + 1
        if attempts >= max_attempts:
            log.error("%s (event #%d) failed %d times (%s): discarded as §3.7.1 says",
                      action, event.seq, attempts, why)
            self.store.log_event(self.wall(), "outbox_discarded", scrub(f"{action} {payload}"))
            self.events.tx_event_delivered(event)
            self._retry_due.pop(event.seq, None)
            return True
        # §3.7.1: wait TransactionMessageRetryInterval × the number of preceding transmissions;
        # the wall time is stored for the record, the wait is timed on the monotonic clock
        delay_s = float(retry_s * attempts)
        self._retry_due[event.seq] = self._monotonic() + delay_s
        self.events.tx_event_attempt(event.seq, next_attempt_at=self.wall().timestamp() + delay_s)
        log.warning("%s failed (%s); attempt %d of %d, next in %d s", action, why, attempts,
                    max_attempts, retry_s * attempts)
        return False
