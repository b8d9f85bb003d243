import Foundation
import HearthCore

/// Something the platform saw one device do (Code of Practice guideline 10; EN 303 645 5.10-1).
/// The gateway and the server report these; devices send nothing extra for monitoring.
public enum Observation: Sendable, Equatable {
    /// A message the gateway accepted, and its size.
    case published(bytes: Int)
    /// A reading refused as invalid for the model (not a field the owner declined: that is the
    /// device doing as told late, counted elsewhere).
    case refusedPayload
    /// A publish or subscription outside the device's own namespace (another device's, `#`, `$SYS`).
    case refusedTopic(String)
    /// A connection with this device's certificate was admitted, from `source` (an address).
    case connected(source: String)
    /// A handshake or admission with this device's identity failed (e.g. a revoked or superseded
    /// certificate), from `source`.
    case handshakeFailed(source: String)
    /// The device reported running `version`; `released` says whether the maker ever published it.
    case firmware(version: String, released: Bool)
    /// The device's own verified boot reported an integrity failure.
    case integrityAlert(String)
    /// A command the device answered with a failure, or did not answer.
    case commandFailed
    case commandSucceeded
}

/// How bad a detection is: what the operator's list sorts by, and what quarantine acts on.
public enum Severity: String, Sendable, Equatable, Comparable, CaseIterable {
    case low, medium, high

    var rank: Int {
        switch self {
        case .low: 0
        case .medium: 1
        case .high: 2
        }
    }

    public static func < (a: Severity, b: Severity) -> Bool { a.rank < b.rank }
}

/// What a detector concluded, with the evidence an operator needs to judge it.
public struct Detection: Sendable, Equatable {
    public enum Kind: String, Sendable, Equatable, CaseIterable {
        /// Far more messages or bytes than the device's own baseline.
        case flood
        /// Many readings refused as invalid.
        case garbage
        /// Reaching outside its namespace: another device's topics, `#`, `$SYS`.
        case probe
        /// Connecting over and over.
        case churn
        /// Its identity used from two places: connections from different addresses taking turns.
        case clone
        /// Failed handshakes with its identity (a revoked or replaced certificate still in use).
        case failedHandshakes
        /// It runs firmware the maker never released.
        case unknownFirmware
        /// Its verified boot found tampered firmware.
        case integrity
        /// Commands failing one after another.
        case failingCommands
    }

    public let kind: Kind
    public let severity: Severity
    /// Counts, the window, addresses: numbers and short strings only, never a payload.
    public let evidence: [String: JSONValue]
    public let at: Date

    public init(kind: Kind, severity: Severity, evidence: [String: JSONValue], at: Date) {
        self.kind = kind
        self.severity = severity
        self.evidence = evidence
        self.at = at
    }

    /// The owner's sentence for it, in plain English.
    public var plainEnglish: String { kind.plainEnglish }
}

extension Detection.Kind {
    /// The owner's sentence for a detection of this kind, in plain English.
    public var plainEnglish: String {
        switch self {
        case .flood: "Your device sent far more messages than it usually does."
        case .garbage: "Your device sent many readings that do not make sense for its model."
        case .probe: "Your device tried to reach parts of the service that belong to other devices."
        case .churn: "Your device connected and disconnected over and over."
        case .clone: "Your device's identity was used from two places at once: it may have been copied."
        case .failedHandshakes: "Something tried to connect with an old or withdrawn key of your device."
        case .unknownFirmware: "Your device reported software its maker never released."
        case .integrity: "Your device found that its software was changed and refused to run it."
        case .failingCommands: "Commands to your device failed several times in a row."
        }
    }
}

/// Every threshold the detectors use, in one place (ARCHITECTURE, "Security monitoring"). Counts
/// are per device within `window` unless said otherwise; each kind is reported at most once per
/// `cooldown` for a device, so one incident is one alert, not a flood of them.
public struct Thresholds: Sendable, Equatable {
    /// The sliding window the counts are over.
    public var window: TimeInterval = 60
    /// A flood: more messages in a window than `floodFactor` × the device's baseline (its mean
    /// messages per window, learned over `warmUpWindows` windows) and at least `floodFloor`.
    public var floodFactor: Double = 10
    public var floodFloor: Double = 120
    /// Bytes: the same rule over bytes, with its own floor.
    public var floodBytesFloor: Double = 1_000_000
    public var warmUpWindows: Int = 5
    /// Invalid readings in a window.
    public var refusedPayloads: Double = 10
    /// Publishes or subscriptions outside its namespace in a window.
    public var refusedTopics: Double = 3
    /// Connections in `churnWindow`.
    public var connects: Double = 20
    public var churnWindow: TimeInterval = 600
    /// Connections from an address other than the previous one's, in `churnWindow`: a device that
    /// moves network does it once; two places taking turns do it again and again.
    public var sourceSwitches: Double = 3
    /// Failed handshakes with its identity in `churnWindow`.
    public var failedHandshakes: Double = 5
    /// Failed commands in a row.
    public var failingCommands: Int = 5
    public var cooldown: TimeInterval = 600

    public init() {}
}

/// Where the gateway sends what its detectors find: the server's alert service (stores, audits,
/// shows and delivers it). Called from one task in order; it may take its time.
public protocol DeviceAlertChannel: Sendable {
    func detected(_ detection: Detection, device serial: DeviceSerial) async
}
