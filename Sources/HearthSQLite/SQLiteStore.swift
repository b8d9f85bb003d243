import Foundation
import GRDB
import HearthCore
import HearthStorage

/// The embedded store: one SQLite file in WAL mode with `synchronous = FULL`, so a committed
/// transaction survives a crash or power loss, and readers never block the writer.
public final class SQLiteStore: HearthStore {
    let pool: DatabasePool
    let sealer: any AuditSealer

    /// Opens (creating if needed) the database at `path` and applies migrations.
    public init(path: String, sealer: any AuditSealer) throws {
        pool = try openPool(path: path, foreignKeys: true, secureDelete: true)
        self.sealer = sealer
        try Self.migrator.migrate(pool)
    }

    /// Migrations are named and never edited once landed; a change is a new migration.
    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("2026-11-26 accounts, sessions, models, devices, audit") { db in
            try db.execute(
                sql: """
                    CREATE TABLE accounts (
                        id TEXT PRIMARY KEY NOT NULL,
                        role TEXT NOT NULL CHECK (role IN ('operator', 'owner')),
                        email_index TEXT NOT NULL UNIQUE,
                        email_sealed BLOB NOT NULL,
                        password_hash TEXT NOT NULL,
                        created_at INTEGER NOT NULL
                    );
                    CREATE TABLE sessions (
                        token_hash TEXT PRIMARY KEY NOT NULL,
                        account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
                        created_at INTEGER NOT NULL,
                        expires_at INTEGER NOT NULL
                    );
                    CREATE INDEX sessions_expiry ON sessions(expires_at);
                    CREATE TABLE setup_links (
                        token_hash TEXT PRIMARY KEY NOT NULL,
                        created_at INTEGER NOT NULL,
                        expires_at INTEGER NOT NULL
                    );
                    CREATE TABLE product_models (
                        id TEXT PRIMARY KEY NOT NULL,
                        definition TEXT NOT NULL,
                        created_at INTEGER NOT NULL
                    );
                    CREATE TABLE devices (
                        serial TEXT PRIMARY KEY NOT NULL,
                        model_id TEXT NOT NULL REFERENCES product_models(id),
                        certificate_pem TEXT NOT NULL,
                        setup_code_hash TEXT NOT NULL,
                        provisioned_at INTEGER NOT NULL,
                        owner_id TEXT REFERENCES accounts(id),
                        claimed_at INTEGER
                    );
                    CREATE INDEX devices_owner ON devices(owner_id);
                    CREATE TABLE audit_log (
                        seq INTEGER PRIMARY KEY NOT NULL,
                        at INTEGER NOT NULL,
                        kind TEXT NOT NULL,
                        actor TEXT,
                        subject TEXT,
                        detail TEXT NOT NULL,
                        prev_mac TEXT NOT NULL,
                        mac TEXT NOT NULL
                    );
                    CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
                        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
                    CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
                        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
                    CREATE TABLE audit_head (
                        id INTEGER PRIMARY KEY CHECK (id = 1),
                        seq INTEGER NOT NULL,
                        mac TEXT NOT NULL,
                        head_mac TEXT NOT NULL
                    );
                    """)
        }
        m.registerMigration("2026-11-27 device revocation") { db in
            try db.execute(sql: "ALTER TABLE devices ADD COLUMN revoked_at INTEGER")
        }
        m.registerMigration("2026-11-28 vulnerability reports") { db in
            try db.execute(
                sql: """
                    CREATE TABLE reports (
                        id TEXT PRIMARY KEY NOT NULL,
                        received_at INTEGER NOT NULL,
                        state TEXT NOT NULL,
                        status_token_hash TEXT NOT NULL UNIQUE,
                        sealed BLOB NOT NULL
                    );
                    CREATE TABLE report_events (
                        report_id TEXT NOT NULL REFERENCES reports(id),
                        seq INTEGER NOT NULL,
                        at INTEGER NOT NULL,
                        state TEXT NOT NULL,
                        actor TEXT,
                        note_sealed BLOB,
                        PRIMARY KEY (report_id, seq)
                    );
                    CREATE TABLE security_team (
                        account_id TEXT PRIMARY KEY NOT NULL REFERENCES accounts(id) ON DELETE CASCADE
                    );
                    CREATE TABLE advisories (
                        id TEXT PRIMARY KEY NOT NULL,
                        report_id TEXT NOT NULL UNIQUE REFERENCES reports(id),
                        published_at INTEGER NOT NULL,
                        title TEXT NOT NULL,
                        severity TEXT NOT NULL,
                        models TEXT NOT NULL,
                        fixed_version TEXT NOT NULL,
                        csaf TEXT NOT NULL,
                        osv TEXT NOT NULL
                    );
                    """)
        }
        m.registerMigration("2026-11-29 software updates") { db in
            try db.execute(
                sql: """
                    CREATE TABLE tuf_documents (
                        role TEXT NOT NULL,
                        version INTEGER NOT NULL,
                        bytes BLOB NOT NULL,
                        PRIMARY KEY (role, version)
                    );
                    CREATE TABLE tuf_online_keys (
                        role TEXT PRIMARY KEY NOT NULL,
                        sealed BLOB NOT NULL
                    );
                    CREATE TABLE releases (
                        target TEXT PRIMARY KEY NOT NULL,
                        model_id TEXT NOT NULL,
                        version TEXT NOT NULL,
                        length INTEGER NOT NULL,
                        sha256 TEXT NOT NULL,
                        custom TEXT NOT NULL,
                        published_at INTEGER NOT NULL
                    );
                    CREATE INDEX releases_model ON releases(model_id);
                    CREATE TABLE rollouts (
                        id TEXT PRIMARY KEY NOT NULL,
                        target TEXT NOT NULL REFERENCES releases(target),
                        model_id TEXT NOT NULL,
                        stages TEXT NOT NULL,
                        failure_threshold REAL NOT NULL,
                        minimum_sample INTEGER NOT NULL,
                        state TEXT NOT NULL,
                        stage INTEGER NOT NULL,
                        note TEXT,
                        created_at INTEGER NOT NULL,
                        updated_at INTEGER NOT NULL
                    );
                    CREATE UNIQUE INDEX rollouts_one_live_per_model ON rollouts(model_id) WHERE state IN ('active', 'paused');
                    CREATE TABLE update_events (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        serial TEXT NOT NULL,
                        at INTEGER NOT NULL,
                        phase TEXT NOT NULL,
                        version TEXT NOT NULL,
                        target TEXT,
                        reason TEXT
                    );
                    CREATE INDEX update_events_serial ON update_events(serial, id);
                    CREATE INDEX update_events_target ON update_events(target, serial, id);
                    CREATE INDEX devices_model ON devices(model_id);
                    """)
        }
        m.registerMigration("2026-12-02 device names, fleet and logbook indexes") { db in
            try db.execute(
                sql: """
                    ALTER TABLE devices ADD COLUMN name_sealed BLOB;
                    CREATE INDEX devices_by_model ON devices(model_id, serial);
                    CREATE INDEX audit_by_subject ON audit_log(subject, seq);
                    """)
        }
        m.registerMigration("2026-12-02 consents") { db in
            try db.execute(
                sql: """
                    CREATE TABLE consents (
                        id INTEGER PRIMARY KEY NOT NULL,
                        serial TEXT NOT NULL,
                        owner_id TEXT NOT NULL,
                        purpose TEXT NOT NULL,
                        granted INTEGER NOT NULL,
                        notice_version TEXT NOT NULL,
                        at INTEGER NOT NULL
                    );
                    CREATE INDEX consents_by_device ON consents(serial, owner_id, id);
                    """)
        }
        m.registerMigration("2026-12-02 ownership history and transfers") { db in
            try db.execute(
                sql: """
                    ALTER TABLE devices ADD COLUMN reserved_for TEXT;
                    ALTER TABLE devices ADD COLUMN reserved_until INTEGER;
                    CREATE TABLE ownerships (
                        serial TEXT NOT NULL,
                        owner_id TEXT NOT NULL,
                        claimed_at INTEGER NOT NULL,
                        released_at INTEGER NOT NULL,
                        reason TEXT NOT NULL,
                        history_kept INTEGER NOT NULL,
                        purged_at INTEGER,
                        UNIQUE (serial, owner_id, claimed_at)
                    );
                    CREATE INDEX ownerships_by_owner ON ownerships(owner_id, claimed_at);
                    """)
        }
        m.registerMigration("2026-12-02 recovery codes") { db in
            try db.execute(sql: "ALTER TABLE accounts ADD COLUMN recovery_hash TEXT")
            // An owner's export lists what they did.
            try db.execute(sql: "CREATE INDEX audit_by_actor ON audit_log(actor, seq)")
        }
        m.registerMigration("2026-12-02 factory resets") { db in
            try db.execute(sql: "ALTER TABLE devices ADD COLUMN last_reset TEXT")
        }
        m.registerMigration("2026-12-02 account deletion") { db in
            try db.execute(
                sql: """
                    ALTER TABLE accounts ADD COLUMN deletion_requested_at INTEGER;
                    ALTER TABLE accounts ADD COLUMN delete_after INTEGER;
                    ALTER TABLE accounts ADD COLUMN deletion_token_hash TEXT;
                    CREATE INDEX accounts_deletion ON accounts(delete_after) WHERE delete_after IS NOT NULL;
                    CREATE TABLE deletion_receipts (
                        token_hash TEXT PRIMARY KEY NOT NULL,
                        receipt TEXT NOT NULL,
                        created_at INTEGER NOT NULL
                    );
                    """)
        }
        m.registerMigration("2026-12-03 certificate renewal") { db in
            try db.execute(sql: "ALTER TABLE devices ADD COLUMN pending_certificate_pem TEXT")
        }
        m.registerMigration("2026-12-03 security alerts") { db in
            try db.execute(
                sql: """
                    CREATE TABLE alerts (
                        id TEXT PRIMARY KEY NOT NULL,
                        serial TEXT NOT NULL,
                        kind TEXT NOT NULL,
                        severity TEXT NOT NULL,
                        evidence TEXT NOT NULL,
                        raised_at INTEGER NOT NULL,
                        state TEXT NOT NULL,
                        updated_at INTEGER NOT NULL
                    );
                    CREATE INDEX alerts_by_state ON alerts(state, raised_at);
                    CREATE INDEX alerts_by_device ON alerts(serial, raised_at);
                    """)
        }
        m.registerMigration("2026-12-03 quarantine") { db in
            try db.execute(
                sql: """
                    ALTER TABLE devices ADD COLUMN quarantined_at INTEGER;
                    ALTER TABLE devices ADD COLUMN quarantine_reason TEXT;
                    """)
        }
        m.registerMigration("2026-12-03 data keys") { db in
            // owner_key: the account id, or "deployment" for the key of devices nobody holds.
            try db.execute(
                sql: """
                    CREATE TABLE data_keys (
                        id TEXT PRIMARY KEY NOT NULL,
                        owner_key TEXT NOT NULL UNIQUE,
                        wrapped BLOB NOT NULL,
                        created_at INTEGER NOT NULL
                    );
                    """)
        }
        m.registerMigration("2026-12-04 alert webhook outbox") { db in
            try db.execute(
                sql: """
                    ALTER TABLE alerts ADD COLUMN webhook_attempts INTEGER NOT NULL DEFAULT 0;
                    ALTER TABLE alerts ADD COLUMN webhook_next_at INTEGER;
                    ALTER TABLE alerts ADD COLUMN webhook_delivered_at INTEGER;
                    CREATE INDEX alerts_outbox ON alerts(raised_at) WHERE webhook_delivered_at IS NULL;
                    """)
        }
        m.registerMigration("2026-12-04 readiness") { db in
            try db.execute(
                sql: "CREATE TABLE readiness (id INTEGER PRIMARY KEY CHECK (id = 1), checked_at INTEGER NOT NULL)")
        }
        m.registerMigration("2026-12-05 leases and throttles") { db in
            try db.execute(
                sql: """
                    CREATE TABLE leases (name TEXT PRIMARY KEY NOT NULL, holder TEXT NOT NULL, until INTEGER NOT NULL);
                    CREATE TABLE rollout_outcomes (
                        rollout_id TEXT NOT NULL, serial TEXT NOT NULL, bucket INTEGER NOT NULL, outcome TEXT NOT NULL,
                        PRIMARY KEY (rollout_id, serial)
                    );
                    CREATE INDEX rollout_outcomes_by_bucket ON rollout_outcomes(rollout_id, bucket);
                    CREATE TABLE throttles (
                        key TEXT PRIMARY KEY NOT NULL, failures INTEGER NOT NULL, in_flight INTEGER NOT NULL,
                        blocked_until INTEGER, last_failure INTEGER, reserved_at INTEGER
                    );
                    """)
        }
        return m
    }

    // MARK: Writing, always with the audit entry in the same transaction

    func write<T: Sendable>(audit: [AuditEntry], _ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            return try await pool.write { [sealer] db in
                let result = try body(db)
                for entry in audit { try Self.append(entry, db: db, sealer: sealer) }
                return result
            }
        } catch let error as DatabaseError
            where error.extendedResultCode == .SQLITE_CONSTRAINT_UNIQUE
            || error.extendedResultCode == .SQLITE_CONSTRAINT_PRIMARYKEY
        {
            throw HearthError(.conflict, "already exists")
        }
    }

    static func append(_ entry: AuditEntry, db: Database, sealer: any AuditSealer) throws {
        let (record, head) = sealer.seal(entry, after: try readHead(db))
        try db.execute(
            sql:
                "INSERT INTO audit_log (seq, at, kind, actor, subject, detail, prev_mac, mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            arguments: [
                record.sequence, record.atMillis, record.kind, record.actor, record.subject, record.detail,
                record.previousMAC, record.mac,
            ]
        )
        try db.execute(
            sql:
                "INSERT INTO audit_head (id, seq, mac, head_mac) VALUES (1, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, mac = excluded.mac, head_mac = excluded.head_mac",
            arguments: [head.sequence, head.mac, head.headMAC]
        )
    }

    static func readHead(_ db: Database) throws -> AuditHead? {
        try Row.fetchOne(db, sql: "SELECT seq, mac, head_mac FROM audit_head WHERE id = 1").map {
            AuditHead(sequence: $0["seq"], mac: $0["mac"], headMAC: $0["head_mac"])
        }
    }

    // MARK: Accounts

    public func createAccount(_ account: AccountRecord, audit: AuditEntry) async throws {
        try await write(audit: [audit]) { db in try Self.insert(account, db: db) }
    }

    static func insert(_ a: AccountRecord, db: Database) throws {
        try db.execute(
            sql:
                "INSERT INTO accounts (id, role, email_index, email_sealed, password_hash, created_at, recovery_hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
            arguments: [
                a.id.description, a.role.rawValue, a.emailIndex, a.emailSealed, a.passwordHash, millis(a.createdAt),
                a.recoveryHash,
            ]
        )
    }

    public func account(emailIndex: String) async throws -> AccountRecord? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM accounts WHERE email_index = ?", arguments: [emailIndex]).map(
                Self.account)
        }
    }

    public func account(id: AccountID) async throws -> AccountRecord? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM accounts WHERE id = ?", arguments: [id.description]).map(
                Self.account)
        }
    }

    public func checkWritable(at now: Date) async throws {
        try await pool.write { db in
            try db.execute(
                sql:
                    "INSERT INTO readiness (id, checked_at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
                arguments: [Int64(now.timeIntervalSince1970)])
        }
    }

    public func hasOperator() async throws -> Bool {
        try await pool.read { db in
            try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM accounts WHERE role = 'operator')") ?? false
        }
    }

    static func account(_ row: Row) throws -> AccountRecord {
        guard let role = Role(rawValue: row["role"]) else { throw HearthError(.integrity, "unknown role in accounts") }
        return AccountRecord(
            id: try AccountID(row["id"] as String), role: role, emailIndex: row["email_index"],
            emailSealed: row["email_sealed"], passwordHash: row["password_hash"], createdAt: date(row["created_at"]),
            recoveryHash: row["recovery_hash"],
            deletion: (row["deletion_requested_at"] as Int64?).flatMap { requested in
                (row["delete_after"] as Int64?).flatMap { after in
                    (row["deletion_token_hash"] as String?).map {
                        DeletionRequest(requestedAt: date(requested), after: date(after), receiptTokenHash: $0)
                    }
                }
            }
        )
    }

    public func setDeletion(_ account: AccountID, _ request: DeletionRequest?, audit: AuditEntry) async throws -> Bool {
        do {
            return try await write(audit: [audit]) { db in
                if let request {
                    try db.execute(
                        sql: """
                            UPDATE accounts SET deletion_requested_at = ?, delete_after = ?, deletion_token_hash = ?
                            WHERE id = ? AND delete_after IS NULL
                            """,
                        arguments: [
                            millis(request.requestedAt), millis(request.after), request.receiptTokenHash,
                            account.description,
                        ])
                } else {
                    try db.execute(
                        sql: """
                            UPDATE accounts SET deletion_requested_at = NULL, delete_after = NULL, deletion_token_hash = NULL
                            WHERE id = ? AND delete_after IS NOT NULL
                            """, arguments: [account.description])
                }
                guard db.changesCount == 1 else { throw NothingChanged() }
                return true
            }
        } catch is NothingChanged {
            return false
        }
    }

    public func deletionsDue(now: Date, limit: Int) async throws -> [AccountRecord] {
        try await pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM accounts WHERE delete_after IS NOT NULL AND delete_after <= ? LIMIT ?",
                arguments: [millis(now), max(0, limit)]
            ).map(Self.account)
        }
    }

    public func deleteAccount(_ account: AccountID, receipt: String, audit: AuditEntry) async throws -> Bool {
        do {
            let deleted = try await write(audit: [audit]) { db in
                guard
                    let token = try String.fetchOne(
                        db, sql: "SELECT deletion_token_hash FROM accounts WHERE id = ? AND delete_after IS NOT NULL",
                        arguments: [account.description])
                else { throw NothingChanged() }
                guard
                    try Int.fetchOne(
                        db, sql: "SELECT COUNT(*) FROM devices WHERE owner_id = ?", arguments: [account.description])
                        == 0
                else { throw HearthError(.conflict, "the account still holds devices") }
                let id = account.description
                try db.execute(sql: "DELETE FROM sessions WHERE account_id = ?", arguments: [id])
                try db.execute(sql: "DELETE FROM consents WHERE owner_id = ?", arguments: [id])
                try db.execute(sql: "DELETE FROM ownerships WHERE owner_id = ?", arguments: [id])
                try db.execute(sql: "DELETE FROM security_team WHERE account_id = ?", arguments: [id])
                try db.execute(sql: "DELETE FROM data_keys WHERE owner_key = ?", arguments: [id])
                try db.execute(sql: "DELETE FROM accounts WHERE id = ?", arguments: [id])
                try db.execute(
                    sql: "INSERT INTO deletion_receipts (token_hash, receipt, created_at) VALUES (?, ?, ?)",
                    arguments: [token, receipt, millis(audit.at)])
                return true
            }
            // The log's older frames still hold the account's rows and its wrapped data key as
            // they were written; `secure_delete` zeroed them in the database. Best effort (a reader
            // holding an old snapshot defers it to the next checkpoint).
            try? await pool.writeWithoutTransaction { db in _ = try db.checkpoint(.truncate) }
            return deleted
        } catch is NothingChanged {
            return false
        }
    }

    public func dataKey(owner: AccountID?) async throws -> DataKeyRecord? {
        try await pool.read { db in
            try Row.fetchOne(
                db, sql: "SELECT * FROM data_keys WHERE owner_key = ?", arguments: [Self.ownerKey(owner)]
            ).map(Self.dataKey)
        }
    }

    public func addDataKey(_ key: DataKeyRecord) async throws -> DataKeyRecord {
        try await pool.write { db in
            try db.execute(
                sql: "INSERT OR IGNORE INTO data_keys (id, owner_key, wrapped, created_at) VALUES (?, ?, ?, ?)",
                arguments: [key.id, Self.ownerKey(key.owner), key.wrapped, millis(key.createdAt)])
            guard
                let stored = try Row.fetchOne(
                    db, sql: "SELECT * FROM data_keys WHERE owner_key = ?", arguments: [Self.ownerKey(key.owner)])
            else { throw HearthError(.integrity, "a data key was not stored") }
            return try Self.dataKey(stored)
        }
    }

    public func dataKeys(ids: Set<String>) async throws -> [DataKeyRecord] {
        guard !ids.isEmpty else { return [] }
        let list = ids.sorted()
        return try await pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM data_keys WHERE id IN (\(list.map { _ in "?" }.joined(separator: ", ")))",
                arguments: StatementArguments(list)
            ).map(Self.dataKey)
        }
    }

    static func ownerKey(_ owner: AccountID?) -> String { owner?.description ?? "deployment" }

    static func dataKey(_ row: Row) throws -> DataKeyRecord {
        let ownerKey: String = row["owner_key"]
        return DataKeyRecord(
            id: row["id"], owner: ownerKey == "deployment" ? nil : try AccountID(ownerKey), wrapped: row["wrapped"],
            createdAt: date(row["created_at"]))
    }

    public func deletionReceipt(tokenHash: String) async throws -> String? {
        try await pool.read { db in
            try String.fetchOne(
                db, sql: "SELECT receipt FROM deletion_receipts WHERE token_hash = ?", arguments: [tokenHash])
        }
    }

    public func changePassword(_ account: AccountID, from: String, to: String, keeping: String?, audit: AuditEntry)
        async throws -> Bool
    {
        do {
            return try await write(audit: [audit]) { db in
                try db.execute(
                    sql: "UPDATE accounts SET password_hash = ? WHERE id = ? AND password_hash = ?",
                    arguments: [to, account.description, from])
                guard db.changesCount == 1 else { throw NothingChanged() }
                try db.execute(
                    sql: "DELETE FROM sessions WHERE account_id = ? AND token_hash IS NOT ?",
                    arguments: [account.description, keeping])
                return true
            }
        } catch is NothingChanged {
            return false
        }
    }

    public func setRecoveryHash(_ account: AccountID, _ hash: String, audit: AuditEntry) async throws {
        try await write(audit: [audit]) { db in
            try db.execute(
                sql: "UPDATE accounts SET recovery_hash = ? WHERE id = ?", arguments: [hash, account.description])
            guard db.changesCount == 1 else { throw HearthError(.notFound, "no such account") }
        }
    }

    public func recoverAccount(
        _ account: AccountID, used: String, passwordHash: String, recoveryHash: String, audit: AuditEntry
    ) async throws -> Bool {
        do {
            return try await write(audit: [audit]) { db in
                try db.execute(
                    sql: "UPDATE accounts SET password_hash = ?, recovery_hash = ? WHERE id = ? AND recovery_hash = ?",
                    arguments: [passwordHash, recoveryHash, account.description, used])
                guard db.changesCount == 1 else { throw NothingChanged() }
                try db.execute(sql: "DELETE FROM sessions WHERE account_id = ?", arguments: [account.description])
                return true
            }
        } catch is NothingChanged {
            return false
        }
    }

    // MARK: Set-up link

    public func replaceSetupLink(_ link: SetupLinkRecord, audit: AuditEntry) async throws {
        try await write(audit: [audit]) { db in
            try db.execute(sql: "DELETE FROM setup_links")
            try db.execute(
                sql: "INSERT INTO setup_links (token_hash, created_at, expires_at) VALUES (?, ?, ?)",
                arguments: [link.tokenHash, millis(link.createdAt), millis(link.expiresAt)]
            )
        }
    }

    public func redeemSetupLink(tokenHash: String, now: Date, creating account: AccountRecord, audit: [AuditEntry])
        async throws
    {
        try await write(audit: audit) { db in
            let expires = try Int64.fetchOne(
                db, sql: "SELECT expires_at FROM setup_links WHERE token_hash = ?", arguments: [tokenHash])
            guard let expires, expires > millis(now) else {
                throw HearthError(.expired, "this set-up link is used, expired or unknown")
            }
            try db.execute(sql: "DELETE FROM setup_links WHERE token_hash = ?", arguments: [tokenHash])
            try Self.insert(account, db: db)
        }
    }

    // MARK: Sessions

    public func createSession(_ s: SessionRecord, audit: AuditEntry) async throws {
        try await write(audit: [audit]) { db in
            try db.execute(
                sql: "INSERT INTO sessions (token_hash, account_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
                arguments: [s.tokenHash, s.account.description, millis(s.createdAt), millis(s.expiresAt)]
            )
        }
    }

    public func session(tokenHash: String) async throws -> SessionRecord? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM sessions WHERE token_hash = ?", arguments: [tokenHash]).map {
                SessionRecord(
                    tokenHash: $0["token_hash"], account: try AccountID($0["account_id"] as String),
                    createdAt: date($0["created_at"]), expiresAt: date($0["expires_at"]))
            }
        }
    }

    public func sessions(of account: AccountID) async throws -> [SessionRecord] {
        try await pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM sessions WHERE account_id = ? ORDER BY created_at DESC",
                arguments: [account.description]
            ).map {
                SessionRecord(
                    tokenHash: $0["token_hash"], account: try AccountID($0["account_id"] as String),
                    createdAt: date($0["created_at"]), expiresAt: date($0["expires_at"]))
            }
        }
    }

    public func deleteSessions(of account: AccountID, audit: AuditEntry) async throws -> Int {
        try await write(audit: [audit]) { db in
            try db.execute(sql: "DELETE FROM sessions WHERE account_id = ?", arguments: [account.description])
            return db.changesCount
        }
    }

    public func deleteSession(tokenHash: String, audit: AuditEntry) async throws {
        try await write(audit: [audit]) { db in
            try db.execute(sql: "DELETE FROM sessions WHERE token_hash = ?", arguments: [tokenHash])
        }
    }

    public func deleteExpiredSessions(now: Date) async throws -> Int {
        try await pool.write { db in
            try db.execute(sql: "DELETE FROM sessions WHERE expires_at <= ?", arguments: [millis(now)])
            return db.changesCount
        }
    }

    // MARK: Product models

    public func createModel(_ model: ProductModel, at: Date, audit: AuditEntry) async throws {
        let definition = String(decoding: model.json.serialized(), as: UTF8.self)
        try await write(audit: [audit]) { db in
            try db.execute(
                sql: "INSERT INTO product_models (id, definition, created_at) VALUES (?, ?, ?)",
                arguments: [model.id.rawValue, definition, millis(at)]
            )
        }
    }

    public func model(_ id: ProductModelID) async throws -> ProductModel? {
        try await pool.read { db in
            try String.fetchOne(db, sql: "SELECT definition FROM product_models WHERE id = ?", arguments: [id.rawValue])
                .map(Self.model)
        }
    }

    public func models() async throws -> [ProductModel] {
        try await pool.read { db in
            try String.fetchAll(db, sql: "SELECT definition FROM product_models ORDER BY id").map(Self.model)
        }
    }

    static func model(_ definition: String) throws -> ProductModel {
        try ProductModel(json: try JSONValue.parse(Array(definition.utf8)))
    }

    // MARK: Devices

    public func addDevices(_ devices: [DeviceRecord], audit: AuditEntry) async throws {
        try await write(audit: [audit]) { db in
            let statement = try db.makeStatement(
                sql: """
                    INSERT INTO devices (serial, model_id, certificate_pem, setup_code_hash, provisioned_at, owner_id, claimed_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """)
            for d in devices {
                try statement.execute(arguments: [
                    d.serial.rawValue, d.model.rawValue, d.certificatePEM, d.setupCodeHash, millis(d.provisionedAt),
                    d.owner?.description, d.claimedAt.map(millis),
                ])
            }
        }
    }

    public func device(_ serial: DeviceSerial) async throws -> DeviceRecord? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM devices WHERE serial = ?", arguments: [serial.rawValue]).map(
                Self.device)
        }
    }

    public func devices(ownedBy owner: AccountID) async throws -> [DeviceRecord] {
        try await pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM devices WHERE owner_id = ? ORDER BY claimed_at, serial",
                arguments: [owner.description]
            ).map(Self.device)
        }
    }

    public func claimDevice(_ serial: DeviceSerial, owner: AccountID, emailIndex: String, at: Date, audit: AuditEntry)
        async throws -> Bool
    {
        do {
            return try await write(audit: [audit]) { db in
                try db.execute(
                    sql: """
                        UPDATE devices SET owner_id = ?, claimed_at = ?, reserved_for = NULL, reserved_until = NULL
                        WHERE serial = ? AND owner_id IS NULL
                          AND (reserved_for IS NULL OR reserved_for = ? OR reserved_until <= ?)
                        """,
                    arguments: [owner.description, millis(at), serial.rawValue, emailIndex, millis(at)]
                )
                // Nothing claimed: roll back (the audit entry with it) by throwing.
                guard db.changesCount == 1 else { throw NothingChanged() }
                return true
            }
        } catch is NothingChanged {
            return false
        }
    }

    /// Thrown inside a transaction to roll it back when nothing changed.
    private struct NothingChanged: Error {}

    public func releaseDevice(
        _ release: OwnershipRecord, reservation: DeviceReservation?, revoke: Bool, audit: AuditEntry
    ) async throws -> Bool {
        do {
            return try await write(audit: [audit]) { db in
                try db.execute(
                    sql: """
                        UPDATE devices SET owner_id = NULL, claimed_at = NULL, name_sealed = NULL,
                            reserved_for = ?, reserved_until = ?,
                            revoked_at = CASE WHEN ? AND revoked_at IS NULL THEN ? ELSE revoked_at END
                        WHERE serial = ? AND owner_id = ? AND claimed_at = ?
                        """,
                    arguments: [
                        reservation?.emailIndex, reservation.map { millis($0.until) }, revoke,
                        millis(release.releasedAt), release.serial.rawValue, release.owner.description,
                        millis(release.claimedAt),
                    ])
                guard db.changesCount == 1 else { throw NothingChanged() }
                try Self.insert(release, db: db)
                return true
            }
        } catch is NothingChanged {
            return false
        }
    }

    public func resetDevice(_ serial: DeviceSerial, resetID: String, at: Date, audit: AuditEntry) async throws
        -> OwnershipRecord?
    {
        do {
            return try await write(audit: [audit]) { db in
                guard
                    let row = try Row.fetchOne(
                        db, sql: "SELECT owner_id, claimed_at, last_reset FROM devices WHERE serial = ?",
                        arguments: [serial.rawValue])
                else { throw HearthError(.notFound, field: "serial", "no such device") }
                guard (row["last_reset"] as String?) != resetID else { throw NothingChanged() }
                try db.execute(
                    sql: "UPDATE devices SET last_reset = ? WHERE serial = ?", arguments: [resetID, serial.rawValue])
                guard let owner = row["owner_id"] as String?, let claimed = row["claimed_at"] as Int64? else {
                    return nil
                }
                let ended = OwnershipRecord(
                    serial: serial, owner: try AccountID(owner), claimedAt: date(claimed),
                    releasedAt: max(at, date(claimed)), reason: .factoryReset, historyKept: true)
                try db.execute(
                    sql: """
                        UPDATE devices SET owner_id = NULL, claimed_at = NULL, name_sealed = NULL,
                            reserved_for = NULL, reserved_until = NULL
                        WHERE serial = ?
                        """, arguments: [serial.rawValue])
                try Self.insert(ended, db: db)
                return ended
            }
        } catch is NothingChanged {
            return nil
        }
    }

    public func setPendingCertificate(_ serial: DeviceSerial, pem: String, audit: AuditEntry) async throws -> Bool {
        try await writeIfChanged(audit: audit) { db in
            try db.execute(
                sql: "UPDATE devices SET pending_certificate_pem = ? WHERE serial = ? AND revoked_at IS NULL",
                arguments: [pem, serial.rawValue])
        }
    }

    public func promoteCertificate(_ serial: DeviceSerial, pem: String, audit: AuditEntry) async throws -> Bool {
        try await writeIfChanged(audit: audit) { db in
            try db.execute(
                sql: """
                    UPDATE devices SET certificate_pem = pending_certificate_pem, pending_certificate_pem = NULL
                    WHERE serial = ? AND pending_certificate_pem = ? AND revoked_at IS NULL
                    """,
                arguments: [serial.rawValue, pem])
        }
    }

    public func addAlert(_ alert: AlertRecord, audit: AuditEntry) async throws {
        try await write(audit: [audit]) { db in
            try db.execute(
                sql: """
                    INSERT INTO alerts (id, serial, kind, severity, evidence, raised_at, state, updated_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    alert.id, alert.serial.rawValue, alert.kind, alert.severity, alert.evidence, millis(alert.raisedAt),
                    alert.state.rawValue, millis(alert.updatedAt),
                ])
        }
    }

    public func alerts(in states: Set<AlertRecord.State>, limit: Int) async throws -> [AlertRecord] {
        guard !states.isEmpty else { return [] }
        let names = states.map(\.rawValue).sorted()
        return try await pool.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT * FROM alerts WHERE state IN (\(names.map { _ in "?" }.joined(separator: ", ")))
                    ORDER BY raised_at DESC, id LIMIT ?
                    """,
                arguments: StatementArguments(names) + [max(0, limit)]
            ).map(Self.alert)
        }
    }

    public func alerts(of serial: DeviceSerial, since: Date, limit: Int) async throws -> [AlertRecord] {
        try await pool.read { db in
            try Row.fetchAll(
                db,
                sql: "SELECT * FROM alerts WHERE serial = ? AND raised_at >= ? ORDER BY raised_at DESC, id LIMIT ?",
                arguments: [serial.rawValue, millis(since), max(0, limit)]
            ).map(Self.alert)
        }
    }

    public func setAlertState(_ id: String, _ state: AlertRecord.State, at: Date, audit: AuditEntry) async throws
        -> Bool
    {
        // Only forward: open → acknowledged → resolved, or open → resolved.
        let from: [String] =
            switch state {
            case .open: []
            case .acknowledged: ["open"]
            case .resolved: ["open", "acknowledged"]
            }
        guard !from.isEmpty else { return false }
        return try await writeIfChanged(audit: audit) { db in
            try db.execute(
                sql: """
                    UPDATE alerts SET state = ?, updated_at = ?
                    WHERE id = ? AND state IN (\(from.map { _ in "?" }.joined(separator: ", ")))
                    """,
                arguments: [state.rawValue, millis(at), id] + StatementArguments(from))
        }
    }

    public func alertsToDeliver(since: Date, now: Date, limit: Int) async throws -> [(
        alert: AlertRecord, attempts: Int
    )] {
        try await pool.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT * FROM alerts WHERE webhook_delivered_at IS NULL AND raised_at >= ?
                    AND (webhook_next_at IS NULL OR webhook_next_at <= ?) ORDER BY raised_at, id LIMIT ?
                    """,
                arguments: [millis(since), millis(now), max(0, limit)]
            ).map { (try Self.alert($0), $0["webhook_attempts"] as Int) }
        }
    }

    public func recordAlertDelivery(_ id: String, delivered: Bool, nextAttempt: Date?, at: Date) async throws {
        try await pool.write { db in
            try db.execute(
                sql: """
                    UPDATE alerts SET webhook_attempts = webhook_attempts + 1,
                    webhook_delivered_at = ?, webhook_next_at = ? WHERE id = ?
                    """,
                arguments: [delivered ? millis(at) : nil, nextAttempt.map(millis), id])
        }
    }

    static func alert(_ row: Row) throws -> AlertRecord {
        guard let state = AlertRecord.State(rawValue: row["state"]) else {
            throw HearthError(.integrity, "an alert has an unknown state")
        }
        return AlertRecord(
            id: row["id"], serial: try DeviceSerial(row["serial"] as String), kind: row["kind"],
            severity: row["severity"], evidence: row["evidence"], raisedAt: date(row["raised_at"]), state: state,
            updatedAt: date(row["updated_at"]))
    }

    public func setQuarantine(_ serial: DeviceSerial, _ quarantine: DeviceQuarantine?, audit: AuditEntry) async throws
        -> Bool
    {
        try await writeIfChanged(audit: audit) { db in
            if let quarantine {
                try db.execute(
                    sql: """
                        UPDATE devices SET quarantined_at = ?, quarantine_reason = ?
                        WHERE serial = ? AND quarantined_at IS NULL
                        """,
                    arguments: [millis(quarantine.since), quarantine.reason, serial.rawValue])
            } else {
                try db.execute(
                    sql: """
                        UPDATE devices SET quarantined_at = NULL, quarantine_reason = NULL
                        WHERE serial = ? AND quarantined_at IS NOT NULL
                        """,
                    arguments: [serial.rawValue])
            }
        }
    }

    /// One update with its audit entry, committed only if it changed a row; false otherwise.
    func writeIfChanged(audit: AuditEntry, _ update: @escaping @Sendable (Database) throws -> Void) async throws
        -> Bool
    {
        do {
            return try await write(audit: [audit]) { db in
                try update(db)
                guard db.changesCount > 0 else { throw NothingChanged() }
                return true
            }
        } catch is NothingChanged {
            return false
        }
    }

    static func insert(_ o: OwnershipRecord, db: Database) throws {
        try db.execute(
            sql: """
                INSERT INTO ownerships (serial, owner_id, claimed_at, released_at, reason, history_kept, purged_at)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [
                o.serial.rawValue, o.owner.description, millis(o.claimedAt), millis(o.releasedAt), o.reason.rawValue,
                o.historyKept, o.purgedAt.map(millis),
            ])
    }

    public func ownerships(of owner: AccountID) async throws -> [OwnershipRecord] {
        try await pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM ownerships WHERE owner_id = ? ORDER BY claimed_at, serial",
                arguments: [owner.description]
            ).map(Self.ownership)
        }
    }

    public func pendingPurges(limit: Int) async throws -> [OwnershipRecord] {
        try await pool.read { db in
            try Row.fetchAll(
                db,
                sql:
                    "SELECT * FROM ownerships WHERE history_kept = 0 AND purged_at IS NULL ORDER BY released_at LIMIT ?",
                arguments: [max(0, limit)]
            ).map(Self.ownership)
        }
    }

    public func markPurged(_ o: OwnershipRecord, at: Date) async throws {
        try await pool.write { db in
            try db.execute(
                sql: "UPDATE ownerships SET purged_at = ? WHERE serial = ? AND owner_id = ? AND claimed_at = ?",
                arguments: [millis(at), o.serial.rawValue, o.owner.description, millis(o.claimedAt)])
        }
    }

    static func ownership(_ row: Row) throws -> OwnershipRecord {
        guard let reason = ReleaseReason(rawValue: row["reason"]) else {
            throw HearthError(.integrity, "an ownership record has an unknown reason")
        }
        return OwnershipRecord(
            serial: try DeviceSerial(row["serial"] as String), owner: try AccountID(row["owner_id"] as String),
            claimedAt: date(row["claimed_at"]), releasedAt: date(row["released_at"]), reason: reason,
            historyKept: row["history_kept"], purgedAt: (row["purged_at"] as Int64?).map(date))
    }

    public func recordConsents(_ choices: [ConsentRecord], audit: AuditEntry) async throws -> Bool {
        guard let first = choices.first else { return true }
        guard choices.allSatisfy({ $0.serial == first.serial && $0.owner == first.owner }) else {
            throw HearthError(.invalidInput, "consent choices of one device and owner at a time")
        }
        do {
            return try await write(audit: [audit]) { db in
                let owner = try String.fetchOne(
                    db, sql: "SELECT owner_id FROM devices WHERE serial = ?", arguments: [first.serial.rawValue])
                guard owner == first.owner.description else { throw NothingChanged() }
                for c in choices {
                    try db.execute(
                        sql: """
                            INSERT INTO consents (serial, owner_id, purpose, granted, notice_version, at)
                            VALUES (?, ?, ?, ?, ?, ?)
                            """,
                        arguments: [
                            c.serial.rawValue, c.owner.description, c.purpose, c.granted, c.noticeVersion, millis(c.at),
                        ])
                }
                return true
            }
        } catch is NothingChanged {
            return false
        }
    }

    public func consents(_ serial: DeviceSerial, owner: AccountID) async throws -> [ConsentRecord] {
        try await pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM consents WHERE serial = ? AND owner_id = ? ORDER BY id",
                arguments: [serial.rawValue, owner.description]
            ).map { row in
                ConsentRecord(
                    serial: serial, owner: owner, purpose: row["purpose"], granted: row["granted"],
                    noticeVersion: row["notice_version"], at: date(row["at"]))
            }
        }
    }

    public func deviceCount() async throws -> Int {
        try await pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM devices") ?? 0 }
    }

    public func nameDevice(_ serial: DeviceSerial, owner: AccountID, nameSealed: Data?, audit: AuditEntry) async throws
        -> Bool
    {
        do {
            return try await write(audit: [audit]) { db in
                try db.execute(
                    sql: "UPDATE devices SET name_sealed = ? WHERE serial = ? AND owner_id = ?",
                    arguments: [nameSealed, serial.rawValue, owner.description])
                guard db.changesCount == 1 else { throw NothingChanged() }
                return true
            }
        } catch is NothingChanged {
            return false
        }
    }

    public func fleet(after: DeviceSerial?, filter: FleetFilter, limit: Int) async throws -> [DeviceRecord] {
        let (clause, arguments) = filter.sql
        return try await pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM devices WHERE \(clause) AND serial > ? ORDER BY serial LIMIT ?",
                arguments: StatementArguments(arguments + [after?.rawValue ?? ""]) + [max(0, limit)]
            ).map(Self.device)
        }
    }

    public func fleetCount(_ filter: FleetFilter) async throws -> Int {
        let (clause, arguments) = filter.sql
        return try await pool.read { db in
            try Int.fetchOne(
                db, sql: "SELECT COUNT(*) FROM devices WHERE \(clause)", arguments: StatementArguments(arguments)) ?? 0
        }
    }

    public func revokeDevice(_ serial: DeviceSerial, at: Date, audit: AuditEntry) async throws -> Bool {
        do {
            return try await write(audit: [audit]) { db in
                guard
                    try Bool.fetchOne(db, sql: "SELECT 1 FROM devices WHERE serial = ?", arguments: [serial.rawValue])
                        != nil
                else {
                    throw HearthError(.notFound, field: "serial", "no such device")
                }
                try db.execute(
                    sql: "UPDATE devices SET revoked_at = ? WHERE serial = ? AND revoked_at IS NULL",
                    arguments: [millis(at), serial.rawValue])
                guard db.changesCount == 1 else { throw NothingChanged() }
                return true
            }
        } catch is NothingChanged {
            return false
        }
    }

    static func device(_ row: Row) throws -> DeviceRecord {
        DeviceRecord(
            serial: try DeviceSerial(row["serial"] as String), model: try ProductModelID(row["model_id"] as String),
            certificatePEM: row["certificate_pem"], setupCodeHash: row["setup_code_hash"],
            provisionedAt: date(row["provisioned_at"]),
            owner: try (row["owner_id"] as String?).map { try AccountID($0) },
            claimedAt: (row["claimed_at"] as Int64?).map(date),
            revokedAt: (row["revoked_at"] as Int64?).map(date), nameSealed: row["name_sealed"],
            reservation: (row["reserved_for"] as String?).flatMap { index in
                (row["reserved_until"] as Int64?).map { DeviceReservation(emailIndex: index, until: date($0)) }
            },
            pendingCertificatePEM: row["pending_certificate_pem"],
            quarantine: (row["quarantine_reason"] as String?).flatMap { reason in
                (row["quarantined_at"] as Int64?).map { DeviceQuarantine(reason: reason, since: date($0)) }
            }
        )
    }

    // MARK: Audit

    public func appendAudit(_ entry: AuditEntry) async throws {
        try await write(audit: [entry]) { _ in }
    }

    public func auditRecords() async throws -> [AuditRecord] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM audit_log ORDER BY seq").map(Self.auditRecord)
        }
    }

    public func auditRecords(subject: String, limit: Int) async throws -> [AuditRecord] {
        try await pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM audit_log WHERE subject = ? ORDER BY seq DESC LIMIT ?",
                arguments: [subject, max(0, limit)]
            ).map(Self.auditRecord)
        }
    }

    public func auditRecords(actor: String, limit: Int) async throws -> [AuditRecord] {
        try await pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM audit_log WHERE actor = ? ORDER BY seq LIMIT ?",
                arguments: [actor, max(0, limit)]
            ).map(Self.auditRecord)
        }
    }

    static func auditRecord(_ row: Row) -> AuditRecord {
        AuditRecord(
            sequence: row["seq"], atMillis: row["at"], kind: row["kind"], actor: row["actor"], subject: row["subject"],
            detail: row["detail"], previousMAC: row["prev_mac"], mac: row["mac"])
    }

    public func auditHead() async throws -> AuditHead? {
        try await pool.read { db in try Self.readHead(db) }
    }

    // MARK: Vulnerability reports

    public func createReport(_ r: ReportRecord, audit: AuditEntry) async throws {
        try await write(audit: [audit]) { db in
            try db.execute(
                sql: "INSERT INTO reports (id, received_at, state, status_token_hash, sealed) VALUES (?, ?, ?, ?, ?)",
                arguments: [r.id.rawValue, millis(r.receivedAt), r.state.rawValue, r.statusTokenHash, r.sealed]
            )
            for (i, e) in r.events.enumerated() { try Self.insert(e, report: r.id, seq: i, db: db) }
        }
    }

    static func insert(_ e: ReportEvent, report: ReportID, seq: Int, db: Database) throws {
        try db.execute(
            sql: "INSERT INTO report_events (report_id, seq, at, state, actor, note_sealed) VALUES (?, ?, ?, ?, ?, ?)",
            arguments: [report.rawValue, seq, millis(e.at), e.state.rawValue, e.actor, e.noteSealed]
        )
    }

    public func report(_ id: ReportID) async throws -> ReportRecord? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM reports WHERE id = ?", arguments: [id.rawValue]).map {
                try Self.report($0, db)
            }
        }
    }

    public func report(statusTokenHash: String) async throws -> ReportRecord? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM reports WHERE status_token_hash = ?", arguments: [statusTokenHash])
                .map { try Self.report($0, db) }
        }
    }

    public func reports() async throws -> [ReportRecord] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM reports ORDER BY received_at DESC, id").map {
                try Self.report($0, db)
            }
        }
    }

    public func moveReport(_ id: ReportID, from: ReportState, event: ReportEvent, audit: AuditEntry) async throws
        -> Bool
    {
        do {
            return try await write(audit: [audit]) { db in
                try Self.advance(id, from: from, event: event, db: db)
                return true
            }
        } catch is NothingChanged {
            return false
        }
    }

    /// Moves a report still in `from` to the event's state and appends the event; throws
    /// `NothingChanged` (rolling the transaction back) if it was moved meanwhile.
    static func advance(_ id: ReportID, from: ReportState, event: ReportEvent, db: Database) throws {
        try db.execute(
            sql: "UPDATE reports SET state = ? WHERE id = ? AND state = ?",
            arguments: [event.state.rawValue, id.rawValue, from.rawValue])
        guard db.changesCount == 1 else { throw NothingChanged() }
        let seq =
            try Int.fetchOne(
                db, sql: "SELECT COUNT(*) FROM report_events WHERE report_id = ?", arguments: [id.rawValue]) ?? 0
        try insert(event, report: id, seq: seq, db: db)
    }

    static func report(_ row: Row, _ db: Database) throws -> ReportRecord {
        let id = try ReportID(row["id"] as String)
        let events = try Row.fetchAll(
            db, sql: "SELECT * FROM report_events WHERE report_id = ? ORDER BY seq", arguments: [id.rawValue]
        ).map { e in
            guard let state = ReportState(rawValue: e["state"]) else {
                throw HearthError(.integrity, "unknown report state")
            }
            return ReportEvent(at: date(e["at"]), state: state, actor: e["actor"], noteSealed: e["note_sealed"])
        }
        guard let state = ReportState(rawValue: row["state"]) else {
            throw HearthError(.integrity, "unknown report state")
        }
        return ReportRecord(
            id: id, receivedAt: date(row["received_at"]), state: state, statusTokenHash: row["status_token_hash"],
            sealed: row["sealed"], events: events)
    }

    public func publishAdvisory(_ a: AdvisoryRecord, reportFrom: ReportState, event: ReportEvent, audit: AuditEntry)
        async throws -> Bool
    {
        do {
            return try await write(audit: [audit]) { db in
                try Self.advance(a.reportID, from: reportFrom, event: event, db: db)
                try db.execute(
                    sql:
                        "INSERT INTO advisories (id, report_id, published_at, title, severity, models, fixed_version, csaf, osv) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    arguments: [
                        a.id, a.reportID.rawValue, millis(a.publishedAt), a.title, a.severity,
                        a.models.map(\.rawValue).joined(separator: ","), a.fixedVersion, a.csaf, a.osv,
                    ]
                )
                return true
            }
        } catch is NothingChanged {
            return false
        }
    }

    public func advisories() async throws -> [AdvisoryRecord] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM advisories ORDER BY published_at DESC, id").map { row in
                AdvisoryRecord(
                    id: row["id"], reportID: try ReportID(row["report_id"] as String),
                    publishedAt: date(row["published_at"]), title: row["title"], severity: row["severity"],
                    models: try (row["models"] as String).split(separator: ",").map { try ProductModelID(String($0)) },
                    fixedVersion: row["fixed_version"], csaf: row["csaf"], osv: row["osv"]
                )
            }
        }
    }

    public func setSecurityTeam(_ account: AccountID, member: Bool, audit: AuditEntry) async throws {
        try await write(audit: [audit]) { db in
            if member {
                try db.execute(
                    sql: "INSERT OR IGNORE INTO security_team (account_id) VALUES (?)", arguments: [account.description]
                )
            } else {
                try db.execute(sql: "DELETE FROM security_team WHERE account_id = ?", arguments: [account.description])
            }
        }
    }

    // MARK: Coordination

    public func acquireLease(_ name: String, holder: String, now: Date, until: Date) async throws -> Bool {
        try await pool.write { db in
            try db.execute(
                sql: """
                    INSERT INTO leases (name, holder, until) VALUES (?, ?, ?)
                    ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
                    WHERE leases.holder = excluded.holder OR leases.until <= ?
                    """, arguments: [name, holder, millis(until), millis(now)])
            return db.changesCount == 1
        }
    }

    public func updateThrottles<T: Sendable>(
        _ keys: [String],
        _ step: @escaping @Sendable ([String: StoredThrottle]) throws -> (T, [String: StoredThrottle?])
    ) async throws -> T {
        try await pool.write { db in
            var stored: [String: StoredThrottle] = [:]
            for key in Set(keys) {
                if let row = try Row.fetchOne(db, sql: "SELECT * FROM throttles WHERE key = ?", arguments: [key]) {
                    stored[key] = StoredThrottle(
                        state: ThrottleState(
                            failures: row["failures"], inFlight: row["in_flight"],
                            blockedUntil: (row["blocked_until"] as Int64?).map(date),
                            lastFailure: (row["last_failure"] as Int64?).map(date)),
                        reservedAt: (row["reserved_at"] as Int64?).map(date))
                }
            }
            let (result, changes) = try step(stored)
            for (key, change) in changes {
                if let t = change {
                    try db.execute(
                        sql: """
                            INSERT OR REPLACE INTO throttles (key, failures, in_flight, blocked_until, last_failure, reserved_at)
                            VALUES (?, ?, ?, ?, ?, ?)
                            """,
                        arguments: [
                            key, t.state.failures, t.state.inFlight, t.state.blockedUntil.map(millis),
                            t.state.lastFailure.map(millis), t.reservedAt.map(millis),
                        ])
                } else {
                    try db.execute(sql: "DELETE FROM throttles WHERE key = ?", arguments: [key])
                }
            }
            return result
        }
    }

    public func deleteIdleThrottles(now: Date, reservedBefore: Date, failedBefore: Date) async throws -> Int {
        try await pool.write { db in
            try db.execute(
                sql: """
                    DELETE FROM throttles WHERE (in_flight = 0 OR reserved_at IS NULL OR reserved_at < ?)
                    AND (blocked_until IS NULL OR blocked_until <= ?) AND (last_failure IS NULL OR last_failure < ?)
                    """, arguments: [millis(reservedBefore), millis(now), millis(failedBefore)])
            return db.changesCount
        }
    }

    public func isSecurityTeam(_ account: AccountID) async throws -> Bool {
        try await pool.read { db in
            try Bool.fetchOne(
                db, sql: "SELECT EXISTS (SELECT 1 FROM security_team WHERE account_id = ?)",
                arguments: [account.description]) ?? false
        }
    }
}

/// Opens (creating, mode 0600) a WAL database with `synchronous = FULL`: a committed transaction
/// survives a crash or power loss, and readers never block the writer.
func openPool(path: String, foreignKeys: Bool = false, secureDelete: Bool = false) throws -> DatabasePool {
    var config = Configuration()
    config.foreignKeysEnabled = foreignKeys
    config.busyMode = .timeout(10)
    config.prepareDatabase { db in
        if secureDelete { try db.execute(sql: "PRAGMA secure_delete = ON") }
    }
    let existed = FileManager.default.fileExists(atPath: path)
    let pool = try DatabasePool(path: path, configuration: config)
    if !existed { chmod(path, 0o600) }
    // After the pool is open: GRDB turns WAL on for its writer *after* `prepareDatabase`, and with it
    // `synchronous = NORMAL`, which does not sync the log at each commit. Only the writer commits.
    try pool.writeWithoutTransaction { try $0.execute(sql: "PRAGMA synchronous = FULL") }
    return pool
}

/// Milliseconds since 1970, clamped to ±2^53 so that no date (however far off) traps the conversion.
func millis(_ date: Date) -> Int64 {
    let ms = (date.timeIntervalSince1970 * 1000).rounded()
    guard ms.isFinite else { return 0 }
    return Int64(min(max(ms, -9_007_199_254_740_992), 9_007_199_254_740_992))
}
func date(_ millis: Int64) -> Date { Date(timeIntervalSince1970: Double(millis) / 1000) }
