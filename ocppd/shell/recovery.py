"""Start-up: what storage kept, in the core's terms (core/session/restore.py rebuilds from it).

The only place that reads the stored session state back; the station calls it once, at start.
"""

from __future__ import annotations

from collections.abc import Iterable

from ocppd.core.model import AuthStatus, StopReason
from ocppd.core.session.restore import Stored, StoredHold, StoredTx
from ocppd.core.session.state import Hold, Stop, Tx
from ocppd.storage import Reservation, Store, TxRecord


def core_tx(tx: TxRecord) -> Tx:
    """A stored transaction as the core sees it: its record id is the opaque key."""
    return Tx(
        tx_key=str(tx.local_id),
        id_tag=tx.id_tag,
        parent_id_tag=tx.parent_id_tag,
        meter_start_wh=tx.meter_start_wh,
        started_at=tx.started_at,
        id_tag_status=AuthStatus(tx.id_tag_status) if tx.id_tag_status is not None else None,
    )


def asked_stop(tx: TxRecord) -> Stop | None:
    """The stop asked for and not yet recorded when the charger went down, if any."""
    if not tx.stop_requested or tx.stop_reason is None:
        return None
    return Stop(reason=StopReason(tx.stop_reason), stop_id_tag=tx.stop_id_tag, unlock=True)


def hold(r: Reservation) -> Hold:
    return Hold(reservation_id=r.reservation_id, id_tag=r.id_tag,
                parent_id_tag=r.parent_id_tag, expiry=r.expiry)


def load(store: Store, connector_ids: Iterable[int]) -> tuple[Stored, dict[int, TxRecord]]:
    """The stored session state, and the open transaction records by connector."""
    availability = {}
    for cid in (0, *connector_ids):
        stored = store.get_availability(cid)
        if stored is not None:
            availability[cid] = stored
    records = {tx.connector_id: tx for tx in store.active_transactions()}
    return Stored(
        availability=availability,
        holds=tuple(StoredHold(connector_id=r.connector_id, hold=hold(r))
                    for r in store.reservations()),
        transactions=tuple(StoredTx(connector_id=cid, tx=core_tx(tx),
                                    last_meter_wh=tx.last_meter_wh, stop=asked_stop(tx))
                           for cid, tx in records.items()),
    ), records
