import Foundation

/// One validated reading from a device, as it is stored.
///
/// On the wire a device publishes `{"seq": N, "at": MS?, "values": {…}}` to
/// `devices/SERIAL/telemetry`: `seq` is the device's own counter (it never repeats for one device,
/// so a redelivered or replayed reading is stored once), `at` the device's clock in milliseconds
/// since 1970 (optional: cheap devices have no clock), and `values` the fields of the product
/// model's telemetry schema. A device that had to drop readings from its full offline queue says
/// how many in `"dropped": N` on the next reading it sends (Code of Practice guideline 9).
public struct TelemetryReading: Sendable, Equatable {
    public let serial: DeviceSerial
    public let sequence: Int64
    public let deviceTime: Date?
    public let receivedAt: Date
    /// The validated `values` object.
    public let values: [String: JSONValue]
    /// Readings the device dropped from its offline queue since its previous report.
    public let droppedBefore: Int

    public init(
        serial: DeviceSerial, sequence: Int64, deviceTime: Date?, receivedAt: Date, values: [String: JSONValue],
        droppedBefore: Int = 0
    ) {
        self.serial = serial
        self.sequence = sequence
        self.deviceTime = deviceTime
        self.receivedAt = receivedAt
        self.values = values
        self.droppedBefore = droppedBefore
    }
}

/// Why a telemetry payload was refused. Each kind is counted per device for security monitoring.
public enum TelemetryRejection: String, Sendable, CaseIterable, Codable {
    case malformed = "malformed"
    case oversize = "oversize"
    case wrongType = "wrong_type"
    case outOfRange = "out_of_range"
    case missingField = "missing_field"
    case unknownField = "unknown_field"
    /// A field whose purpose the device's owner has not agreed to (``DevicePolicy``).
    case declined = "declined"
}

/// A refused payload: the kind, the field (if one is to blame) and a message for logs and the
/// MQTT 5.0 reason string. Never contains the payload itself.
public struct TelemetryProblem: Error, Sendable, Equatable {
    public let kind: TelemetryRejection
    public let field: String?
    public let message: String

    public init(_ kind: TelemetryRejection, field: String? = nil, _ message: String) {
        self.kind = kind
        self.field = field
        self.message = message
    }
}

/// Checks telemetry payloads against a product model's telemetry schema (Code of Practice
/// guideline 13). Pure: the gateway calls it for every PUBLISH on a device's telemetry topic.
public struct TelemetryValidator: Sendable {
    public let fields: [DataField]
    public let maximumPayloadBytes: Int
    /// 2^53: the largest counter a JSON number carries exactly.
    public static let maximumSequence: Double = 9_007_199_254_740_991
    /// The most drops one reading may report (keeps the per-device sum far from overflow).
    public static let maximumDropped: Double = 1_000_000_000

    public init(model: ProductModel, maximumPayloadBytes: Int = 4096) {
        fields = model.telemetry
        self.maximumPayloadBytes = maximumPayloadBytes
    }

    public func validate(
        _ payload: some Collection<UInt8>, serial: DeviceSerial, receivedAt: Date, policy: DevicePolicy = .none
    ) throws(TelemetryProblem) -> TelemetryReading {
        guard payload.count <= maximumPayloadBytes else {
            throw TelemetryProblem(.oversize, "the payload is \(payload.count) bytes; at most \(maximumPayloadBytes)")
        }
        guard let json = try? JSONValue.parse(payload), case .object(let envelope) = json else {
            throw TelemetryProblem(
                .malformed, "expected a UTF-8 JSON object {\"seq\", \"at\"?, \"dropped\"?, \"values\"}")
        }
        if let unknown = envelope.keys.sorted().first(where: { !["seq", "at", "dropped", "values"].contains($0) }) {
            throw TelemetryProblem(.unknownField, field: unknown, "'\(unknown)' is not part of a reading")
        }
        let sequence = try Self.whole(envelope["seq"], field: "seq", required: true)!
        let at = try Self.whole(envelope["at"], field: "at", required: false)
        let dropped = try Self.whole(envelope["dropped"], field: "dropped", required: false) ?? 0
        guard dropped <= Self.maximumDropped else {
            throw TelemetryProblem(
                .outOfRange, field: "dropped", "'dropped' must be between 0 and \(Int(Self.maximumDropped))")
        }
        guard let valuesJSON = envelope["values"] else {
            throw TelemetryProblem(.missingField, field: "values", "'values' is required")
        }
        guard case .object(let values) = valuesJSON else {
            throw TelemetryProblem(.wrongType, field: "values", "'values' must be an object")
        }
        try check(values)
        if !policy.withheld.isEmpty,
            let (field, purpose) = policy.withheld.sorted(by: { $0.key < $1.key }).first(where: {
                values[$0.key].map { $0 != .null } ?? false
            })
        {
            throw TelemetryProblem(
                .declined, field: "values.\(field)",
                "'\(field)' is not collected: the owner has not agreed to its purpose '\(purpose)'")
        }
        return TelemetryReading(
            serial: serial, sequence: Int64(sequence), deviceTime: at.map { Date(timeIntervalSince1970: $0 / 1000) },
            receivedAt: receivedAt, values: values, droppedBefore: Int(dropped))
    }

    /// Checks a `values` object: every declared field of the right type and range, required ones
    /// present, nothing else.
    public func check(_ values: [String: JSONValue]) throws(TelemetryProblem) {
        let known = Set(fields.map(\.name))
        if let unknown = values.keys.sorted().first(where: { !known.contains($0) }) {
            throw TelemetryProblem(
                .unknownField, field: "values.\(unknown)", "'\(unknown)' is not a telemetry field of this model")
        }
        for field in fields {
            let path = "values.\(field.name)"
            guard let value = values[field.name], value != .null else {
                if field.required { throw TelemetryProblem(.missingField, field: path, "'\(field.name)' is required") }
                continue
            }
            try Self.check(value, against: field, path: path)
        }
    }

    /// One value against one declared field; shared by telemetry and command parameters.
    public static func check(_ value: JSONValue, against field: DataField, path: String) throws(TelemetryProblem) {
        switch (field.type, value) {
        case (.number(let min, let max), .number(let d)):
            guard d.isFinite, d >= min, d <= max else {
                throw TelemetryProblem(.outOfRange, field: path, "must be between \(min) and \(max)")
            }
        case (.integer(let min, let max), .number(let d)):
            guard d.rounded() == d else { throw TelemetryProblem(.wrongType, field: path, "expected a whole number") }
            guard d >= Double(min), d <= Double(max) else {
                throw TelemetryProblem(.outOfRange, field: path, "must be between \(min) and \(max)")
            }
        case (.boolean, .bool):
            return
        case (.enumeration(let options), .string(let s)):
            guard options.contains(s) else {
                throw TelemetryProblem(.outOfRange, field: path, "must be one of: \(options.joined(separator: ", "))")
            }
        default:
            throw TelemetryProblem(.wrongType, field: path, "expected \(field.kind.typeName), got \(value.typeName)")
        }
    }

    static func whole(_ value: JSONValue?, field: String, required: Bool) throws(TelemetryProblem) -> Double? {
        guard let value, value != .null else {
            if required { throw TelemetryProblem(.missingField, field: field, "'\(field)' is required") }
            return nil
        }
        guard case .number(let d) = value, d.rounded() == d else {
            throw TelemetryProblem(.wrongType, field: field, "'\(field)' must be a whole number")
        }
        guard d >= 0, d <= maximumSequence else {
            throw TelemetryProblem(.outOfRange, field: field, "'\(field)' must be between 0 and 2^53-1")
        }
        return d
    }
}

// MARK: Commands

/// A command on its way to a device (`devices/SERIAL/commands/NAME`, QoS 1):
/// `{"id": "…", "parameters": {…}}`. The device answers on `devices/SERIAL/commands/NAME/result`
/// with `{"id": "…", "status": "ok"|"refused"|"failed", "detail"?: "…"}`; MQTT 5.0 devices also
/// get Response Topic and Correlation Data, and the id travels in the payload for 3.1.1 devices.
public enum CommandMessage {
    public static let resultSchema = ObjectSchema([
        FieldSchema("id", .string(maxLength: 64)),
        FieldSchema("status", .oneOf(["ok", "refused", "failed"])),
        FieldSchema("detail", .string(maxLength: 256), required: false),
    ])

    /// Checks an owner's (or the device's own copy of a) command against the model: a known name,
    /// declared parameters of the right type and range, required ones present, nothing else.
    public static func validate(_ name: String, parameters: [String: JSONValue], model: ProductModel)
        throws(TelemetryProblem) -> CommandSpec
    {
        guard let spec = model.commands.first(where: { $0.name == name }) else {
            throw TelemetryProblem(
                .unknownField, field: "name", "\(model.id.rawValue) has no command '\(name.prefix(64))'")
        }
        let known = Set(spec.parameters.map(\.name))
        if let unknown = parameters.keys.sorted().first(where: { !known.contains($0) }) {
            throw TelemetryProblem(
                .unknownField, field: "parameters.\(unknown.prefix(64))",
                "'\(unknown.prefix(64))' is not a parameter of \(name)")
        }
        for field in spec.parameters {
            let path = "parameters.\(field.name)"
            guard let value = parameters[field.name], value != .null else {
                if field.required { throw TelemetryProblem(.missingField, field: path, "'\(field.name)' is required") }
                continue
            }
            try TelemetryValidator.check(value, against: field, path: path)
        }
        return spec
    }
}

/// What became of a command sent to a device.
public enum CommandOutcome: Sendable, Equatable {
    /// The device answered: `ok`, `refused` (it did nothing) or `failed`.
    case answered(status: String, detail: String?)
    /// The device has no live connection.
    case offline
    /// No answer within the timeout.
    case timedOut
}

/// Delivers commands to devices and waits for their answer. The gateway implements it; the HTTPS
/// API uses it. Parameters are already validated against the model.
public protocol DeviceCommandChannel: Sendable {
    func send(command: String, parameters: [String: JSONValue], to serial: DeviceSerial, timeout: Duration) async
        -> CommandOutcome
}

/// Takes a device's update report (`devices/S/update`) and answers it (`devices/S/update/offer`).
/// The server's update service implements it; the gateway calls it. Throws on a malformed report.
public protocol DeviceUpdateChannel: Sendable {
    func received(report payload: [UInt8], from serial: DeviceSerial, model: ProductModelID) async throws -> [UInt8]
}

/// Hears that a device was reset to factory state (`devices/S/reset`, payload `{"reset": ID}`
/// with a random ID per reset): the server ends its owner's claim, once per ID, so a message sent
/// again after a lost acknowledgement cannot end a later owner's claim. The server implements it;
/// the gateway acknowledges after it returns. Throws on a malformed message.
public protocol DeviceResetChannel: Sendable {
    func deviceReset(_ payload: [UInt8], from serial: DeviceSerial) async throws
}

/// Re-keying: issues a certificate for a device's new key (`devices/S/csr`, payload
/// `{"id": ID, "csr": PEM}`); the answer, `{"id": ID, "certificate": PEM chain}`, goes to
/// `devices/S/certificate`. Until the device connects with it, its old certificate still works.
/// The server implements it; the gateway calls it. Throws on a malformed or unacceptable request.
public protocol DeviceCertificateChannel: Sendable {
    func certificateRequested(_ payload: [UInt8], from serial: DeviceSerial, model: ProductModel) async throws
        -> [UInt8]
}

/// Asks a device to make a new key (`devices/S/rekey`, payload `{"id": ID}`), delivered when it
/// is next connected. The gateway implements it.
public protocol DeviceRekeying: Sendable {
    func requestRekey(_ serial: DeviceSerial, id: String) async
}

/// Tells the gateway a device was put in quarantine (`reason`) or released from it (nil): from its
/// next message a quarantined device may only report on and fetch updates, re-key and reset.
/// The gateway implements it.
public protocol DeviceQuarantining: Sendable {
    func quarantineChanged(_ serial: DeviceSerial, reason: String?) async
}

/// Hears which devices this node holds a connection to (for the nodes sharing a database). The
/// gateway calls it, off its event loops; `since` tells one connection of a device from the next.
public protocol ConnectionRecorder: Sendable {
    func connected(_ serial: DeviceSerial, since: Date) async
    func disconnected(_ serial: DeviceSerial, since: Date) async
}

/// Moves a device's MQTT session between the nodes sharing a database, so that one node at a time
/// keeps it in memory (its keeper). The cluster link implements it; the gateway asks before a
/// device's connection, or a message queued for its session, uses the session.
public protocol SessionHandoff: Sendable {
    /// Makes this node the session's keeper. Returns once the node that kept it, if another and
    /// alive, has written the session to the store and let it go (or after a deadline): true if
    /// the stored session is the one to use now, false if this node kept it already.
    func handOver(_ serial: DeviceSerial) async throws -> Bool
}

/// Lets go of a device's session this node keeps, because another node keeps it from now: its
/// live connection here ends, and the session is written to the store and forgotten here. The
/// gateway implements it.
public protocol SessionReleasing: Sendable {
    func release(_ serial: DeviceSerial) async
}

/// Ends a device's live connection (after its certificate is revoked).
public protocol DeviceDisconnecting: Sendable {
    func disconnect(_ serial: DeviceSerial, reason: String) async
}

/// Tells the gateway what a device may send now: its live connection, and the retained
/// `devices/S/policy` message the device SDK follows. The gateway implements it.
public protocol DevicePolicyChannel: Sendable {
    func policyChanged(_ serial: DeviceSerial, _ policy: DevicePolicy) async
}

/// Which devices are connected to the gateway now (online on the owner's and operator's pages).
public protocol DevicePresence: Sendable {
    func connected(_ serials: [DeviceSerial]) async -> Set<DeviceSerial>
    /// The devices connected now, newest first (at most `limit`), and how many each node holds.
    func connections(limit: Int) async -> LiveConnections
}

/// Who is connected where, for the operator console.
public struct LiveConnections: Sendable, Equatable {
    public struct Connection: Sendable, Equatable {
        public let serial: DeviceSerial
        /// The node holding the connection (see `Node.id`); nil for this process's own gateway
        /// when it runs alone.
        public let node: String?
        public let since: Date
        public init(serial: DeviceSerial, node: String?, since: Date) {
            self.serial = serial
            self.node = node
            self.since = since
        }
    }
    /// The newest connections.
    public var newest: [Connection]
    /// Connections per node (the key nil for a gateway that runs alone).
    public var perNode: [String?: Int]
    public init(newest: [Connection] = [], perNode: [String?: Int] = [:]) {
        self.newest = newest
        self.perNode = perNode
    }
}

// MARK: Rate limits

/// A token bucket with an injected clock: `rate` tokens per second, at most `burst` saved up.
public struct TokenBucket: Sendable, Equatable {
    public let rate: Double
    public let burst: Double
    public private(set) var tokens: Double
    private var last: Date

    public init(rate: Double, burst: Double, now: Date) {
        self.rate = rate
        self.burst = burst
        tokens = burst
        last = now
    }

    /// Takes `cost` tokens if there are enough; false (taking none) otherwise.
    public mutating func take(_ cost: Double = 1, now: Date) -> Bool {
        let elapsed = max(0, now.timeIntervalSince(last))
        tokens = min(burst, tokens + elapsed * rate)
        last = now
        guard tokens >= cost else { return false }
        tokens -= cost
        return true
    }

    /// Seconds until `cost` tokens will be there.
    public func wait(for cost: Double = 1) -> TimeInterval {
        tokens >= cost ? 0 : (cost - tokens) / rate
    }
}
