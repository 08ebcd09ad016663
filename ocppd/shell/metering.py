"""Meter reading for the station shell: every reading goes through ``_read_meter``, which turns
a dead meter into a fault, refuses a register that goes backwards, hands the register to the
core (energy caps) and the EV's draw to the reduced-draw watch. On the periodic and clock-aligned
ticks (sampling.py) a transaction's sample is recorded as a transaction event, which the Central
System adapter delivers; other samples (no transaction, TriggerMessage) go to the adapter as
they are."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from ocppd.core.evse import Fault, MeterReading, reading_to_data
from ocppd.core.records import TxRecord
from ocppd.core.session.state import CurrentDrawn, EnergyRead, FaultSeen
from ocppd.errors import MeterError, StorageError

if TYPE_CHECKING:  # the type of ``self`` in the methods below
    from ocppd.shell.host import Host

log = logging.getLogger("ocppd.station")


class MeteringMixin:
    async def _read_meter(self: Host, cid: int) -> MeterReading | None:
        meter = self.hw.meters.get(cid)
        if meter is None:
            return None
        c = self.state.connector(cid)
        try:
            reading = await meter.read()
        except MeterError as exc:
            if Fault.METER_FAILURE not in c.faults:
                log.error("connector %d: meter failure: %s", cid, exc)
                self._live[cid].fault_details[Fault.METER_FAILURE] = str(exc)
                self._step_soon(FaultSeen(connector_id=cid, fault=Fault.METER_FAILURE,
                                          active=True))
            return None
        if Fault.METER_FAILURE in c.faults:
            log.info("connector %d: meter answers again", cid)
            self._step_soon(FaultSeen(connector_id=cid, fault=Fault.METER_FAILURE, active=False))
        live = self._live[cid]
        last_wh = c.energy_wh if live.last_reading is not None else None
        if last_wh is not None and reading.energy_import_wh < last_wh:
            # §7.31: registers are monotonic. A register going backwards (swapped meter) is
            # reported; we never turn it into negative energy.
            log.error(
                "connector %d: energy register went backwards (%.0f -> %.0f Wh); ignoring",
                cid,
                last_wh,
                reading.energy_import_wh,
            )
            self.store.log_event(self.wall(), "meter_backwards", f"connector {cid}")
            return None
        live.last_reading, live.last_read_s = reading, self.mono()
        self._step_soon(EnergyRead(connector_id=cid, energy_wh=reading.energy_import_wh))
        if reading.current_a:  # the core judges whether the EV frees part of its share
            self._step_soon(CurrentDrawn(connector_id=cid, current_a=max(reading.current_a),
                                         at_s=self.mono()))
        return reading

    def _energy_wh(self: Host, cid: int) -> int:
        c = self.state.connector(cid)
        if c.energy_wh is not None:
            return int(round(c.energy_wh))
        return c.tx.meter_start_wh if c.tx is not None else 0

    async def sample_now(self: Host, connector_id: int | None, context: str) -> None:
        """Read meters and pass samples on (periodic ticks and TriggerMessage)."""
        now = self.wall()
        for cid in self.connectors:
            if connector_id not in (None, 0, cid):
                continue
            reading = await self._read_meter(cid)
            if reading is None:
                continue
            tx = self._live[cid].tx
            if tx is not None and context == "periodic":
                self._record_sample(cid, tx, reading, now, "periodic")
                continue
            try:
                if tx is not None:  # e.g. TriggerMessage: the register is billing data too
                    self.store.update_meter(tx.local_id, int(round(reading.energy_import_wh)),
                                            now)
            except StorageError as exc:
                self._storage_failed(exc)
            if self.port is not None and context != "periodic":
                self.port.meter_sample(connector_id=cid, tx=tx, reading=reading, at=now,
                                       context=context,
                                       offered_a=self.state.connector(cid).offer_a)

    async def _sample_aligned(self: Host, at: datetime) -> None:
        for cid in self.connectors:
            reading = await self._read_meter(cid)
            if reading is None:
                continue
            tx = self._live[cid].tx
            if tx is not None:
                self._record_sample(cid, tx, reading, at, "clock")
            elif self.port is not None:
                self.port.meter_sample(connector_id=cid, tx=None, reading=reading, at=at,
                                       context="clock",
                                       offered_a=self.state.connector(cid).offer_a)

    def _record_sample(self: Host, cid: int, tx: TxRecord, reading: MeterReading,
                       at: datetime, trigger: str) -> None:
        """A transaction's sample is one event, one commit (one row: SD-card wear), with the
        register in it; the protocol adapter delivers it."""
        try:
            self.store.tx_event_add(
                tx.local_id, "sample", at, trigger=trigger,
                energy_wh=int(round(reading.energy_import_wh)),
                data=reading_to_data(reading, self.state.connector(cid).offer_a))
        except StorageError as exc:
            self._storage_failed(exc)
            return
        if self.port is not None:
            self.port.tx_events_added()

    async def refresh_readings(self: Host, max_age_s: float = 1.0) -> None:
        """Read the meters whose reading is older than ``max_age_s`` or than the last contactor
        move (for status views).

        Nothing is sent or stored: the samples the Central System gets follow their own
        intervals. The age limit keeps a script polling the status off the meter bus.
        """
        now_s = self.mono()
        for cid, live in self._live.items():
            switched_s = self._outputs.switched_s.get(cid)
            stale = live.last_read_s is None or now_s - live.last_read_s >= max_age_s
            if stale or (switched_s is not None and switched_s >= (live.last_read_s or 0.0)):
                await self._read_meter(cid)

