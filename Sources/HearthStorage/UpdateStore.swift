import Foundation
import HearthCore

/// One signed TUF document as served: `role`, `version` and its exact bytes.
public struct TUFDocument: Sendable, Equatable {
    public let role: String
    public let version: Int
    public let bytes: [UInt8]
    public init(role: String, version: Int, bytes: [UInt8]) {
        self.role = role
        self.version = version
        self.bytes = bytes
    }
}

/// A firmware release the maker signed: one targets entry, indexed for rollouts and owners.
public struct ReleaseRecord: Sendable, Equatable {
    public let target: String
    public let model: ProductModelID
    public let version: String
    public let length: Int
    public let sha256: String
    /// The entry's `custom` object as JSON text (release notes and the rest).
    public let custom: String
    public let publishedAt: Date
    public init(
        target: String, model: ProductModelID, version: String, length: Int, sha256: String, custom: String,
        publishedAt: Date
    ) {
        self.target = target
        self.model = model
        self.version = version
        self.length = length
        self.sha256 = sha256
        self.custom = custom
        self.publishedAt = publishedAt
    }
}

public struct RolloutRecord: Sendable, Equatable {
    public let id: String
    public let target: String
    public let model: ProductModelID
    /// Percentages, comma-separated, and the threshold: the plan as created.
    public let stages: [Int]
    public let failureThreshold: Double
    public let minimumSample: Int
    public var state: String
    public var stage: Int
    public var note: String?
    public let createdAt: Date
    public var updatedAt: Date
    public init(
        id: String, target: String, model: ProductModelID, stages: [Int], failureThreshold: Double, minimumSample: Int,
        state: String, stage: Int, note: String?, createdAt: Date, updatedAt: Date
    ) {
        self.id = id
        self.target = target
        self.model = model
        self.stages = stages
        self.failureThreshold = failureThreshold
        self.minimumSample = minimumSample
        self.state = state
        self.stage = stage
        self.note = note
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }
}

/// A device's update report as received.
public struct UpdateEventRecord: Sendable, Equatable {
    public let serial: DeviceSerial
    public let at: Date
    public let phase: String
    public let version: String
    public let target: String?
    public let reason: String?
    public init(serial: DeviceSerial, at: Date, phase: String, version: String, target: String?, reason: String?) {
        self.serial = serial
        self.at = at
        self.phase = phase
        self.version = version
        self.target = target
        self.reason = reason
    }
}

/// What the update service needs from a database: the TUF repository's documents and online keys,
/// releases, rollouts, devices' update reports and support periods. The same rules as
/// ``HearthStore``: a call that returns has committed durably, one that throws changed nothing,
/// audit entries go in the same transaction. Contract: `Tests/HearthSQLiteTests/UpdateContract.swift`.
public protocol UpdateStore: Sendable {
    /// The newest document of `role`, or the given version.
    func tufDocument(_ role: String, version: Int?) async throws -> TUFDocument?
    /// Stores documents and releases together. A (role, version) that exists already is a conflict;
    /// a `root` version not exactly one above the newest, or any other not above it, is refused.
    func publish(_ documents: [TUFDocument], releases: [ReleaseRecord], audit: [AuditEntry]) async throws
    /// Online keys (snapshot, timestamp), sealed by the caller.
    func onlineKey(_ role: String) async throws -> Data?
    /// Stores an online key unless one exists; returns the stored one.
    func storeOnlineKey(_ role: String, sealed: Data, audit: AuditEntry) async throws -> Data

    func release(_ target: String) async throws -> ReleaseRecord?
    func releases(model: ProductModelID) async throws -> [ReleaseRecord]

    /// Creates a rollout; a conflict if the model has an active or paused one.
    func createRollout(_ rollout: RolloutRecord, audit: AuditEntry) async throws
    func rollout(_ id: String) async throws -> RolloutRecord?
    func rollouts(model: ProductModelID?) async throws -> [RolloutRecord]
    /// Replaces a rollout still in `fromState` at `fromStage`; false (nothing changed) if it moved meanwhile.
    func updateRollout(_ rollout: RolloutRecord, fromState: String, fromStage: Int, audit: AuditEntry) async throws
        -> Bool

    /// Records a report. Only transitions add a row: when the device's newest report says the
    /// same (phase, version, target, reason), that row's time moves to `event.at` instead, so a
    /// device repeating itself cannot grow the table and "latest since" queries still see it.
    /// Returns true if a row was added.
    @discardableResult
    func appendUpdateEvent(_ event: UpdateEventRecord) async throws -> Bool
    /// A device's reports, newest first.
    func updateEvents(_ serial: DeviceSerial, limit: Int) async throws -> [UpdateEventRecord]
    /// One device's latest report about `target` made at or after `since`.
    func latestEvent(_ serial: DeviceSerial, target: String, since: Date) async throws -> UpdateEventRecord?

    /// Moves a model's support end later. Throws `.conflict` (and appends `refusedAudit`, nothing
    /// else) if `to` is earlier than the current end; same date is a no-op.
    func extendSupport(_ model: ProductModelID, to: CalendarDate, audit: AuditEntry, refusedAudit: AuditEntry)
        async throws
    /// Every device of a model (for rollout stages).
    func devices(model: ProductModelID) async throws -> [DeviceSerial]
    /// How many devices of a model last reported each firmware version (devices that never
    /// reported are not counted): one query however large the fleet.
    func runningVersions(model: ProductModelID) async throws -> [String: Int]

    /// A rollout's running count: the device's latest outcome with the rollout's target
    /// (`succeeded` or `failed`; nil, while it is neither, removes it), under the device's bucket
    /// in the rollout (0..<10,000), so a stage's tally is one indexed count, not a read of every
    /// device's reports.
    func recordRolloutOutcome(_ rollout: String, serial: DeviceSerial, bucket: Int, outcome: String?) async throws
    /// How many devices of the rollout with a bucket below `bucket` succeeded and failed.
    func rolloutOutcomes(_ rollout: String, below bucket: Int) async throws -> (succeeded: Int, failed: Int)
}
