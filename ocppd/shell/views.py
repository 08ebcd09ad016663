"""Read-only views of a connector for adapters, the control socket and tests: the core state
of the moment, with the stored transaction record and the last meter reading beside it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ocppd.config import ConnectorConfig
from ocppd.core.evse import Fault, MeterReading, PilotState
from ocppd.core.model import Status
from ocppd.core.session.derive import evse_suspended
from ocppd.core.session.state import ChargerState, ConnectorState, Waiting
from ocppd.storage import TxRecord


@dataclass(slots=True)
class Live:
    """What the shell keeps beside the core per connector: records and readings."""

    tx: TxRecord | None = None  # the stored record of the running transaction
    last_reading: MeterReading | None = None
    last_read_s: float | None = None  # monotonic time of last_reading
    # what the hardware said about each fault (the core keeps only which faults are active)
    fault_details: dict[Fault, str] = field(default_factory=dict)


def with_details(faults: tuple[Fault, ...], details: dict[Fault, str]) -> dict[Fault, str]:
    """Active faults in the order they appeared, each with what was said about it."""
    return {f: details.get(f, "") for f in faults}


class ConnectorView:
    def __init__(self, cid: int, cfg: ConnectorConfig, state: Callable[[], ChargerState],
                 live: Live) -> None:
        self.id, self.cfg, self._state, self._live = cid, cfg, state, live

    @property
    def _c(self) -> ConnectorState:
        return self._state().connector(self.id)

    @property
    def tx(self) -> TxRecord | None:
        return self._live.tx

    @property
    def last_reading(self) -> MeterReading | None:
        return self._live.last_reading

    @property
    def pilot(self) -> PilotState:
        return self._c.pilot

    @property
    def faults(self) -> dict[Fault, str]:
        """The connector's own active faults, first first, with their details."""
        return with_details(self._c.faults, self._live.fault_details)

    def all_faults(self) -> tuple[Fault, ...]:
        """The connector's faults, then the charger's: the first one is the one reported."""
        state = self._state()
        own = self._c.faults
        return own + tuple(f for f in state.faults if f not in own)

    @property
    def status(self) -> Status | None:
        return self._c.status

    @property
    def operative(self) -> bool:
        return self._c.operative

    @property
    def scheduled_operative(self) -> bool | None:
        return self._c.scheduled_operative

    @property
    def waiting(self) -> Waiting | None:
        return self._c.waiting

    @property
    def reservation_id(self) -> int | None:
        hold = self._c.hold
        return hold.reservation_id if hold is not None else None

    @property
    def invalid_id(self) -> bool:
        return self._c.invalid_id

    @property
    def stopping(self) -> bool:
        return self._c.stop is not None

    @property
    def evse_suspended(self) -> bool:
        return evse_suspended(self._c)

    @property
    def cable_max_a(self) -> float | None:
        return self._c.cable_max_a

    @property
    def smart_limit_a(self) -> float | None:
        return self._c.smart_limit_a

    @property
    def local_limit_a(self) -> float | None:
        return self._c.local_limit_a

    @property
    def share_a(self) -> float | None:
        return self._c.share_a

    @property
    def offer_a(self) -> float | None:
        return self._c.offer_a

    @property
    def contactor_closed(self) -> bool:
        return self._c.contactor_closed

    @property
    def register_wh(self) -> float | None:
        return self._c.energy_wh if self._live.last_reading is not None else None

    @property
    def session_energy_wh(self) -> float | None:
        tx, energy_wh = self._live.tx, self.register_wh
        if tx is None or energy_wh is None:
            return None
        return max(0.0, energy_wh - tx.meter_start_wh)

    def as_dict(self) -> dict[str, object]:
        """Plain data for diagnostics and ocppctl."""
        r, tx, waiting = self.last_reading, self.tx, self.waiting
        return {
            "id": self.id,
            "status": self.status.value if self.status else None,
            "fault": next(iter(self.faults), None),
            "transaction_id": tx.remote_id if tx else None,
            "local_tx_id": tx.local_id if tx else None,
            "id_tag": tx.id_tag if tx else (waiting.id_tag if waiting else None),
            "energy_wh": self.session_energy_wh,
            "register_wh": self.register_wh,
            "power_w": r.power_w if r else None,
            "limit_a": self.offer_a,
            "pilot": self.pilot.value,
            "contactor": "closed" if self.contactor_closed else "open",
        }
