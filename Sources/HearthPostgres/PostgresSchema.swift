/// The PostgreSQL schema, as named migrations (never edited once landed; a change is a new one).
/// Times are milliseconds since 1970 (BIGINT), as in the SQLite driver, so both read the same.
enum PostgresSchema {
    static let store: [(name: String, statements: [String])] = [
        (
            "2026-12-05 store",
            [
                """
                CREATE TABLE accounts (
                    id TEXT PRIMARY KEY,
                    role TEXT NOT NULL CHECK (role IN ('operator', 'owner')),
                    email_index TEXT NOT NULL UNIQUE,
                    email_sealed BYTEA NOT NULL,
                    password_hash TEXT NOT NULL,
                    created_at BIGINT NOT NULL,
                    recovery_hash TEXT,
                    deletion_requested_at BIGINT,
                    delete_after BIGINT,
                    deletion_token_hash TEXT
                )
                """,
                "CREATE INDEX accounts_deletion ON accounts(delete_after) WHERE delete_after IS NOT NULL",
                """
                CREATE TABLE sessions (
                    token_hash TEXT PRIMARY KEY,
                    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
                    created_at BIGINT NOT NULL,
                    expires_at BIGINT NOT NULL
                )
                """,
                "CREATE INDEX sessions_expiry ON sessions(expires_at)",
                "CREATE INDEX sessions_by_account ON sessions(account_id)",
                "CREATE TABLE setup_links (token_hash TEXT PRIMARY KEY, created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL)",
                "CREATE TABLE product_models (id TEXT PRIMARY KEY, definition TEXT NOT NULL, created_at BIGINT NOT NULL)",
                """
                CREATE TABLE devices (
                    serial TEXT COLLATE "C" PRIMARY KEY,
                    model_id TEXT NOT NULL REFERENCES product_models(id),
                    certificate_pem TEXT NOT NULL,
                    setup_code_hash TEXT NOT NULL,
                    provisioned_at BIGINT NOT NULL,
                    owner_id TEXT REFERENCES accounts(id),
                    claimed_at BIGINT,
                    revoked_at BIGINT,
                    name_sealed BYTEA,
                    reserved_for TEXT,
                    reserved_until BIGINT,
                    last_reset TEXT,
                    pending_certificate_pem TEXT,
                    quarantined_at BIGINT,
                    quarantine_reason TEXT
                )
                """,
                "CREATE INDEX devices_owner ON devices(owner_id)",
                "CREATE INDEX devices_by_model ON devices(model_id, serial)",
                """
                CREATE TABLE audit_log (
                    seq BIGINT PRIMARY KEY,
                    at BIGINT NOT NULL,
                    kind TEXT NOT NULL,
                    actor TEXT,
                    subject TEXT,
                    detail TEXT NOT NULL,
                    prev_mac TEXT NOT NULL,
                    mac TEXT NOT NULL
                )
                """,
                "CREATE INDEX audit_by_subject ON audit_log(subject, seq)",
                "CREATE INDEX audit_by_actor ON audit_log(actor, seq)",
                // Append-only, enforced by the database for every role but the table's owner
                // dropping the trigger; the MAC chain shows any edit that gets past it.
                """
                CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$
                """,
                """
                CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
                FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()
                """,
                """
                CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
                FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()
                """,
                """
                CREATE TABLE audit_head (
                    id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL, mac TEXT NOT NULL, head_mac TEXT NOT NULL
                )
                """,
                """
                CREATE TABLE reports (
                    id TEXT PRIMARY KEY, received_at BIGINT NOT NULL, state TEXT NOT NULL,
                    status_token_hash TEXT NOT NULL UNIQUE, sealed BYTEA NOT NULL
                )
                """,
                """
                CREATE TABLE report_events (
                    report_id TEXT NOT NULL REFERENCES reports(id), seq BIGINT NOT NULL, at BIGINT NOT NULL,
                    state TEXT NOT NULL, actor TEXT, note_sealed BYTEA, PRIMARY KEY (report_id, seq)
                )
                """,
                "CREATE TABLE security_team (account_id TEXT PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE)",
                """
                CREATE TABLE advisories (
                    id TEXT PRIMARY KEY, report_id TEXT NOT NULL UNIQUE REFERENCES reports(id),
                    published_at BIGINT NOT NULL, title TEXT NOT NULL, severity TEXT NOT NULL, models TEXT NOT NULL,
                    fixed_version TEXT NOT NULL, csaf TEXT NOT NULL, osv TEXT NOT NULL
                )
                """,
                """
                CREATE TABLE tuf_documents (
                    role TEXT NOT NULL, version BIGINT NOT NULL, bytes BYTEA NOT NULL, PRIMARY KEY (role, version)
                )
                """,
                "CREATE TABLE tuf_online_keys (role TEXT PRIMARY KEY, sealed BYTEA NOT NULL)",
                """
                CREATE TABLE releases (
                    target TEXT PRIMARY KEY, model_id TEXT NOT NULL, version TEXT NOT NULL, length BIGINT NOT NULL,
                    sha256 TEXT NOT NULL, custom TEXT NOT NULL, published_at BIGINT NOT NULL
                )
                """,
                "CREATE INDEX releases_model ON releases(model_id)",
                """
                CREATE TABLE rollouts (
                    id TEXT PRIMARY KEY, target TEXT NOT NULL REFERENCES releases(target), model_id TEXT NOT NULL,
                    stages TEXT NOT NULL, failure_threshold DOUBLE PRECISION NOT NULL, minimum_sample BIGINT NOT NULL,
                    state TEXT NOT NULL, stage BIGINT NOT NULL, note TEXT, created_at BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL
                )
                """,
                "CREATE UNIQUE INDEX rollouts_one_live_per_model ON rollouts(model_id) WHERE state IN ('active', 'paused')",
                """
                CREATE TABLE update_events (
                    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, serial TEXT NOT NULL, at BIGINT NOT NULL,
                    phase TEXT NOT NULL, version TEXT NOT NULL, target TEXT, reason TEXT
                )
                """,
                "CREATE INDEX update_events_serial ON update_events(serial, id)",
                "CREATE INDEX update_events_target ON update_events(target, serial, id)",
                """
                CREATE TABLE consents (
                    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, serial TEXT NOT NULL, owner_id TEXT NOT NULL,
                    purpose TEXT NOT NULL, granted BOOLEAN NOT NULL, notice_version TEXT NOT NULL, at BIGINT NOT NULL
                )
                """,
                "CREATE INDEX consents_by_device ON consents(serial, owner_id, id)",
                """
                CREATE TABLE ownerships (
                    serial TEXT NOT NULL, owner_id TEXT NOT NULL, claimed_at BIGINT NOT NULL, released_at BIGINT NOT NULL,
                    reason TEXT NOT NULL, history_kept BOOLEAN NOT NULL, purged_at BIGINT,
                    UNIQUE (serial, owner_id, claimed_at)
                )
                """,
                "CREATE INDEX ownerships_by_owner ON ownerships(owner_id, claimed_at)",
                """
                CREATE TABLE deletion_receipts (token_hash TEXT PRIMARY KEY, receipt TEXT NOT NULL, created_at BIGINT NOT NULL)
                """,
                """
                CREATE TABLE alerts (
                    id TEXT PRIMARY KEY, serial TEXT NOT NULL, kind TEXT NOT NULL, severity TEXT NOT NULL,
                    evidence TEXT NOT NULL, raised_at BIGINT NOT NULL, state TEXT NOT NULL, updated_at BIGINT NOT NULL,
                    webhook_attempts BIGINT NOT NULL DEFAULT 0, webhook_next_at BIGINT, webhook_delivered_at BIGINT
                )
                """,
                "CREATE INDEX alerts_by_state ON alerts(state, raised_at)",
                "CREATE INDEX alerts_by_device ON alerts(serial, raised_at)",
                "CREATE INDEX alerts_outbox ON alerts(raised_at) WHERE webhook_delivered_at IS NULL",
                """
                CREATE TABLE data_keys (
                    id TEXT PRIMARY KEY, owner_key TEXT NOT NULL UNIQUE, wrapped BYTEA NOT NULL, created_at BIGINT NOT NULL
                )
                """,
                "CREATE TABLE readiness (id INTEGER PRIMARY KEY CHECK (id = 1), checked_at BIGINT NOT NULL)",
                "CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, until BIGINT NOT NULL)",
                """
                CREATE TABLE throttles (
                    key TEXT PRIMARY KEY, failures BIGINT NOT NULL, in_flight BIGINT NOT NULL, blocked_until BIGINT,
                    last_failure BIGINT, reserved_at BIGINT
                )
                """,
            ]
        )
    ]

    static let telemetry: [(name: String, statements: [String])] = [
        (
            "2026-12-05 telemetry",
            [
                """
                CREATE TABLE readings (
                    position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, serial TEXT NOT NULL, seq BIGINT NOT NULL,
                    received_at BIGINT NOT NULL, device_at BIGINT, vals TEXT NOT NULL, dropped BIGINT NOT NULL DEFAULT 0,
                    key_id TEXT, sealed BYTEA, UNIQUE (serial, seq)
                )
                """,
                "CREATE INDEX readings_by_device ON readings(serial, position)",
                "CREATE INDEX readings_by_time ON readings(serial, received_at)",
                """
                CREATE TABLE refusals (
                    serial TEXT NOT NULL, kind TEXT NOT NULL, count BIGINT NOT NULL, last_at BIGINT NOT NULL,
                    PRIMARY KEY (serial, kind)
                )
                """,
                // Settled slices of a device's history, computed once, and the span each cache covers.
                """
                CREATE TABLE series_cache (
                    serial TEXT NOT NULL, width BIGINT NOT NULL, slice BIGINT NOT NULL, field TEXT NOT NULL,
                    n BIGINT NOT NULL, lo DOUBLE PRECISION NOT NULL, hi DOUBLE PRECISION NOT NULL,
                    total DOUBLE PRECISION NOT NULL, PRIMARY KEY (serial, width, slice, field)
                )
                """,
                """
                CREATE TABLE series_marks (
                    serial TEXT NOT NULL, width BIGINT NOT NULL, fields TEXT NOT NULL, covered_from BIGINT NOT NULL,
                    covered_to BIGINT NOT NULL, PRIMARY KEY (serial, width)
                )
                """,
                "CREATE TABLE reading_keys (serial TEXT NOT NULL, key_id TEXT NOT NULL, PRIMARY KEY (serial, key_id))",
                """
                CREATE TABLE expiry_marks (
                    serial TEXT NOT NULL, field TEXT NOT NULL, through BIGINT NOT NULL, PRIMARY KEY (serial, field)
                )
                """,
            ]
        ),
        (
            // Pages, ranges and the latest go by one index, in the order received then stored
            // (ReadingQueries); a second per-device index cost every commit a page per device.
            "2026-12-03 one index for pages and time",
            [
                "DROP INDEX readings_by_device",
                "DROP INDEX readings_by_time",
                "CREATE INDEX readings_by_time ON readings(serial, received_at, position)",
            ]
        ),
    ]

    static let broker: [(name: String, statements: [String])] = [
        (
            "2026-12-05 broker state",
            [
                "CREATE TABLE mqtt_sessions (key TEXT PRIMARY KEY, snapshot TEXT NOT NULL)",
                "CREATE TABLE mqtt_retained (topic TEXT PRIMARY KEY, packet BYTEA NOT NULL)",
            ]
        )
    ]
}

extension PostgresSchema {
    static let cluster: [(name: String, statements: [String])] = [
        (
            "2026-12-05 cluster",
            [
                "CREATE TABLE device_connections (serial TEXT PRIMARY KEY, node TEXT NOT NULL, since BIGINT NOT NULL)",
                "CREATE INDEX device_connections_by_node ON device_connections(node, since)",
                """
                CREATE TABLE relayed_commands (
                    id TEXT PRIMARY KEY, serial TEXT NOT NULL, node TEXT NOT NULL, command TEXT NOT NULL,
                    parameters TEXT NOT NULL, deadline BIGINT NOT NULL, taken BOOLEAN NOT NULL DEFAULT FALSE,
                    status TEXT, detail TEXT
                )
                """,
                "CREATE INDEX relayed_commands_waiting ON relayed_commands(node) WHERE NOT taken",
                "CREATE TABLE cluster_nodes (node TEXT PRIMARY KEY, seen_at BIGINT NOT NULL)",
                """
                CREATE TABLE rollout_outcomes (
                    rollout_id TEXT NOT NULL, serial TEXT NOT NULL, bucket BIGINT NOT NULL, outcome TEXT NOT NULL,
                    PRIMARY KEY (rollout_id, serial)
                )
                """,
                "CREATE INDEX rollout_outcomes_by_bucket ON rollout_outcomes(rollout_id, bucket)",
            ]
        ),
        (
            "2026-12-07 session keepers",
            ["CREATE TABLE session_keepers (serial TEXT PRIMARY KEY, node TEXT NOT NULL)"]
        ),
    ]
}
