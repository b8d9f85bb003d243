import Foundation
import HearthCore
import HearthStorage

/// Device readings on PostgreSQL: the same contract as `SQLiteTelemetryStore`
/// (`Tests/HearthStorageContracts/TelemetryContract.swift`). One `append` is one transaction of
/// multi-row inserts (the gateway acknowledges after it commits); a reading already stored
/// (serial, sequence) is skipped, so a node that dies after the commit and before the PUBACK
/// cannot make a duplicate when the device sends it again to another node.
///
/// With `keys`, values are sealed exactly as in the SQLite driver (AES-256-GCM under the owner's
/// data key, bound to the device and sequence). History slices are summed in SQL for readings in
/// clear, and settled slices kept once computed, as in the SQLite driver.
public final class PostgresTelemetryStore: TelemetryStore {
    let db: PostgresDatabase
    let keys: (any ReadingKeys)?

    public init(database: PostgresDatabase, keys: (any ReadingKeys)? = nil) async throws {
        db = database
        self.keys = keys
        try await database.migrate(PostgresSchema.telemetry)
    }

    func openingKeys(_ serial: DeviceSerial) async throws -> [String: any ReadingKey] {
        guard let keys else { return [:] }
        let ids = try await db.run {
            try await $0.rows("SELECT key_id FROM reading_keys WHERE serial = ?", [serial.rawValue])
        }.map { try $0.string("key_id") }
        return ids.isEmpty ? [:] : try await keys.opening(Set(ids))
    }

    /// How long one batch's commit may take (up to 8,192 readings take well under a second).
    static let commitWithin = Duration.seconds(15)

    public func prepare(_ readings: [TelemetryReading]) async throws -> PreparedReadings {
        try await ReadingFormat.prepare(readings, keys: keys)
    }

    public func append(_ readings: PreparedReadings, refusals: [TelemetryRefusal]) async throws -> Int {
        guard !readings.isEmpty || !refusals.isEmpty else { return 0 }
        // One order for every writer, so two nodes inserting the same readings cannot deadlock.
        let rows: [[any SQLValue]] = readings.rows.sorted {
            ($0.reading.serial.rawValue, $0.reading.sequence) < ($1.reading.serial.rawValue, $1.reading.sequence)
        }.map { p in
            let r = p.reading
            return [
                r.serial.rawValue, r.sequence, millis(r.receivedAt), r.deviceTime.map(millis), p.clear,
                Int64(r.droppedBefore), p.keyID, p.sealed,
            ]
        }
        let used = readings.sortedKeysUsed.map { [$0.serial.rawValue, $0.keyID] }
        // Refusals summed per (device, kind) first: one upsert each.
        var counted: [String: (serial: String, kind: String, count: Int64, last: Int64)] = [:]
        for r in refusals {
            let key = r.serial.rawValue + "\u{0}" + r.kind.rawValue
            let previous = counted[key]
            counted[key] = (
                r.serial.rawValue, r.kind.rawValue, (previous?.count ?? 0) + 1,
                max(previous?.last ?? .min, millis(r.at))
            )
        }
        let refusalRows = counted.sorted { $0.key < $1.key }.map(\.value)
        let batch = rows
        // Devices wait for this commit's PUBACKs: a commit that hangs is given up well before they do.
        return try await db.transaction(serialised: false, within: Self.commitWithin) { sql in
            var added = 0
            var start = 0
            while start < batch.count {
                let chunk = batch[start..<min(start + 1000, batch.count)]
                start += chunk.count
                added += try await sql.changes(
                    """
                    INSERT INTO readings (serial, seq, received_at, device_at, vals, dropped, key_id, sealed)
                    VALUES \(Array(repeating: "(?, ?, ?, ?, ?, ?, ?, ?)", count: chunk.count).joined(separator: ", "))
                    ON CONFLICT (serial, seq) DO NOTHING
                    """, chunk.flatMap { $0 })
            }
            // Which keys each device's readings are under: one statement for the batch.
            if !used.isEmpty {
                try await sql.execute(
                    """
                    INSERT INTO reading_keys (serial, key_id)
                    VALUES \(Array(repeating: "(?, ?)", count: used.count).joined(separator: ", ")) ON CONFLICT DO NOTHING
                    """, used.flatMap { $0 })
            }
            for r in refusalRows {
                try await sql.execute(
                    """
                    INSERT INTO refusals (serial, kind, count, last_at) VALUES (?, ?, ?, ?)
                    ON CONFLICT (serial, kind) DO UPDATE
                    SET count = refusals.count + excluded.count, last_at = GREATEST(refusals.last_at, excluded.last_at)
                    """, [r.serial, r.kind, r.count, r.last])
            }
            return added
        }
    }

    public func latest(_ serial: DeviceSerial) async throws -> TelemetryRecord? {
        let keys = try await openingKeys(serial)
        return try await db.run {
            try await $0.row(ReadingQueries.latest, [serial.rawValue])
        }.flatMap { try Self.record($0, keys: keys) }
    }

    public func readings(_ serial: DeviceSerial, from: Date, to: Date, after: Int64?, limit: Int) async throws
        -> [TelemetryRecord]
    {
        let keys = try await openingKeys(serial)
        return try await db.run { sql in
            var cursor: Int64?
            if let after {
                cursor = try await sql.row(ReadingQueries.receivedAt, [after, serial.rawValue])?.int64("received_at")
            }
            let page = ReadingQueries.page(
                serial: serial.rawValue, from: millis(from), to: millis(to), after: after, cursorTime: cursor,
                limit: limit)
            return try await sql.rows(page.sql, [page.serial as any SQLValue] + page.numbers)
        }.compactMap { try Self.record($0, keys: keys) }
    }

    /// One slice of one field.
    struct Slice {
        let start: Int64
        let field: String
        var count: Int
        var min: Double
        var max: Double
        var total: Double
    }

    public func series(
        _ serial: DeviceSerial, fields: [String], from: Date, to: Date, slice: TimeInterval, settledBefore: Date
    ) async throws -> [String: [TelemetryBucket]] {
        let fields = Array(Set(fields)).sorted()
        guard !fields.isEmpty, fields.count <= 16, slice.isFinite, slice >= 1 else { return [:] }
        let width = millis(Date(timeIntervalSince1970: slice))
        guard width > 0 else { return [:] }
        // Slices are multiples of the width since 1970, so a slice is the same in every request.
        let first = ReadingFormat.floorDiv(millis(from), width) * width
        let end = millis(to)
        guard end > first else { return [:] }
        // Settled slices end at or before this; the open ones after it are computed each time.
        let settled = min(ReadingFormat.floorDiv(min(millis(settledBefore), end), width) * width, end)
        let key = fields.joined(separator: ",")
        let keys = try await openingKeys(serial)
        let slices = try await db.transaction(serialised: false) { sql in
            var out: [Slice] = []
            if settled > first {
                // The settled part comes from the cache, which covers [from, to) of this device,
                // width and field set; what it does not cover yet is computed once and kept.
                try await sql.execute("SELECT pg_advisory_xact_lock(hashtext(?))", ["series:" + serial.rawValue])
                let mark = try await sql.row(
                    "SELECT fields, covered_from, covered_to FROM series_marks WHERE serial = ? AND width = ?",
                    [serial.rawValue, width])
                var covered: (from: Int64, to: Int64)?
                if let mark, try mark.string("fields") == key {
                    covered = (try mark.int64("covered_from"), try mark.int64("covered_to"))
                }
                var missing: [(Int64, Int64)] = []
                if let c = covered, c.to >= first, c.from <= settled {
                    if first < c.from { missing.append((first, c.from)) }
                    if c.to < settled { missing.append((c.to, settled)) }
                } else {
                    // Nothing kept, or a window that does not touch what is: start afresh.
                    try await sql.execute(
                        "DELETE FROM series_cache WHERE serial = ? AND width = ?", [serial.rawValue, width])
                    covered = nil
                    missing.append((first, settled))
                }
                for (lo, hi) in missing {
                    for r in try await Self.aggregate(sql, serial, fields, from: lo, to: hi, width: width, keys: keys) {
                        try await sql.execute(
                            """
                            INSERT INTO series_cache (serial, width, slice, field, n, lo, hi, total)
                            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                            ON CONFLICT (serial, width, slice, field) DO UPDATE
                            SET n = excluded.n, lo = excluded.lo, hi = excluded.hi, total = excluded.total
                            """, [serial.rawValue, width, r.start, r.field, r.count, r.min, r.max, r.total])
                    }
                }
                try await sql.execute(
                    """
                    INSERT INTO series_marks (serial, width, fields, covered_from, covered_to) VALUES (?, ?, ?, ?, ?)
                    ON CONFLICT (serial, width) DO UPDATE
                    SET fields = excluded.fields, covered_from = excluded.covered_from, covered_to = excluded.covered_to
                    """,
                    [
                        serial.rawValue, width, key, min(covered?.from ?? first, first),
                        max(covered?.to ?? settled, settled),
                    ])
                for row in try await sql.rows(
                    """
                    SELECT slice, field, n, lo, hi, total FROM series_cache
                    WHERE serial = ? AND width = ? AND slice >= ? AND slice < ? ORDER BY slice
                    """, [serial.rawValue, width, first, settled])
                {
                    out.append(
                        Slice(
                            start: try row.int64("slice"), field: try row.string("field"), count: try row.int("n"),
                            min: try row.double("lo"), max: try row.double("hi"), total: try row.double("total")))
                }
            }
            out += try await Self.aggregate(
                sql, serial, fields, from: max(first, settled), to: end, width: width, keys: keys)
            return out
        }
        var out: [String: [TelemetryBucket]] = [:]
        for s in slices where s.count > 0 {
            out[s.field, default: []].append(
                TelemetryBucket(
                    start: date(s.start), count: s.count, min: s.min, max: s.max, mean: s.total / Double(s.count)))
        }
        return out.mapValues { $0.sorted { $0.start < $1.start } }
    }

    /// Every field's numbers (JSON booleans and text are not counted) in the width's slices of
    /// [from, to): the readings in clear summed in SQL, the sealed ones opened and summed here.
    static func aggregate(
        _ sql: SQL, _ serial: DeviceSerial, _ fields: [String], from: Int64, to: Int64, width: Int64,
        keys: [String: any ReadingKey]
    ) async throws -> [Slice] {
        guard to > from else { return [] }
        var slices: [Int64: [String: Slice]] = [:]
        func add(_ start: Int64, _ field: String, _ count: Int, _ lo: Double, _ hi: Double, _ total: Double) {
            guard count > 0 else { return }
            if var s = slices[start]?[field] {
                s.count += count
                s.min = Swift.min(s.min, lo)
                s.max = Swift.max(s.max, hi)
                s.total += total
                slices[start, default: [:]][field] = s
            } else {
                slices[start, default: [:]][field] = Slice(
                    start: start, field: field, count: count, min: lo, max: hi, total: total)
            }
        }
        let values = fields.indices.map {
            "CASE WHEN jsonb_typeof(vals::jsonb -> ?) = 'number' THEN (vals::jsonb ->> ?)::float8 END AS v\($0)"
        }.joined(separator: ", ")
        let sums = fields.indices.map {
            "COUNT(v\($0)) AS n\($0), MIN(v\($0)) AS lo\($0), MAX(v\($0)) AS hi\($0), COALESCE(SUM(v\($0)), 0) AS t\($0)"
        }.joined(separator: ", ")
        var arguments: [any SQLValue] = [from, width, width, from]
        for field in fields { arguments += [field, field] }
        arguments += [serial.rawValue, from, to]
        for row in try await sql.rows(
            """
            SELECT slice, \(sums) FROM (
                SELECT (received_at - ?) / ? * ? + ? AS slice, \(values) FROM readings
                WHERE serial = ? AND received_at >= ? AND received_at < ? AND key_id IS NULL
            ) AS v GROUP BY slice ORDER BY slice
            """, arguments)
        {
            let start = try row.int64("slice")
            for (i, field) in fields.enumerated() {
                let n = try row.int("n\(i)")
                guard n > 0 else { continue }
                add(start, field, n, try row.double("lo\(i)"), try row.double("hi\(i)"), try row.double("t\(i)"))
            }
        }
        for row in try await sql.rows(
            """
            SELECT seq, received_at, key_id, sealed FROM readings
            WHERE serial = ? AND received_at >= ? AND received_at < ? AND key_id IS NOT NULL
            """, [serial.rawValue, from, to])
        {
            guard let values = try open(row, serial: serial, keys: keys) else { continue }
            let start = (try row.int64("received_at") - from) / width * width + from
            for field in fields {
                guard case .number(let v)? = values[field] else { continue }
                add(start, field, 1, v, v, v)
            }
        }
        return slices.sorted { $0.key < $1.key }.flatMap { $0.value.values.sorted { $0.field < $1.field } }
    }

    /// Drops the device's cached history slices: they summarise readings that are gone.
    static func forgetSummaries(_ serial: DeviceSerial, sql: SQL) async throws {
        try await sql.execute("DELETE FROM series_cache WHERE serial = ?", [serial.rawValue])
        try await sql.execute("DELETE FROM series_marks WHERE serial = ?", [serial.rawValue])
    }

    /// A sealed row's values, or nil when its key is gone (a deleted owner's).
    static func open(_ row: SQLRow, serial: DeviceSerial, keys: [String: any ReadingKey]) throws -> [String: JSONValue]?
    {
        guard let id = try row.optionalString("key_id"), let key = keys[id] else { return nil }
        let plain = try key.open(
            Array(try row.data("sealed")), context: ReadingFormat.context(serial.rawValue, try row.int64("seq")))
        guard case .object(let values) = try JSONValue.parse(plain) else {
            throw HearthError(.integrity, "a stored reading is not an object")
        }
        return values
    }

    public func refusals(_ serial: DeviceSerial) async throws -> [RefusalCount] {
        try await db.run {
            try await $0.rows("SELECT * FROM refusals WHERE serial = ? ORDER BY kind COLLATE \"C\"", [serial.rawValue])
        }.map { row in
            guard let kind = TelemetryRejection(rawValue: try row.string("kind")) else {
                throw HearthError(.integrity, "unknown refusal kind")
            }
            return RefusalCount(kind: kind, count: try row.int("count"), lastAt: try row.date("last_at"))
        }
    }

    public func droppedTotal(_ serial: DeviceSerial) async throws -> Int {
        try await db.run {
            try await $0.int(
                "SELECT COALESCE(SUM(dropped), 0)::bigint FROM readings WHERE serial = ?", [serial.rawValue])
        }
    }

    public func readingCount() async throws -> Int {
        try await db.run { try await $0.int("SELECT COUNT(*) FROM readings") }
    }

    public func deleteReadings(_ serial: DeviceSerial, from: Date, to: Date) async throws -> Int {
        try await db.transaction(serialised: false) { sql in
            let deleted = try await sql.changes(
                "DELETE FROM readings WHERE serial = ? AND received_at >= ? AND received_at < ?",
                [serial.rawValue, millis(from), millis(to)])
            if deleted > 0 { try await Self.forgetSummaries(serial, sql: sql) }
            return deleted
        }
    }

    public func expire(_ serial: DeviceSerial, cutoffs: [String: Date]) async throws -> Int {
        guard !cutoffs.isEmpty else { return 0 }
        let keys = try await openingKeys(serial)
        return try await db.transaction(serialised: false) { sql in
            // One retention run per device at a time, across nodes.
            try await sql.execute("SELECT pg_advisory_xact_lock(hashtext(?))", ["expire:" + serial.rawValue])
            // Each field is already gone from readings received before its mark (the previous
            // run's cutoff), so only [mark, cutoff) is looked at.
            var marks: [String: Int64] = [:]
            for row in try await sql.rows("SELECT field, through FROM expiry_marks WHERE serial = ?", [serial.rawValue])
            {
                marks[try row.string("field")] = try row.int64("through")
            }
            let fields = cutoffs.sorted { $0.key < $1.key }.map { field, cutoff in
                (name: field, from: marks[field] ?? Int64.min, to: millis(cutoff))
            }.filter { $0.to > $0.from }
            guard let lowest = fields.map(\.from).min(), let latest = fields.map(\.to).max() else { return 0 }

            // Readings in clear, in SQL.
            let any = fields.map { _ in "(received_at >= ? AND received_at < ? AND (vals::jsonb -> ?) IS NOT NULL)" }
                .joined(separator: " OR ")
            var arguments: [any SQLValue] = [serial.rawValue, lowest, latest]
            for f in fields { arguments += [f.from, f.to, f.name] }
            var changed = try await sql.int(
                """
                SELECT COUNT(*) FROM readings
                WHERE serial = ? AND received_at >= ? AND received_at < ? AND key_id IS NULL AND (\(any))
                """, arguments)
            if changed > 0 {
                for f in fields {
                    try await sql.execute(
                        """
                        UPDATE readings SET vals = (vals::jsonb - ?)::text
                        WHERE serial = ? AND received_at >= ? AND received_at < ? AND key_id IS NULL
                        AND (vals::jsonb -> ?) IS NOT NULL
                        """, [f.name, serial.rawValue, f.from, f.to, f.name])
                }
                try await sql.execute(
                    """
                    DELETE FROM readings WHERE serial = ? AND received_at >= ? AND received_at < ? AND key_id IS NULL
                    AND vals::jsonb = '{}'::jsonb
                    """, [serial.rawValue, lowest, latest])
            }
            // Sealed readings: opened, the expired fields taken out, sealed again under the same key.
            let rows = try await sql.rows(
                """
                SELECT position, seq, received_at, key_id, sealed FROM readings
                WHERE serial = ? AND received_at >= ? AND received_at < ? AND key_id IS NOT NULL
                """, [serial.rawValue, lowest, latest])
            for row in rows {
                guard var values = try Self.open(row, serial: serial, keys: keys),
                    let key = keys[try row.string("key_id")]
                else { continue }
                let at = try row.int64("received_at")
                let before = values.count
                for f in fields where at >= f.from && at < f.to { values[f.name] = nil }
                guard values.count < before else { continue }
                let position = try row.int64("position")
                if values.isEmpty {
                    try await sql.execute("DELETE FROM readings WHERE position = ?", [position])
                } else {
                    let sealed = try key.seal(
                        Array(JSONValue.object(values).text.utf8),
                        context: ReadingFormat.context(serial.rawValue, try row.int64("seq")))
                    try await sql.execute(
                        "UPDATE readings SET sealed = ? WHERE position = ?", [Data(sealed), position])
                }
                changed += 1
            }
            for f in fields {
                try await sql.execute(
                    """
                    INSERT INTO expiry_marks (serial, field, through) VALUES (?, ?, ?)
                    ON CONFLICT (serial, field) DO UPDATE SET through = GREATEST(expiry_marks.through, excluded.through)
                    """, [serial.rawValue, f.name, f.to])
            }
            if changed > 0 { try await Self.forgetSummaries(serial, sql: sql) }
            return changed
        }
    }

    /// A stored reading, or nil when it is sealed under a key that is gone.
    static func record(_ row: SQLRow, keys: [String: any ReadingKey]) throws -> TelemetryRecord? {
        let serial = try DeviceSerial(try row.string("serial"))
        let values: [String: JSONValue]
        if try row.optionalString("key_id") != nil {
            guard let opened = try open(row, serial: serial, keys: keys) else { return nil }
            values = opened
        } else {
            guard case .object(let plain) = try JSONValue.parse(Array(try row.string("vals").utf8)) else {
                throw HearthError(.integrity, "a stored reading is not an object")
            }
            values = plain
        }
        return TelemetryRecord(
            position: try row.int64("position"),
            reading: TelemetryReading(
                serial: serial, sequence: try row.int64("seq"), deviceTime: try row.optionalDate("device_at"),
                receivedAt: try row.date("received_at"), values: values, droppedBefore: try row.int("dropped")))
    }
}

/// Persistent MQTT sessions and retained messages on PostgreSQL (`BrokerStateStore`).
public final class PostgresBrokerStateStore: BrokerStateStore {
    let db: PostgresDatabase

    public init(database: PostgresDatabase) async throws {
        db = database
        try await database.migrate(PostgresSchema.broker)
    }

    public func apply(_ change: BrokerStateChange) async throws {
        guard !change.isEmpty else { return }
        try await db.transaction(serialised: false) { sql in
            for (key, snapshot) in change.sessions.sorted(by: { $0.key < $1.key }) {
                if let snapshot {
                    try await sql.execute(
                        """
                        INSERT INTO mqtt_sessions (key, snapshot) VALUES (?, ?)
                        ON CONFLICT (key) DO UPDATE SET snapshot = excluded.snapshot
                        """, [key, snapshot])
                } else {
                    try await sql.execute("DELETE FROM mqtt_sessions WHERE key = ?", [key])
                }
            }
            for (topic, packet) in change.retained.sorted(by: { $0.key < $1.key }) {
                if let packet {
                    try await sql.execute(
                        """
                        INSERT INTO mqtt_retained (topic, packet) VALUES (?, ?)
                        ON CONFLICT (topic) DO UPDATE SET packet = excluded.packet
                        """, [topic, Data(packet)])
                } else {
                    try await sql.execute("DELETE FROM mqtt_retained WHERE topic = ?", [topic])
                }
            }
        }
    }

    public func load() async throws -> (sessions: [String: String], retained: [String: [UInt8]]) {
        try await db.run { sql in
            var sessions: [String: String] = [:]
            for row in try await sql.rows("SELECT key, snapshot FROM mqtt_sessions") {
                sessions[try row.string("key")] = try row.string("snapshot")
            }
            var retained: [String: [UInt8]] = [:]
            for row in try await sql.rows("SELECT topic, packet FROM mqtt_retained") {
                retained[try row.string("topic")] = [UInt8](try row.data("packet"))
            }
            return (sessions, retained)
        }
    }

    public func session(_ key: String) async throws -> String? {
        try await db.run { try await $0.row("SELECT snapshot FROM mqtt_sessions WHERE key = ?", [key]) }
            .map { try $0.string("snapshot") }
    }
}
