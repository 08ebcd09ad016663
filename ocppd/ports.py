"""The seams between the station shell and a protocol adapter, in both directions.

- ``StationApi``: everything an adapter (OCPP 1.6 today, 2.0.1 next) and the control socket may
  ask of the station. Adapters import this module, never ocppd.station, so the import contracts
  (pyproject.toml) can hold them apart from the hardware and the shell.
- ``CentralPort``: what the station needs from the Central System adapter.
- ``TxEventLog``: the recorded transaction events the adapter delivers, in order
  (storage/txevents.py keeps them; the adapter makes its messages of them).
- ``Policy``: the behaviour the Central System configures, read at every use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Protocol

from ocppd.config import ConnectorConfig
from ocppd.core.auth import AuthPolicy, Credential
from ocppd.core.evse import Fault, MeterReading, PilotState
from ocppd.core.model import Status, StopReason
from ocppd.core.records import Reservation, TxEvent, TxRecord
from ocppd.core.session.state import TxPoints, Waiting
from ocppd.errors import OcppdError


class Refused(OcppdError):
    """A command the station understood but will not carry out (the message says why)."""


# Runs as a session's transaction is recorded, before the contactor may close (a limit that
# came with the start command is installed here, so it holds from the first ampere).
SessionHook = Callable[[int, TxRecord], None]
TxHook = Callable[[int, TxRecord], None]


class Policy(Protocol):
    """Behaviour the Central System configures. Read on every use, so changes apply at once."""

    @property
    def connection_timeout_s(self) -> int: ...
    @property
    def tx_points(self) -> TxPoints:
        """Where transactions begin and end (OCPP 1.6 fixes them, 2.0.1 configures them)."""
    @property
    def unlock_on_ev_disconnect(self) -> bool: ...
    @property
    def meter_sample_interval_s(self) -> int: ...
    @property
    def clock_aligned_interval_s(self) -> int: ...
    @property
    def max_energy_on_invalid_id_wh(self) -> int | None: ...
    @property
    def authorize_remote_tx(self) -> bool: ...
    @property
    def auth(self) -> AuthPolicy: ...
    @property
    def auth_cache_max_entries(self) -> int: ...


class CentralPort(Protocol):
    """What the station needs from the Central System adapter."""

    @property
    def online(self) -> bool: ...

    async def authorize(self, id_tag: str) -> Credential | None:
        """Ask the Central System. None when it cannot be asked (offline, timeout)."""

    def tx_events_added(self) -> None:
        """Transaction events were recorded (TxEventLog): deliver them when it can."""

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
        """A meter sample that is not a recorded transaction event, sent as it is if it can be
        (no transaction: context periodic or clock; or context trigger, asked for by the
        Central System)."""

    def status_changed(self, connector_id: int, status: Status, fault: Fault | None) -> None: ...


class TxEventLog(Protocol):
    """Recorded transaction events, delivered strictly in ``seq`` order (storage/txevents.py).
    The adapter reads the pending ones, sends its messages and reports each one delivered
    (confirmed, or given up after the attempts the protocol allows)."""

    def tx_events_pending(self, limit: int | None = None) -> list[TxEvent]: ...

    def tx_events_count(self) -> int: ...

    def tx_events_of(self, local_tx_id: int) -> list[TxEvent]:
        """Every stored event of a transaction, in order (a stop message may carry samples)."""

    def tx_event_delivered(self, event: TxEvent) -> None: ...

    def tx_event_attempt(self, seq: int, *, next_attempt_at: float | None) -> int:
        """Count a failed attempt; returns the attempts so far."""

    def transaction(self, local_id: int) -> TxRecord | None: ...

    async def durable(self) -> None:
        """Returns once what was recorded survives a power cut (send nothing before)."""


class ConnectorInfo(Protocol):
    """A read-only view of one connector."""

    @property
    def id(self) -> int: ...
    @property
    def cfg(self) -> ConnectorConfig: ...
    @property
    def tx(self) -> TxRecord | None: ...
    @property
    def status(self) -> Status | None: ...
    @property
    def pilot(self) -> PilotState: ...
    @property
    def waiting(self) -> Waiting | None: ...
    @property
    def reservation_id(self) -> int | None: ...
    @property
    def stopping(self) -> bool: ...
    @property
    def operative(self) -> bool: ...
    @property
    def scheduled_operative(self) -> bool | None: ...
    @property
    def cable_max_a(self) -> float | None: ...


class StationApi(Protocol):
    """The station as adapters see it."""

    @property
    def connectors(self) -> Mapping[int, ConnectorInfo]: ...

    on_tx_started: list[TxHook]
    on_tx_confirmed: list[TxHook]
    on_tx_ended: list[TxHook]
    on_recovered: list[Callable[[], None]]

    def status_of(self, connector_id: int) -> tuple[Status, Fault | None]:
        """The status to report for a connector (0: the charger) and its first fault."""

    def connector_views(self) -> list[dict[str, object]]:
        """Every connector as plain data (diagnostics, ocppctl)."""

    def pick_free(self, id_tag: str | None, parent: str | None) -> int | None: ...

    def remote_start(
        self, id_tag: str, connector_id: int | None, *, on_start: SessionHook | None = None
    ) -> int | None: ...

    def remote_stop(self, remote_id: str) -> bool:
        """Stop the transaction the Central System knows by ``remote_id``; False: none."""

    async def stop_all(self, reason: StopReason) -> None: ...

    async def unlock(self, connector_id: int) -> str: ...

    def change_availability(self, connector_id: int, operative: bool) -> str: ...

    def set_limit(self, connector_id: int, limit_a: float | None) -> None: ...

    def set_charger_limit(self, limit_a: float | None) -> None: ...

    def reserve(self, r: Reservation) -> None: ...

    def cancel_reservation(self, reservation_id: int) -> bool: ...

    async def sample_now(self, connector_id: int | None, context: str) -> None: ...

    def retime(self) -> None: ...

    def note_id_tag_info(self, id_tag: str, cred: Credential) -> None: ...

    def on_start_confirmed(self, event: TxEvent, remote_id: str, cred: Credential) -> None:
        """The Central System confirmed a transaction's start event and gave it ``remote_id``:
        recorded together with the event's delivery (a start is never sent twice)."""
