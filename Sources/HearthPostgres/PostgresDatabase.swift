import Foundation
import HearthCore
import Logging
import NIOSSL
import PostgresNIO
import Synchronization

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
    /// How long a request waits for a connection of the pool. While the database is down (a
    /// restart, a failover) the pool keeps trying to reach it, and a request would wait with it:
    /// a commit would hold its readings unacknowledged with no word to the device, and `/readyz`
    /// would not answer. Past this the request fails as `.unavailable` (devices are told to back
    /// off, `/readyz` answers 503). What it may then take is ``answerWithin``.
    let connectWithin: Duration
    /// How long one request (``run(within:_:)``, ``transaction(serialised:within:_:)``) may take
    /// unless it says otherwise; past it, its connection is closed and it fails as `.unavailable`.
    let answerWithin: Duration

    init(
        client: PostgresClient, location: PostgresLocation, connectWithin: Duration, answerWithin: Duration,
        logger: Logger
    ) {
        self.client = client
        self.location = location
        self.connectWithin = connectWithin
        self.answerWithin = answerWithin
        self.logger = logger
    }

    /// Runs `body` with a connected pool; the pool runs beside it (structured) and closes after.
    /// Fails with a clear error when the database cannot be reached or refuses the sign-in.
    public static func with<T>(
        _ location: PostgresLocation, password: String?, maximumConnections: Int = 20,
        reachWithin: Duration = .seconds(10), connectWithin: Duration = .seconds(5),
        answerWithin: Duration = .seconds(60), logger: Logger = Logger(label: "hearth.postgres"),
        _ body: (PostgresDatabase) async throws -> T
    ) async throws -> T {
        var configuration = try location.configuration(password: password)
        configuration.options.maximumConnections = max(1, maximumConnections)
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        let database = PostgresDatabase(
            client: client, location: location, connectWithin: connectWithin, answerWithin: answerWithin,
            logger: logger)
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

    /// Statements or queries on one connection of the pool, each its own transaction, finished
    /// `within` (``answerWithin`` unless given).
    public func run<T: Sendable>(within: Duration? = nil, _ body: @escaping @Sendable (SQL) async throws -> T)
        async throws -> T
    {
        try await Self.mapping {
            try await withConnection(within: within ?? answerWithin) { [logger] connection in
                try await body(SQL(connection: connection, logger: logger))
            }
        }
    }

    /// Runs `body` with a connection of the pool. Fails as `.unavailable` when no connection is
    /// had within ``connectWithin`` (then `body` never starts), or when `body` has not finished
    /// `within` after the call: then its connection is closed and the call returns at once.
    ///
    /// Why not simply wait: a query on a connection whose server stopped does not always end
    /// (seen on PostgreSQL's fast shutdown: an INSERT in flight was neither answered nor failed,
    /// and closing its connection did not end it either). One such commit would hold the
    /// telemetry writer, and every reading behind it, for ever. So `body` runs in a task of its
    /// own (the one unstructured task in Hearth's storage), which an overdue call abandons
    /// instead of awaiting; it is cancelled with the call.
    func withConnection<T: Sendable>(
        within: Duration, _ body: @Sendable @escaping (PostgresConnection) async throws -> T
    ) async throws -> T {
        let lease = Lease()
        let outcome = Outcome<T>()
        let connectWithin = min(connectWithin, within)
        let operation = Task { [client] in
            do {
                outcome.deliver(
                    .success(
                        try await client.withConnection { connection in
                            guard lease.start(connection) else { throw CancellationError() }
                            defer { lease.finish() }
                            return try await body(connection)
                        }))
            } catch {
                outcome.deliver(.failure(error))
            }
        }
        defer { if !lease.finished { operation.cancel() } }
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await outcome.value() }
            group.addTask { [logger] in
                try await Task.sleep(for: connectWithin)
                guard !lease.expire() else { return nil }
                try await Task.sleep(for: within - connectWithin)
                if let connection = lease.overdue() {
                    logger.warning(
                        "closing a database connection that did not answer in time",
                        metadata: ["within": "\(within.components.seconds) s"])
                    let _: EventLoopFuture<Void> = connection.close()  // not awaited: it may hang too
                }
                return nil
            }
            defer { group.cancelAll() }
            while let result = try await group.next() {
                if let result { return result }
                switch lease.ending {
                case .expired:
                    throw HearthError(
                        .unavailable, "the database gave no connection within \(connectWithin.components.seconds) s")
                case .overdue:
                    throw HearthError(.unavailable, "no answer from the database within \(within.components.seconds) s")
                default: continue
                }
            }
            throw CancellationError()
        }
    }

    /// What one operation's task delivers, awaited by the caller until a deadline; the wait (not
    /// the operation) ends when the caller's task is cancelled.
    private final class Outcome<T: Sendable>: Sendable {
        private struct State {
            var result: Result<T, any Error>?
            var waiter: CheckedContinuation<T, any Error>?
            var cancelled = false
        }
        private let state = Mutex(State())

        func deliver(_ result: Result<T, any Error>) {
            let waiter = state.withLock { s in
                s.result = result
                defer { s.waiter = nil }
                return s.waiter
            }
            waiter?.resume(with: result)
        }

        func value() async throws -> T {
            try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { continuation in
                    let ready = state.withLock { s -> Result<T, any Error>? in
                        if let result = s.result { return result }
                        if s.cancelled { return .failure(CancellationError()) }
                        s.waiter = continuation
                        return nil
                    }
                    if let ready { continuation.resume(with: ready) }
                }
            } onCancel: {
                let waiter = state.withLock { s in
                    s.cancelled = true
                    defer { s.waiter = nil }
                    return s.waiter
                }
                waiter?.resume(throwing: CancellationError())
            }
        }
    }

    /// One ``withConnection(within:_:)`` call's progress; each step is taken once, under the lock.
    private final class Lease: Sendable {
        enum State {
            case waiting, expired, done, overdue
            case running(PostgresConnection)
        }
        private let state = Mutex(State.waiting)

        /// The pool gave `connection`: false if the wait had already expired (do not start).
        func start(_ connection: PostgresConnection) -> Bool {
            state.withLock { s in
                guard case .waiting = s else { return false }
                s = .running(connection)
                return true
            }
        }

        /// The body ended: false if it was overdue (its connection was closed under it).
        @discardableResult
        func finish() -> Bool {
            state.withLock { s in
                guard case .running = s else { return false }
                s = .done
                return true
            }
        }

        /// The wait for a connection is over: true if none came.
        func expire() -> Bool {
            state.withLock { s in
                guard case .waiting = s else { return false }
                s = .expired
                return true
            }
        }

        /// How the wait ended when the body did not deliver: it got no connection, or ran out of time.
        var ending: State? {
            state.withLock { s in
                switch s {
                case .expired, .overdue: s
                default: nil
                }
            }
        }

        /// The body ran to its end (nothing left to cancel).
        var finished: Bool { state.withLock { if case .done = $0 { true } else { false } } }

        /// The body ran out of time: its connection, to close.
        func overdue() -> PostgresConnection? {
            state.withLock { s in
                guard case .running(let connection) = s else { return nil }
                s = .overdue
                return connection
            }
        }
    }

    /// One transaction. `serialised`: first takes the writers' lock, so it runs alone among the
    /// serialised ones across every node (the audit chain's head is read and advanced in it).
    /// Throwing rolls everything back. It must finish `within` (``answerWithin`` unless given).
    public func transaction<T: Sendable>(
        serialised: Bool = true, within: Duration? = nil, _ body: @escaping @Sendable (SQL) async throws -> T
    ) async throws -> T {
        try await Self.mapping {
            try await withConnection(within: within ?? answerWithin) { [logger] connection in
                try await connection.withTransaction(logger: logger) { connection in
                    let sql = SQL(connection: connection, logger: logger)
                    if serialised { try await sql.execute("SELECT pg_advisory_xact_lock(?)", [Self.writersLock]) }
                    return try await body(sql)
                }
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

/// One connection of the pool (in a transaction, or each statement its own), with `?` placeholders.
public struct SQL: Sendable {
    let connection: PostgresConnection
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
        try await connection.query(q, logger: logger)
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
