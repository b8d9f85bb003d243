import Foundation
import GRDB
import HearthCore
import HearthStorage

extension SQLiteStore: UpdateStore {
    public func tufDocument(_ role: String, version: Int?) async throws -> TUFDocument? {
        try await pool.read { db in
            let row =
                if let version {
                    try Row.fetchOne(
                        db, sql: "SELECT * FROM tuf_documents WHERE role = ? AND version = ?",
                        arguments: [role, version])
                } else {
                    try Row.fetchOne(
                        db, sql: "SELECT * FROM tuf_documents WHERE role = ? ORDER BY version DESC LIMIT 1",
                        arguments: [role])
                }
            return row.map {
                TUFDocument(role: $0["role"], version: $0["version"], bytes: [UInt8]($0["bytes"] as Data))
            }
        }
    }

    public func publish(_ documents: [TUFDocument], releases: [ReleaseRecord], audit: [AuditEntry]) async throws {
        try await write(audit: audit) { db in
            for d in documents {
                let newest =
                    try Int.fetchOne(
                        db, sql: "SELECT MAX(version) FROM tuf_documents WHERE role = ?", arguments: [d.role]) ?? 0
                if d.role == "root" {
                    guard d.version == newest + 1 else {
                        throw HearthError(
                            .conflict, "\(d.role) version \(d.version) does not follow the stored \(newest)")
                    }
                } else {
                    guard d.version > newest else {
                        throw HearthError(.conflict, "\(d.role) version \(d.version) is not above the stored \(newest)")
                    }
                }
                try db.execute(
                    sql: "INSERT INTO tuf_documents (role, version, bytes) VALUES (?, ?, ?)",
                    arguments: [d.role, d.version, Data(d.bytes)])
            }
            for r in releases {
                try db.execute(
                    sql:
                        "INSERT INTO releases (target, model_id, version, length, sha256, custom, published_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    arguments: [
                        r.target, r.model.rawValue, r.version, r.length, r.sha256, r.custom, millis(r.publishedAt),
                    ]
                )
            }
        }
    }

    public func onlineKey(_ role: String) async throws -> Data? {
        try await pool.read { db in
            try Data.fetchOne(db, sql: "SELECT sealed FROM tuf_online_keys WHERE role = ?", arguments: [role])
        }
    }

    public func storeOnlineKey(_ role: String, sealed: Data, audit: AuditEntry) async throws -> Data {
        try await write(audit: []) { [sealer] db in
            if let existing = try Data.fetchOne(
                db, sql: "SELECT sealed FROM tuf_online_keys WHERE role = ?", arguments: [role])
            {
                return existing
            }
            try db.execute(sql: "INSERT INTO tuf_online_keys (role, sealed) VALUES (?, ?)", arguments: [role, sealed])
            try Self.append(audit, db: db, sealer: sealer)
            return sealed
        }
    }

    public func release(_ target: String) async throws -> ReleaseRecord? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM releases WHERE target = ?", arguments: [target]).map(Self.release)
        }
    }

    public func releases(model: ProductModelID) async throws -> [ReleaseRecord] {
        try await pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM releases WHERE model_id = ? ORDER BY published_at DESC, target",
                arguments: [model.rawValue]
            ).map(Self.release)
        }
    }

    static func release(_ row: Row) throws -> ReleaseRecord {
        ReleaseRecord(
            target: row["target"], model: try ProductModelID(row["model_id"] as String), version: row["version"],
            length: row["length"], sha256: row["sha256"],
            custom: row["custom"], publishedAt: date(row["published_at"])
        )
    }

    public func createRollout(_ r: RolloutRecord, audit: AuditEntry) async throws {
        do {
            try await write(audit: [audit]) { db in
                try db.execute(
                    sql:
                        "INSERT INTO rollouts (id, target, model_id, stages, failure_threshold, minimum_sample, state, stage, note, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    arguments: [
                        r.id, r.target, r.model.rawValue, r.stages.map(String.init).joined(separator: ","),
                        r.failureThreshold, r.minimumSample, r.state, r.stage, r.note, millis(r.createdAt),
                        millis(r.updatedAt),
                    ]
                )
            }
        } catch let error as HearthError where error.code == .conflict {
            throw HearthError(.conflict, "\(r.model) already has a rollout in progress; finish or abort it first")
        }
    }

    public func rollout(_ id: String) async throws -> RolloutRecord? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM rollouts WHERE id = ?", arguments: [id]).map(Self.rollout)
        }
    }

    public func rollouts(model: ProductModelID?) async throws -> [RolloutRecord] {
        try await pool.read { db in
            if let model {
                return try Row.fetchAll(
                    db, sql: "SELECT * FROM rollouts WHERE model_id = ? ORDER BY created_at DESC",
                    arguments: [model.rawValue]
                ).map(Self.rollout)
            }
            return try Row.fetchAll(db, sql: "SELECT * FROM rollouts ORDER BY created_at DESC").map(Self.rollout)
        }
    }

    public func updateRollout(_ r: RolloutRecord, fromState: String, fromStage: Int, audit: AuditEntry) async throws
        -> Bool
    {
        try await write(audit: []) { [sealer] db in
            try db.execute(
                sql:
                    "UPDATE rollouts SET state = ?, stage = ?, note = ?, updated_at = ? WHERE id = ? AND state = ? AND stage = ?",
                arguments: [r.state, r.stage, r.note, millis(r.updatedAt), r.id, fromState, fromStage]
            )
            guard db.changesCount == 1 else { return false }
            try Self.append(audit, db: db, sealer: sealer)
            return true
        }
    }

    static func rollout(_ row: Row) throws -> RolloutRecord {
        RolloutRecord(
            id: row["id"], target: row["target"], model: try ProductModelID(row["model_id"] as String),
            stages: (row["stages"] as String).split(separator: ",").compactMap { Int($0) },
            failureThreshold: row["failure_threshold"],
            minimumSample: row["minimum_sample"], state: row["state"], stage: row["stage"], note: row["note"],
            createdAt: date(row["created_at"]), updatedAt: date(row["updated_at"])
        )
    }

    @discardableResult
    public func appendUpdateEvent(_ e: UpdateEventRecord) async throws -> Bool {
        try await write(audit: []) { db in
            if let newest = try Row.fetchOne(
                db, sql: "SELECT * FROM update_events WHERE serial = ? ORDER BY id DESC LIMIT 1",
                arguments: [e.serial.rawValue])
            {
                let last = try Self.event(newest)
                if last.phase == e.phase, last.version == e.version, last.target == e.target, last.reason == e.reason {
                    try db.execute(
                        sql: "UPDATE update_events SET at = ? WHERE id = ?",
                        arguments: [millis(e.at), newest["id"] as Int64])
                    return false
                }
            }
            try db.execute(
                sql: "INSERT INTO update_events (serial, at, phase, version, target, reason) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [e.serial.rawValue, millis(e.at), e.phase, e.version, e.target, e.reason]
            )
            return true
        }
    }

    public func updateEvents(_ serial: DeviceSerial, limit: Int) async throws -> [UpdateEventRecord] {
        try await pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM update_events WHERE serial = ? ORDER BY id DESC LIMIT ?",
                arguments: [serial.rawValue, limit]
            ).map(Self.event)
        }
    }

    public func latestEvent(_ serial: DeviceSerial, target: String, since: Date) async throws -> UpdateEventRecord? {
        try await pool.read { db in
            try Row.fetchOne(
                db,
                sql: "SELECT * FROM update_events WHERE serial = ? AND target = ? AND at >= ? ORDER BY id DESC LIMIT 1",
                arguments: [serial.rawValue, target, millis(since)]
            ).map(Self.event)
        }
    }

    static func event(_ row: Row) throws -> UpdateEventRecord {
        UpdateEventRecord(
            serial: try DeviceSerial(row["serial"] as String), at: date(row["at"]), phase: row["phase"],
            version: row["version"], target: row["target"], reason: row["reason"])
    }

    public func extendSupport(_ model: ProductModelID, to: CalendarDate, audit: AuditEntry, refusedAudit: AuditEntry)
        async throws
    {
        let shortened = try await write(audit: []) { [sealer] db -> CalendarDate? in
            guard
                let text = try String.fetchOne(
                    db, sql: "SELECT definition FROM product_models WHERE id = ?", arguments: [model.rawValue])
            else {
                throw HearthError(.notFound, field: "model", "no product model \(model)")
            }
            let current = try Self.model(text)
            if to < current.supportEnds {
                try Self.append(refusedAudit, db: db, sealer: sealer)
                return current.supportEnds
            }
            guard to > current.supportEnds else { return nil }
            let extended = current.supported(until: to)
            try db.execute(
                sql: "UPDATE product_models SET definition = ? WHERE id = ?",
                arguments: [String(decoding: extended.json.serialized(), as: UTF8.self), model.rawValue])
            try Self.append(audit, db: db, sealer: sealer)
            return nil
        }
        if let shortened {
            throw HearthError(
                .conflict, field: "supportEnds",
                "a support period can be extended, never shortened: \(model) is promised security updates until \(shortened.plainEnglish)"
            )
        }
    }

    public func runningVersions(model: ProductModelID) async throws -> [String: Int] {
        try await pool.read { db in
            var counts: [String: Int] = [:]
            for row in try Row.fetchAll(
                db,
                sql: """
                    SELECT e.version AS version, COUNT(*) AS devices FROM devices d
                    JOIN update_events e ON e.id = (SELECT MAX(id) FROM update_events WHERE serial = d.serial)
                    WHERE d.model_id = ? GROUP BY e.version
                    """, arguments: [model.rawValue])
            {
                counts[row["version"]] = row["devices"]
            }
            return counts
        }
    }

    public func devices(model: ProductModelID) async throws -> [DeviceSerial] {
        try await pool.read { db in
            try String.fetchAll(
                db, sql: "SELECT serial FROM devices WHERE model_id = ? ORDER BY serial", arguments: [model.rawValue]
            ).map { try DeviceSerial($0) }
        }
    }

    public func recordRolloutOutcome(_ rollout: String, serial: DeviceSerial, bucket: Int, outcome: String?)
        async throws
    {
        try await pool.write { db in
            if let outcome {
                try db.execute(
                    sql:
                        "INSERT OR REPLACE INTO rollout_outcomes (rollout_id, serial, bucket, outcome) VALUES (?, ?, ?, ?)",
                    arguments: [rollout, serial.rawValue, bucket, outcome])
            } else {
                try db.execute(
                    sql: "DELETE FROM rollout_outcomes WHERE rollout_id = ? AND serial = ?",
                    arguments: [rollout, serial.rawValue])
            }
        }
    }

    public func rolloutOutcomes(_ rollout: String, below bucket: Int) async throws -> (succeeded: Int, failed: Int) {
        try await pool.read { db in
            var counts = (succeeded: 0, failed: 0)
            for row in try Row.fetchAll(
                db,
                sql:
                    "SELECT outcome, COUNT(*) AS n FROM rollout_outcomes WHERE rollout_id = ? AND bucket < ? GROUP BY outcome",
                arguments: [rollout, bucket])
            {
                if (row["outcome"] as String) == "succeeded" {
                    counts.succeeded = row["n"]
                } else {
                    counts.failed = row["n"]
                }
            }
            return counts
        }
    }
}
