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
        // Deleted readings (retention, a deleted history) are overwritten, not left in free pages.
        pool = try openPool(path: path, secureDelete: true)
        try Self.migrator.migrate(pool)
    }

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("2026-11-27 telemetry") { db in
            try db.execute(
                sql: """
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
        m.registerMigration("2026-12-02 history slices") { db in
            // Settled slices of a device's history, computed once (readings are stamped when
            // received, so a slice that has ended gets no more), and the span each cache covers.
            try db.execute(
                sql: """
                    CREATE TABLE series_cache (
                        serial TEXT NOT NULL, width INTEGER NOT NULL, slice INTEGER NOT NULL, field TEXT NOT NULL,
                        n INTEGER NOT NULL, lo REAL NOT NULL, hi REAL NOT NULL, total REAL NOT NULL,
                        PRIMARY KEY (serial, width, slice, field)
                    ) WITHOUT ROWID;
                    CREATE TABLE series_marks (
                        serial TEXT NOT NULL, width INTEGER NOT NULL, fields TEXT NOT NULL,
                        covered_from INTEGER NOT NULL, covered_to INTEGER NOT NULL,
                        PRIMARY KEY (serial, width)
                    ) WITHOUT ROWID;
                    """)
        }
        return m
    }

    public func append(_ readings: [TelemetryReading], refusals: [TelemetryRefusal]) async throws -> Int {
        guard !readings.isEmpty || !refusals.isEmpty else { return 0 }
        let rows = readings.map { r in
            (
                r.serial.rawValue, r.sequence, millis(r.receivedAt), r.deviceTime.map(millis),
                JSONValue.object(r.values).text, r.droppedBefore
            )
        }
        let counted = refusals.map { ($0.serial.rawValue, $0.kind.rawValue, millis($0.at)) }
        return try await pool.write { db in
            var added = 0
            if !rows.isEmpty {
                let insert = try db.cachedStatement(
                    sql:
                        "INSERT OR IGNORE INTO readings (serial, seq, received_at, device_at, vals, dropped) VALUES (?, ?, ?, ?, ?, ?)"
                )
                for row in rows {
                    try insert.execute(arguments: [row.0, row.1, row.2, row.3, row.4, row.5])
                    added += db.changesCount
                }
            }
            if !counted.isEmpty {
                let count = try db.cachedStatement(
                    sql: """
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
            try Row.fetchOne(
                db, sql: "SELECT * FROM readings WHERE serial = ? ORDER BY position DESC LIMIT 1",
                arguments: [serial.rawValue]
            ).map(Self.record)
        }
    }

    public func readings(_ serial: DeviceSerial, from: Date, to: Date, after: Int64?, limit: Int) async throws
        -> [TelemetryRecord]
    {
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

    public func series(
        _ serial: DeviceSerial, fields: [String], from: Date, to: Date, slice: TimeInterval, settledBefore: Date
    ) async throws -> [String: [TelemetryBucket]] {
        let fields = Array(Set(fields)).sorted()
        guard !fields.isEmpty, fields.count <= 16, slice.isFinite, slice >= 1 else { return [:] }
        let width = millis(Date(timeIntervalSince1970: slice))
        // Slices are multiples of the width since 1970, so a slice is the same in every request.
        let first = Self.floorDiv(millis(from), width) * width
        let end = millis(to)
        guard end > first else { return [:] }
        // Settled slices end at or before this; the open ones after it are computed each time.
        let settled = min(Self.floorDiv(min(millis(settledBefore), end), width) * width, end)
        let key = fields.joined(separator: ",")
        return try await pool.write { db in
            var out: [String: [TelemetryBucket]] = [:]
            func add(_ rows: [Slice]) {
                for r in rows where r.count > 0 {
                    out[r.field, default: []].append(
                        TelemetryBucket(
                            start: date(r.start), count: r.count, min: r.min, max: r.max,
                            mean: r.total / Double(r.count)))
                }
            }
            if settled > first {
                // The settled part comes from the cache, which covers [from, to) of this device,
                // width and field set; what it does not cover yet is computed once and kept.
                let mark = try Row.fetchOne(
                    db, sql: "SELECT fields, covered_from, covered_to FROM series_marks WHERE serial = ? AND width = ?",
                    arguments: [serial.rawValue, width])
                var covered: (from: Int64, to: Int64)?
                if let mark, (mark["fields"] as String) == key { covered = (mark["covered_from"], mark["covered_to"]) }
                if covered == nil {
                    try db.execute(
                        sql: "DELETE FROM series_cache WHERE serial = ? AND width = ?",
                        arguments: [serial.rawValue, width])
                }
                var missing: [(Int64, Int64)] = []
                if let c = covered, c.to >= first, c.from <= settled {
                    if first < c.from { missing.append((first, c.from)) }
                    if c.to < settled { missing.append((c.to, settled)) }
                } else {
                    // Nothing kept, or a window that does not touch what is: start afresh.
                    if covered != nil {
                        try db.execute(
                            sql: "DELETE FROM series_cache WHERE serial = ? AND width = ?",
                            arguments: [serial.rawValue, width])
                    }
                    covered = nil
                    missing.append((first, settled))
                }
                for (lo, hi) in missing {
                    for r in try Self.aggregate(db, serial, fields, from: lo, to: hi, width: width) {
                        try db.execute(
                            sql:
                                "INSERT OR REPLACE INTO series_cache (serial, width, slice, field, n, lo, hi, total) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            arguments: [serial.rawValue, width, r.start, r.field, r.count, r.min, r.max, r.total]
                        )
                    }
                }
                let newFrom = min(covered?.from ?? first, first)
                let newTo = max(covered?.to ?? settled, settled)
                try db.execute(
                    sql:
                        "INSERT OR REPLACE INTO series_marks (serial, width, fields, covered_from, covered_to) VALUES (?, ?, ?, ?, ?)",
                    arguments: [serial.rawValue, width, key, newFrom, newTo]
                )
                add(
                    try Row.fetchAll(
                        db,
                        sql:
                            "SELECT slice, field, n, lo, hi, total FROM series_cache WHERE serial = ? AND width = ? AND slice >= ? AND slice < ? ORDER BY slice",
                        arguments: [serial.rawValue, width, first, settled]
                    ).map {
                        Slice(
                            start: $0["slice"], field: $0["field"], count: $0["n"], min: $0["lo"], max: $0["hi"],
                            total: $0["total"])
                    }
                )
            }
            add(try Self.aggregate(db, serial, fields, from: max(first, settled), to: end, width: width))
            return out.mapValues { $0.sorted { $0.start < $1.start } }
        }
    }

    /// One slice of one field, as summed in SQL.
    struct Slice {
        let start: Int64
        let field: String
        let count: Int
        let min: Double
        let max: Double
        let total: Double
    }

    /// Every field's numbers (JSON booleans and text are not counted) in the width's slices of
    /// [from, to), in one pass over the device's readings.
    static func aggregate(
        _ db: Database, _ serial: DeviceSerial, _ fields: [String], from: Int64, to: Int64, width: Int64
    ) throws -> [Slice] {
        guard to > from else { return [] }
        let values = fields.indices.map {
            "CASE WHEN json_type(vals, ?) IN ('integer', 'real') THEN json_extract(vals, ?) END AS v\($0)"
        }.joined(separator: ", ")
        let sums = fields.indices.map { "COUNT(v\($0)), MIN(v\($0)), MAX(v\($0)), TOTAL(v\($0))" }.joined(
            separator: ", ")
        // In the order the placeholders appear: the slice arithmetic, each field's path twice, the range.
        var arguments: StatementArguments = [from, width, width, from]
        for field in fields { arguments += ["$.\"\(field)\"", "$.\"\(field)\""] }
        arguments += [serial.rawValue, from, to]
        let rows = try Row.fetchAll(
            db,
            sql: """
                SELECT slice, \(sums) FROM (
                    SELECT (received_at - ?) / ? * ? + ? AS slice, \(values) FROM readings WHERE serial = ? AND received_at >= ? AND received_at < ?
                ) GROUP BY slice ORDER BY slice
                """,
            arguments: arguments
        )
        var out: [Slice] = []
        for row in rows {
            for (i, field) in fields.enumerated() {
                let n: Int = row[1 + 4 * i]
                guard n > 0 else { continue }
                out.append(
                    Slice(
                        start: row[0], field: field, count: n, min: row[2 + 4 * i], max: row[3 + 4 * i],
                        total: row[4 + 4 * i]))
            }
        }
        return out
    }

    /// Division rounding towards minus infinity (slices before 1970 line up too).
    static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
        let q = a / b
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
    }

    public func refusals(_ serial: DeviceSerial) async throws -> [RefusalCount] {
        try await pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM refusals WHERE serial = ? ORDER BY kind", arguments: [serial.rawValue]
            ).map { row in
                guard let kind = TelemetryRejection(rawValue: row["kind"]) else {
                    throw HearthError(.integrity, "unknown refusal kind")
                }
                return RefusalCount(kind: kind, count: row["count"], lastAt: date(row["last_at"]))
            }
        }
    }

    public func droppedTotal(_ serial: DeviceSerial) async throws -> Int {
        try await pool.read { db in
            try Int.fetchOne(
                db, sql: "SELECT COALESCE(SUM(dropped), 0) FROM readings WHERE serial = ?", arguments: [serial.rawValue]
            ) ?? 0
        }
    }

    public func readingCount() async throws -> Int {
        try await pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM readings") ?? 0 }
    }

    public func deleteReadings(_ serial: DeviceSerial, from: Date, to: Date) async throws -> Int {
        let deleted = try await pool.write { db in
            try db.execute(
                sql: "DELETE FROM readings WHERE serial = ? AND received_at >= ? AND received_at < ?",
                arguments: [serial.rawValue, millis(from), millis(to)])
            let deleted = db.changesCount
            if deleted > 0 { try Self.forgetSummaries(serial, db: db) }
            return deleted
        }
        if deleted > 0 { await clearLog() }
        return deleted
    }

    /// After a deletion: copies the write-ahead log into the database and truncates it, so the
    /// log's older frames (which hold the deleted rows as they were written) are gone from disk too;
    /// `secure_delete` has zeroed them in the database. Best effort: with a reader holding an old
    /// snapshot the log cannot be reset now, and the next deletion or checkpoint finishes it.
    func clearLog() async {
        try? await pool.writeWithoutTransaction { db in _ = try db.checkpoint(.truncate) }
    }

    public func expire(_ serial: DeviceSerial, cutoffs: [String: Date]) async throws -> Int {
        guard let latest = cutoffs.values.max() else { return 0 }
        let fields = cutoffs.sorted { $0.key < $1.key }.map {
            (path: "$.\"\($0.key.replacingOccurrences(of: "\"", with: ""))\"", cutoff: millis($0.value))
        }
        return try await pool.write { db in
            let any = fields.map { _ in "(received_at < ? AND json_type(vals, ?) IS NOT NULL)" }
                .joined(separator: " OR ")
            var arguments: StatementArguments = [serial.rawValue, millis(latest)]
            for f in fields { arguments += [f.cutoff, f.path] }
            let changed =
                try Int.fetchOne(
                    db, sql: "SELECT COUNT(*) FROM readings WHERE serial = ? AND received_at < ? AND (\(any))",
                    arguments: arguments) ?? 0
            guard changed > 0 else { return 0 }
            for f in fields {
                try db.execute(
                    sql: """
                        UPDATE readings SET vals = json_remove(vals, ?)
                        WHERE serial = ? AND received_at < ? AND json_type(vals, ?) IS NOT NULL
                        """,
                    arguments: [f.path, serial.rawValue, f.cutoff, f.path])
            }
            try db.execute(
                sql: "DELETE FROM readings WHERE serial = ? AND received_at < ? AND vals = '{}'",
                arguments: [serial.rawValue, millis(latest)])
            try Self.forgetSummaries(serial, db: db)
            return changed
        }
    }

    /// Drops the device's cached history slices: they summarise readings that are gone.
    static func forgetSummaries(_ serial: DeviceSerial, db: Database) throws {
        try db.execute(sql: "DELETE FROM series_cache WHERE serial = ?", arguments: [serial.rawValue])
        try db.execute(sql: "DELETE FROM series_marks WHERE serial = ?", arguments: [serial.rawValue])
    }

    static func record(_ row: Row) throws -> TelemetryRecord {
        guard case .object(let values) = try JSONValue.parse(Array((row["vals"] as String).utf8)) else {
            throw HearthError(.integrity, "a stored reading is not an object")
        }
        return TelemetryRecord(
            position: row["position"],
            reading: TelemetryReading(
                serial: try DeviceSerial(row["serial"] as String), sequence: row["seq"],
                deviceTime: (row["device_at"] as Int64?).map(date), receivedAt: date(row["received_at"]),
                values: values,
                droppedBefore: row["dropped"]
            )
        )
    }
}
