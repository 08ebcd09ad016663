"""Smart Charging profile (OCPP 1.6 §3.13, §5.16): SetChargingProfile, ClearChargingProfile,
GetCompositeSchedule, wired to the station.

The stacking and composite rules are in ocppd/core/smart.py; this module keeps the installed
profiles persistent, answers the three messages, and applies the effective limits at once and
again exactly at every boundary where they may change (a timer per next change, no polling):
the ChargePointMax limit to the charger as a whole (the station shares it between connectors,
ocppd/core/sharing.py), the Tx/TxDefault limit to each connector.

A RemoteStartTransaction's TxProfile (§5.11) is validated before the start is accepted,
installed (and stored) as the session's transaction is recorded, before the contactor may
close, bound to the transactionId when StartTransaction.conf brings it, and restored with the
session after a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from ocppd.config import Config
from ocppd.core.smart import (
    ConnectorSpec,
    Installed,
    Profile,
    ProfileSet,
    Purpose,
    RateUnit,
    SmartLimits,
    check_remote_start_profile,
)
from ocppd.ocpp.v16 import mapping
from ocppd.ocpp.v16 import profiles as pj
from ocppd.ocpp.v16.keys import Keys
from ocppd.ports import StationApi
from ocppd.storage import Store, StoredProfile, TxRecord
from ocppd.wallclock import ClockSteps

log = logging.getLogger("ocppd.smart")


class SmartCharging:
    def __init__(
        self,
        *,
        cfg: Config,
        store: Store,
        station: StationApi,
        keys: Keys,
        wall: Callable[[], datetime],
        clock_steps: ClockSteps | None = None,
    ) -> None:
        self.cfg, self.store, self.station, self.keys, self.wall = cfg, store, station, keys, wall
        loaded = []
        for sp in store.profiles():
            try:
                loaded.append(pj.profile_from_json(sp.payload, sp.connector_id))
            except pj.ProfileFormatError as exc:
                log.error("stored charging profile %d unreadable, dropped: %s", sp.profile_id, exc)
                store.profile_delete(sp.profile_id)
        self.profiles = ProfileSet.of(loaded)
        self._timer: asyncio.TimerHandle | None = None
        station.on_tx_ended.append(self._tx_ended)
        station.on_tx_confirmed.append(self._tx_confirmed)
        station.on_recovered.append(self._recovered)
        # schedules run on the wall clock: when it is set, the limits are those of the new
        # time and the next change is armed again from it (ocppd/wallclock.py)
        self._unsubscribe = clock_steps.subscribe(self.apply) if clock_steps else None

    def register(self, handlers: dict[str, Any]) -> None:
        handlers["SetChargingProfile"] = self.set_charging_profile
        handlers["ClearChargingProfile"] = self.clear_charging_profile
        handlers["GetCompositeSchedule"] = self.get_composite_schedule

    def limits(self) -> SmartLimits:
        units = set(self.keys.get_list("ChargingScheduleAllowedChargingRateUnit"))
        allowed = frozenset(
            u
            for u, name in ((RateUnit.AMPERES, "Current"), (RateUnit.WATTS, "Power"))
            if name in units
        )
        return SmartLimits(
            max_stack_level=self.keys.get_int("ChargeProfileMaxStackLevel"),
            max_periods=self.keys.get_int("ChargingScheduleMaxPeriods"),
            max_profiles=self.keys.get_int("MaxChargingProfilesInstalled"),
            allowed_units=allowed,
        )

    def _active_tx_ids(self) -> dict[int, int | None]:
        return {
            c.id: (mapping.transaction_id(c.tx))
            for c in self.station.connectors.values()
        }

    def _tx(self, connector_id: int) -> TxRecord | None:
        c = self.station.connectors.get(connector_id)
        return c.tx if c is not None else None

    # --- messages ---------------------------------------------------------------------------------

    def install(self, profile: Any) -> Installed | Any:
        outcome = self.profiles.install(
            profile, now=self.wall(), active_tx_ids=self._active_tx_ids(), limits=self.limits()
        )
        return self._installed(outcome)

    def _persist(self, p: Profile) -> None:
        self.store.profile_put(
            StoredProfile(
                profile_id=p.profile_id,
                connector_id=p.connector_id,
                purpose=p.purpose.value,
                stack_level=p.stack_level,
                tx_id=p.tx_id,
                payload=pj.profile_to_json(p),
            )
        )

    def _installed(self, outcome: Installed | Any) -> Installed | Any:
        if isinstance(outcome, Installed):
            p = outcome.profile
            with self.store.atomic():  # a replaced profile must not come back after a restart
                for old in outcome.replaced_ids:
                    self.store.profile_delete(old)
                self._persist(p)
            log.info(
                "charging profile %d installed on connector %d (%s, stack %d)",
                p.profile_id,
                p.connector_id,
                p.purpose.value,
                p.stack_level,
            )
            self.apply()
        else:
            log.info("charging profile rejected: %s", getattr(outcome, "reason", outcome))
        return outcome

    async def set_charging_profile(self, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            profile = pj.parse_set_charging_profile(payload)
        except pj.ProfileFormatError as exc:
            log.info("SetChargingProfile rejected: %s", exc)
            return {"status": "Rejected"}
        if profile.connector_id not in (0, *self.station.connectors):
            return {"status": "Rejected"}
        return pj.set_charging_profile_conf(self.install(profile))

    async def clear_charging_profile(self, payload: dict[str, Any]) -> dict[str, Any]:
        req = pj.parse_clear_charging_profile(payload)
        removed = self.profiles.clear(
            profile_id=req.profile_id,
            connector_id=req.connector_id,
            purpose=req.purpose,
            stack_level=req.stack_level,
        )
        for pid in removed:
            self.store.profile_delete(pid)
        self.apply()
        return pj.clear_charging_profile_conf(removed)

    async def get_composite_schedule(self, payload: dict[str, Any]) -> dict[str, Any]:
        req = pj.parse_get_composite_schedule(payload, connector_count=len(self.station.connectors))
        if req is None:
            return pj.get_composite_schedule_conf(int(payload.get("connectorId", 0)), None)
        site_a = self.cfg.hardware.max_current_a
        if req.connector_id == 0:  # §7.8: what the charger as a whole may draw
            schedule = self.profiles.charger_composite(
                self.wall(),
                req.duration_s,
                req.unit,
                connectors=[self._spec(c.id) for c in self.station.connectors.values()],
                voltage_v=self.cfg.hardware.nominal_voltage_v,
                site_max_a=site_a,
            )
            return pj.get_composite_schedule_conf(0, schedule)
        spec = self._spec(req.connector_id)
        schedule = self.profiles.composite(
            req.connector_id,
            self.wall(),
            req.duration_s,
            req.unit,
            tx_start=spec.tx_start,
            tx_id=spec.tx_id,
            voltage_v=self.cfg.hardware.nominal_voltage_v,
            phases=spec.phases,
            connector_max_a=spec.max_current_a
            if site_a is None
            else min(spec.max_current_a, site_a),
        )
        return pj.get_composite_schedule_conf(req.connector_id, schedule)

    def _spec(self, connector_id: int) -> ConnectorSpec:
        c = self.station.connectors[connector_id]
        tx = c.tx
        cable = c.cable_max_a
        return ConnectorSpec(
            connector_id=c.id,
            max_current_a=c.cfg.max_current_a if cable is None else min(cable, c.cfg.max_current_a),
            phases=c.cfg.phases,
            tx_start=tx.started_at if tx else None,
            tx_id=mapping.transaction_id(tx),
        )

    # --- transactions -----------------------------------------------------------------------------

    def remote_start_profile(self, payload: Any) -> Profile | None:
        """§5.11: the chargingProfile of a RemoteStartTransaction, or None if it must be
        Rejected (not a TxProfile, a transactionId set, a schedule this charger refuses)."""
        try:
            profile = pj.profile_from_json(payload, 0)
        except pj.ProfileFormatError as exc:
            log.info("RemoteStartTransaction rejected: chargingProfile: %s", exc)
            return None
        reason = check_remote_start_profile(profile, self.limits())
        if reason is not None:
            log.info("RemoteStartTransaction rejected: chargingProfile: %s", reason.value)
            return None
        return profile

    def session_hook(self, profile: Profile) -> Callable[[int, TxRecord], None]:
        """What the station runs as the remote-started transaction is recorded: the profile
        is installed and stored, and its limit applied, before the contactor may close."""

        def on_start(connector_id: int, tx: TxRecord) -> None:
            p = replace(profile, connector_id=connector_id)
            outcome = self.profiles.add_session_profile(p, now=self.wall(), limits=self.limits())
            self._installed(outcome)
            if (tx_id := mapping.transaction_id(tx)) is not None:
                self._bind(connector_id, tx_id)

        return on_start

    def _bind(self, connector_id: int, tx_id: int) -> None:
        for p in self.profiles.bind_transaction(connector_id, tx_id):
            self._persist(p)

    def _tx_confirmed(self, connector_id: int, tx: TxRecord) -> None:
        """The transactionId is known: a RemoteStartTransaction's profile is bound to it."""
        if (tx_id := mapping.transaction_id(tx)) is not None:
            self._bind(connector_id, tx_id)

    def _tx_ended(self, connector_id: int, tx: TxRecord) -> None:
        removed = self.profiles.end_transaction(connector_id)  # TxProfiles end with their tx
        for pid in removed:
            self.store.profile_delete(pid)
        self.apply()

    def _recovered(self) -> None:
        """After a restart: Tx profiles stay only with the transaction they belong to (a
        resumed one); those of transactions closed meanwhile go. Then the limits hold before
        any output is applied."""
        for c in self.station.connectors.values():
            tx = c.tx
            stale = [
                p.profile_id
                for p in self.profiles.profiles
                if p.purpose is Purpose.TX
                and p.connector_id == c.id
                and (tx is None or (p.tx_id is not None and p.tx_id != mapping.transaction_id(tx)))
            ]
            for pid in stale:
                self.profiles.clear(profile_id=pid)
                self.store.profile_delete(pid)
            if (tx_id := mapping.transaction_id(tx)) is not None:
                self._bind(c.id, tx_id)
        self.apply()

    # --- applying the limit -----------------------------------------------------------------------

    def apply(self) -> None:
        """Set every connector's limit now and arm a timer for the next change."""
        now = self.wall()
        next_change: datetime | None = None
        # the charger as a whole first: its limit is shared before connectors' own ones change
        whole = self.profiles.charger_limit_at(
            now,
            voltage_v=self.cfg.hardware.nominal_voltage_v,
            phases=max(c.cfg.phases for c in self.station.connectors.values()),
        )
        self.station.set_charger_limit(whole.current_a if whole is not None else None)
        for c in self.station.connectors.values():
            tx = c.tx
            limit = self.profiles.limit_at(
                c.id,
                now,
                tx_start=tx.started_at if tx else None,
                tx_id=mapping.transaction_id(tx),
                voltage_v=self.cfg.hardware.nominal_voltage_v,
                phases=c.cfg.phases,
            )
            self.station.set_limit(c.id, limit.current_a if limit is not None else None)
            change = self.profiles.next_change_after(
                c.id, now, tx_start=tx.started_at if tx else None, tx_id=mapping.transaction_id(tx)
            )
            if change is not None and (next_change is None or change < next_change):
                next_change = change
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if next_change is not None:
            delay = max(0.0, (next_change - self.wall()).total_seconds())
            self._timer = asyncio.get_running_loop().call_later(delay + 0.001, self.apply)

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._timer is not None:
            self._timer.cancel()


__all__ = ["SmartCharging", "Purpose"]
