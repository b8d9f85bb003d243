import Foundation
import HearthCore
import HearthStorage

extension PostgresStore: UpdateStore {
    public func tufDocument(_ role: String, version: Int?) async throws -> TUFDocument? {
        try await read { sql in
            if let version {
                return try await sql.row("SELECT * FROM tuf_documents WHERE role = ? AND version = ?", [role, version])
            }
            return try await sql.row("SELECT * FROM tuf_documents WHERE role = ? ORDER BY version DESC LIMIT 1", [role])
        }.map {
            TUFDocument(
                role: try $0.string("role"), version: try $0.int("version"), bytes: [UInt8](try $0.data("bytes")))
        }
    }

    public func publish(_ documents: [TUFDocument], releases: [ReleaseRecord], audit: [AuditEntry]) async throws {
        try await write(audit: audit) { sql in
            for d in documents {
                let newest = try await sql.int("SELECT MAX(version) FROM tuf_documents WHERE role = ?", [d.role])
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
                try await sql.execute(
                    "INSERT INTO tuf_documents (role, version, bytes) VALUES (?, ?, ?)",
                    [d.role, d.version, Data(d.bytes)])
            }
            for r in releases {
                try await sql.execute(
                    """
                    INSERT INTO releases (target, model_id, version, length, sha256, custom, published_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """,
                    [r.target, r.model.rawValue, r.version, r.length, r.sha256, r.custom, millis(r.publishedAt)])
            }
        }
    }

    public func onlineKey(_ role: String) async throws -> Data? {
        try await read { try await $0.row("SELECT sealed FROM tuf_online_keys WHERE role = ?", [role]) }?.data("sealed")
    }

    public func storeOnlineKey(_ role: String, sealed: Data, audit: AuditEntry) async throws -> Data {
        try await write(audit: []) { [sealer] sql in
            if let existing = try await sql.row("SELECT sealed FROM tuf_online_keys WHERE role = ?", [role]) {
                return try existing.data("sealed")
            }
            try await sql.execute("INSERT INTO tuf_online_keys (role, sealed) VALUES (?, ?)", [role, sealed])
            try await Self.append(audit, sql: sql, sealer: sealer)
            return sealed
        }
    }

    public func release(_ target: String) async throws -> ReleaseRecord? {
        try await read { try await $0.row("SELECT * FROM releases WHERE target = ?", [target]) }.map(Self.release)
    }

    public func releases(model: ProductModelID) async throws -> [ReleaseRecord] {
        try await read {
            try await $0.rows(
                "SELECT * FROM releases WHERE model_id = ? ORDER BY published_at DESC, target", [model.rawValue])
        }.map(Self.release)
    }

    static func release(_ row: SQLRow) throws -> ReleaseRecord {
        ReleaseRecord(
            target: try row.string("target"), model: try ProductModelID(try row.string("model_id")),
            version: try row.string("version"), length: try row.int("length"), sha256: try row.string("sha256"),
            custom: try row.string("custom"), publishedAt: try row.date("published_at"))
    }

    public func createRollout(_ r: RolloutRecord, audit: AuditEntry) async throws {
        do {
            try await write(audit: [audit]) { sql in
                try await sql.execute(
                    """
                    INSERT INTO rollouts (id, target, model_id, stages, failure_threshold, minimum_sample, state, stage,
                        note, created_at, updated_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                    [
                        r.id, r.target, r.model.rawValue, r.stages.map(String.init).joined(separator: ","),
                        r.failureThreshold, r.minimumSample, r.state, r.stage, r.note, millis(r.createdAt),
                        millis(r.updatedAt),
                    ])
            }
        } catch let error as HearthError where error.code == .conflict {
            throw HearthError(.conflict, "\(r.model) already has a rollout in progress; finish or abort it first")
        }
    }

    public func rollout(_ id: String) async throws -> RolloutRecord? {
        try await read { try await $0.row("SELECT * FROM rollouts WHERE id = ?", [id]) }.map(Self.rollout)
    }

    public func rollouts(model: ProductModelID?) async throws -> [RolloutRecord] {
        try await read { sql in
            if let model {
                return try await sql.rows(
                    "SELECT * FROM rollouts WHERE model_id = ? ORDER BY created_at DESC, id", [model.rawValue])
            }
            return try await sql.rows("SELECT * FROM rollouts ORDER BY created_at DESC, id")
        }.map(Self.rollout)
    }

    public func updateRollout(_ r: RolloutRecord, fromState: String, fromStage: Int, audit: AuditEntry) async throws
        -> Bool
    {
        try await writeIf(audit: [audit]) { sql in
            try await sql.changes(
                "UPDATE rollouts SET state = ?, stage = ?, note = ?, updated_at = ? WHERE id = ? AND state = ? AND stage = ?",
                [r.state, r.stage, r.note, millis(r.updatedAt), r.id, fromState, fromStage]) == 1
        }
    }

    static func rollout(_ row: SQLRow) throws -> RolloutRecord {
        RolloutRecord(
            id: try row.string("id"), target: try row.string("target"),
            model: try ProductModelID(try row.string("model_id")),
            stages: try row.string("stages").split(separator: ",").compactMap { Int($0) },
            failureThreshold: try row.double("failure_threshold"), minimumSample: try row.int("minimum_sample"),
            state: try row.string("state"), stage: try row.int("stage"), note: try row.optionalString("note"),
            createdAt: try row.date("created_at"), updatedAt: try row.date("updated_at"))
    }

    @discardableResult
    public func appendUpdateEvent(_ e: UpdateEventRecord) async throws -> Bool {
        // Serialised per device (not across devices): two reports of one device cannot both add a row.
        try await db.transaction(serialised: false) { sql in
            try await sql.execute("SELECT pg_advisory_xact_lock(hashtext(?))", ["update-events:" + e.serial.rawValue])
            if let newest = try await sql.row(
                "SELECT * FROM update_events WHERE serial = ? ORDER BY id DESC LIMIT 1", [e.serial.rawValue])
            {
                let last = try Self.event(newest)
                if last.phase == e.phase, last.version == e.version, last.target == e.target, last.reason == e.reason {
                    try await sql.execute(
                        "UPDATE update_events SET at = ? WHERE id = ?", [millis(e.at), try newest.int64("id")])
                    return false
                }
            }
            try await sql.execute(
                "INSERT INTO update_events (serial, at, phase, version, target, reason) VALUES (?, ?, ?, ?, ?, ?)",
                [e.serial.rawValue, millis(e.at), e.phase, e.version, e.target, e.reason])
            return true
        }
    }

    public func updateEvents(_ serial: DeviceSerial, limit: Int) async throws -> [UpdateEventRecord] {
        try await read {
            try await $0.rows(
                "SELECT * FROM update_events WHERE serial = ? ORDER BY id DESC LIMIT ?",
                [serial.rawValue, max(0, limit)])
        }.map(Self.event)
    }

    public func latestEvent(_ serial: DeviceSerial, target: String, since: Date) async throws -> UpdateEventRecord? {
        try await read {
            try await $0.row(
                "SELECT * FROM update_events WHERE serial = ? AND target = ? AND at >= ? ORDER BY id DESC LIMIT 1",
                [serial.rawValue, target, millis(since)])
        }.map(Self.event)
    }

    static func event(_ row: SQLRow) throws -> UpdateEventRecord {
        UpdateEventRecord(
            serial: try DeviceSerial(try row.string("serial")), at: try row.date("at"), phase: try row.string("phase"),
            version: try row.string("version"), target: try row.optionalString("target"),
            reason: try row.optionalString("reason"))
    }

    public func extendSupport(_ model: ProductModelID, to: CalendarDate, audit: AuditEntry, refusedAudit: AuditEntry)
        async throws
    {
        let shortened = try await write(audit: []) { [sealer] sql -> CalendarDate? in
            guard
                let text = try await sql.row("SELECT definition FROM product_models WHERE id = ?", [model.rawValue])?
                    .string("definition")
            else { throw HearthError(.notFound, field: "model", "no product model \(model)") }
            let current = try Self.model(text)
            if to < current.supportEnds {
                try await Self.append(refusedAudit, sql: sql, sealer: sealer)
                return current.supportEnds
            }
            guard to > current.supportEnds else { return nil }
            let extended = current.supported(until: to)
            try await sql.execute(
                "UPDATE product_models SET definition = ? WHERE id = ?",
                [String(decoding: extended.json.serialized(), as: UTF8.self), model.rawValue])
            try await Self.append(audit, sql: sql, sealer: sealer)
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
        var counts: [String: Int] = [:]
        for row in try await read({
            try await $0.rows(
                """
                SELECT e.version AS version, COUNT(*) AS devices FROM devices d
                JOIN update_events e ON e.id = (SELECT MAX(id) FROM update_events WHERE serial = d.serial)
                WHERE d.model_id = ? GROUP BY e.version
                """, [model.rawValue])
        }) {
            counts[try row.string("version")] = try row.int("devices")
        }
        return counts
    }

    public func devices(model: ProductModelID) async throws -> [DeviceSerial] {
        try await read {
            try await $0.rows("SELECT serial FROM devices WHERE model_id = ? ORDER BY serial", [model.rawValue])
        }.map { try DeviceSerial(try $0.string("serial")) }
    }

    public func recordRolloutOutcome(_ rollout: String, serial: DeviceSerial, bucket: Int, outcome: String?)
        async throws
    {
        try await db.run { sql in
            if let outcome {
                try await sql.execute(
                    """
                    INSERT INTO rollout_outcomes (rollout_id, serial, bucket, outcome) VALUES (?, ?, ?, ?)
                    ON CONFLICT (rollout_id, serial) DO UPDATE SET bucket = excluded.bucket, outcome = excluded.outcome
                    """, [rollout, serial.rawValue, bucket, outcome])
            } else {
                try await sql.execute(
                    "DELETE FROM rollout_outcomes WHERE rollout_id = ? AND serial = ?", [rollout, serial.rawValue])
            }
        }
    }

    public func rolloutOutcomes(_ rollout: String, below bucket: Int) async throws -> (succeeded: Int, failed: Int) {
        var counts = (succeeded: 0, failed: 0)
        for row in try await db.run({
            try await $0.rows(
                "SELECT outcome, COUNT(*) AS n FROM rollout_outcomes WHERE rollout_id = ? AND bucket < ? GROUP BY outcome",
                [rollout, bucket])
        }) {
            if try row.string("outcome") == "succeeded" {
                counts.succeeded = try row.int("n")
            } else {
                counts.failed = try row.int("n")
            }
        }
        return counts
    }
}
