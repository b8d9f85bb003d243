import Foundation
import HearthCore
import HearthCrypto
import HearthPostgres
import HearthSQLite
import HearthServer
import HearthStorage

/// Which database a deployment keeps its state in: the SQLite files in the data folder (the
/// default, one node), or one PostgreSQL database that several nodes share (`--database`).
enum DatabaseChoice: Sendable {
    case sqlite
    case postgres(PostgresLocation, password: String?)

    /// From `--database` and `--database-password-file` (mode 0600 or stricter, like every key file).
    init(address: String?, passwordFile: String?) throws {
        guard let address else {
            if passwordFile != nil {
                throw HearthError.invalid("database-password-file", "is for --database postgres://…; give both")
            }
            self = .sqlite
            return
        }
        let location = try PostgresLocation(parsing: address)
        var password: String?
        if let passwordFile {
            try DataFolder.requirePrivate(passwordFile, maxMode: 0o600, what: "the database password file")
            guard let text = try? String(contentsOfFile: passwordFile, encoding: .utf8) else {
                throw HearthError.invalid("database-password-file", "cannot read \(passwordFile)")
            }
            password = text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        self = .postgres(location, password: password)
    }
}

/// A deployment's stores, made in one place for `serve`, every command that opens a deployment,
/// and the tests. The data folder keeps the keys (KEK, CAs, TLS) either way: secrets in the
/// database are sealed by the KEK, which never goes into it.
struct Storage: Sendable {
    let store: any HearthStore & UpdateStore
    let telemetry: any TelemetryStore
    let brokerState: any BrokerStateStore
    /// The per-owner data keys readings are sealed under: give the same to ``Hearth`` so
    /// ownership changes and account deletions reach them.
    let readingKeys: DataKeys
    /// What the nodes sharing a database tell each other (nil on SQLite: one node).
    var cluster: (any ClusterStore)? = nil
    /// Where the state is, for the start-up banner (no secret in it).
    let description: String

    /// Opens (creating and migrating as needed) the stores of `folder` on `database` for `body`;
    /// a PostgreSQL pool lives exactly as long as `body` runs.
    static func with<T>(
        folder: DataFolder, database: DatabaseChoice, _ body: (Storage) async throws -> T
    ) async throws -> T {
        switch database {
        case .sqlite:
            return try await body(try sqlite(folder))
        case .postgres(let location, let password):
            return try await PostgresDatabase.with(location, password: password) { db in
                let store = try await PostgresStore(database: db, sealer: KEKAuditSealer(kek: folder.kek))
                // Other nodes change owners and delete accounts too: cached keys hold for 10 s.
                let keys = DataKeys(store: store, kek: folder.kek, ttl: 10)
                return try await body(
                    Storage(
                        store: store, telemetry: try await PostgresTelemetryStore(database: db, keys: keys),
                        brokerState: try await PostgresBrokerStateStore(database: db), readingKeys: keys,
                        cluster: store, description: "PostgreSQL \(location)"))
            }
        }
    }

    /// The SQLite files of `folder` (the embedded default).
    static func sqlite(_ folder: DataFolder) throws -> Storage {
        let store = try SQLiteStore(path: folder.databasePath, sealer: KEKAuditSealer(kek: folder.kek))
        let keys = DataKeys(store: store, kek: folder.kek)
        return Storage(
            store: store, telemetry: try SQLiteTelemetryStore(path: folder.telemetryPath, keys: keys),
            brokerState: try SQLiteBrokerStateStore(path: folder.brokerStatePath), readingKeys: keys,
            description: "SQLite in \(folder.url.path)")
    }
}
