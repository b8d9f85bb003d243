import Foundation
import HearthCore
import HearthFixtures
import HearthPostgres
import HearthStorage
import HearthTestSupport
import Testing

/// What only the PostgreSQL driver has to show: its address is validated like every input, the
/// database itself keeps the audit log append-only, and nodes starting together migrate once.
@Suite struct PostgresTests {
    @Test func anAddressIsCheckedBeforeAnythingIsSent() throws {
        let good = try PostgresLocation(parsing: "postgres://hearth@db.example:6432/fleet")
        #expect(good.tls == .verifyFull, "TLS with the certificate and name checked unless told otherwise")
        #expect(good.port == 6432 && good.database == "fleet" && good.user == "hearth")
        #expect(
            try PostgresLocation(parsing: "postgresql://hearth@127.0.0.1/hearth?sslmode=disable").tls == .disable)
        #expect(try PostgresLocation(parsing: "postgres://h@[::1]/d?sslmode=disable").host == "::1")
        let refused: [(String, String)] = [
            ("postgres://hearth:secret@db.example/fleet", "password"),
            ("postgres://hearth@db.example/fleet?sslmode=disable", "loopback"),
            ("postgres://hearth@10.0.0.5/fleet?sslmode=disable", "loopback"),
            ("postgres://hearth@127.0.0.1.evil.example/fleet?sslmode=disable", "loopback"),
            ("postgres://hearth@db.example/fleet?sslmode=require", "verify-full"),
            ("postgres://hearth@db.example/fleet?sslmode=prefer", "verify-full"),
            ("postgres://hearth@db.example:0/fleet", "port"),
            ("postgres://hearth@db.example:99999/fleet", ""),
            ("postgres://hearth@db.example:-1/fleet", ""),
            ("postgres://hearth@db.example/", ""),
            ("postgres://hearth@db.example/a/b", ""),
            ("postgres://db.example/fleet", ""),
            ("mysql://hearth@db.example/fleet", ""),
            ("postgres://hearth@db.example/fleet?options=-c%20log_statement%3Dall", "unknown parameter"),
            ("", ""), ("%%%", ""), (String(repeating: "a", count: 100_000), ""),
        ]
        for (text, reason) in refused {
            do {
                _ = try PostgresLocation(parsing: text)
                Issue.record("accepted \(text.prefix(80))")
            } catch let error as HearthError {
                #expect(error.code == .invalidInput && error.field == "database")
                #expect(reason.isEmpty || error.message.contains(reason), "\(text.prefix(80)): \(error.message)")
                #expect(!error.message.contains("secret"), "the refusal never repeats a password")
            }
        }
        #expect(!good.description.contains("secret"))
    }

    @Test(.enabled(if: TestPostgres.available)) func theDatabaseRefusesToEditTheAuditLog() async throws {
        try await TestPostgres.with { db in
            let store = try await PostgresStore(database: db, sealer: TestSealer())
            for i in 0..<3 { try await store.appendAudit(AuditEntry(.serverStarted, detail: "start \(i)", at: Date())) }
            for statement in [
                "UPDATE audit_log SET detail = 'x' WHERE seq = 2", "DELETE FROM audit_log WHERE seq = 3",
                "TRUNCATE audit_log",
            ] {
                await #expect(throws: HearthError.self, "\(statement)") {
                    try await db.run { try await $0.execute(statement) }
                }
            }
            #expect(try await store.auditRecords().count == 3)
            #expect(TestSealer().verify(try await store.auditRecords(), head: try await store.auditHead()) == nil)
        }
    }

    /// Several nodes start at once on an empty database: one migrates, the others wait for it
    /// and find the schema there; and their audited writes, in parallel, make one unbroken chain.
    @Test(.enabled(if: TestPostgres.available)) func nodesStartingTogetherMigrateOnceAndShareOneChain() async throws {
        try await TestPostgres.with { db in
            let stores = try await withThrowingTaskGroup(of: PostgresStore.self) { group in
                for _ in 0..<4 { group.addTask { try await PostgresStore(database: db, sealer: TestSealer()) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(stores.count == 4)
            let applied = try await db.run {
                try await $0.int("SELECT COUNT(*) FROM schema_migrations WHERE name = '2026-12-05 store'")
            }
            #expect(applied == 1)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (n, store) in stores.enumerated() {
                    group.addTask {
                        for i in 0..<10 {
                            try await store.appendAudit(
                                AuditEntry(.serverStarted, detail: "node \(n) #\(i)", at: Date()))
                        }
                    }
                }
                try await group.waitForAll()
            }
            let records = try await stores[0].auditRecords()
            #expect(records.count == 40 && records.map(\.sequence) == Array(1...40))
            #expect(TestSealer().verify(records, head: try await stores[3].auditHead()) == nil)
        }
    }

    /// Who holds which device: the newest connection wins, a node that stopped saying it is alive
    /// holds nothing, and the console's list and counts and a page's presence agree with that.
    @Test(.enabled(if: TestPostgres.available)) func connectionsBelongToLiveNodesAndTheNewestWins() async throws {
        try await TestPostgres.with { db in
            let store = try await PostgresStore(database: db, sealer: TestSealer())
            let t0 = Date(timeIntervalSince1970: 1_800_000_000)
            var rng = SystemRandomNumberGenerator()
            let (d1, d2, d3) = (
                DeviceSerial.random(using: &rng), DeviceSerial.random(using: &rng), DeviceSerial.random(using: &rng)
            )
            try await store.heartbeat("a", at: t0)
            try await store.heartbeat("b", at: t0)
            try await store.connected(d1, node: "a", since: t0)
            try await store.connected(d2, node: "a", since: t0 + 1)
            try await store.connected(d3, node: "b", since: t0 + 2)
            try await store.connected(d1, node: "b", since: t0 + 3)
            try await store.connected(d2, node: "a", since: t0 - 5)  // older than what is recorded: ignored
            #expect(try await store.holder(d1, aliveSince: t0)?.node == "b", "the newest connection wins")
            #expect(try await store.holder(d2, aliveSince: t0)?.node == "a")
            #expect(try await store.held([d1, d2, d3], aliveSince: t0) == [d1, d2, d3])
            #expect(try await store.held([], aliveSince: t0) == [])
            #expect(try await store.connectionCounts(aliveSince: t0) == ["a": 1, "b": 2])
            #expect(try await store.connections(aliveSince: t0, limit: 2).map(\.serial) == [d1, d3], "newest first")
            #expect(try await store.connections(aliveSince: t0, limit: -1).isEmpty)
            try await store.disconnected(d1, node: "a", since: t0)  // a's old connection ending changes nothing
            #expect(try await store.holder(d1, aliveSince: t0)?.node == "b")
            // Only b keeps saying it is alive.
            try await store.heartbeat("b", at: t0 + 10)
            #expect(try await store.held([d1, d2, d3], aliveSince: t0 + 5) == [d1, d3], "a dead node holds nothing")
            #expect(try await store.connectionCounts(aliveSince: t0 + 5) == ["b": 2])
            try await store.disconnected(d3, node: "b", since: t0 + 2)
            #expect(try await store.held([d3], aliveSince: t0 + 5) == [])
        }
    }

    /// One node keeps a device's session at a time: taking it names the node that had it (and
    /// whether that node is alive, so it must hand it over) or nothing if it was this node's.
    @Test(.enabled(if: TestPostgres.available)) func aSessionHasOneKeeperAndTakingItNamesThePrevious() async throws {
        try await TestPostgres.with { db in
            let store = try await PostgresStore(database: db, sealer: TestSealer())
            let t0 = Date(timeIntervalSince1970: 1_800_000_000)
            var rng = SystemRandomNumberGenerator()
            let (d1, d2) = (DeviceSerial.random(using: &rng), DeviceSerial.random(using: &rng))
            try await store.heartbeat("a", at: t0)
            try await store.heartbeat("b", at: t0)
            #expect(try await store.keepSession(d1, node: "a", aliveSince: t0) == nil, "nobody kept it")
            #expect(try await store.keepSession(d1, node: "a", aliveSince: t0) == nil, "a keeps it already")
            let fromA = try await store.keepSession(d1, node: "b", aliveSince: t0)
            #expect(fromA?.node == "a" && fromA?.alive == true, "a hands it to b: \(String(describing: fromA))")
            #expect(try await store.keepSession(d2, node: "a", aliveSince: t0) == nil, "devices apart")
            try await store.heartbeat("b", at: t0 + 10)
            let fromDeadA = try await store.keepSession(d2, node: "b", aliveSince: t0 + 5)
            #expect(fromDeadA?.node == "a" && fromDeadA?.alive == false, "a is dead: \(String(describing: fromDeadA))")
            let fromUnknown = try await store.keepSession(d2, node: "c", aliveSince: t0 + 5)
            #expect(fromUnknown?.node == "b" && fromUnknown?.alive == true)
            try await store.connected(d1, node: "gone", since: t0)
            let neverSeen = try await store.keepSession(d1, node: "gone", aliveSince: t0)
            #expect(neverSeen?.node == "b" && neverSeen?.alive == true)
            let fromNeverSeen = try await store.keepSession(d1, node: "a", aliveSince: t0)
            #expect(fromNeverSeen?.node == "gone" && fromNeverSeen?.alive == false, "a node never heard from is dead")
        }
    }

    @Test func anUnreachableDatabaseIsAClearError() async throws {
        // Port 1: nothing listens there.
        let location = try PostgresLocation(parsing: "postgres://hearth@127.0.0.1:1/hearth?sslmode=disable")
        do {
            try await PostgresDatabase.with(location, password: nil, reachWithin: .seconds(2)) { _ in }
            Issue.record("connected to nothing")
        } catch let error as HearthError {
            #expect(error.code == .unavailable)
            #expect(error.message.contains("cannot use the database postgres://hearth@127.0.0.1:1/hearth"))
        }
    }
}
