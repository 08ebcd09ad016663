"""Recording transactions for the station shell: the effects BeginTransaction, EndTransaction
and RecordStopRequest, and the Central System's verdict on a started one. Each start and stop
writes the transaction and its event (started, ended: storage/txevents.py, which the protocol
adapter delivers) in one SQLite transaction, serialized by the station's lock, so a power cut
leaves either both or neither."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ocppd.core.auth import Credential
from ocppd.core.evse import reading_to_data
from ocppd.core.model import AuthStatus
from ocppd.core.records import TxEvent
from ocppd.core.session.state import (
    BeginTransaction,
    EndPoint,
    EndTransaction,
    IdTagJudged,
    RecordAuthorization,
    RecordStopRequest,
    TxEnded,
    TxStarted,
)
from ocppd.errors import StorageError
from ocppd.ports import Refused
from ocppd.privacy import tag
from ocppd.shell import recovery

if TYPE_CHECKING:  # the type of ``self`` in the methods below
    from ocppd.shell.host import Host

log = logging.getLogger("ocppd.station")


class RecordingMixin:
    storage_error: str | None  # the last write failure (full disk), for ocppctl

    async def _record_start(self: Host, e: BeginTransaction) -> None:
        cid = e.connector_id
        on_start = self._on_start.pop(cid, None)
        async with self._lock:
            if self.state.connector(cid).tx is not None:
                return
            # The plug was locked before the core asked for this (OCTT TC_024, machine.py).
            lockable = self._specs[cid - 1].lockable
            reading = await self._read_meter(cid)
            now = self.wall()
            meter_start = self._energy_wh(cid)
            try:
                with self.store.atomic():
                    local_id = self.store.begin_transaction(
                        connector_id=cid,
                        id_tag=e.id_tag,
                        meter_start_wh=meter_start,
                        started_at=now,
                        reservation_id=e.reservation_id,
                        parent_id_tag=e.parent_id_tag,
                    )
                    if e.reservation_id is not None:
                        self.store.reservation_delete(e.reservation_id)
                    tx = self.store.transaction(local_id)
                    assert tx is not None
                    self.store.tx_event_add(
                        local_id, "started", now, energy_wh=meter_start,
                        data=None if reading is None else reading_to_data(
                            reading, self.state.connector(cid).offer_a))
                # the contactor closes on a recorded transaction only (storage/durability.py)
                await self.store.durable()
            except StorageError as exc:
                # A transaction that cannot be recorded cannot be billed: no energy for it,
                # and no session holds the plug.
                self._storage_failed(exc)
                if lockable:
                    await self._move_lock(cid, locked=False)
                raise Refused(f"cannot record the transaction: {exc}") from None
            self.storage_error = None
            self._live[cid].tx = tx
            log.info(
                "connector %d: transaction %d started for %s at %d Wh",
                cid,
                local_id,
                tag(e.id_tag),
                meter_start,
                extra={"CONNECTOR_ID": cid},
            )
            if self.port is not None:
                self.port.tx_events_added()
            if on_start is not None:
                on_start(cid, tx)  # first: its limit must hold before the contactor may close
            for hook in self.on_tx_started:
                hook(cid, tx)
            jobs = self._step(TxStarted(connector_id=cid, tx=recovery.core_tx(tx)))
        for job in jobs:  # a refused idTag may stop it at once: outside the lock
            await job

    async def _record_stop(self: Host, e: EndTransaction) -> None:
        cid = e.connector_id
        tx = self._live[cid].tx
        assert tx is not None and str(tx.local_id) == e.tx_key
        async with self._lock:
            reading = await self._read_meter(cid) if e.end is EndPoint.NOW else None
            match e.end:
                case EndPoint.NOW:
                    meter_stop, now = max(self._energy_wh(cid), tx.meter_start_wh), self.wall()
                case EndPoint.LAST_RECORD:  # the power went: its last stored reading is all
                    meter_stop = max(tx.last_meter_wh or tx.meter_start_wh, tx.meter_start_wh)
                    now = tx.last_meter_at or tx.started_at
                case EndPoint.AS_ASKED:
                    # asked before a restart: the contactor was open since, so the register
                    # read at start-up is the one at the stop (the stored one if the meter
                    # does not answer)
                    live_wh = self._energy_wh(cid) if self._live[cid].last_reading else 0
                    meter_stop = max(tx.meter_start_wh, tx.last_meter_wh or 0, live_wh)
                    now = tx.stopped_at or self.wall()
            try:
                with self.store.atomic():
                    self.store.finish_transaction(
                        tx.local_id,
                        meter_stop_wh=meter_stop,
                        stopped_at=now,
                        reason=e.reason.value,
                        stop_id_tag=e.stop_id_tag,
                    )
                    done = self.store.transaction(tx.local_id)
                    assert done is not None
                    self.store.tx_event_add(
                        tx.local_id, "ended", now, energy_wh=meter_stop,
                        data=None if reading is None else reading_to_data(
                            reading, self.state.connector(cid).offer_a))
                if self.port is not None:
                    self.port.tx_events_added()
            except StorageError as exc:
                # The contactor is already open. The transaction stays open in the database and
                # is stopped at the next start-up (power-loss rules) with its last reading.
                self._storage_failed(exc)
                done = tx
            log.info(
                "connector %d: transaction %d stopped (%s%s) at %d Wh",
                cid,
                tx.local_id,
                e.reason.value,
                ", asked before the restart" if e.end is EndPoint.AS_ASKED else "",
                meter_stop,
                extra={"CONNECTOR_ID": cid},
            )
            self._live[cid].tx = None
            for hook in self.on_tx_ended:
                hook(cid, done)
            jobs = self._step(TxEnded(connector_id=cid))
        for job in jobs:
            await job

    def _record_authorization(self: Host, e: RecordAuthorization) -> None:
        """The idTag of a transaction begun without one (a begin point without authorization,
        which OCPP 1.6 never configures): recorded with an 'authorized' event, which a 2.0.1
        adapter reports (TransactionEvent Updated, trigger Authorized)."""
        tx = self._live[e.connector_id].tx
        if tx is None:
            return
        try:
            with self.store.atomic():
                self.store.record_authorization(tx.local_id, id_tag=e.id_tag,
                                                parent_id_tag=e.parent_id_tag)
                self.store.tx_event_add(tx.local_id, "authorized", self.wall())
        except StorageError as exc:
            # the core gave the idTag already; a restart without it ends like any
            # transaction without one (no energy was given for it before this)
            self._storage_failed(exc)
            return
        done = self.store.transaction(tx.local_id)
        if done is not None:
            self._live[e.connector_id].tx = done
        log.info("connector %d: transaction %d authorized for %s", e.connector_id,
                 tx.local_id, tag(e.id_tag), extra={"CONNECTOR_ID": e.connector_id})
        if self.port is not None:
            self.port.tx_events_added()

    def _record_stop_request(self: Host, e: RecordStopRequest) -> None:
        tx = self._live[e.connector_id].tx
        if tx is None:
            return
        try:
            self.store.request_stop(tx.local_id, reason=e.reason.value,
                                    stop_id_tag=e.stop_id_tag, at=self.wall())
        except StorageError as exc:
            self._storage_failed(exc)  # the stop goes on; only its crash-safety is lost

    def _storage_failed(self: Host, exc: StorageError) -> None:
        if self.storage_error != str(exc):
            log.error("storage write failed: %s", exc)
        self.storage_error = str(exc)

    def on_start_confirmed(self: Host, event: TxEvent, remote_id: str, cred: Credential) -> None:
        """The start event was confirmed (possibly long after an offline start): the id the
        Central System gave and its verdict are recorded with the delivery, in one commit."""
        local_id = event.local_tx_id
        with self.store.atomic():
            if local_id is not None:
                self.store.set_remote_id(local_id, remote_id)
                self.store.set_id_tag_status(local_id, cred.status.value)
                if cred.parent_id_tag is not None:  # the Central System's word on the parent
                    self.store.set_parent_id_tag(local_id, cred.parent_id_tag)
            self.store.tx_event_delivered(event)
        if local_id is None:
            return
        for cid, live in self._live.items():
            if live.tx is None or live.tx.local_id != local_id:
                continue
            tx = self.store.transaction(local_id)
            if tx is None:
                continue
            live.tx = tx
            for hook in self.on_tx_confirmed:
                hook(cid, tx)
            if cred.status is not AuthStatus.ACCEPTED:
                log.warning("connector %d: idTag %s rejected by the Central System (%s)",
                            cid, tag(tx.id_tag), cred.status.value)
            if self.state.connector(cid).tx is not None:
                self._step_soon(IdTagJudged(connector_id=cid, status=cred.status,
                                            parent_id_tag=cred.parent_id_tag))

