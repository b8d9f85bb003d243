import Foundation
import HearthCore
import HearthFixtures
import HearthPostgres
import HearthSQLite
import HearthStorage
import HearthStorageContracts
import HearthTestSupport
import Testing

/// The storage drivers. Every contract case runs on each, with the same test code: the driver is
/// the one parameter. PostgreSQL's cases run on the server `HEARTH_TEST_POSTGRES` names (CI starts
/// one: `scripts/postgres.sh test-env`), each in a database of its own, dropped after; without it
/// they show as skipped, and under HEARTH_REQUIRE_TOOLS=1 they fail.
enum Driver: String, CaseIterable, Sendable {
    case sqlite, postgres

    /// A fresh, empty store of this driver for `body`.
    func stores<T: Sendable>(
        keys: (any ReadingKeys)? = nil,
        _ body: @Sendable (any HearthStore & UpdateStore, any TelemetryStore, any BrokerStateStore) async throws -> T
    ) async throws -> T {
        switch self {
        case .sqlite:
            let dir = try temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: dir) }
            return try await body(
                try SQLiteStore(path: dir.appendingPathComponent("db.sqlite").path, sealer: TestSealer()),
                try SQLiteTelemetryStore(path: dir.appendingPathComponent("t.sqlite").path, keys: keys),
                try SQLiteBrokerStateStore(path: dir.appendingPathComponent("b.sqlite").path))
        case .postgres:
            return try await TestPostgres.with { db in
                try await body(
                    try await PostgresStore(database: db, sealer: TestSealer()),
                    try await PostgresTelemetryStore(database: db, keys: keys),
                    try await PostgresBrokerStateStore(database: db))
            }
        }
    }
}

@Suite struct StoreContractTests {
    @Test(arguments: StoreContract.cases) func sqlite(_ c: StoreContract.Case) async throws {
        try await Driver.sqlite.stores { store, _, _ in try await c.run(store) }
    }

    @Test(.enabled(if: TestPostgres.available), arguments: StoreContract.cases)
    func postgres(_ c: StoreContract.Case) async throws {
        try await Driver.postgres.stores { store, _, _ in try await c.run(store) }
    }
}

@Suite struct UpdateContractTests {
    @Test(arguments: UpdateContract.cases) func sqlite(_ c: UpdateContract.Case) async throws {
        try await Driver.sqlite.stores { store, _, _ in try await c.run(store) }
    }

    @Test(.enabled(if: TestPostgres.available), arguments: UpdateContract.cases)
    func postgres(_ c: UpdateContract.Case) async throws {
        try await Driver.postgres.stores { store, _, _ in try await c.run(store) }
    }
}

/// Every telemetry case with readings in clear and with them sealed under per-device keys.
@Suite struct TelemetryContractTests {
    @Test(arguments: TelemetryContract.cases.indices, [false, true]) func sqlite(_ index: Int, sealed: Bool)
        async throws
    {
        try await Driver.sqlite.stores(keys: sealed ? TestReadingKeys() : nil) { _, telemetry, _ in
            try await TelemetryContract.cases[index].run(telemetry)
        }
    }

    @Test(.enabled(if: TestPostgres.available), arguments: TelemetryContract.cases.indices, [false, true])
    func postgres(_ index: Int, sealed: Bool) async throws {
        try await Driver.postgres.stores(keys: sealed ? TestReadingKeys() : nil) { _, telemetry, _ in
            try await TelemetryContract.cases[index].run(telemetry)
        }
    }

    @Test(arguments: TelemetryContract.brokerCases.indices) func sqliteBrokerState(_ index: Int) async throws {
        try await Driver.sqlite.stores { _, _, broker in try await TelemetryContract.brokerCases[index].run(broker) }
    }

    @Test(.enabled(if: TestPostgres.available), arguments: TelemetryContract.brokerCases.indices)
    func postgresBrokerState(_ index: Int) async throws {
        try await Driver.postgres.stores { _, _, broker in try await TelemetryContract.brokerCases[index].run(broker) }
    }
}
