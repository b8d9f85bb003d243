import Foundation
import HearthCore

/// What a running server declares about itself, written to `DATA/serving.json` (0600) once every
/// listener is up and removed when it stops: what it listens on and with which settings. `hearth
/// assess` reads it to know what to probe; the server's own `GET /api/v1/assessment` uses the same
/// value in memory.
public struct ServingRecord: Codable, Sendable, Equatable {
    public struct Listener: Codable, Sendable, Equatable {
        public enum Security: String, Codable, Sendable {
            /// TLS with the server certificate.
            case tls
            /// TLS, and the client must present a certificate from the device CA.
            case mutualTLS = "mutual-tls"
            /// Plaintext (loopback only).
            case plaintext
        }
        /// `https`, `mqtt-devices`, `metrics`, `mqtt-development`.
        public var name: String
        public var host: String
        public var port: Int
        public var security: Security

        public init(name: String, host: String, port: Int, security: Security) {
            self.name = name
            self.host = host
            self.port = port
            self.security = security
        }
    }

    public var pid: Int32
    public var startedAt: Date
    public var listeners: [Listener]
    public var hostnames: [String]
    public var storage: String
    public var sessionLifetimeSeconds: Int
    public var passwordHash: String
    public var securityContacts: [String]
    public var securityLanguages: [String]
    public var maxConnections: Int
    public var connectsPerSecond: Double
    public var publishesPerSecond: Double
    public var bytesPerSecond: Double
    public var monitoring: Bool
    public var readingsSealed: Bool
    public var kekOutsideDataFolder: Bool
    /// Hidden flags that weaken the server, for the tests of the assessment itself.
    public var testOnly: [String]

    public init(
        pid: Int32, startedAt: Date, listeners: [Listener], hostnames: [String], storage: String,
        sessionLifetimeSeconds: Int, passwordHash: String, securityContacts: [String], securityLanguages: [String],
        maxConnections: Int, connectsPerSecond: Double, publishesPerSecond: Double, bytesPerSecond: Double,
        monitoring: Bool, readingsSealed: Bool, kekOutsideDataFolder: Bool, testOnly: [String]
    ) {
        self.pid = pid
        self.startedAt = startedAt
        self.listeners = listeners
        self.hostnames = hostnames
        self.storage = storage
        self.sessionLifetimeSeconds = sessionLifetimeSeconds
        self.passwordHash = passwordHash
        self.securityContacts = securityContacts
        self.securityLanguages = securityLanguages
        self.maxConnections = maxConnections
        self.connectsPerSecond = connectsPerSecond
        self.publishesPerSecond = publishesPerSecond
        self.bytesPerSecond = bytesPerSecond
        self.monitoring = monitoring
        self.readingsSealed = readingsSealed
        self.kekOutsideDataFolder = kekOutsideDataFolder
        self.testOnly = testOnly
    }

    public func listener(_ name: String) -> Listener? { listeners.first { $0.name == name } }

    static let fileName = "serving.json"

    /// Written by the server once its listeners are up (private, atomically replaced).
    public func write(to folder: URL) throws {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let file = folder.appendingPathComponent(Self.fileName)
        let temporary = folder.appendingPathComponent(Self.fileName + ".new")
        try DataFolder.writePrivate(try encoder.encode(self), to: temporary)
        guard rename(temporary.path, file.path) == 0 else {
            throw HearthError(.internal, "cannot write \(file.path)")
        }
    }

    public static func remove(from folder: URL) {
        try? FileManager.default.removeItem(at: folder.appendingPathComponent(fileName))
    }

    /// The record of the server serving `folder`, if one is running (its process is alive).
    public static func read(from folder: URL) -> ServingRecord? {
        guard let data = FileManager.default.contents(atPath: folder.appendingPathComponent(fileName).path) else {
            return nil
        }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        guard let record = try? decoder.decode(ServingRecord.self, from: data), record.pid > 0,
            kill(record.pid, 0) == 0 || errno == EPERM
        else { return nil }
        return record
    }
}

/// What only the maker can say, in `DATA/maker-statements.json` (or `hearth assess --statements`):
/// the manufacturer's postal address for the PSTI statement of compliance (kept here, not in the
/// model, because a model is fixed once its devices exist and an address changes), and per
/// provision either how it is met (`{"met": true, "how": "…"}`) or why it does not apply
/// (`{"applies": false, "why": "…"}`, the justification 5.0-1 asks for).
public struct MakerStatements: Sendable, Equatable {
    public enum Statement: Sendable, Equatable {
        case met(how: String)
        case notApplicable(why: String)
    }

    public var addresses: [String: String] = [:]
    public var provisions: [String: Statement] = [:]

    public init(addresses: [String: String] = [:], provisions: [String: Statement] = [:]) {
        self.addresses = addresses
        self.provisions = provisions
    }

    static let textSchema = FieldKind.string(minLength: 10, maxLength: 2000)

    /// Parses the file's JSON; every provision id must be one of EN 303 645's.
    public init(json: JSONValue) throws {
        let address = ObjectSchema([FieldSchema("address", .string(minLength: 5, maxLength: 300))])
        let statement = ObjectSchema([
            FieldSchema("met", .boolean, required: false),
            FieldSchema("how", Self.textSchema, required: false),
            FieldSchema("applies", .boolean, required: false),
            FieldSchema("why", Self.textSchema, required: false),
        ])
        let o = try ObjectSchema([
            FieldSchema(
                "manufacturers", .map(values: .object(address), maxKeys: 100), required: false,
                "maker name (as in the model) → {\"address\": postal address}"),
            FieldSchema(
                "provisions", .map(values: .object(statement), maxKeys: 100), required: false,
                "provision id → {\"met\": true, \"how\": …} or {\"applies\": false, \"why\": …}"),
        ]).validate(json)
        let makers: [String: JSONValue] = o.object("manufacturers")?.members ?? [:]
        for (maker, value) in makers {
            addresses[maker] = ValidatedObject(members: value.objectMembers).string("address")
        }
        let known = Set(Provision.all.map(\.id))
        let stated: [String: JSONValue] = o.object("provisions")?.members ?? [:]
        for (id, value) in stated {
            guard known.contains(id) else {
                throw HearthError.invalid("provisions.\(id)", "not an EN 303 645 provision id (5.1-1 … 6-5)")
            }
            // Exactly one of the two forms: a statement that says both is refused, not read one way.
            let entry = ValidatedObject(members: value.objectMembers)
            let keys = Set(value.objectMembers.keys)
            if keys == ["met", "how"], entry.bool("met") == true, let how = entry.string("how") {
                provisions[id] = .met(how: how)
            } else if keys == ["applies", "why"], entry.bool("applies") == false, let why = entry.string("why") {
                provisions[id] = .notApplicable(why: why)
            } else {
                throw HearthError.invalid(
                    "provisions.\(id)", "give {\"met\": true, \"how\": \"…\"} or {\"applies\": false, \"why\": \"…\"}")
            }
        }
    }

    static let fileName = "maker-statements.json"

    /// The statements at `path` (default: the data folder's file; none there is no statement).
    public static func load(folder: URL, path: String? = nil) throws -> MakerStatements {
        let file = path ?? folder.appendingPathComponent(fileName).path
        // No file in the data folder is no statement; a file that is there but unreadable is an error.
        if path == nil, !FileManager.default.fileExists(atPath: file) { return MakerStatements() }
        guard let data = FileManager.default.contents(atPath: file) else {
            throw HearthError.invalid("statements", "cannot read \(file)")
        }
        do {
            return try MakerStatements(json: try JSONValue.parse(data))
        } catch let error as HearthError {
            throw HearthError(error.code, field: "statements", "\(file): \(error.message)")
        }
    }

    public var json: JSONValue {
        .object([
            "manufacturers": .object(addresses.mapValues { .object(["address": .string($0)]) }),
            "provisions": .object(
                provisions.mapValues {
                    switch $0 {
                    case .met(let how): ["met": true, "how": .string(how)]
                    case .notApplicable(let why): ["applies": false, "why": .string(why)]
                    }
                }),
        ])
    }
}

/// One product model as the assessment sees it: its definition and its units.
public struct ModelFacts: Sendable {
    public let model: ProductModel
    public let devices: Int
    /// The lowest and highest serial provisioned (the PSTI statement's batch).
    public let firstSerial: String?
    public let lastSerial: String?

    public init(model: ProductModel, devices: Int, firstSerial: String?, lastSerial: String?) {
        self.model = model
        self.devices = devices
        self.firstSerial = firstSerial
        self.lastSerial = lastSerial
    }

    /// Telemetry fields and commands that carry no data declaration (models made in code).
    public var undeclared: [String] {
        model.telemetry.filter { $0.declaration == nil }.map { "telemetry field \($0.name)" }
            + model.commands.filter { $0.declaration == nil }.map { "command \($0.name)" }
    }
}

/// Everything an assessment is made from: read from the deployment, then the live checks' results.
public struct AssessmentInput: Sendable {
    public var at: Date
    /// The running server's declaration; nil when none is running.
    public var serving: ServingRecord?
    public var storage: String
    public var models: [ModelFacts]
    public var statements: MakerStatements
    public var reports: Int
    public var overdueReports: Int
    public var checks: [LiveCheckResult]

    public init(
        at: Date, serving: ServingRecord?, storage: String, models: [ModelFacts], statements: MakerStatements,
        reports: Int, overdueReports: Int, checks: [LiveCheckResult]
    ) {
        self.at = at
        self.serving = serving
        self.storage = storage
        self.models = models
        self.statements = statements
        self.reports = reports
        self.overdueReports = overdueReports
        self.checks = checks
    }

    public func check(_ id: LiveCheckID) -> LiveCheckResult? { checks.first { $0.id == id } }
}

/// The checks `hearth assess` runs against the live deployment.
public enum LiveCheckID: String, Sendable, CaseIterable {
    case commonPasswords = "common-passwords"
    case listenersTLS = "listeners-tls"
    case declaredPorts = "declared-ports"
    case securityTxt = "security-txt"
    case updateRepository = "update-repository"
    case auditChain = "audit-chain"
    case supportPeriods = "support-periods"
    case firmwareCurrent = "firmware-current"

    public var title: String {
        switch self {
        case .commonPasswords: "No account can be given a listed common password"
        case .listenersTLS: "Every listener speaks only TLS 1.2 or later with the configured suites"
        case .declaredPorts: "Only the declared ports listen"
        case .securityTxt: "security.txt is valid and not expired"
        case .updateRepository: "The update repository's root and timestamp are valid and not near expiry"
        case .auditChain: "The audit chain verifies"
        case .supportPeriods: "Every model's support period is in the future, or its end was published"
        case .firmwareCurrent: "No device runs firmware the repository marks vulnerable without an offered update"
        }
    }
}

/// One live check: what it did, what it saw, whether it passed, and the fix when it did not.
public struct LiveCheckResult: Sendable {
    public let id: LiveCheckID
    public let did: String
    public let saw: [String]
    public let passed: Bool
    public let fix: String?

    public init(_ id: LiveCheckID, did: String, saw: [String], passed: Bool, fix: String? = nil) {
        self.id = id
        self.did = did
        self.saw = saw
        self.passed = passed
        self.fix = passed ? nil : fix
    }

    public var json: JSONValue {
        var o: [String: JSONValue] = [
            "id": .string(id.rawValue), "title": .string(id.title), "did": .string(did),
            "saw": .array(saw.map { .string($0) }), "passed": .bool(passed),
        ]
        if let fix { o["fix"] = .string(fix) }
        return .object(o)
    }
}

extension JSONValue {
    /// An object's members; none for any other value.
    var objectMembers: [String: JSONValue] { if case .object(let members) = self { members } else { [:] } }
}
