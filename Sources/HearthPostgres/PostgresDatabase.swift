import Foundation
import HearthCore
import Logging
import NIOSSL
import PostgresNIO

/// Where a deployment's PostgreSQL is: `postgres://USER@HOST[:PORT]/DATABASE[?sslmode=…&sslrootcert=FILE]`.
///
/// Secure by default: the connection is TLS with the server's certificate verified against the
/// system's roots (or `sslrootcert`) and its name checked (`verify-full`). `sslmode=disable` is
/// accepted only to a loopback address; `require`/`prefer` (encryption without verification) are
/// refused. A password in the address is refused: it would show in `ps` and shell history.
public struct PostgresLocation: Sendable, Equatable, CustomStringConvertible {
    public enum TLSMode: String, Sendable {
        case disable
        case verifyFull = "verify-full"
    }
    public let host: String
    public let port: Int
    public let user: String
    public let database: String
    public let tls: TLSMode
    public let rootCertificate: String?

    public static let usage =
        "expected postgres://USER@HOST[:PORT]/DATABASE[?sslmode=verify-full|disable][&sslrootcert=FILE]"

    public init(parsing text: String) throws {
        guard let url = URLComponents(string: text), url.scheme == "postgres" || url.scheme == "postgresql",
            let host = url.host, !host.isEmpty, let user = url.user, !user.isEmpty
        else { throw HearthError.invalid("database", Self.usage) }
        guard url.password == nil else {
            throw HearthError.invalid(
                "database",
                "a password in the database address would show in `ps` and shell history: put it in a file (mode 0600) and pass --database-password-file"
            )
        }
        let port = url.port ?? 5432
        guard (1...65535).contains(port) else { throw HearthError.invalid("database", "port \(port) is not 1-65535") }
        let database = String(url.path.drop { $0 == "/" })
        guard !database.isEmpty, !database.contains("/") else { throw HearthError.invalid("database", Self.usage) }
        var tls = TLSMode.verifyFull
        var root: String?
        for item in url.queryItems ?? [] {
            switch item.name {
            case "sslmode":
                guard let mode = TLSMode(rawValue: item.value ?? "") else {
                    throw HearthError.invalid(
                        "database",
                        "sslmode=\(item.value ?? "") is not offered: verify-full (the default: TLS, certificate and name checked) or disable (loopback only)"
                    )
                }
                tls = mode
            case "sslrootcert": root = item.value
            default: throw HearthError.invalid("database", "unknown parameter \(item.name): \(Self.usage)")
            }
        }
        let bare = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        if tls == .disable, !HostPort.isLoopback(bare) {
            throw HearthError.invalid(
                "database", "sslmode=disable sends data in clear: only to a loopback address (127.0.0.1, ::1)")
        }
        self.host = bare
        self.port = port
        self.user = user
        self.database = database
        self.tls = tls
        self.rootCertificate = root
    }

    /// The same server and role, another database (tests make one each; the set-up script makes the deployment's).
    public func database(_ name: String) throws -> PostgresLocation {
        var query = "sslmode=\(tls.rawValue)"
        if let rootCertificate { query += "&sslrootcert=\(rootCertificate)" }
        let shown = host.contains(":") ? "[\(host)]" : host
        return try PostgresLocation(parsing: "postgres://\(user)@\(shown):\(port)/\(name)?\(query)")
    }

    /// The address without secrets (there are none in it), for messages and the console.
    public var description: String {
        let shown = host.contains(":") ? "[\(host)]" : host
        return "postgres://\(user)@\(shown):\(port)/\(database)?sslmode=\(tls.rawValue)"
    }

    func configuration(password: String?) throws -> PostgresClient.Configuration {
        let tls: PostgresClient.Configuration.TLS
        switch self.tls {
        case .disable: tls = .disable
        case .verifyFull:
            var config = TLSConfiguration.makeClientConfiguration()
            config.minimumTLSVersion = .tlsv12
            config.certificateVerification = .fullVerification
            if let rootCertificate { config.trustRoots = .file(rootCertificate) }
            tls = .require(config)
        }
        var configuration = PostgresClient.Configuration(
            host: host, port: port, username: user, password: password, database: database, tls: tls)
        configuration.options.connectTimeout = .seconds(5)
        if self.tls == .verifyFull { configuration.options.tlsServerName = host }
        return configuration
    }
}

/// One PostgreSQL database as a pool of connections, and the small SQL layer the drivers share:
/// `?` placeholders (numbered for PostgreSQL here, so no value is ever spliced into SQL text),
/// transactions that serialise writers like SQLite's single writer, migrations under a lock.
public final class PostgresDatabase: Sendable {
    let client: PostgresClient
    let logger: Logger
    public let location: PostgresLocation

    init(client: PostgresClient, location: PostgresLocation, logger: Logger) {
        self.client = client
        self.location = location
        self.logger = logger
    }

    /// Runs `body` with a connected pool; the pool runs beside it (structured) and closes after.
    /// Fails with a clear error when the database cannot be reached or refuses the sign-in.
    public static func with<T>(
        _ location: PostgresLocation, password: String?, maximumConnections: Int = 20,
        reachWithin: Duration = .seconds(10), logger: Logger = Logger(label: "hearth.postgres"),
        _ body: (PostgresDatabase) async throws -> T
    ) async throws -> T {
        var configuration = try location.configuration(password: password)
        configuration.options.maximumConnections = max(1, maximumConnections)
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        let database = PostgresDatabase(client: client, location: location, logger: logger)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            // The pool retries a failing connection for ever; a start that cannot reach the
            // database says so within `reachWithin`.
            do {
                let reached = try await withThrowingTaskGroup(of: Bool.self) { probe in
                    probe.addTask {
                        try await database.reachable()
                        return true
                    }
                    probe.addTask {
                        try await Task.sleep(for: reachWithin)
                        return false
                    }
                    defer { probe.cancelAll() }
                    return try await probe.next() ?? false
                }
                guard reached else {
                    throw HearthError(.unavailable, "no answer within \(reachWithin.components.seconds) s")
                }
            } catch let error as HearthError {
                throw HearthError(.unavailable, "cannot use the database \(location): \(error.message)")
            } catch {
                throw HearthError(.unavailable, "cannot use the database \(location): \(Self.explain(error))")
            }
            return try await body(database)
        }
    }

    /// A short reason for a failure, without the query text or its values.
    static func explain(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] { return message }
            if let underlying = error.underlying { return String(describing: underlying) }
            return "\(error.code)"
        }
        return String(describing: error)
    }

    func reachable() async throws {
        _ = try await client.query("SELECT 1", logger: logger).collect()
    }

    /// A statement or query on any connection of the pool (its own transaction).
    public func run<T: Sendable>(_ body: (SQL) async throws -> T) async throws -> T {
        try await Self.mapping { try await body(SQL(target: .client(client), logger: logger)) }
    }

    /// One transaction. `serialised`: first takes the writers' lock, so it runs alone among the
    /// serialised ones across every node (the audit chain's head is read and advanced in it).
    /// Throwing rolls everything back.
    public func transaction<T: Sendable>(serialised: Bool = true, _ body: @Sendable (SQL) async throws -> T)
        async throws -> T
    {
        try await Self.mapping {
            try await client.withTransaction(logger: logger) { connection in
                let sql = SQL(target: .connection(connection), logger: logger)
                if serialised { try await sql.execute("SELECT pg_advisory_xact_lock(?)", [Self.writersLock]) }
                return try await body(sql)
            }
        }
    }

    static let writersLock: Int64 = 0x4845_4152_5448_0001
    static let migrationsLock: Int64 = 0x4845_4152_5448_0002

    /// Turns a unique-key violation into `.conflict` (as the SQLite driver does) and any other
    /// database failure into `.unavailable` with the server's reason; Hearth's own errors pass.
    static func mapping<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as PostgresTransactionError {
            if let closure = error.closureError { throw try translate(closure) }
            throw try translate(error.beginError ?? error.commitError ?? error.rollbackError ?? error)
        } catch {
            throw try translate(error)
        }
    }

    static func translate(_ error: any Error) throws -> any Error {
        guard let error = error as? PSQLError else { return error }
        if error.serverInfo?[.sqlState] == "23505" { return HearthError(.conflict, "already exists") }
        return HearthError(.unavailable, "the database failed: \(explain(error))")
    }

    /// Applies the named migrations not applied yet, in order, in one transaction under a lock, so
    /// nodes starting together migrate once. Names are never edited once landed.
    public func migrate(_ migrations: [(name: String, statements: [String])]) async throws {
        try await transaction(serialised: false) { sql in
            try await sql.execute("SELECT pg_advisory_xact_lock(?)", [Self.migrationsLock])
            try await sql.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)")
            let applied = Set(try await sql.rows("SELECT name FROM schema_migrations").map { try $0.string("name") })
            for migration in migrations where !applied.contains(migration.name) {
                for statement in migration.statements { try await sql.execute(statement) }
                try await sql.execute(
                    "INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)",
                    [migration.name, Int64(Date().timeIntervalSince1970)])
            }
        }
    }
}

/// A value bound to a `?` placeholder.
public protocol SQLValue: Sendable {
    func bind(_ bindings: inout PostgresBindings)
}

extension String: SQLValue { public func bind(_ b: inout PostgresBindings) { b.append(self) } }
extension Int: SQLValue { public func bind(_ b: inout PostgresBindings) { b.append(Int64(self)) } }
extension Int64: SQLValue { public func bind(_ b: inout PostgresBindings) { b.append(self) } }
extension Double: SQLValue { public func bind(_ b: inout PostgresBindings) { b.append(self) } }
extension Bool: SQLValue { public func bind(_ b: inout PostgresBindings) { b.append(self) } }
extension Data: SQLValue { public func bind(_ b: inout PostgresBindings) { b.append(ByteBuffer(bytes: self)) } }
/// A text array as one value, for `= ANY(?)`.
public struct TextArray: SQLValue {
    public let values: [String]
    public init(_ values: [String]) { self.values = values }
    public func bind(_ b: inout PostgresBindings) { b.append(values) }
}
extension Optional: SQLValue where Wrapped: SQLValue {
    public func bind(_ b: inout PostgresBindings) {
        if let value = self { value.bind(&b) } else { b.appendNull() }
    }
}

/// A connection (in a transaction) or the pool, with `?` placeholders.
public struct SQL: Sendable {
    enum Target: Sendable {
        case client(PostgresClient)
        case connection(PostgresConnection)
    }
    let target: Target
    let logger: Logger

    /// `?` → `$1, $2, …` outside quoted text.
    static func numbered(_ sql: String) -> String {
        var out = ""
        out.reserveCapacity(sql.utf8.count + 16)
        var n = 0
        var quoted = false
        for c in sql {
            if c == "'" { quoted.toggle() }
            if c == "?", !quoted {
                n += 1
                out += "$\(n)"
            } else {
                out.append(c)
            }
        }
        return out
    }

    func query(_ sql: String, _ values: [any SQLValue]) -> PostgresQuery {
        var bindings = PostgresBindings(capacity: values.count)
        for v in values { v.bind(&bindings) }
        return PostgresQuery(unsafeSQL: Self.numbered(sql), binds: bindings)
    }

    func send(_ q: PostgresQuery) async throws -> PostgresRowSequence {
        switch target {
        case .client(let client): try await client.query(q, logger: logger)
        case .connection(let connection): try await connection.query(q, logger: logger)
        }
    }

    public func rows(_ sql: String, _ values: [any SQLValue] = []) async throws -> [SQLRow] {
        try await send(query(sql, values)).collect().map { SQLRow(cells: $0.makeRandomAccess()) }
    }

    public func row(_ sql: String, _ values: [any SQLValue] = []) async throws -> SQLRow? {
        try await rows(sql, values).first
    }

    public func execute(_ sql: String, _ values: [any SQLValue] = []) async throws {
        _ = try await send(query(sql, values)).collect()
    }

    /// Runs an INSERT, UPDATE or DELETE and returns how many rows it changed.
    public func changes(_ sql: String, _ values: [any SQLValue] = []) async throws -> Int {
        try await rows(sql + " RETURNING 1", values).count
    }

    public func int(_ sql: String, _ values: [any SQLValue] = []) async throws -> Int {
        guard let row = try await row(sql, values) else { return 0 }
        return try row.cells[0].decode(Int?.self) ?? 0
    }
}

/// One result row, read by column name.
public struct SQLRow: @unchecked Sendable {
    let cells: PostgresRandomAccessRow

    public func string(_ c: String) throws -> String { try cells[c].decode(String.self) }
    public func optionalString(_ c: String) throws -> String? { try cells[c].decode(String?.self) }
    public func int64(_ c: String) throws -> Int64 { try cells[c].decode(Int64.self) }
    public func optionalInt64(_ c: String) throws -> Int64? { try cells[c].decode(Int64?.self) }
    public func int(_ c: String) throws -> Int { try cells[c].decode(Int.self) }
    public func double(_ c: String) throws -> Double { try cells[c].decode(Double.self) }
    public func bool(_ c: String) throws -> Bool { try cells[c].decode(Bool.self) }
    public func data(_ c: String) throws -> Data { try cells[c].decode(Data.self) }
    public func optionalData(_ c: String) throws -> Data? { try cells[c].decode(Data?.self) }
    public func date(_ c: String) throws -> Date { HearthPostgres.date(try int64(c)) }
    public func optionalDate(_ c: String) throws -> Date? { try optionalInt64(c).map(HearthPostgres.date) }
}

/// Milliseconds since 1970, clamped to ±2^53 so that no date (however far off) traps the conversion.
func millis(_ date: Date) -> Int64 {
    let ms = (date.timeIntervalSince1970 * 1000).rounded()
    guard ms.isFinite else { return 0 }
    return Int64(min(max(ms, -9_007_199_254_740_992), 9_007_199_254_740_992))
}
func date(_ millis: Int64) -> Date { Date(timeIntervalSince1970: Double(millis) / 1000) }
