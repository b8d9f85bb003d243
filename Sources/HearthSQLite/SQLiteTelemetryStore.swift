import Foundation
import GRDB
import HearthCore
import HearthStorage

/// Device readings in their own SQLite file (WAL, `synchronous = FULL`), so the append load never
/// queues behind account and audit writes. One `append` call is one transaction: the gateway's
/// group commit hands it every reading that arrived while the previous commit was on disk.
///
/// With `keys`, each reading's values are sealed (AES-256-GCM, bound to the device and sequence
/// number) under the data key of the device's owner at the time it is received, and `vals` is
/// left empty; the time, sequence and drop count stay in clear for paging and ranges. Readings
/// whose key was destroyed (a deleted account) are unreadable and skipped.
public final class SQLiteTelemetryStore: TelemetryStore {
    let pool: DatabasePool
    let keys: (any ReadingKeys)?

    public init(path: String, keys: (any ReadingKeys)? = nil) throws {
        // Deleted readings (retention, a deleted history) are overwritten, not left in free pages.
        pool = try openPool(path: path, secureDelete: true)
        self.keys = keys
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
        m.registerMigration("2026-12-03 sealed readings") { db in
            // Which data keys a device's readings are under: the few to fetch before reading them.
            try db.execute(
                sql: """
                    ALTER TABLE readings ADD COLUMN key_id TEXT;
                    ALTER TABLE readings ADD COLUMN sealed BLOB;
                    CREATE TABLE reading_keys (
                        serial TEXT NOT NULL, key_id TEXT NOT NULL, PRIMARY KEY (serial, key_id)
                    ) WITHOUT ROWID;
                    CREATE TABLE expiry_marks (
                        serial TEXT NOT NULL, field TEXT NOT NULL, through INTEGER NOT NULL, PRIMARY KEY (serial, field)
                    ) WITHOUT ROWID;
                    """)
        }
        m.registerMigration("2026-12-03 one index for pages and time") { db in
            // (serial, received_at) holds the rowid, i.e. it is (serial, received_at, position):
            // pages, ranges and the latest all go by it (ReadingQueries).
            try db.execute(sql: "DROP INDEX readings_by_device")
        }
        return m
    }

    /// The keys a device's readings may be under, as far as they still exist.
    func openingKeys(_ serial: DeviceSerial) async throws -> [String: any ReadingKey] {
        guard let keys else { return [:] }
        let ids = try await pool.read { db in
            try String.fetchAll(
                db, sql: "SELECT key_id FROM reading_keys WHERE serial = ?", arguments: [serial.rawValue])
        }
        return ids.isEmpty ? [:] : try await keys.opening(Set(ids))
    }

    public func prepare(_ readings: [TelemetryReading]) async throws -> PreparedReadings {
        try await ReadingFormat.prepare(readings, keys: keys)
    }

    public func append(_ readings: PreparedReadings, refusals: [TelemetryRefusal]) async throws -> Int {
        guard !readings.isEmpty || !refusals.isEmpty else { return 0 }
        let rows: [StatementArguments] = readings.rows.map { p in
            let r = p.reading
            return [
                r.serial.rawValue, r.sequence, millis(r.receivedAt), r.deviceTime.map(millis), p.clear, r.droppedBefore,
                p.keyID, p.sealed,
            ]
        }
        let used = readings.sortedKeysUsed.map { [$0.serial.rawValue, $0.keyID] as StatementArguments }
        let counted = refusals.map { ($0.serial.rawValue, $0.kind.rawValue, millis($0.at)) }
        return try await pool.write { db in
            var added = 0
            if !rows.isEmpty {
                let insert = try db.cachedStatement(
                    sql: """
                        INSERT OR IGNORE INTO readings (serial, seq, received_at, device_at, vals, dropped, key_id, sealed)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                        """)
                for row in rows {
                    try insert.execute(arguments: row)
                    added += db.changesCount
                }
                let note = try db.cachedStatement(
                    sql: "INSERT OR IGNORE INTO reading_keys (serial, key_id) VALUES (?, ?)")
                for row in used { try note.execute(arguments: row) }
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
        let keys = try await openingKeys(serial)
        return try await pool.read { db in
            try Row.fetchOne(
                db, sql: ReadingQueries.latest, arguments: [serial.rawValue]
            ).flatMap { try Self.record($0, keys: keys) }
        }
    }

    public func readings(_ serial: DeviceSerial, from: Date, to: Date, after: Int64?, limit: Int) async throws
        -> [TelemetryRecord]
    {
        let keys = try await openingKeys(serial)
        return try await pool.read { db in
            let cursor = try after.flatMap {
                try Int64.fetchOne(db, sql: ReadingQueries.receivedAt, arguments: [$0, serial.rawValue])
            }
            let page = ReadingQueries.page(
                serial: serial.rawValue, from: millis(from), to: millis(to), after: after, cursorTime: cursor,
                limit: limit)
            let rows = try Row.fetchAll(
                db, sql: page.sql,
                arguments: StatementArguments([page.serial as any DatabaseValueConvertible] + page.numbers))
            return try rows.compactMap { try Self.record($0, keys: keys) }
        }
    }

    public func series(
        _ serial: DeviceSerial, fields: [String], from: Date, to: Date, slice: TimeInterval, settledBefore: Date
    ) async throws -> [String: [TelemetryBucket]] {
        let fields = Array(Set(fields)).sorted()
        guard !fields.isEmpty, fields.count <= 16, slice.isFinite, slice >= 1 else { return [:] }
        let width = millis(Date(timeIntervalSince1970: slice))
        // Slices are multiples of the width since 1970, so a slice is the same in every request.
        let first = ReadingFormat.floorDiv(millis(from), width) * width
        let end = millis(to)
        guard end > first else { return [:] }
        // Settled slices end at or before this; the open ones after it are computed each time.
        let settled = min(ReadingFormat.floorDiv(min(millis(settledBefore), end), width) * width, end)
        let key = fields.joined(separator: ",")
        let keys = try await openingKeys(serial)
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
                    for r in try Self.aggregate(db, serial, fields, from: lo, to: hi, width: width, keys: keys) {
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
            add(try Self.aggregate(db, serial, fields, from: max(first, settled), to: end, width: width, keys: keys))
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

        func adding(_ v: Double) -> Slice {
            Slice(
                start: start, field: field, count: count + 1, min: Swift.min(min, v), max: Swift.max(max, v),
                total: total + v)
        }
    }

    /// Every field's numbers (JSON booleans and text are not counted) in the width's slices of
    /// [from, to), in one pass over the device's readings: the readings in clear summed in SQL, the
    /// sealed ones opened and summed here, both merged per slice.
    static func aggregate(
        _ db: Database, _ serial: DeviceSerial, _ fields: [String], from: Int64, to: Int64, width: Int64,
        keys: [String: any ReadingKey]
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
                    SELECT (received_at - ?) / ? * ? + ? AS slice, \(values) FROM readings
                    WHERE serial = ? AND received_at >= ? AND received_at < ? AND key_id IS NULL
                ) GROUP BY slice ORDER BY slice
                """,
            arguments: arguments
        )
        var out: [Int64: [String: Slice]] = [:]
        for row in rows {
            for (i, field) in fields.enumerated() {
                let n: Int = row[1 + 4 * i]
                guard n > 0 else { continue }
                out[row[0], default: [:]][field] = Slice(
                    start: row[0], field: field, count: n, min: row[2 + 4 * i], max: row[3 + 4 * i],
                    total: row[4 + 4 * i])
            }
        }
        let sealed = try Row.fetchCursor(
            db,
            sql: """
                SELECT seq, received_at, key_id, sealed FROM readings
                WHERE serial = ? AND received_at >= ? AND received_at < ? AND key_id IS NOT NULL
                """,
            arguments: [serial.rawValue, from, to])
        while let row = try sealed.next() {
            guard let values = try open(row, serial: serial, keys: keys) else { continue }
            let at: Int64 = row["received_at"]
            let slice = (at - from) / width * width + from
            for field in fields {
                guard case .number(let v)? = values[field] else { continue }
                out[slice, default: [:]][field] =
                    out[slice]?[field].map { $0.adding(v) }
                    ?? Slice(start: slice, field: field, count: 1, min: v, max: v, total: v)
            }
        }
        return out.sorted { $0.key < $1.key }.flatMap { $0.value.values.sorted { $0.field < $1.field } }
    }

    /// A sealed row's values, or nil when its key is gone (a deleted owner's).
    static func open(_ row: Row, serial: DeviceSerial, keys: [String: any ReadingKey]) throws -> [String: JSONValue]? {
        guard let key = keys[row["key_id"] as String] else { return nil }
        let sealed: Data = row["sealed"]
        let plain = try key.open(Array(sealed), context: ReadingFormat.context(serial.rawValue, row["seq"]))
        guard case .object(let values) = try JSONValue.parse(plain) else {
            throw HearthError(.integrity, "a stored reading is not an object")
        }
        return values
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
        guard !cutoffs.isEmpty else { return 0 }
        let keys = try await openingKeys(serial)
        return try await pool.write { db in
            // Each field is already gone from readings received before its mark (the previous
            // run's cutoff), so only [mark, cutoff) is looked at: retention does not reopen a
            // device's whole history every hour.
            let marks = Dictionary(
                try Row.fetchAll(
                    db, sql: "SELECT field, through FROM expiry_marks WHERE serial = ?", arguments: [serial.rawValue]
                ).map { ($0["field"] as String, $0["through"] as Int64) }, uniquingKeysWith: max)
            let fields = cutoffs.sorted { $0.key < $1.key }.map { field, cutoff in
                (
                    name: field, path: "$.\"\(field.replacingOccurrences(of: "\"", with: ""))\"",
                    from: marks[field] ?? Int64.min, to: millis(cutoff)
                )
            }.filter { $0.to > $0.from }
            guard let lowest = fields.map(\.from).min(), let latest = fields.map(\.to).max() else { return 0 }

            // Readings in clear, in SQL.
            let any = fields.map { _ in "(received_at >= ? AND received_at < ? AND json_type(vals, ?) IS NOT NULL)" }
                .joined(separator: " OR ")
            var arguments: StatementArguments = [serial.rawValue, lowest, latest]
            for f in fields { arguments += [f.from, f.to, f.path] }
            var changed =
                try Int.fetchOne(
                    db,
                    sql: """
                        SELECT COUNT(*) FROM readings
                        WHERE serial = ? AND received_at >= ? AND received_at < ? AND key_id IS NULL AND (\(any))
                        """,
                    arguments: arguments) ?? 0
            if changed > 0 {
                for f in fields {
                    try db.execute(
                        sql: """
                            UPDATE readings SET vals = json_remove(vals, ?)
                            WHERE serial = ? AND received_at >= ? AND received_at < ? AND key_id IS NULL
                            AND json_type(vals, ?) IS NOT NULL
                            """,
                        arguments: [f.path, serial.rawValue, f.from, f.to, f.path])
                }
                try db.execute(
                    sql: """
                        DELETE FROM readings
                        WHERE serial = ? AND received_at >= ? AND received_at < ? AND key_id IS NULL AND vals = '{}'
                        """,
                    arguments: [serial.rawValue, lowest, latest])
            }
            // Sealed readings: opened, the expired fields taken out, sealed again under the same key.
            let rows = try Row.fetchCursor(
                db,
                sql: """
                    SELECT position, seq, received_at, key_id, sealed FROM readings
                    WHERE serial = ? AND received_at >= ? AND received_at < ? AND key_id IS NOT NULL
                    """,
                arguments: [serial.rawValue, lowest, latest])
            var rewrites: [(position: Int64, sealed: Data?)] = []
            while let row = try rows.next() {
                guard var values = try Self.open(row, serial: serial, keys: keys),
                    let key = keys[row["key_id"] as String]
                else { continue }
                let at: Int64 = row["received_at"]
                let before = values.count
                for f in fields where at >= f.from && at < f.to { values[f.name] = nil }
                guard values.count < before else { continue }
                rewrites.append(
                    (
                        row["position"],
                        values.isEmpty
                            ? nil
                            : Data(
                                try key.seal(
                                    Array(JSONValue.object(values).text.utf8),
                                    context: ReadingFormat.context(serial.rawValue, row["seq"])))
                    ))
            }
            for r in rewrites {
                if let sealed = r.sealed {
                    try db.execute(
                        sql: "UPDATE readings SET sealed = ? WHERE position = ?", arguments: [sealed, r.position])
                } else {
                    try db.execute(sql: "DELETE FROM readings WHERE position = ?", arguments: [r.position])
                }
            }
            changed += rewrites.count
            for f in fields {
                try db.execute(
                    sql: """
                        INSERT INTO expiry_marks (serial, field, through) VALUES (?, ?, ?)
                        ON CONFLICT (serial, field) DO UPDATE SET through = max(through, excluded.through)
                        """,
                    arguments: [serial.rawValue, f.name, f.to])
            }
            if changed > 0 { try Self.forgetSummaries(serial, db: db) }
            return changed
        }
    }

    /// Drops the device's cached history slices: they summarise readings that are gone.
    static func forgetSummaries(_ serial: DeviceSerial, db: Database) throws {
        try db.execute(sql: "DELETE FROM series_cache WHERE serial = ?", arguments: [serial.rawValue])
        try db.execute(sql: "DELETE FROM series_marks WHERE serial = ?", arguments: [serial.rawValue])
    }

    /// A stored reading, or nil when it is sealed under a key that is gone.
    static func record(_ row: Row, keys: [String: any ReadingKey]) throws -> TelemetryRecord? {
        let serial = try DeviceSerial(row["serial"] as String)
        let values: [String: JSONValue]
        if (row["key_id"] as String?) != nil {
            guard let opened = try open(row, serial: serial, keys: keys) else { return nil }
            values = opened
        } else {
            guard case .object(let plain) = try JSONValue.parse(Array((row["vals"] as String).utf8)) else {
                throw HearthError(.integrity, "a stored reading is not an object")
            }
            values = plain
        }
        return TelemetryRecord(
            position: row["position"],
            reading: TelemetryReading(
                serial: serial, sequence: row["seq"], deviceTime: (row["device_at"] as Int64?).map(date),
                receivedAt: date(row["received_at"]), values: values, droppedBefore: row["dropped"]
            )
        )
    }
}
