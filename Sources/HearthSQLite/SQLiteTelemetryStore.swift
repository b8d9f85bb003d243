import Foundation
import GRDB
import HearthCore
import HearthStorage

/// Device readings in their own SQLite file (WAL, `synchronous = FULL`), so the append load never
/// queues behind account and audit writes. One `append` call is one transaction: the gateway's
/// group commit hands it every reading that arrived while the previous commit was on disk.
public final class SQLiteTelemetryStore: TelemetryStore {
    let pool: DatabasePool

    public init(path: String) throws {
        pool = try openPool(path: path)
        try Self.migrator.migrate(pool)
    }

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("2026-11-27 telemetry") { db in
            try db.execute(sql: """
                CREATE TABLE readings (
                    position INTEGER PRIMARY KEY NOT NULL,
                    serial TEXT NOT NULL,
                    seq INTEGER NOT NULL,
                    received_at INTEGER NOT NULL,
                    device_at INTEGER,
                    vals TEXT NOT NULL,
                    UNIQUE (serial, seq)
                );
                CREATE INDEX readings_by_device ON readings(serial, position);
                CREATE TABLE refusals (
                    serial TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    count INTEGER NOT NULL,
                    last_at INTEGER NOT NULL,
                    PRIMARY KEY (serial, kind)
                ) WITHOUT ROWID;
                """)
        }
        m.registerMigration("2026-11-28 offline drops") { db in
            try db.execute(sql: "ALTER TABLE readings ADD COLUMN dropped INTEGER NOT NULL DEFAULT 0")
        }
        m.registerMigration("2026-12-02 readings by time") { db in
            try db.execute(sql: "CREATE INDEX readings_by_time ON readings(serial, received_at)")
        }
        return m
    }

    public func append(_ readings: [TelemetryReading], refusals: [TelemetryRefusal]) async throws -> Int {
        guard !readings.isEmpty || !refusals.isEmpty else { return 0 }
        let rows = readings.map { r in
            (r.serial.rawValue, r.sequence, millis(r.receivedAt), r.deviceTime.map(millis), JSONValue.object(r.values).text, r.droppedBefore)
        }
        let counted = refusals.map { ($0.serial.rawValue, $0.kind.rawValue, millis($0.at)) }
        return try await pool.write { db in
            var added = 0
            if !rows.isEmpty {
                let insert = try db.cachedStatement(sql: "INSERT OR IGNORE INTO readings (serial, seq, received_at, device_at, vals, dropped) VALUES (?, ?, ?, ?, ?, ?)")
                for row in rows {
                    try insert.execute(arguments: [row.0, row.1, row.2, row.3, row.4, row.5])
                    added += db.changesCount
                }
            }
            if !counted.isEmpty {
                let count = try db.cachedStatement(sql: """
                    INSERT INTO refusals (serial, kind, count, last_at) VALUES (?, ?, 1, ?)
                    ON CONFLICT (serial, kind) DO UPDATE SET count = count + 1, last_at = max(last_at, excluded.last_at)
                    """)
                for row in counted { try count.execute(arguments: [row.0, row.1, row.2]) }
            }
            return added
        }
    }

    public func latest(_ serial: DeviceSerial) async throws -> TelemetryRecord? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM readings WHERE serial = ? ORDER BY position DESC LIMIT 1", arguments: [serial.rawValue]).map(Self.record)
        }
    }

    public func readings(_ serial: DeviceSerial, from: Date, to: Date, after: Int64?, limit: Int) async throws -> [TelemetryRecord] {
        try await pool.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT * FROM readings WHERE serial = ? AND position > ? AND received_at >= ? AND received_at < ?
                    ORDER BY position LIMIT ?
                    """,
                arguments: [serial.rawValue, after ?? 0, millis(from), millis(to), max(0, limit)]
            ).map(Self.record)
        }
    }

    public func series(_ serial: DeviceSerial, field: String, from: Date, to: Date, buckets: Int) async throws -> [TelemetryBucket] {
        let start = millis(from), end = millis(to)
        guard buckets > 0, end > start else { return [] }
        // Bucket width in milliseconds, at least 1; the arithmetic is done in SQLite's 64-bit
        // integers on values bounded by the table's own times.
        let width = max(1, (end - start) / Int64(buckets) + ((end - start) % Int64(buckets) == 0 ? 0 : 1))
        return try await pool.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT (received_at - ?3) / ?5 AS bucket, COUNT(v) AS n, MIN(v) AS lo, MAX(v) AS hi, AVG(v) AS mean
                    FROM (SELECT received_at, json_extract(vals, ?1) AS v, json_type(vals, ?1) AS t FROM readings
                          WHERE serial = ?2 AND received_at >= ?3 AND received_at < ?4)
                    WHERE t IN ('integer', 'real')
                    GROUP BY bucket ORDER BY bucket
                    """,
                arguments: ["$.\"\(field)\"", serial.rawValue, start, end, width]
            ).map { row in
                TelemetryBucket(start: date(start + (row["bucket"] as Int64) * width), count: row["n"], min: row["lo"], max: row["hi"], mean: row["mean"])
            }
        }
    }

    public func refusals(_ serial: DeviceSerial) async throws -> [RefusalCount] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM refusals WHERE serial = ? ORDER BY kind", arguments: [serial.rawValue]).map { row in
                guard let kind = TelemetryRejection(rawValue: row["kind"]) else { throw HearthError(.integrity, "unknown refusal kind") }
                return RefusalCount(kind: kind, count: row["count"], lastAt: date(row["last_at"]))
            }
        }
    }

    public func droppedTotal(_ serial: DeviceSerial) async throws -> Int {
        try await pool.read { db in try Int.fetchOne(db, sql: "SELECT COALESCE(SUM(dropped), 0) FROM readings WHERE serial = ?", arguments: [serial.rawValue]) ?? 0 }
    }

    public func readingCount() async throws -> Int {
        try await pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM readings") ?? 0 }
    }

    static func record(_ row: Row) throws -> TelemetryRecord {
        guard case .object(let values) = try JSONValue.parse(Array((row["vals"] as String).utf8)) else {
            throw HearthError(.integrity, "a stored reading is not an object")
        }
        return TelemetryRecord(
            position: row["position"],
            reading: TelemetryReading(
                serial: try DeviceSerial(row["serial"] as String), sequence: row["seq"],
                deviceTime: (row["device_at"] as Int64?).map(date), receivedAt: date(row["received_at"]), values: values,
                droppedBefore: row["dropped"]
            )
        )
    }
}
