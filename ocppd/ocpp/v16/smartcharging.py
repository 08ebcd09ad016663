"""Smart Charging profile (OCPP 1.6 §3.13, §5.16): SetChargingProfile, ClearChargingProfile,
GetCompositeSchedule, wired to the station.

The stacking and composite rules are in ocppd/core/smart.py; this module keeps the installed
profiles persistent, answers the three messages, and applies the effective limit to each
connector's pilot at once and again exactly at every boundary where it may change (a timer
per next change, no polling).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ocppd.config import Config
from ocppd.core.smart import Installed, ProfileSet, Purpose, RateUnit, SmartLimits
from ocppd.ocpp.v16 import profiles as pj
from ocppd.ocpp.v16.keys import Keys
from ocppd.station import Station
from ocppd.storage import Store, StoredProfile, TxRecord

log = logging.getLogger("ocppd.smart")


class SmartCharging:
    def __init__(
        self,
        *,
        cfg: Config,
        store: Store,
        station: Station,
        keys: Keys,
        wall: Callable[[], datetime],
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
        self.pending_remote: dict[int, dict[str, Any]] = {}
        self._timer: asyncio.TimerHandle | None = None
        station.on_tx_ended.append(self._tx_ended)
        station.on_tx_confirmed.append(self._tx_confirmed)

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
            c.id: (c.tx.tx_id if c.tx is not None else None)
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
        if isinstance(outcome, Installed):
            p = outcome.profile
            with self.store.atomic():  # a replaced profile must not come back after a restart
                for old in outcome.replaced_ids:
                    self.store.profile_delete(old)
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
        tx = self._tx(req.connector_id)
        conn_cfg = self.cfg.connectors[req.connector_id - 1] if req.connector_id else None
        schedule = self.profiles.composite(
            req.connector_id,
            self.wall(),
            req.duration_s,
            req.unit,
            tx_start=tx.started_at if tx else None,
            tx_id=tx.tx_id if tx else None,
            voltage_v=self.cfg.hardware.nominal_voltage_v,
            phases=conn_cfg.phases if conn_cfg else 3,
            connector_max_a=conn_cfg.max_current_a if conn_cfg else None,
        )
        return pj.get_composite_schedule_conf(req.connector_id, schedule)

    # --- transactions -----------------------------------------------------------------------------

    def _tx_confirmed(self, connector_id: int, tx: TxRecord) -> None:
        """A RemoteStartTransaction's profile becomes the TxProfile once the id is known."""
        payload = self.pending_remote.pop(connector_id, None)
        if payload is None:
            return
        try:
            profile = pj.profile_from_json(payload, connector_id)
        except pj.ProfileFormatError as exc:
            log.warning("profile of RemoteStartTransaction unusable: %s", exc)
            return
        self.install(profile)

    def _tx_ended(self, connector_id: int, tx: TxRecord) -> None:
        removed = self.profiles.end_transaction(connector_id)  # TxProfiles end with their tx
        for pid in removed:
            self.store.profile_delete(pid)
        self.pending_remote.pop(connector_id, None)
        self.apply()

    # --- applying the limit -----------------------------------------------------------------------

    def apply(self) -> None:
        """Set every connector's limit now and arm a timer for the next change."""
        now = self.wall()
        next_change: datetime | None = None
        for c in self.station.connectors.values():
            tx = c.tx
            limit = self.profiles.limit_at(
                c.id,
                now,
                tx_start=tx.started_at if tx else None,
                tx_id=tx.tx_id if tx else None,
                voltage_v=self.cfg.hardware.nominal_voltage_v,
                phases=c.cfg.phases,
            )
            self.station.set_limit(c.id, limit.current_a if limit is not None else None)
            change = self.profiles.next_change_after(
                c.id, now, tx_start=tx.started_at if tx else None, tx_id=tx.tx_id if tx else None
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
        if self._timer is not None:
            self._timer.cancel()


__all__ = ["SmartCharging", "Purpose"]
