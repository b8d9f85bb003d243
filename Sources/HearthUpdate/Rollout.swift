import Crypto
import Foundation
import HearthCore

/// What a device says about an update, in the order it happens. The last four end an attempt.
public enum UpdatePhase: String, Sendable, CaseIterable {
    case idle, downloading, verifying, installing, rebooting, succeeded, failed
    case rolledBack = "rolled_back"
    /// The device found its active slot tampered with and booted the other one.
    case fellBack = "fell_back"
    /// No slot verified: the device stopped and only raised this alert.
    case integrityFailure = "integrity_failure"

    public var finished: Bool { self == .succeeded || self == .failed || self == .rolledBack }
    public var failure: Bool { self == .failed || self == .rolledBack }
    public var alert: Bool { self == .fellBack || self == .integrityFailure }

    public var plainEnglish: String {
        switch self {
        case .idle: "Up to date"
        case .downloading: "Downloading an update (the device keeps working)"
        case .verifying: "Checking the update's signatures"
        case .installing: "Installing the update (the device keeps working)"
        case .rebooting: "Restarting into the new version"
        case .succeeded: "Updated"
        case .failed: "The update failed; the device still runs its previous version"
        case .rolledBack: "The new version did not start properly; the device went back to its previous version"
        case .fellBack:
            "Security alert: the device's software was changed without authorisation; it started its other, verified copy"
        case .integrityFailure:
            "Security alert: no verified software is left on the device; it has stopped and needs service"
        }
    }
}

/// A device's update report: `{"phase", "version", "target"?, "reason"?}` on `devices/S/update`.
public struct UpdateReport: Sendable, Equatable {
    public let phase: UpdatePhase
    public let version: String
    public let target: String?
    public let reason: String?

    public init(phase: UpdatePhase, version: String, target: String? = nil, reason: String? = nil) {
        self.phase = phase
        self.version = version
        self.target = target
        self.reason = reason.map { String($0.prefix(300)) }
    }

    public static let schema = ObjectSchema([
        FieldSchema("phase", .oneOf(UpdatePhase.allCases.map(\.rawValue))),
        FieldSchema("version", .string(minLength: 5, maxLength: 20), "the running firmware version"),
        FieldSchema("target", .string(maxLength: 128), required: false),
        FieldSchema("reason", .string(maxLength: 300), required: false),
    ])

    public init(payload: [UInt8]) throws {
        guard payload.count <= 1024 else { throw HearthError(.payloadTooLarge, "an update report is at most 1 KiB") }
        let o = try Self.schema.validate(try JSONValue.parse(payload))
        _ = try FirmwareVersion(o.string("version")!)
        self.init(
            phase: UpdatePhase(rawValue: o.string("phase")!)!, version: o.string("version")!,
            target: o.string("target"), reason: o.string("reason"))
    }

    public var payload: [UInt8] {
        var o: [String: JSONValue] = ["phase": .string(phase.rawValue), "version": .string(version)]
        if let target { o["target"] = .string(target) }
        if let reason { o["reason"] = .string(reason) }
        return Array(JSONValue.object(o).text.utf8)
    }
}

/// The server's answer to a report, on `devices/S/update/offer`: the support period, and the
/// target to install if the device's rollout stage has reached it. The offer is only a hint: the
/// device installs nothing its TUF metadata does not vouch for.
public struct UpdateOffer: Sendable, Equatable {
    public let supportEnds: CalendarDate
    public let supportEnded: Bool
    public let target: String?

    public init(supportEnds: CalendarDate, supportEnded: Bool, target: String?) {
        self.supportEnds = supportEnds
        self.supportEnded = supportEnded
        self.target = target
    }

    public var payload: [UInt8] {
        var o: [String: JSONValue] = [
            "support_ends": .string(supportEnds.description), "support_ended": .bool(supportEnded),
            "support_text": .string(
                supportEnded
                    ? "Security updates for this product ended on \(supportEnds.plainEnglish)."
                    : "Security updates until \(supportEnds.plainEnglish)."),
        ]
        if let target { o["target"] = .string(target) }
        return Array(JSONValue.object(o).text.utf8)
    }

    public init(payload: [UInt8]) throws {
        guard payload.count <= 1024, case .object(let o)? = try? JSONValue.parse(payload),
            case .string(let ends)? = o["support_ends"], let date = CalendarDate(ends),
            case .bool(let ended)? = o["support_ended"]
        else { throw HearthError.invalid("offer", "not an update offer") }
        var target: String?
        if case .string(let t)? = o["target"] {
            guard t.utf8.count <= 128 else { throw HearthError.invalid("target", "too long") }
            target = t
        }
        self.init(supportEnds: date, supportEnded: ended, target: target)
    }
}

/// A staged rollout of one release to a product model's devices: the share of devices per stage,
/// and the failure rate that pauses it by itself.
public struct RolloutPlan: Sendable, Equatable {
    /// Percent of the model's devices at each stage, rising, ending at 100.
    public let stages: [Int]
    /// Failures (failed or rolled back) over finished attempts above which the rollout pauses.
    public let failureThreshold: Double
    /// Finished attempts needed before the threshold is applied (one early failure is not a trend).
    public let minimumSample: Int

    /// 1 % → 10 % → 50 % → 100 %, pausing when more than 20 % of at least 3 attempts failed.
    public static let standard = RolloutPlan(valid: [1, 10, 50, 100], failureThreshold: 0.2, minimumSample: 3)

    private init(valid stages: [Int], failureThreshold: Double, minimumSample: Int) {
        self.stages = stages
        self.failureThreshold = failureThreshold
        self.minimumSample = minimumSample
    }

    public init(stages: [Int], failureThreshold: Double, minimumSample: Int) throws {
        guard (1...10).contains(stages.count), stages.last == 100, stages.allSatisfy({ (1...100).contains($0) }),
            zip(stages, stages.dropFirst()).allSatisfy({ $0 < $1 })
        else {
            throw HearthError.invalid(
                "stages", "1 to 10 rising percentages between 1 and 100, ending at 100 (e.g. 1,10,50,100)")
        }
        guard failureThreshold > 0, failureThreshold < 1 else {
            throw HearthError.invalid("failure-threshold", "a fraction between 0 and 1, e.g. 0.2")
        }
        guard (1...10_000).contains(minimumSample) else {
            throw HearthError.invalid("minimum-sample", "between 1 and 10000")
        }
        self.init(valid: stages, failureThreshold: failureThreshold, minimumSample: minimumSample)
    }

    /// A device's place in a rollout, 0..<10000, from a hash of the rollout and the serial: stable
    /// (a device stays in its stage), spread evenly, and different per rollout (the same devices
    /// are not always first).
    public static func bucket(serial: DeviceSerial, rollout: String) -> Int {
        let digest = Array(SHA256.hash(data: Array("\(rollout)/\(serial.rawValue)".utf8)))
        let value = digest.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        return Int(value % 10_000)
    }

    public func includes(serial: DeviceSerial, rollout: String, stage: Int) -> Bool {
        Self.bucket(serial: serial, rollout: rollout) < stages[min(stage, stages.count - 1)] * 100
    }
}

public enum RolloutState: String, Sendable, CaseIterable {
    case active, paused, aborted, completed
}

/// How the devices of a rollout's current stage are doing.
public struct RolloutTally: Sendable, Equatable {
    public var members = 0, succeeded = 0, failed = 0
    public init(members: Int = 0, succeeded: Int = 0, failed: Int = 0) {
        self.members = members
        self.succeeded = succeeded
        self.failed = failed
    }
}

/// What a rollout does next, given its tally: a pure decision, so the policy is tested without devices.
public enum RolloutDecision: Sendable, Equatable {
    case none
    case pause(String)
    case advance(to: Int)
    case complete

    public static func decide(plan: RolloutPlan, state: RolloutState, stage: Int, tally: RolloutTally)
        -> RolloutDecision
    {
        guard state == .active else { return .none }
        let finished = tally.succeeded + tally.failed
        if finished >= plan.minimumSample, Double(tally.failed) / Double(finished) > plan.failureThreshold {
            return .pause(
                "\(tally.failed) of \(finished) devices failed to update (over \(Int(plan.failureThreshold * 100))%); paused automatically"
            )
        }
        // Every member finished (an empty stage, e.g. 1% of a small fleet, has nothing to wait for).
        guard finished >= tally.members else { return .none }
        return stage + 1 < plan.stages.count ? .advance(to: stage + 1) : .complete
    }
}
