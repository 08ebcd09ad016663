"""How the 1.6 adapter makes its transaction messages of the recorded events (txmessages.py):
StopTransaction.transactionData from the rows of the transaction, the MeterValues schema check
once per shape, rows of earlier versions sent as written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ocppd.core.evse import MeterReading, reading_to_data
from ocppd.ocpp.rpc import OutgoingInvalid
from ocppd.ocpp.v16.keys import Keys, standard_keys
from ocppd.ocpp.v16.txmessages import NOT_YET, TxMessagesMixin
from ocppd.ocpp.validate import Validator
from ocppd.storage import Store

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


class Sender(TxMessagesMixin):
    """The sender alone, on a real store (no link: these tests call what builds messages)."""

    def __init__(self, store: Store, samples_max: int = 1000) -> None:
        self.store = self.events = store  # type: ignore[assignment]
        self.keys = Keys(store, standard_keys(connectors=1), {})
        self.validator = CountingValidator()
        self.cfg = SimpleNamespace(storage=SimpleNamespace(  # type: ignore[assignment]
            stop_txn_data_max_samples=samples_max))
        self.link = None  # type: ignore[assignment]
        self._tx_cache = {}
        self._checked_shapes = set()


class CountingValidator(Validator):
    def __init__(self) -> None:
        super().__init__()
        self.checked = 0

    def check_request(self, action: str, payload: Any) -> None:
        self.checked += 1
        super().check_request(action, payload)


def _reading(wh: float) -> dict[str, Any]:
    return reading_to_data(MeterReading(energy_import_wh=wh, power_w=7200.0), 16.0)


def _session(store: Store, samples: int, *, clock_every: int = 0) -> int:
    lid = store.begin_transaction(connector_id=1, id_tag="CARD", meter_start_wh=100,
                                  started_at=T0)
    store.set_remote_id(lid, "77")
    store.tx_event_add(lid, "started", T0, energy_wh=100, data=_reading(100))
    for i in range(1, samples + 1):
        trigger = "clock" if clock_every and i % clock_every == 0 else "periodic"
        store.tx_event_add(lid, "sample", T0 + timedelta(minutes=i), trigger=trigger,
                           energy_wh=100 + i, data=_reading(100 + i))
    end = T0 + timedelta(minutes=samples + 1)
    store.finish_transaction(lid, meter_stop_wh=200, stopped_at=end, reason="local",
                             stop_id_tag="CARD")
    store.tx_event_add(lid, "ended", end, energy_wh=200, data=_reading(200))
    return lid


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "ocppd.db")
    yield s  # type: ignore[misc]
    s.close()


def _messages(sender: Sender, store: Store) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for event in store.tx_events_pending():
        message = sender._message(event)
        if message is not None:
            out.append(message)
    return out


def test_the_stop_carries_begin_samples_and_end_of_the_configured_measurands(
        store: Store) -> None:
    sender = Sender(store)
    sender.keys.change("StopTxnSampledData", "Energy.Active.Import.Register")
    sender.keys.change("StopTxnAlignedData", "Power.Active.Import")
    _session(store, 4, clock_every=2)
    messages = _messages(sender, store)
    assert [a for a, _ in messages] == ["StartTransaction"] + ["MeterValues"] * 4 + [
        "StopTransaction"]
    stop = messages[-1][1]
    assert stop["transactionId"] == 77 and stop["meterStop"] == 200
    data = stop["transactionData"]
    contexts = [(d["sampledValue"][0]["context"], d["sampledValue"][0]["measurand"])
                for d in data]
    assert contexts == [("Transaction.Begin", "Energy.Active.Import.Register"),
                        ("Sample.Periodic", "Energy.Active.Import.Register"),
                        ("Sample.Clock", "Power.Active.Import"),
                        ("Sample.Periodic", "Energy.Active.Import.Register"),
                        ("Sample.Clock", "Power.Active.Import"),
                        ("Transaction.End", "Energy.Active.Import.Register")]
    sender.validator.check_request("StopTransaction", stop)


def test_the_stop_keeps_the_first_and_the_newest_samples(store: Store) -> None:
    sender = Sender(store, samples_max=5)
    sender.keys.change("StopTxnSampledData", "Energy.Active.Import.Register")
    _session(store, 20)
    stop = _messages(sender, store)[-1][1]
    values = [d["sampledValue"][0]["value"] for d in stop["transactionData"]]
    assert values == ["100", "118", "119", "120", "200"]  # Begin, then the newest


def test_no_stop_data_without_stop_measurands(store: Store) -> None:
    sender = Sender(store)
    sender.keys.change("StopTxnSampledData", "")
    _session(store, 3)
    assert "transactionData" not in _messages(sender, store)[-1][1]


def test_meter_values_are_checked_once_per_shape(store: Store) -> None:
    sender = Sender(store)
    _session(store, 5)
    meter = [p for a, p in _messages(sender, store) if a == "MeterValues"]
    assert len(meter) == 5 and all(p["transactionId"] == 77 for p in meter)
    for payload in meter:
        assert sender._checked_shape("MeterValues", payload)
    assert sender.validator.checked == 1  # the same shape five times
    other = dict(meter[0], meterValue=[dict(meter[0]["meterValue"][0], sampledValue=[
        dict(meter[0]["meterValue"][0]["sampledValue"][0], phase="L1")])])
    assert sender._checked_shape("MeterValues", other)
    assert sender.validator.checked == 2  # a new shape is checked
    bad = dict(meter[0], meterValue=[dict(meter[0]["meterValue"][0], sampledValue=[
        dict(meter[0]["meterValue"][0]["sampledValue"][0], measurand="Bogus")])])
    with pytest.raises(OutgoingInvalid):
        sender._checked_shape("MeterValues", bad)
    with pytest.raises(OutgoingInvalid):  # and is never taken for a checked one
        sender._checked_shape("MeterValues", bad)
    assert not sender._checked_shape("StartTransaction", {})  # left to the link


def test_a_row_of_an_earlier_version_goes_out_as_written_with_the_id_filled_in(
        store: Store) -> None:
    sender = Sender(store)
    lid = store.begin_transaction(connector_id=1, id_tag="OLD", meter_start_wh=0,
                                  started_at=T0)
    store.set_remote_id(lid, "5")
    with store._db.write("seed a version-5 row"):
        store._db.exec("INSERT INTO tx_events(seq, local_tx_id, kind, at, data, legacy_action)"
                       " VALUES (1, ?, 'sample', ?, ?, 'MeterValues')",
                       (lid, T0.isoformat(), '{"connectorId": 1, "meterValue": []}'))
    (event,) = store.tx_events_pending()
    assert sender._message(event) == ("MeterValues", {"connectorId": 1, "meterValue": [],
                                                      "transactionId": 5})


def test_a_start_waits_for_its_idtag_and_authorized_makes_no_message(store: Store) -> None:
    """A transaction begun before its idTag (a begin point 1.6 never configures): its
    StartTransaction can only be made once the idTag is recorded; nothing behind it goes."""
    sender = Sender(store)
    lid = store.begin_transaction(connector_id=1, id_tag=None, meter_start_wh=0,
                                  started_at=T0)
    store.tx_event_add(lid, "started", T0, energy_wh=0)
    (started,) = store.tx_events_pending()
    assert sender._message(started) is NOT_YET
    store.record_authorization(lid, id_tag="CARD", parent_id_tag=None)
    store.tx_event_add(lid, "authorized", T0)
    sender._tx_cache.clear()  # as the sender does for each batch it reads
    started, authorized = store.tx_events_pending()
    message = sender._message(started)
    assert message is not NOT_YET and message is not None
    assert message[0] == "StartTransaction" and message[1]["idTag"] == "CARD"
    assert sender._message(authorized) is None
