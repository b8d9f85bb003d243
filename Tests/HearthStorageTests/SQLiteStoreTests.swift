import Foundation
import GRDB
import HearthCore
import HearthCrypto
import HearthStorage
import HearthStorageContracts
import Synchronization
import Testing

@testable import HearthSQLite

/// A stand-in MAC for storage tests (the real one, keyed from the KEK, is tested in the server).
struct TestSealer: AuditSealer {
    func mac(_ data: Data) -> String {
        var h: UInt64 = 1_469_598_103_934_665_603
        for b in data { h = (h ^ UInt64(b)) &* 1_099_511_628_211 }
        return String(h, radix: 16)
    }
}

func temporaryDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("hearth-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

@Suite struct SQLiteStoreTests {
    @Test func aReopenedStoreHasEverythingCommitted() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("db.sqlite").path
        do {
            let store = try SQLiteStore(path: path, sealer: TestSealer())
            try await store.createModel(
                ProductModel.demoModels()[1], at: Date(), audit: AuditEntry(.modelCreated, at: Date()))
        }
        let reopened = try SQLiteStore(path: path, sealer: TestSealer())
        #expect(try await reopened.models().count == 1)
        var st = stat()
        #expect(stat(path, &st) == 0, "the database file exists")
        #expect(st.st_mode & 0o077 == 0, "database file is private")
    }

    /// Every store's writing connection syncs the log at each commit (`synchronous = FULL`, 2), so
    /// what was acknowledged survives a power loss, not only a killed process. GRDB's pool set its
    /// writer to NORMAL (1) after our setting, until 2026-12-03.
    @Test func everyStoreSyncsEachCommitToDisk() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        func level(_ pool: DatabasePool) async throws -> Int? {
            try await pool.writeWithoutTransaction { try Int.fetchOne($0, sql: "PRAGMA synchronous") }
        }
        let main = try SQLiteStore(path: dir.appendingPathComponent("h.sqlite").path, sealer: TestSealer())
        let readings = try SQLiteTelemetryStore(path: dir.appendingPathComponent("t.sqlite").path)
        let broker = try SQLiteBrokerStateStore(path: dir.appendingPathComponent("b.sqlite").path)
        #expect(try await level(main.pool) == 2)
        #expect(try await level(readings.pool) == 2)
        #expect(try await level(broker.pool) == 2)
        #expect(try await main.pool.read { try String.fetchOne($0, sql: "PRAGMA journal_mode") } == "wal")
    }

    @Test func theAuditLogIsAppendOnlyAndTamperingIsDetected() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("db.sqlite").path
        let sealer = TestSealer()
        let store = try SQLiteStore(path: path, sealer: sealer)
        for i in 0..<5 { try await store.appendAudit(AuditEntry(.serverStarted, detail: "start \(i)", at: Date())) }
        #expect(sealer.verify(try await store.auditRecords(), head: try await store.auditHead()) == nil)

        let db = try DatabaseQueue(path: path)
        // The triggers refuse edits through SQL…
        await #expect(throws: (any Error).self) {
            try await db.write { try $0.execute(sql: "UPDATE audit_log SET detail = 'x' WHERE seq = 2") }
        }
        await #expect(throws: (any Error).self) {
            try await db.write { try $0.execute(sql: "DELETE FROM audit_log WHERE seq = 5") }
        }

        // …and if someone drops them, the chain shows each kind of tampering.
        try await db.write { try $0.execute(sql: "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete") }
        func problem(after sql: String) async throws -> String? {
            let copy = dir.appendingPathComponent("copy-\(UUID().uuidString).sqlite").path
            try db.backup(to: try DatabaseQueue(path: copy))
            try await DatabaseQueue(path: copy).write { try $0.execute(sql: sql) }
            let tampered = try SQLiteStore(path: copy, sealer: sealer)
            return sealer.verify(try await tampered.auditRecords(), head: try await tampered.auditHead())
        }
        #expect(
            try await problem(after: "UPDATE audit_log SET detail = 'edited' WHERE seq = 2")?.contains(
                "record 2 was altered") == true)
        #expect(
            try await problem(after: "DELETE FROM audit_log WHERE seq = 3")?.contains("record 3 is missing") == true)
        #expect(try await problem(after: "DELETE FROM audit_log WHERE seq = 5")?.contains("removed") == true)
        #expect(try await problem(after: "DELETE FROM audit_head")?.contains("head is missing") == true)
        #expect(try await problem(after: "UPDATE audit_log SET at = at + 1 WHERE seq = 1") != nil)
        #expect(try await problem(after: "SELECT 1") == nil)
    }
}

/// Data keys for the sealed-readings tests: one per device, made on first use, destroyable.
final class TestReadingKeys: ReadingKeys {
    struct Key: ReadingKey {
        let key: DataKey
        var id: String { key.id }
        func seal(_ plaintext: [UInt8], context: [UInt8]) throws -> [UInt8] {
            try key.seal(plaintext, context: context)
        }
        func open(_ sealed: [UInt8], context: [UInt8]) throws -> [UInt8] { try key.open(sealed, context: context) }
    }
    private let keys = Mutex<[DeviceSerial: Key]>([:])

    func sealing(_ serial: DeviceSerial) async throws -> any ReadingKey {
        keys.withLock { k in
            if let key = k[serial] { return key }
            let key = Key(key: DataKey())
            k[serial] = key
            return key
        }
    }

    func opening(_ ids: Set<String>) async throws -> [String: any ReadingKey] {
        keys.withLock { k in
            Dictionary(k.values.filter { ids.contains($0.id) }.map { ($0.id, $0 as any ReadingKey) }) { a, _ in a }
        }
    }

    func destroy(_ serial: DeviceSerial) { _ = keys.withLock { $0.removeValue(forKey: serial) } }
}

@Suite struct SQLiteTelemetryStoreTests {
    /// Sealed readings: no value is in the database or its log in clear, they read back whole, a
    /// reading's sealed value moved to another row does not open, and once the key is destroyed
    /// they cannot be read from any copy of the files.
    @Test func sealedReadingsAreUnreadableWithoutTheirKey() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("t.sqlite").path
        let keys = TestReadingKeys()
        let store = try SQLiteTelemetryStore(path: path, keys: keys)
        let a = TelemetryContract.a
        let secret = 23.456_789_1
        try await store.append(
            (1...50).map {
                TelemetryReading(
                    serial: a, sequence: $0, deviceTime: nil, receivedAt: TelemetryContract.t0 + Double($0),
                    values: ["temperature": .number(secret), "note": "front door opened"])
            }, refusals: [])
        func files() throws -> Data {
            try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix("t.sqlite") }.reduce(
                into: Data()
            ) { $0 += try Data(contentsOf: dir.appendingPathComponent($1)) }
        }
        let bytes = try files()
        #expect(bytes.count > 10_000)
        for clear in ["23.4567891", "front door"] { #expect(bytes.range(of: Data(clear.utf8)) == nil, "\(clear)") }
        let back = try await store.readings(a, from: .distantPast, to: .distantFuture, after: nil, limit: 100)
        #expect(back.count == 50 && back.allSatisfy { $0.reading.values["temperature"] == .number(secret) })
        let chart = try await store.series(
            a, fields: ["temperature"], from: TelemetryContract.t0, to: TelemetryContract.t0 + 100, slice: 100,
            settledBefore: TelemetryContract.t0)
        #expect(chart["temperature"]?.map(\.count) == [50])

        // A sealed value copied onto another reading is refused (bound to device and sequence).
        let pool = try DatabaseQueue(path: path)
        try await pool.write { db in
            try db.execute(
                sql: "UPDATE readings SET sealed = (SELECT sealed FROM readings WHERE seq = 1) WHERE seq = 2")
        }
        await #expect(throws: HearthError.self) {
            _ = try await store.readings(a, from: .distantPast, to: .distantFuture, after: nil, limit: 100)
        }
        try await pool.write { db in try db.execute(sql: "DELETE FROM readings WHERE seq = 2") }

        // Crypto-shredding: a copy taken before (a backup) is unreadable once the key is gone.
        let backup = dir.appendingPathComponent("backup.sqlite").path
        try pool.backup(to: try DatabaseQueue(path: backup))
        keys.destroy(a)
        #expect(try await store.readings(a, from: .distantPast, to: .distantFuture, after: nil, limit: 100).isEmpty)
        #expect(try await store.latest(a) == nil)
        let restored = try SQLiteTelemetryStore(path: backup, keys: keys)
        #expect(try await restored.readingCount() == 49, "the rows are there")
        #expect(try await restored.readings(a, from: .distantPast, to: .distantFuture, after: nil, limit: 100).isEmpty)
    }

    @Test func filesArePrivateAndSurviveReopening() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("t.sqlite").path
        try await SQLiteTelemetryStore(path: path).append(
            [TelemetryContract.reading(TelemetryContract.a, 1)], refusals: [])
        var st = stat()
        #expect(stat(path, &st) == 0, "the telemetry file exists")
        #expect(st.st_mode & 0o077 == 0, "telemetry file is private")
        #expect(try await SQLiteTelemetryStore(path: path).readingCount() == 1)
    }
}
