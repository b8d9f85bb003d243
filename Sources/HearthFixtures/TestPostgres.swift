import Foundation
import HearthPostgres
import HearthTestSupport

/// A database of its own on the test server (`HEARTH_TEST_POSTGRES`, which CI starts with
/// `scripts/postgres.sh test-env`), for one test, dropped after it.
public enum TestPostgres {
    static var environment: [String: String] { ProcessInfo.processInfo.environment }

    /// Whether the PostgreSQL tests run: a server is configured, or CI requires them (then a
    /// missing server fails them instead of skipping).
    public static var available: Bool {
        environment["HEARTH_TEST_POSTGRES"] != nil || environment["HEARTH_REQUIRE_TOOLS"] == "1"
    }

    static func server() throws -> (PostgresLocation, passwordFile: String?, password: String?) {
        guard let url = environment["HEARTH_TEST_POSTGRES"] else {
            throw MissingTool(
                description:
                    "HEARTH_TEST_POSTGRES is not set: start PostgreSQL with `eval \"$(bash scripts/postgres.sh test-env)\"`"
            )
        }
        let file = environment["HEARTH_TEST_POSTGRES_PASSWORD_FILE"]
        let password = try file.map {
            try String(contentsOfFile: $0, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        return (try PostgresLocation(parsing: url), file, password)
    }

    /// A fresh database's address (`--database`) and password file for `body`, e.g. for
    /// `hearth serve` processes.
    public static func withAddress<T>(_ body: (_ address: String, _ passwordFile: String?) async throws -> T)
        async throws -> T
    {
        let (server, file, password) = try server()
        let name = "hearth_test_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        try await admin(server, password, "CREATE DATABASE \(name)")
        do {
            let result = try await body(try server.database(name).description, file)
            try await admin(server, password, "DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
            return result
        } catch {
            try? await admin(server, password, "DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
            throw error
        }
    }

    /// A fresh database, connected, for `body`.
    public static func with<T>(_ body: (PostgresDatabase) async throws -> T) async throws -> T {
        let password = try server().password
        return try await withAddress { address, _ in
            // The contract suites check what the driver stores, not how fast: on two busy cores a
            // debug build's SCRAM sign-in and the suites' parallel requests can keep a pool of
            // four from giving a connection within the 5 s a deployment allows.
            try await PostgresDatabase.with(
                try PostgresLocation(parsing: address), password: password, maximumConnections: 4,
                reachWithin: .seconds(60), connectWithin: .seconds(60)
            ) {
                try await body($0)
            }
        }
    }

    static func admin(_ server: PostgresLocation, _ password: String?, _ statement: String) async throws {
        try await PostgresDatabase.with(
            server, password: password, maximumConnections: 1, reachWithin: .seconds(60), connectWithin: .seconds(60)
        ) {
            admin in
            try await admin.run { try await $0.execute(statement) }
        }
    }
}
