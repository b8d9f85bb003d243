import Foundation
import GRDB
import HearthCore
import HearthSQLite
import HearthStorage
import Testing

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
    @Test(arguments: StoreContract.cases)
    func contract(_ c: StoreContract.Case) async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try await c.run(try SQLiteStore(path: dir.appendingPathComponent("db.sqlite").path, sealer: TestSealer()))
    }

    @Test(arguments: UpdateContract.cases)
    func updateContract(_ c: UpdateContract.Case) async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try await c.run(try SQLiteStore(path: dir.appendingPathComponent("db.sqlite").path, sealer: TestSealer()))
    }

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
        stat(path, &st)
        #expect(st.st_mode & 0o077 == 0, "database file is private")
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

@Suite struct SQLiteTelemetryStoreTests {
    @Test(arguments: TelemetryContract.cases.indices)
    func contract(_ index: Int) async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let c = TelemetryContract.cases[index]
        try await c.run(try SQLiteTelemetryStore(path: dir.appendingPathComponent("t.sqlite").path))
    }

    @Test(arguments: TelemetryContract.brokerCases.indices)
    func brokerStateContract(_ index: Int) async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try await TelemetryContract.brokerCases[index].run(
            try SQLiteBrokerStateStore(path: dir.appendingPathComponent("b.sqlite").path))
    }

    @Test func filesArePrivateAndSurviveReopening() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("t.sqlite").path
        try await SQLiteTelemetryStore(path: path).append(
            [TelemetryContract.reading(TelemetryContract.a, 1)], refusals: [])
        var st = stat()
        stat(path, &st)
        #expect(st.st_mode & 0o077 == 0)
        #expect(try await SQLiteTelemetryStore(path: path).readingCount() == 1)
    }
}
