import Foundation
import HearthCore
import HearthStorage

/// The server's store on PostgreSQL: the same contract as `SQLiteStore`
/// (`Tests/HearthStorageContracts/StoreContract.swift`). Every write runs in one transaction that
/// first takes the writers' lock, so the audit chain advances one entry at a time across every
/// node sharing the database, as SQLite's single writer does on one.
public final class PostgresStore: HearthStore {
    let db: PostgresDatabase
    let sealer: any AuditSealer

    /// Applies the migrations (once across nodes starting together).
    public init(database: PostgresDatabase, sealer: any AuditSealer) async throws {
        db = database
        self.sealer = sealer
        try await database.migrate(PostgresSchema.store + PostgresSchema.cluster)
    }

    /// Thrown inside a transaction to roll it back when nothing changed.
    struct NothingChanged: Error {}

    // MARK: Writing, always with the audit entry in the same transaction

    func write<T: Sendable>(audit: [AuditEntry], _ body: @escaping @Sendable (SQL) async throws -> T) async throws -> T
    {
        try await db.transaction { [sealer] sql in
            let result = try await body(sql)
            for entry in audit { try await Self.append(entry, sql: sql, sealer: sealer) }
            return result
        }
    }

    /// A write committed only when `body` says it changed something; false (nothing kept) otherwise.
    func writeIf(audit: [AuditEntry], _ body: @escaping @Sendable (SQL) async throws -> Bool) async throws -> Bool {
        do {
            return try await write(audit: audit) { sql in
                guard try await body(sql) else { throw NothingChanged() }
                return true
            }
        } catch is NothingChanged {
            return false
        }
    }

    static func append(_ entry: AuditEntry, sql: SQL, sealer: any AuditSealer) async throws {
        let (record, head) = sealer.seal(entry, after: try await readHead(sql))
        try await sql.execute(
            "INSERT INTO audit_log (seq, at, kind, actor, subject, detail, prev_mac, mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                record.sequence, record.atMillis, record.kind, record.actor, record.subject, record.detail,
                record.previousMAC, record.mac,
            ])
        try await sql.execute(
            """
            INSERT INTO audit_head (id, seq, mac, head_mac) VALUES (1, ?, ?, ?)
            ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, mac = excluded.mac, head_mac = excluded.head_mac
            """, [head.sequence, head.mac, head.headMAC])
    }

    static func readHead(_ sql: SQL) async throws -> AuditHead? {
        try await sql.row("SELECT seq, mac, head_mac FROM audit_head WHERE id = 1").map {
            AuditHead(sequence: try $0.int64("seq"), mac: try $0.string("mac"), headMAC: try $0.string("head_mac"))
        }
    }

    func read<T: Sendable>(_ body: @escaping @Sendable (SQL) async throws -> T) async throws -> T {
        try await db.run(body)
    }

    // MARK: Accounts

    public func createAccount(_ account: AccountRecord, audit: AuditEntry) async throws {
        try await write(audit: [audit]) { sql in try await Self.insert(account, sql: sql) }
    }

    static func insert(_ a: AccountRecord, sql: SQL) async throws {
        try await sql.execute(
            """
            INSERT INTO accounts (id, role, email_index, email_sealed, password_hash, created_at, recovery_hash)
            VALUES (?, ?, ?, ?, ?, ?, ?)
            """,
            [
                a.id.description, a.role.rawValue, a.emailIndex, a.emailSealed, a.passwordHash, millis(a.createdAt),
                a.recoveryHash,
            ])
    }

    public func account(emailIndex: String) async throws -> AccountRecord? {
        try await read { try await $0.row("SELECT * FROM accounts WHERE email_index = ?", [emailIndex]) }.map(
            Self.account)
    }

    public func account(id: AccountID) async throws -> AccountRecord? {
        try await read { try await $0.row("SELECT * FROM accounts WHERE id = ?", [id.description]) }.map(Self.account)
    }

    public func checkWritable(at now: Date) async throws {
        try await db.transaction(serialised: false) { sql in
            try await sql.execute(
                """
                INSERT INTO readiness (id, checked_at) VALUES (1, ?)
                ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at
                """, [Int64(now.timeIntervalSince1970)])
        }
    }

    public func hasOperator() async throws -> Bool {
        try await read { try await $0.int("SELECT COUNT(*) FROM accounts WHERE role = 'operator'") } > 0
    }

    static func account(_ row: SQLRow) throws -> AccountRecord {
        guard let role = Role(rawValue: try row.string("role")) else {
            throw HearthError(.integrity, "unknown role in accounts")
        }
        var deletion: DeletionRequest?
        if let requested = try row.optionalDate("deletion_requested_at"),
            let after = try row.optionalDate("delete_after"),
            let token = try row.optionalString("deletion_token_hash")
        {
            deletion = DeletionRequest(requestedAt: requested, after: after, receiptTokenHash: token)
        }
        return AccountRecord(
            id: try AccountID(try row.string("id")), role: role, emailIndex: try row.string("email_index"),
            emailSealed: try row.data("email_sealed"), passwordHash: try row.string("password_hash"),
            createdAt: try row.date("created_at"), recoveryHash: try row.optionalString("recovery_hash"),
            deletion: deletion)
    }

    public func setDeletion(_ account: AccountID, _ request: DeletionRequest?, audit: AuditEntry) async throws -> Bool {
        try await writeIf(audit: [audit]) { sql in
            if let request {
                return try await sql.changes(
                    """
                    UPDATE accounts SET deletion_requested_at = ?, delete_after = ?, deletion_token_hash = ?
                    WHERE id = ? AND delete_after IS NULL
                    """,
                    [millis(request.requestedAt), millis(request.after), request.receiptTokenHash, account.description]
                ) == 1
            }
            return try await sql.changes(
                """
                UPDATE accounts SET deletion_requested_at = NULL, delete_after = NULL, deletion_token_hash = NULL
                WHERE id = ? AND delete_after IS NOT NULL
                """, [account.description]) == 1
        }
    }

    public func deletionsDue(now: Date, limit: Int) async throws -> [AccountRecord] {
        try await read {
            try await $0.rows(
                "SELECT * FROM accounts WHERE delete_after IS NOT NULL AND delete_after <= ? ORDER BY delete_after LIMIT ?",
                [millis(now), max(0, limit)])
        }.map(Self.account)
    }

    public func deleteAccount(_ account: AccountID, receipt: String, audit: AuditEntry) async throws -> Bool {
        let id = account.description
        return try await writeIf(audit: [audit]) { sql in
            guard
                let token = try await sql.row(
                    "SELECT deletion_token_hash FROM accounts WHERE id = ? AND delete_after IS NOT NULL", [id]
                )?.optionalString("deletion_token_hash")
            else { return false }
            guard try await sql.int("SELECT COUNT(*) FROM devices WHERE owner_id = ?", [id]) == 0 else {
                throw HearthError(.conflict, "the account still holds devices")
            }
            for statement in [
                "DELETE FROM sessions WHERE account_id = ?", "DELETE FROM consents WHERE owner_id = ?",
                "DELETE FROM ownerships WHERE owner_id = ?", "DELETE FROM security_team WHERE account_id = ?",
                "DELETE FROM data_keys WHERE owner_key = ?", "DELETE FROM accounts WHERE id = ?",
            ] {
                try await sql.execute(statement, [id])
            }
            try await sql.execute(
                "INSERT INTO deletion_receipts (token_hash, receipt, created_at) VALUES (?, ?, ?)",
                [token, receipt, millis(audit.at)])
            return true
        }
    }

    public func dataKey(owner: AccountID?) async throws -> DataKeyRecord? {
        try await read { try await $0.row("SELECT * FROM data_keys WHERE owner_key = ?", [Self.ownerKey(owner)]) }.map(
            Self.dataKey)
    }

    public func addDataKey(_ key: DataKeyRecord) async throws -> DataKeyRecord {
        try await db.transaction(serialised: false) { sql in
            try await sql.execute(
                """
                INSERT INTO data_keys (id, owner_key, wrapped, created_at) VALUES (?, ?, ?, ?)
                ON CONFLICT DO NOTHING
                """, [key.id, Self.ownerKey(key.owner), key.wrapped, millis(key.createdAt)])
            guard
                let stored = try await sql.row(
                    "SELECT * FROM data_keys WHERE owner_key = ?", [Self.ownerKey(key.owner)])
            else { throw HearthError(.integrity, "a data key was not stored") }
            return try Self.dataKey(stored)
        }
    }

    public func dataKeys(ids: Set<String>) async throws -> [DataKeyRecord] {
        guard !ids.isEmpty else { return [] }
        let list = ids.sorted()
        return try await read {
            try await $0.rows(
                "SELECT * FROM data_keys WHERE id IN (\(Self.placeholders(list.count)))",
                list.map { $0 as any SQLValue })
        }.map(Self.dataKey)
    }

    static func placeholders(_ n: Int) -> String { Array(repeating: "?", count: n).joined(separator: ", ") }

    static func ownerKey(_ owner: AccountID?) -> String { owner?.description ?? "deployment" }

    static func dataKey(_ row: SQLRow) throws -> DataKeyRecord {
        let ownerKey = try row.string("owner_key")
        return DataKeyRecord(
            id: try row.string("id"), owner: ownerKey == "deployment" ? nil : try AccountID(ownerKey),
            wrapped: try row.data("wrapped"), createdAt: try row.date("created_at"))
    }

    public func deletionReceipt(tokenHash: String) async throws -> String? {
        try await read { try await $0.row("SELECT receipt FROM deletion_receipts WHERE token_hash = ?", [tokenHash]) }?
            .string("receipt")
    }

    public func changePassword(_ account: AccountID, from: String, to: String, keeping: String?, audit: AuditEntry)
        async throws -> Bool
    {
        try await writeIf(audit: [audit]) { sql in
            guard
                try await sql.changes(
                    "UPDATE accounts SET password_hash = ? WHERE id = ? AND password_hash = ?",
                    [to, account.description, from]) == 1
            else { return false }
            try await sql.execute(
                "DELETE FROM sessions WHERE account_id = ? AND token_hash IS DISTINCT FROM ?",
                [account.description, keeping])
            return true
        }
    }

    public func setRecoveryHash(_ account: AccountID, _ hash: String, audit: AuditEntry) async throws {
        try await write(audit: [audit]) { sql in
            guard
                try await sql.changes(
                    "UPDATE accounts SET recovery_hash = ? WHERE id = ?", [hash, account.description])
                    == 1
            else { throw HearthError(.notFound, "no such account") }
        }
    }

    public func recoverAccount(
        _ account: AccountID, used: String, passwordHash: String, recoveryHash: String, audit: AuditEntry
    ) async throws -> Bool {
        try await writeIf(audit: [audit]) { sql in
            guard
                try await sql.changes(
                    "UPDATE accounts SET password_hash = ?, recovery_hash = ? WHERE id = ? AND recovery_hash = ?",
                    [passwordHash, recoveryHash, account.description, used]) == 1
            else { return false }
            try await sql.execute("DELETE FROM sessions WHERE account_id = ?", [account.description])
            return true
        }
    }

    // MARK: Set-up link

    public func replaceSetupLink(_ link: SetupLinkRecord, audit: AuditEntry) async throws {
        try await write(audit: [audit]) { sql in
            try await sql.execute("DELETE FROM setup_links")
            try await sql.execute(
                "INSERT INTO setup_links (token_hash, created_at, expires_at) VALUES (?, ?, ?)",
                [link.tokenHash, millis(link.createdAt), millis(link.expiresAt)])
        }
    }

    public func redeemSetupLink(tokenHash: String, now: Date, creating account: AccountRecord, audit: [AuditEntry])
        async throws
    {
        try await write(audit: audit) { sql in
            let expires = try await sql.row("SELECT expires_at FROM setup_links WHERE token_hash = ?", [tokenHash])?
                .int64("expires_at")
            guard let expires, expires > millis(now) else {
                throw HearthError(.expired, "this set-up link is used, expired or unknown")
            }
            try await sql.execute("DELETE FROM setup_links WHERE token_hash = ?", [tokenHash])
            try await Self.insert(account, sql: sql)
        }
    }

    // MARK: Sessions

    public func createSession(_ s: SessionRecord, audit: AuditEntry) async throws {
        try await write(audit: [audit]) { sql in
            try await sql.execute(
                "INSERT INTO sessions (token_hash, account_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
                [s.tokenHash, s.account.description, millis(s.createdAt), millis(s.expiresAt)])
        }
    }

    static func session(_ row: SQLRow) throws -> SessionRecord {
        SessionRecord(
            tokenHash: try row.string("token_hash"), account: try AccountID(try row.string("account_id")),
            createdAt: try row.date("created_at"), expiresAt: try row.date("expires_at"))
    }

    public func session(tokenHash: String) async throws -> SessionRecord? {
        try await read { try await $0.row("SELECT * FROM sessions WHERE token_hash = ?", [tokenHash]) }.map(
            Self.session)
    }

    public func sessions(of account: AccountID) async throws -> [SessionRecord] {
        try await read {
            try await $0.rows(
                "SELECT * FROM sessions WHERE account_id = ? ORDER BY created_at DESC, token_hash",
                [account.description])
        }.map(Self.session)
    }

    public func deleteSessions(of account: AccountID, audit: AuditEntry) async throws -> Int {
        try await write(audit: [audit]) { sql in
            try await sql.changes("DELETE FROM sessions WHERE account_id = ?", [account.description])
        }
    }

    public func deleteSession(tokenHash: String, audit: AuditEntry) async throws {
        try await write(audit: [audit]) { sql in
            try await sql.execute("DELETE FROM sessions WHERE token_hash = ?", [tokenHash])
        }
    }

    public func deleteExpiredSessions(now: Date) async throws -> Int {
        try await db.transaction(serialised: false) { sql in
            try await sql.changes("DELETE FROM sessions WHERE expires_at <= ?", [millis(now)])
        }
    }

    // MARK: Product models

    public func createModel(_ model: ProductModel, at: Date, audit: AuditEntry) async throws {
        let definition = String(decoding: model.json.serialized(), as: UTF8.self)
        try await write(audit: [audit]) { sql in
            try await sql.execute(
                "INSERT INTO product_models (id, definition, created_at) VALUES (?, ?, ?)",
                [model.id.rawValue, definition, millis(at)])
        }
    }

    public func model(_ id: ProductModelID) async throws -> ProductModel? {
        try await read { try await $0.row("SELECT definition FROM product_models WHERE id = ?", [id.rawValue]) }.map {
            try Self.model(try $0.string("definition"))
        }
    }

    public func models() async throws -> [ProductModel] {
        try await read { try await $0.rows("SELECT definition FROM product_models ORDER BY id") }.map {
            try Self.model(try $0.string("definition"))
        }
    }

    static func model(_ definition: String) throws -> ProductModel {
        try ProductModel(json: try JSONValue.parse(Array(definition.utf8)))
    }

    // MARK: Devices

    public func addDevices(_ devices: [DeviceRecord], audit: AuditEntry) async throws {
        try await write(audit: [audit]) { sql in
            // Several rows a statement (7 values each, far below PostgreSQL's 65,535 parameters).
            var start = 0
            while start < devices.count {
                let chunk = devices[start..<min(start + 1000, devices.count)]
                start += chunk.count
                var values: [any SQLValue] = []
                for d in chunk {
                    values +=
                        [
                            d.serial.rawValue, d.model.rawValue, d.certificatePEM, d.setupCodeHash,
                            millis(d.provisionedAt),
                            d.owner?.description, d.claimedAt.map(millis),
                        ] as [any SQLValue]
                }
                try await sql.execute(
                    """
                    INSERT INTO devices (serial, model_id, certificate_pem, setup_code_hash, provisioned_at, owner_id, claimed_at)
                    VALUES \(Array(repeating: "(?, ?, ?, ?, ?, ?, ?)", count: chunk.count).joined(separator: ", "))
                    """, values)
            }
        }
    }

    public func device(_ serial: DeviceSerial) async throws -> DeviceRecord? {
        try await read { try await $0.row("SELECT * FROM devices WHERE serial = ?", [serial.rawValue]) }.map(
            Self.device)
    }

    public func devices(ownedBy owner: AccountID) async throws -> [DeviceRecord] {
        try await read {
            try await $0.rows(
                "SELECT * FROM devices WHERE owner_id = ? ORDER BY claimed_at, serial", [owner.description])
        }.map(Self.device)
    }

    public func claimDevice(_ serial: DeviceSerial, owner: AccountID, emailIndex: String, at: Date, audit: AuditEntry)
        async throws -> Bool
    {
        try await writeIf(audit: [audit]) { sql in
            try await sql.changes(
                """
                UPDATE devices SET owner_id = ?, claimed_at = ?, reserved_for = NULL, reserved_until = NULL
                WHERE serial = ? AND owner_id IS NULL
                  AND (reserved_for IS NULL OR reserved_for = ? OR reserved_until <= ?)
                """, [owner.description, millis(at), serial.rawValue, emailIndex, millis(at)]) == 1
        }
    }

    public func releaseDevice(
        _ release: OwnershipRecord, reservation: DeviceReservation?, revoke: Bool, audit: AuditEntry
    ) async throws -> Bool {
        try await writeIf(audit: [audit]) { sql in
            guard
                try await sql.changes(
                    """
                    UPDATE devices SET owner_id = NULL, claimed_at = NULL, name_sealed = NULL,
                        reserved_for = ?, reserved_until = ?,
                        revoked_at = CASE WHEN ? AND revoked_at IS NULL THEN ? ELSE revoked_at END
                    WHERE serial = ? AND owner_id = ? AND claimed_at = ?
                    """,
                    [
                        reservation?.emailIndex, reservation.map { millis($0.until) }, revoke,
                        millis(release.releasedAt), release.serial.rawValue, release.owner.description,
                        millis(release.claimedAt),
                    ]) == 1
            else { return false }
            try await Self.insert(release, sql: sql)
            return true
        }
    }

    public func resetDevice(_ serial: DeviceSerial, resetID: String, at: Date, audit: AuditEntry) async throws
        -> OwnershipRecord?
    {
        do {
            return try await write(audit: [audit]) { sql in
                guard
                    let row = try await sql.row(
                        "SELECT owner_id, claimed_at, last_reset FROM devices WHERE serial = ?", [serial.rawValue])
                else { throw HearthError(.notFound, field: "serial", "no such device") }
                guard try row.optionalString("last_reset") != resetID else { throw NothingChanged() }
                try await sql.execute("UPDATE devices SET last_reset = ? WHERE serial = ?", [resetID, serial.rawValue])
                guard let owner = try row.optionalString("owner_id"), let claimed = try row.optionalDate("claimed_at")
                else { return nil }
                let ended = OwnershipRecord(
                    serial: serial, owner: try AccountID(owner), claimedAt: claimed, releasedAt: max(at, claimed),
                    reason: .factoryReset, historyKept: true)
                try await sql.execute(
                    """
                    UPDATE devices SET owner_id = NULL, claimed_at = NULL, name_sealed = NULL,
                        reserved_for = NULL, reserved_until = NULL
                    WHERE serial = ?
                    """, [serial.rawValue])
                try await Self.insert(ended, sql: sql)
                return ended
            }
        } catch is NothingChanged {
            return nil
        }
    }

    public func setPendingCertificate(_ serial: DeviceSerial, pem: String, audit: AuditEntry) async throws -> Bool {
        try await writeIf(audit: [audit]) { sql in
            try await sql.changes(
                "UPDATE devices SET pending_certificate_pem = ? WHERE serial = ? AND revoked_at IS NULL",
                [pem, serial.rawValue]) > 0
        }
    }

    public func promoteCertificate(_ serial: DeviceSerial, pem: String, audit: AuditEntry) async throws -> Bool {
        try await writeIf(audit: [audit]) { sql in
            try await sql.changes(
                """
                UPDATE devices SET certificate_pem = pending_certificate_pem, pending_certificate_pem = NULL
                WHERE serial = ? AND pending_certificate_pem = ? AND revoked_at IS NULL
                """, [serial.rawValue, pem]) > 0
        }
    }

    public func addAlert(_ alert: AlertRecord, audit: AuditEntry) async throws {
        try await write(audit: [audit]) { sql in
            try await sql.execute(
                """
                INSERT INTO alerts (id, serial, kind, severity, evidence, raised_at, state, updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """,
                [
                    alert.id, alert.serial.rawValue, alert.kind, alert.severity, alert.evidence, millis(alert.raisedAt),
                    alert.state.rawValue, millis(alert.updatedAt),
                ])
        }
    }

    public func alerts(in states: Set<AlertRecord.State>, limit: Int) async throws -> [AlertRecord] {
        guard !states.isEmpty else { return [] }
        let names = states.map(\.rawValue).sorted()
        return try await read {
            try await $0.rows(
                "SELECT * FROM alerts WHERE state IN (\(Self.placeholders(names.count))) ORDER BY raised_at DESC, id LIMIT ?",
                names.map { $0 as any SQLValue } + [max(0, limit)])
        }.map(Self.alert)
    }

    public func alerts(of serial: DeviceSerial, since: Date, limit: Int) async throws -> [AlertRecord] {
        try await read {
            try await $0.rows(
                "SELECT * FROM alerts WHERE serial = ? AND raised_at >= ? ORDER BY raised_at DESC, id LIMIT ?",
                [serial.rawValue, millis(since), max(0, limit)])
        }.map(Self.alert)
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
        return try await writeIf(audit: [audit]) { sql in
            try await sql.changes(
                "UPDATE alerts SET state = ?, updated_at = ? WHERE id = ? AND state IN (\(Self.placeholders(from.count)))",
                [state.rawValue, millis(at), id] + from.map { $0 as any SQLValue }) > 0
        }
    }

    public func alertsToDeliver(since: Date, now: Date, limit: Int) async throws -> [(
        alert: AlertRecord, attempts: Int
    )] {
        try await read {
            try await $0.rows(
                """
                SELECT * FROM alerts WHERE webhook_delivered_at IS NULL AND raised_at >= ?
                AND (webhook_next_at IS NULL OR webhook_next_at <= ?) ORDER BY raised_at, id LIMIT ?
                """, [millis(since), millis(now), max(0, limit)])
        }.map { (try Self.alert($0), try $0.int("webhook_attempts")) }
    }

    public func recordAlertDelivery(_ id: String, delivered: Bool, nextAttempt: Date?, at: Date) async throws {
        try await db.transaction(serialised: false) { sql in
            try await sql.execute(
                """
                UPDATE alerts SET webhook_attempts = webhook_attempts + 1,
                webhook_delivered_at = ?, webhook_next_at = ? WHERE id = ?
                """, [delivered ? millis(at) : nil, nextAttempt.map(millis), id])
        }
    }

    static func alert(_ row: SQLRow) throws -> AlertRecord {
        guard let state = AlertRecord.State(rawValue: try row.string("state")) else {
            throw HearthError(.integrity, "an alert has an unknown state")
        }
        return AlertRecord(
            id: try row.string("id"), serial: try DeviceSerial(try row.string("serial")), kind: try row.string("kind"),
            severity: try row.string("severity"), evidence: try row.string("evidence"),
            raisedAt: try row.date("raised_at"), state: state, updatedAt: try row.date("updated_at"))
    }

    public func setQuarantine(_ serial: DeviceSerial, _ quarantine: DeviceQuarantine?, audit: AuditEntry) async throws
        -> Bool
    {
        try await writeIf(audit: [audit]) { sql in
            if let quarantine {
                return try await sql.changes(
                    """
                    UPDATE devices SET quarantined_at = ?, quarantine_reason = ?
                    WHERE serial = ? AND quarantined_at IS NULL
                    """, [millis(quarantine.since), quarantine.reason, serial.rawValue]) > 0
            }
            return try await sql.changes(
                """
                UPDATE devices SET quarantined_at = NULL, quarantine_reason = NULL
                WHERE serial = ? AND quarantined_at IS NOT NULL
                """, [serial.rawValue]) > 0
        }
    }

    static func insert(_ o: OwnershipRecord, sql: SQL) async throws {
        try await sql.execute(
            """
            INSERT INTO ownerships (serial, owner_id, claimed_at, released_at, reason, history_kept, purged_at)
            VALUES (?, ?, ?, ?, ?, ?, ?)
            """,
            [
                o.serial.rawValue, o.owner.description, millis(o.claimedAt), millis(o.releasedAt), o.reason.rawValue,
                o.historyKept, o.purgedAt.map(millis),
            ])
    }

    public func ownerships(of owner: AccountID) async throws -> [OwnershipRecord] {
        try await read {
            try await $0.rows(
                "SELECT * FROM ownerships WHERE owner_id = ? ORDER BY claimed_at, serial", [owner.description])
        }.map(Self.ownership)
    }

    public func pendingPurges(limit: Int) async throws -> [OwnershipRecord] {
        try await read {
            try await $0.rows(
                "SELECT * FROM ownerships WHERE NOT history_kept AND purged_at IS NULL ORDER BY released_at LIMIT ?",
                [max(0, limit)])
        }.map(Self.ownership)
    }

    public func markPurged(_ o: OwnershipRecord, at: Date) async throws {
        try await db.transaction(serialised: false) { sql in
            try await sql.execute(
                "UPDATE ownerships SET purged_at = ? WHERE serial = ? AND owner_id = ? AND claimed_at = ?",
                [millis(at), o.serial.rawValue, o.owner.description, millis(o.claimedAt)])
        }
    }

    static func ownership(_ row: SQLRow) throws -> OwnershipRecord {
        guard let reason = ReleaseReason(rawValue: try row.string("reason")) else {
            throw HearthError(.integrity, "an ownership record has an unknown reason")
        }
        return OwnershipRecord(
            serial: try DeviceSerial(try row.string("serial")), owner: try AccountID(try row.string("owner_id")),
            claimedAt: try row.date("claimed_at"), releasedAt: try row.date("released_at"), reason: reason,
            historyKept: try row.bool("history_kept"), purgedAt: try row.optionalDate("purged_at"))
    }

    public func recordConsents(_ choices: [ConsentRecord], audit: AuditEntry) async throws -> Bool {
        guard let first = choices.first else { return true }
        guard choices.allSatisfy({ $0.serial == first.serial && $0.owner == first.owner }) else {
            throw HearthError(.invalidInput, "consent choices of one device and owner at a time")
        }
        return try await writeIf(audit: [audit]) { sql in
            let owner = try await sql.row("SELECT owner_id FROM devices WHERE serial = ?", [first.serial.rawValue])?
                .optionalString("owner_id")
            guard owner == first.owner.description else { return false }
            for c in choices {
                try await sql.execute(
                    "INSERT INTO consents (serial, owner_id, purpose, granted, notice_version, at) VALUES (?, ?, ?, ?, ?, ?)",
                    [c.serial.rawValue, c.owner.description, c.purpose, c.granted, c.noticeVersion, millis(c.at)])
            }
            return true
        }
    }

    public func consents(_ serial: DeviceSerial, owner: AccountID) async throws -> [ConsentRecord] {
        try await read {
            try await $0.rows(
                "SELECT * FROM consents WHERE serial = ? AND owner_id = ? ORDER BY id",
                [serial.rawValue, owner.description])
        }.map { row in
            ConsentRecord(
                serial: serial, owner: owner, purpose: try row.string("purpose"), granted: try row.bool("granted"),
                noticeVersion: try row.string("notice_version"), at: try row.date("at"))
        }
    }

    public func deviceCount() async throws -> Int {
        try await read { try await $0.int("SELECT COUNT(*) FROM devices") }
    }

    public func nameDevice(_ serial: DeviceSerial, owner: AccountID, nameSealed: Data?, audit: AuditEntry) async throws
        -> Bool
    {
        try await writeIf(audit: [audit]) { sql in
            try await sql.changes(
                "UPDATE devices SET name_sealed = ? WHERE serial = ? AND owner_id = ?",
                [nameSealed, serial.rawValue, owner.description]) == 1
        }
    }

    public func fleet(after: DeviceSerial?, filter: FleetFilter, limit: Int) async throws -> [DeviceRecord] {
        let (clause, arguments) = filter.sql
        return try await read {
            try await $0.rows(
                "SELECT * FROM devices WHERE \(clause) AND serial > ? ORDER BY serial LIMIT ?",
                arguments.map { $0 as any SQLValue } + [after?.rawValue ?? "", max(0, limit)])
        }.map(Self.device)
    }

    public func fleetCount(_ filter: FleetFilter) async throws -> Int {
        let (clause, arguments) = filter.sql
        return try await read {
            try await $0.int("SELECT COUNT(*) FROM devices WHERE \(clause)", arguments.map { $0 as any SQLValue })
        }
    }

    public func revokeDevice(_ serial: DeviceSerial, at: Date, audit: AuditEntry) async throws -> Bool {
        try await writeIf(audit: [audit]) { sql in
            guard try await sql.row("SELECT 1 FROM devices WHERE serial = ?", [serial.rawValue]) != nil else {
                throw HearthError(.notFound, field: "serial", "no such device")
            }
            return try await sql.changes(
                "UPDATE devices SET revoked_at = ? WHERE serial = ? AND revoked_at IS NULL",
                [millis(at), serial.rawValue]
            ) == 1
        }
    }

    static func device(_ row: SQLRow) throws -> DeviceRecord {
        var reservation: DeviceReservation?
        if let index = try row.optionalString("reserved_for"), let until = try row.optionalDate("reserved_until") {
            reservation = DeviceReservation(emailIndex: index, until: until)
        }
        var quarantine: DeviceQuarantine?
        if let reason = try row.optionalString("quarantine_reason"), let since = try row.optionalDate("quarantined_at")
        {
            quarantine = DeviceQuarantine(reason: reason, since: since)
        }
        return DeviceRecord(
            serial: try DeviceSerial(try row.string("serial")), model: try ProductModelID(try row.string("model_id")),
            certificatePEM: try row.string("certificate_pem"), setupCodeHash: try row.string("setup_code_hash"),
            provisionedAt: try row.date("provisioned_at"),
            owner: try row.optionalString("owner_id").map { try AccountID($0) },
            claimedAt: try row.optionalDate("claimed_at"), revokedAt: try row.optionalDate("revoked_at"),
            nameSealed: try row.optionalData("name_sealed"), reservation: reservation,
            pendingCertificatePEM: try row.optionalString("pending_certificate_pem"), quarantine: quarantine)
    }

    // MARK: Audit

    public func appendAudit(_ entry: AuditEntry) async throws {
        try await write(audit: [entry]) { _ in }
    }

    public func auditRecords() async throws -> [AuditRecord] {
        try await read { try await $0.rows("SELECT * FROM audit_log ORDER BY seq") }.map(Self.auditRecord)
    }

    public func auditRecords(subject: String, limit: Int) async throws -> [AuditRecord] {
        try await read {
            try await $0.rows(
                "SELECT * FROM audit_log WHERE subject = ? ORDER BY seq DESC LIMIT ?", [subject, max(0, limit)])
        }.map(Self.auditRecord)
    }

    public func auditRecords(actor: String, limit: Int) async throws -> [AuditRecord] {
        try await read {
            try await $0.rows("SELECT * FROM audit_log WHERE actor = ? ORDER BY seq LIMIT ?", [actor, max(0, limit)])
        }.map(Self.auditRecord)
    }

    static func auditRecord(_ row: SQLRow) throws -> AuditRecord {
        AuditRecord(
            sequence: try row.int64("seq"), atMillis: try row.int64("at"), kind: try row.string("kind"),
            actor: try row.optionalString("actor"), subject: try row.optionalString("subject"),
            detail: try row.string("detail"), previousMAC: try row.string("prev_mac"), mac: try row.string("mac"))
    }

    public func auditHead() async throws -> AuditHead? {
        try await read { try await Self.readHead($0) }
    }

    // MARK: Vulnerability reports

    public func createReport(_ r: ReportRecord, audit: AuditEntry) async throws {
        try await write(audit: [audit]) { sql in
            try await sql.execute(
                "INSERT INTO reports (id, received_at, state, status_token_hash, sealed) VALUES (?, ?, ?, ?, ?)",
                [r.id.rawValue, millis(r.receivedAt), r.state.rawValue, r.statusTokenHash, r.sealed])
            for (i, e) in r.events.enumerated() { try await Self.insert(e, report: r.id, seq: i, sql: sql) }
        }
    }

    static func insert(_ e: ReportEvent, report: ReportID, seq: Int, sql: SQL) async throws {
        try await sql.execute(
            "INSERT INTO report_events (report_id, seq, at, state, actor, note_sealed) VALUES (?, ?, ?, ?, ?, ?)",
            [report.rawValue, seq, millis(e.at), e.state.rawValue, e.actor, e.noteSealed])
    }

    public func report(_ id: ReportID) async throws -> ReportRecord? {
        try await read { sql in
            guard let row = try await sql.row("SELECT * FROM reports WHERE id = ?", [id.rawValue]) else { return nil }
            return try await Self.report(row, sql)
        }
    }

    public func report(statusTokenHash: String) async throws -> ReportRecord? {
        try await read { sql in
            guard let row = try await sql.row("SELECT * FROM reports WHERE status_token_hash = ?", [statusTokenHash])
            else { return nil }
            return try await Self.report(row, sql)
        }
    }

    public func reports() async throws -> [ReportRecord] {
        try await read { sql in
            var out: [ReportRecord] = []
            for row in try await sql.rows("SELECT * FROM reports ORDER BY received_at DESC, id") {
                out.append(try await Self.report(row, sql))
            }
            return out
        }
    }

    public func moveReport(_ id: ReportID, from: ReportState, event: ReportEvent, audit: AuditEntry) async throws
        -> Bool
    {
        try await writeIf(audit: [audit]) { sql in try await Self.advance(id, from: from, event: event, sql: sql) }
    }

    /// Moves a report still in `from` to the event's state and appends the event; false if it was
    /// moved meanwhile.
    static func advance(_ id: ReportID, from: ReportState, event: ReportEvent, sql: SQL) async throws -> Bool {
        guard
            try await sql.changes(
                "UPDATE reports SET state = ? WHERE id = ? AND state = ?",
                [event.state.rawValue, id.rawValue, from.rawValue]) == 1
        else { return false }
        let seq = try await sql.int("SELECT COUNT(*) FROM report_events WHERE report_id = ?", [id.rawValue])
        try await insert(event, report: id, seq: seq, sql: sql)
        return true
    }

    static func report(_ row: SQLRow, _ sql: SQL) async throws -> ReportRecord {
        let id = try ReportID(try row.string("id"))
        let events = try await sql.rows("SELECT * FROM report_events WHERE report_id = ? ORDER BY seq", [id.rawValue])
            .map { e in
                guard let state = ReportState(rawValue: try e.string("state")) else {
                    throw HearthError(.integrity, "unknown report state")
                }
                return ReportEvent(
                    at: try e.date("at"), state: state, actor: try e.optionalString("actor"),
                    noteSealed: try e.optionalData("note_sealed"))
            }
        guard let state = ReportState(rawValue: try row.string("state")) else {
            throw HearthError(.integrity, "unknown report state")
        }
        return ReportRecord(
            id: id, receivedAt: try row.date("received_at"), state: state,
            statusTokenHash: try row.string("status_token_hash"), sealed: try row.data("sealed"), events: events)
    }

    public func publishAdvisory(_ a: AdvisoryRecord, reportFrom: ReportState, event: ReportEvent, audit: AuditEntry)
        async throws -> Bool
    {
        try await writeIf(audit: [audit]) { sql in
            guard try await Self.advance(a.reportID, from: reportFrom, event: event, sql: sql) else { return false }
            try await sql.execute(
                """
                INSERT INTO advisories (id, report_id, published_at, title, severity, models, fixed_version, csaf, osv)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
                [
                    a.id, a.reportID.rawValue, millis(a.publishedAt), a.title, a.severity,
                    a.models.map(\.rawValue).joined(separator: ","), a.fixedVersion, a.csaf, a.osv,
                ])
            return true
        }
    }

    public func advisories() async throws -> [AdvisoryRecord] {
        try await read { try await $0.rows("SELECT * FROM advisories ORDER BY published_at DESC, id") }.map { row in
            AdvisoryRecord(
                id: try row.string("id"), reportID: try ReportID(try row.string("report_id")),
                publishedAt: try row.date("published_at"), title: try row.string("title"),
                severity: try row.string("severity"),
                models: try row.string("models").split(separator: ",").map { try ProductModelID(String($0)) },
                fixedVersion: try row.string("fixed_version"), csaf: try row.string("csaf"), osv: try row.string("osv"))
        }
    }

    public func setSecurityTeam(_ account: AccountID, member: Bool, audit: AuditEntry) async throws {
        try await write(audit: [audit]) { sql in
            if member {
                try await sql.execute(
                    "INSERT INTO security_team (account_id) VALUES (?) ON CONFLICT DO NOTHING", [account.description])
            } else {
                try await sql.execute("DELETE FROM security_team WHERE account_id = ?", [account.description])
            }
        }
    }

    // MARK: Coordination

    public func acquireLease(_ name: String, holder: String, now: Date, until: Date) async throws -> Bool {
        try await db.transaction(serialised: false) { sql in
            try await sql.changes(
                """
                INSERT INTO leases (name, holder, until) VALUES (?, ?, ?)
                ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
                WHERE leases.holder = excluded.holder OR leases.until <= ?
                """, [name, holder, millis(until), millis(now)]) == 1
        }
    }

    public func updateThrottles<T: Sendable>(
        _ keys: [String],
        _ step: @escaping @Sendable ([String: StoredThrottle]) throws -> (T, [String: StoredThrottle?])
    ) async throws -> T {
        let keys = Set(keys).sorted()
        return try await db.transaction(serialised: false) { sql in
            // One lock per key, taken in one order by every node: updates of a key never interleave.
            for key in keys { try await sql.execute("SELECT pg_advisory_xact_lock(hashtext(?))", ["throttle:" + key]) }
            var stored: [String: StoredThrottle] = [:]
            for row in try await sql.rows(
                "SELECT * FROM throttles WHERE key IN (\(Self.placeholders(keys.count)))",
                keys.map { $0 as any SQLValue })
            {
                stored[try row.string("key")] = StoredThrottle(
                    state: ThrottleState(
                        failures: try row.int("failures"), inFlight: try row.int("in_flight"),
                        blockedUntil: try row.optionalDate("blocked_until"),
                        lastFailure: try row.optionalDate("last_failure")),
                    reservedAt: try row.optionalDate("reserved_at"))
            }
            let (result, changes) = try step(stored)
            for (key, change) in changes.sorted(by: { $0.key < $1.key }) {
                if let t = change {
                    try await sql.execute(
                        """
                        INSERT INTO throttles (key, failures, in_flight, blocked_until, last_failure, reserved_at)
                        VALUES (?, ?, ?, ?, ?, ?)
                        ON CONFLICT (key) DO UPDATE SET failures = excluded.failures, in_flight = excluded.in_flight,
                        blocked_until = excluded.blocked_until, last_failure = excluded.last_failure,
                        reserved_at = excluded.reserved_at
                        """,
                        [
                            key, t.state.failures, t.state.inFlight, t.state.blockedUntil.map(millis),
                            t.state.lastFailure.map(millis), t.reservedAt.map(millis),
                        ])
                } else {
                    try await sql.execute("DELETE FROM throttles WHERE key = ?", [key])
                }
            }
            return result
        }
    }

    public func deleteIdleThrottles(now: Date, reservedBefore: Date, failedBefore: Date) async throws -> Int {
        try await db.transaction(serialised: false) { sql in
            try await sql.changes(
                """
                DELETE FROM throttles WHERE (in_flight = 0 OR reserved_at IS NULL OR reserved_at < ?)
                AND (blocked_until IS NULL OR blocked_until <= ?) AND (last_failure IS NULL OR last_failure < ?)
                """, [millis(reservedBefore), millis(now), millis(failedBefore)])
        }
    }

    public func isSecurityTeam(_ account: AccountID) async throws -> Bool {
        try await read {
            try await $0.int("SELECT COUNT(*) FROM security_team WHERE account_id = ?", [account.description])
        }
            > 0
    }
}
