"""The persistent security log: bounded, survives a reopen, delivery state kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from ocppd.storage import Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_security_log_survives_reopen_with_delivery_state(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db") as s:
        a = s.seclog_add(at=T0, kind="StartupOfTheDevice", tech_info=None, deliver=True)
        s.seclog_add(at=T0, kind="InvalidMessages", tech_info="x", deliver=False)
        s.seclog_attempt_failed(a, next_attempt_at=123.0)
    with Store.open(tmp_path / "db") as s:
        entries = s.seclog_entries()
        assert [(e.kind, e.delivery) for e in entries] == [
            ("StartupOfTheDevice", "pending"), ("InvalidMessages", "none")]
        head = s.seclog_next_pending()
        assert head is not None and head.id == a and head.attempts == 1
        assert head.next_attempt_at == 123.0
        s.seclog_delivered(a)
        assert s.seclog_next_pending() is None
        s.seclog_attempt_failed(a, next_attempt_at=None)
        assert s.seclog_entries()[0].delivery == "failed"


def test_security_log_is_bounded_oldest_dropped_first(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db", security_log_max=100) as s:
        for i in range(250):
            s.seclog_add(at=T0 + timedelta(seconds=i), kind="InvalidMessages",
                         tech_info=str(i), deliver=False)
        entries = s.seclog_entries()
        assert len(entries) == 100
        assert [e.tech_info for e in entries] == [str(i) for i in range(150, 250)]
        window = s.seclog_entries(T0 + timedelta(seconds=200), T0 + timedelta(seconds=209))
        assert len(window) == 10


def test_id_tags_seen_lists_every_stored_id_tag(tmp_path: Path) -> None:
    from ocppd.storage import AuthEntry

    with Store.open(tmp_path / "db") as s:
        s.begin_transaction(connector_id=1, id_tag="TX-TAG-1", meter_start_wh=0, started_at=T0,
                            parent_id_tag="TX-PARENT-1")
        s.cache_put(AuthEntry(id_tag="CACHED-1", status="Accepted", parent_id_tag="GROUP-1"),
                    max_entries=10)
        s.local_list_replace(1, [AuthEntry(id_tag="LISTED-1", status="Accepted")],
                             max_entries=10)
        assert s.id_tags_seen() == {"TX-TAG-1", "TX-PARENT-1", "CACHED-1", "GROUP-1", "LISTED-1"}
