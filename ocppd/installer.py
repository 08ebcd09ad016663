"""What an installer can see and do beyond ``ocppctl status``: the actions, the effective
configuration, the set-up check and the event stream, for the control socket and the web page.

Every action goes through the station's own entry points (the same a card, a cable or the
Central System use), so the safety rules hold: the contactor closes only for an authorized
session with an EV asking for power, and a local limit can only lower the offer.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ocppd import privacy
from ocppd.control import Refused
from ocppd.core.model import StopReason
from ocppd.events import EventBus, Subscription, display_id_tag
from ocppd.hw.base import Fault, PilotState
from ocppd.ocpp.v16.keys import KeyDef

if TYPE_CHECKING:
    from ocppd.ocpp.v16.chargepoint import ChargePoint
    from ocppd.shell.views import ConnectorView as Connector
    from ocppd.station import Station
    from ocppd.storage import Store

SECRET_SHOWN = "********"
# IEC 61851-1: a pilot in state B, C or D means an EV is connected; E/F are faults
_PILOT_MEANING = {
    "A": "no EV connected",
    "B": "EV connected, not asking for power",
    "C": "EV asking for power",
    "D": "EV asking for power, with ventilation",
    "E": "pilot shorted or no supply (fault)",
    "F": "EVSE not available (fault)",
}


def key_hint(d: KeyDef) -> str:
    """What a key accepts, in words (shown with a Rejected answer)."""
    if d.access == "R":
        return "read-only"
    if d.kind == "bool":
        return "true or false"
    if d.kind == "int":
        lo = "" if d.lo is None else str(d.lo)
        hi = "" if d.hi is None else str(d.hi)
        if lo and hi:
            return f"a whole number from {lo} to {hi}"
        if lo:
            return f"a whole number of at least {lo}"
        return "a whole number"
    if d.kind == "csl":
        return "a comma-separated list" + (" of known values" if d.check else "")
    return "text up to 500 characters" + (" in the key's format" if d.check else "")


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def config_view(cfg: Any) -> dict[str, Any]:
    """The configuration as loaded, section by section; fields marked secret are masked."""
    if not dataclasses.is_dataclass(cfg):
        return _plain(cfg)  # type: ignore[no-any-return]
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        if f.metadata.get("internal"):
            continue
        value = getattr(cfg, f.name)
        if f.metadata.get("secret"):
            out[f.name] = None if value is None else SECRET_SHOWN
        elif dataclasses.is_dataclass(value):
            out[f.name] = config_view(value)
        elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            out[f.name] = [config_view(v) for v in value]
        elif isinstance(value, dict) and value and dataclasses.is_dataclass(
            next(iter(value.values()))
        ):
            out[f.name] = {k: config_view(v) for k, v in value.items()}
        else:
            out[f.name] = _plain(value)
    return out


def limit_reasons(c: Connector, charger_limit_a: float | None,
                  hardware_max_a: float | None) -> list[dict[str, Any]]:
    """Every limit on the offer of connector ``c``, lowest first: why it offers what it does."""
    found = [
        ("connector", c.cfg.max_current_a),
        ("cable", c.cable_max_a),
        ("smart charging profile", c.smart_limit_a),
        ("local limit", c.local_limit_a),
        ("share of the charger limit", c.share_a),
        ("charger limit (ChargePointMax)", charger_limit_a),
        ("charger rating", hardware_max_a),
    ]
    return sorted(({"source": s, "limit_a": a} for s, a in found if a is not None),
                  key=lambda r: r["limit_a"])


class InstallerActions:
    """The control socket's installer commands; mixed into app.ControlApiImpl."""

    bus: EventBus | None = None

    # the daemon's parts, provided by the class this is mixed into
    @property
    def _station(self) -> Station:
        raise NotImplementedError

    @property
    def _cp(self) -> ChargePoint:
        raise NotImplementedError

    @property
    def _store(self) -> Store:
        raise NotImplementedError

    @property
    def _config(self) -> Any:
        raise NotImplementedError

    def _known(self, connector_id: int) -> None:
        if connector_id not in self._station.connectors:
            raise Refused(f"no connector {connector_id}")

    async def stop(self, connector_id: int) -> str:
        self._known(connector_id)
        c = self._station.connectors[connector_id]
        if c.tx is None:
            raise Refused(f"connector {connector_id} has no transaction to stop")
        # OCPP 1.6 §6.47 Reason Local: stopped at the charge point (here: by its installer)
        await self._station.stop_transaction(connector_id, StopReason.LOCAL)
        return f"stopped the transaction on connector {connector_id}"

    async def unlock(self, connector_id: int) -> str:
        self._known(connector_id)
        result = await self._station.unlock(connector_id)
        if result == "not_supported":
            raise Refused(f"connector {connector_id} has no cable lock")
        if result == "failed":
            raise Refused(f"connector {connector_id}: the lock did not open")
        return f"connector {connector_id} unlocked"

    def availability(self, connector_id: int, operative: bool) -> str:
        if connector_id != 0:
            self._known(connector_id)
        result = self._station.change_availability(connector_id, operative)
        if result == "rejected":
            raise Refused(f"no connector {connector_id}")
        return result

    def limit(self, connector_id: int, limit_a: float | None) -> None:
        self._known(connector_id)
        self._station.set_local_limit(connector_id, limit_a)

    async def meter(self, connector_id: int | None) -> None:
        if connector_id not in (None, 0):
            assert connector_id is not None
            self._known(connector_id)
        # as TriggerMessage(MeterValues) would (§5.17): read now, send to the Central System
        await self._station.sample_now(connector_id, "trigger")
        if self.bus is not None:
            self.bus.changed()

    def config_hint(self, key: str) -> str | None:
        d = self._cp.keys.definition(key)
        return None if d is None else key_hint(d)

    def config_show(self) -> dict[str, Any]:
        keys = self._cp.keys
        ocpp = []
        for d in keys.defs():
            shown = SECRET_SHOWN if (d.secret or d.access == "W") else keys.get(d.name)
            ocpp.append({"key": d.name, "value": shown, "access": d.access,
                         "restart": d.reboot, "hint": key_hint(d),
                         "write_only": d.secret or d.access == "W"})
        return {"toml": config_view(self._config), "keys": ocpp,
                "source": str(getattr(self._config, "source", None))}

    def events(self, limit: int) -> list[dict[str, Any]]:
        """The diagnostics events and the security log, merged, newest first."""
        found = [(at, kind, detail) for at, kind, detail in self._store.events()[-limit:]]
        seclog = getattr(self._store, "seclog_entries", None)
        if seclog is not None:
            found += [(e.at, f"security: {e.kind}", e.tech_info or "") for e in seclog()[-limit:]]
        found.sort(key=lambda row: row[0], reverse=True)
        return [{"at": at.isoformat(), "kind": kind, "detail": privacy.scrub(detail)}
                for at, kind, detail in found[:limit]]

    async def subscribe(self, frames: bool) -> Subscription:
        if self.bus is None:
            raise Refused("the event stream is not running")
        return await self.bus.subscribe(frames=frames)

    async def checks(self) -> list[dict[str, Any]]:
        """The set-up check: per connector, what each input says and what the daemon makes of
        it (verdict "ok", "problem" or "unknown")."""
        st = self._station
        await st.refresh_readings()
        out: list[dict[str, Any]] = []
        board = st.hw.board
        extra = getattr(board, "diagnostics", None)  # drivers that can tell more (voltages)
        for c in st.connectors.values():
            items: list[dict[str, Any]] = []

            def item(name: str, value: Any, verdict: str, why: str,
                     items: list[dict[str, Any]] = items) -> None:
                items.append({"name": name, "value": value, "verdict": verdict, "why": why})

            r = c.last_reading
            if st.hw.meters.get(c.id) is None:
                item("meter", None, "unknown", "no meter configured for this connector")
            elif r is None or Fault.METER_FAILURE in c.faults:
                item("meter", None, "problem",
                     c.faults.get(Fault.METER_FAILURE, "the meter does not answer"))
            else:
                item("meter energy register", f"{r.energy_import_wh / 1000:.3f} kWh", "ok",
                     "the meter answers")
                for i, v in enumerate(r.voltage_v or (), start=1):
                    ok = 207.0 <= v <= 253.0  # EN 50160: 230 V ±10 %
                    item(f"L{i} voltage", f"{v:.1f} V", "ok" if ok else "problem",
                         "within 230 V ±10 % (EN 50160)" if ok else "outside 230 V ±10 %")
                for i, a in enumerate(r.current_a or (), start=1):
                    over = c.offer_a is not None and a > c.offer_a * 1.1 + 0.5
                    item(f"L{i} current", f"{a:.1f} A", "problem" if over else "ok",
                         "above the offered current" if over else "not above what is offered")
            pilot = c.pilot.value
            item("control pilot", pilot,
                 "problem" if c.pilot in (PilotState.E, PilotState.F) else "ok",
                 _PILOT_MEANING.get(pilot, ""))
            if extra is not None:
                for name, (value, verdict, why) in (extra(c.id) or {}).items():
                    item(name, value, verdict, why)
            welded = Fault.CONTACTOR_WELDED in c.faults
            stuck = Fault.CONTACTOR_STUCK_OPEN in c.faults
            item("contactor", "closed" if c.contactor_closed else "open",
                 "problem" if welded or stuck else "ok",
                 "feedback disagrees with the command: "
                 + (c.faults.get(Fault.CONTACTOR_WELDED) or c.faults.get(
                     Fault.CONTACTOR_STUCK_OPEN) or "")
                 if welded or stuck else "feedback (if wired) agrees with the command")
            rcd = Fault.GROUND_FAILURE in c.faults or Fault.GROUND_FAILURE in st.charger_faults
            item("RCD / ground-fault monitor", "tripped" if rcd else "not tripped",
                 "problem" if rcd else "ok",
                 "energy is cut until it is reset" if rcd else "no residual current reported")
            if c.cfg.cable == "fixed":
                item("cable lock", "fixed cable", "ok", "a fixed cable has no lock")
            elif not board.has_lock(c.id):
                item("cable lock", "none", "unknown", "no lock configured for this socket")
            else:
                bad = c.faults.get(Fault.LOCK_FAILURE)
                item("cable lock", "fault" if bad else "ok", "problem" if bad else "ok",
                     bad or "the last lock move succeeded")
            estop = Fault.EMERGENCY_STOP in st.charger_faults
            item("emergency stop", "pressed" if estop else "released",
                 "problem" if estop else "ok", "all connectors are off" if estop else "")
            out.append({"connector_id": c.id, "items": items})
        return out

    def id_tag(self, id_tag: str | None) -> str | None:
        return display_id_tag(id_tag)
