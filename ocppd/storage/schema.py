"""Numbered schema migrations, tracked in ``PRAGMA user_version``.

``MIGRATIONS[i]`` takes the database from version ``i`` to ``i + 1``. Each runs in its own
transaction together with the ``user_version`` bump, so a power cut leaves the database at one
version or the next, never between. Append new steps; never edit a released one (databases in
the field have already run it). tests/storage/test_migrations.py upgrades from every earlier
version, so a new step is tested as soon as it is added.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: tuple[str, ...] = (
    # 1: initial schema
    """
    -- store-internal values (the local authorization list version)
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    -- OCPP configuration keys and other small values owned by the layers above
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    -- OCPP 1.6 §5.2: availability set by ChangeAvailability survives a reboot, Scheduled too
    CREATE TABLE availability (
        connector_id INTEGER PRIMARY KEY,
        operative INTEGER NOT NULL,
        scheduled_operative INTEGER
    );
    -- AUTOINCREMENT: a local_id is never reused, even after old rows are pruned
    CREATE TABLE transactions (
        local_id INTEGER PRIMARY KEY AUTOINCREMENT,
        connector_id INTEGER NOT NULL,
        id_tag TEXT NOT NULL,
        tx_id INTEGER,
        meter_start_wh INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        last_meter_wh INTEGER,
        last_meter_at TEXT,
        meter_stop_wh INTEGER,
        stopped_at TEXT,
        stop_reason TEXT,
        stop_id_tag TEXT,
        reservation_id INTEGER,
        id_tag_status TEXT,
        finished INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE tx_samples (
        id INTEGER PRIMARY KEY,
        local_id INTEGER NOT NULL,
        taken_at TEXT NOT NULL,
        payload TEXT NOT NULL
    );
    -- OCPP 1.6 §3.7: transaction messages are queued before sending. AUTOINCREMENT: a seq
    -- is never reused, so a late confirmation can never remove a newer message.
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        action TEXT NOT NULL,
        payload TEXT NOT NULL,
        local_tx_id INTEGER,
        kind TEXT NOT NULL CHECK (kind IN ('start', 'stop', 'meter')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL,
        created_at TEXT NOT NULL
    );
    -- OCPP 1.6 §3.4 / §3.5: tag_key is the case-folded id tag (IdToken is a CiString20)
    CREATE TABLE auth_cache (
        tag_key TEXT PRIMARY KEY,
        id_tag TEXT NOT NULL,
        status TEXT NOT NULL,
        expiry TEXT,
        parent_id_tag TEXT,
        used_at INTEGER NOT NULL
    );
    CREATE TABLE local_list (
        tag_key TEXT PRIMARY KEY,
        id_tag TEXT NOT NULL,
        status TEXT NOT NULL,
        expiry TEXT,
        parent_id_tag TEXT
    );
    CREATE TABLE profiles (
        profile_id INTEGER PRIMARY KEY,
        connector_id INTEGER NOT NULL,
        purpose TEXT NOT NULL,
        stack_level INTEGER NOT NULL,
        tx_id INTEGER,
        payload TEXT NOT NULL
    );
    CREATE TABLE reservations (
        reservation_id INTEGER PRIMARY KEY,
        connector_id INTEGER NOT NULL,
        id_tag TEXT NOT NULL,
        parent_id_tag TEXT,
        expiry TEXT NOT NULL
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    """,
    # 2: indexes for the hot queries (queries spell the partial-index conditions literally)
    """
    CREATE INDEX transactions_by_tx_id ON transactions(tx_id) WHERE tx_id IS NOT NULL;
    CREATE INDEX transactions_active ON transactions(local_id) WHERE finished = 0;
    CREATE INDEX tx_samples_by_tx ON tx_samples(local_id, id);
    CREATE INDEX outbox_by_tx ON outbox(local_tx_id) WHERE local_tx_id IS NOT NULL;
    CREATE INDEX outbox_meter ON outbox(seq) WHERE kind = 'meter';
    CREATE INDEX auth_cache_lru ON auth_cache(used_at);
    CREATE INDEX events_by_time ON events(at);
    """,
    # 3: the session's parentIdTag. A card with the same parent may stop the session (§3.4),
    # and that must still hold after a restart that resumes the transaction.
    """
    ALTER TABLE transactions ADD COLUMN parent_id_tag TEXT;
    """,
    # 4: OCPP 1.6 Security Whitepaper: the security log and the certificate store.
    # security_log: every security event, the newest ``security_log_max_entries``; critical
    # ones are delivered to the Central System (SecurityEventNotification), queued here until
    # confirmed. delivery: 'none' (not critical), 'pending', 'sent', 'failed' (given up after
    # TransactionMessageAttempts).
    """
    CREATE TABLE security_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        tech_info TEXT,
        delivery TEXT NOT NULL CHECK (delivery IN ('none', 'pending', 'sent', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL
    );
    CREATE INDEX security_log_pending ON security_log(id) WHERE delivery = 'pending';
    CREATE INDEX security_log_by_time ON security_log(at);
    -- Security Whitepaper certificate management: installed root certificates (PEM), by use
    -- ('central_system_root' or 'manufacturer_root'); the fingerprint (SHA-256 of the DER)
    -- makes installing the same certificate twice a no-op
    CREATE TABLE certificates (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        use TEXT NOT NULL CHECK (use IN ('central_system_root', 'manufacturer_root')),
        fingerprint TEXT NOT NULL,
        pem TEXT NOT NULL,
        installed_at TEXT NOT NULL,
        UNIQUE (use, fingerprint)
    );
    """,
    # 5: SD-card wear: fewer pages written per meter sample (each is a page in the log).
    # - The outbox loses its two indexes (a page each per put and per delete; it is short in
    #   normal operation, and the queries that used them scan it in seq order, its primary key,
    #   or run once per transaction) and AUTOINCREMENT (a page of sqlite_sequence per put; the
    #   store hands out seqs itself, above every seq it ever used: outbox.py).
    # - tx_samples is keyed by (local_id, id) WITHOUT ROWID: the rows of a transaction are
    #   found through the table itself, not through an index written on every sample. Its
    #   energy_wh is the meter register of the sample, when the transaction's own row was not
    #   rewritten for it (transactions.py).
    """
    DROP INDEX outbox_by_tx;
    DROP INDEX outbox_meter;
    CREATE TABLE outbox_v5 (
        seq INTEGER PRIMARY KEY,
        action TEXT NOT NULL,
        payload TEXT NOT NULL,
        local_tx_id INTEGER,
        kind TEXT NOT NULL CHECK (kind IN ('start', 'stop', 'meter')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL,
        created_at TEXT NOT NULL
    );
    INSERT INTO outbox_v5 SELECT seq, action, payload, local_tx_id, kind, attempts,
        next_attempt_at, created_at FROM outbox;
    DROP TABLE outbox;
    ALTER TABLE outbox_v5 RENAME TO outbox;
    DROP INDEX tx_samples_by_tx;
    CREATE TABLE tx_samples_v5 (
        local_id INTEGER NOT NULL,
        id INTEGER NOT NULL,
        taken_at TEXT NOT NULL,
        payload TEXT NOT NULL,
        energy_wh INTEGER,
        PRIMARY KEY (local_id, id)
    ) WITHOUT ROWID;
    INSERT INTO tx_samples_v5 SELECT local_id, id, taken_at, payload, NULL FROM tx_samples;
    DROP TABLE tx_samples;
    ALTER TABLE tx_samples_v5 RENAME TO tx_samples;
    """,
    # 6: protocol-neutral transaction events with a sequence number (txevents.py) replace the
    # outbox of OCPP 1.6 messages and the StopTransaction samples: one row per event, one
    # delivery watermark instead of a delete per confirmation. Queued messages and samples of
    # earlier versions move over as they were written (legacy_action: the 1.6 action, data its
    # payload); the samples get negative seqs, below every watermark: they are part of their
    # transaction's stop, never a message of their own. No index besides the key: a sample
    # writes one page. 'authorized': the idTag of a transaction begun without one.
    """
    CREATE TABLE tx_events (
        seq INTEGER PRIMARY KEY,
        local_tx_id INTEGER,
        kind TEXT NOT NULL CHECK (kind IN ('started', 'authorized', 'sample', 'ended')),
        trigger TEXT,
        at TEXT NOT NULL,
        energy_wh INTEGER,
        data,
        legacy_action TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL,
        delivered INTEGER
    );
    INSERT INTO tx_events(seq, local_tx_id, kind, at, data, legacy_action, attempts,
                          next_attempt_at)
        SELECT seq, local_tx_id,
               CASE kind WHEN 'start' THEN 'started' WHEN 'stop' THEN 'ended' ELSE 'sample' END,
               created_at, payload, action, attempts, next_attempt_at
        FROM outbox;
    INSERT INTO tx_events(seq, local_tx_id, kind, at, energy_wh, data, legacy_action)
        SELECT -(ROW_NUMBER() OVER (ORDER BY local_id DESC, id DESC)), local_id, 'sample',
               taken_at, energy_wh, payload, 'transactionData'
        FROM tx_samples;
    DROP TABLE outbox;
    DROP TABLE tx_samples;
    -- transactions, rebuilt: the Central System's id is opaque text (1.6's integer, 2.0.1's
    -- string), and the idTag may come after the start (a begin point without authorization,
    -- core/session/state.py TxPoints). AUTOINCREMENT's high-water mark moves over: a local_id
    -- is never reused.
    CREATE TABLE transactions_v6 (
        local_id INTEGER PRIMARY KEY AUTOINCREMENT,
        connector_id INTEGER NOT NULL,
        id_tag TEXT,
        remote_id TEXT,
        meter_start_wh INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        last_meter_wh INTEGER,
        last_meter_at TEXT,
        meter_stop_wh INTEGER,
        stopped_at TEXT,
        stop_reason TEXT,
        stop_id_tag TEXT,
        reservation_id INTEGER,
        id_tag_status TEXT,
        finished INTEGER NOT NULL DEFAULT 0,
        parent_id_tag TEXT
    );
    INSERT INTO transactions_v6(local_id, connector_id, id_tag, remote_id, meter_start_wh,
                                started_at, last_meter_wh, last_meter_at, meter_stop_wh,
                                stopped_at, stop_reason, stop_id_tag, reservation_id,
                                id_tag_status, finished, parent_id_tag)
        SELECT local_id, connector_id, id_tag, CAST(tx_id AS TEXT), meter_start_wh, started_at,
               last_meter_wh, last_meter_at, meter_stop_wh, stopped_at, stop_reason,
               stop_id_tag, reservation_id, id_tag_status, finished, parent_id_tag
        FROM transactions;
    DELETE FROM sqlite_sequence WHERE name = 'transactions_v6';
    INSERT INTO sqlite_sequence(name, seq)
        SELECT 'transactions_v6', seq FROM sqlite_sequence WHERE name = 'transactions';
    DROP TABLE transactions;
    ALTER TABLE transactions_v6 RENAME TO transactions;
    CREATE INDEX transactions_active ON transactions(local_id) WHERE finished = 0;
    CREATE INDEX transactions_by_remote_id ON transactions(remote_id)
        WHERE remote_id IS NOT NULL;
    """,
)

LATEST_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection, target: int | None = None) -> list[int]:
    """Apply the missing steps up to ``target`` (default: the latest); returns the versions
    reached.

    ``conn`` must be in autocommit mode (``isolation_level=None``). sqlite3 errors propagate;
    the caller translates them.
    """
    latest = len(MIGRATIONS)
    target = latest if target is None else target
    if not 0 <= target <= latest:
        raise ValueError(f"schema version {target} does not exist (latest is {latest})")
    reached = []
    for version in range(schema_version(conn) + 1, target + 1):
        script = MIGRATIONS[version - 1]
        try:
            # executescript runs the statements as given: BEGIN/COMMIT make the step and the
            # version bump one transaction (user_version lives in the header page)
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {version};\nCOMMIT;"
            )
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        reached.append(version)
    return reached
