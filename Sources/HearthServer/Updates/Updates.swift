import Foundation
import HearthCore
import HearthCrypto
import HearthMonitor
import HearthStorage
import HearthUpdate
import Logging
import ServiceLifecycle
import Synchronization

/// Rollouts, devices' update reports and support periods (Code of Practice guideline 3), over the
/// TUF repository. Devices report on `devices/S/update`; the gateway hands each report here and
/// sends the answer (``UpdateOffer``) back on `devices/S/update/offer`.
public final class Updates: Sendable, DeviceUpdateChannel {
    public let repository: UpdateRepository
    var store: any HearthStore & UpdateStore { repository.store }
    let time: any TimeSource

    /// Reports per device: a burst of 20 (a whole update's phases several times over), then one
    /// every 30 s. More are refused (PUBACK 0x97) and counted, and change nothing.
    public static let reportRate = (burst: 20.0, perSecond: 1.0 / 30)
    private let reportBuckets = Mutex<[DeviceSerial: TokenBucket]>([:])
    private let refusedReports = Mutex(0)
    /// How many devices each rollout's current stage holds: counted once per stage (and again
    /// after 10 minutes, for devices provisioned meanwhile), not at every report.
    private let members = Mutex<[String: (stage: Int, count: Int, at: Date)]>([:])
    /// Reports refused for coming too fast, since the start.
    public var reportsRateLimited: Int { refusedReports.withLock { $0 } }

    /// Where what reports reveal goes (the gateway's detectors): firmware never released, a
    /// device's own integrity alert.
    private let observer = Mutex<(@Sendable (DeviceSerial, Observation) -> Void)?>(nil)

    public init(repository: UpdateRepository, time: any TimeSource = SystemTimeSource()) {
        self.repository = repository
        self.time = time
    }

    public func attach(observer: @escaping @Sendable (DeviceSerial, Observation) -> Void) {
        self.observer.withLock { $0 = observer }
    }

    /// What a report tells the detectors. A device's integrity alert (it found its software
    /// tampered with) goes as it is. A version counts as never released when it is not a release
    /// of the model and is newer than all of them: an older unknown version is what a device left
    /// the factory with, not a sign of tampering, so it never raises an alert.
    func observe(_ report: UpdateReport, from serial: DeviceSerial, model: ProductModelID) async throws {
        guard let observe = observer.withLock({ $0 }) else { return }
        if report.phase.alert {
            observe(serial, .integrityAlert("\(report.phase.rawValue): \(report.reason ?? "")"))
            return
        }
        let releases = try await store.releases(model: model)
        guard !releases.isEmpty, !releases.contains(where: { $0.version == report.version }) else { return }
        let newest = releases.compactMap { try? FirmwareVersion($0.version) }.max()
        if let running = try? FirmwareVersion(report.version), let newest, running < newest { return }
        observe(serial, .firmware(version: report.version, released: false))
    }

    /// Takes one report from `serial`'s allowance; false (and counted) when it is spent.
    func allowReport(from serial: DeviceSerial, now: Date) -> Bool {
        let allowed = reportBuckets.withLock { buckets in
            // Bounded: a full table drops the buckets that have refilled (they are as new).
            if buckets[serial] == nil, buckets.count >= 100_000 {
                buckets = buckets.filter {
                    var b = $0.value
                    return !b.take(Self.reportRate.burst, now: now)
                }
            }
            return buckets[
                serial, default: TokenBucket(rate: Self.reportRate.perSecond, burst: Self.reportRate.burst, now: now)
            ].take(now: now)
        }
        if !allowed { refusedReports.withLock { $0 += 1 } }
        return allowed
    }

    // MARK: Devices' reports

    /// Stores a device's report, lets its rollout decide (pause, advance), and answers with the
    /// support period and, if the device's stage has come, the target to install.
    public func received(report payload: [UInt8], from serial: DeviceSerial, model: ProductModelID) async throws
        -> [UInt8]
    {
        let report = try UpdateReport(payload: payload)
        let now = time.now()
        guard allowReport(from: serial, now: now) else {
            throw HearthError(
                .throttled, "update reports from this device come too fast",
                retryAfter: Int(1 / Self.reportRate.perSecond))
        }
        try await store.appendUpdateEvent(
            UpdateEventRecord(
                serial: serial, at: now, phase: report.phase.rawValue, version: report.version, target: report.target,
                reason: report.reason))
        guard let productModel = try await store.model(model) else {
            throw HearthError(.integrity, "the device's model is missing")
        }
        try await observe(report, from: serial, model: model)
        var offer: String?
        if let rollout = try await store.rollouts(model: model).first(where: {
            $0.state == RolloutState.active.rawValue || $0.state == RolloutState.paused.rawValue
        }) {
            // The running count: this device's latest outcome with the rollout's target.
            if report.target == rollout.target {
                let outcome: String? =
                    report.phase == .succeeded ? "succeeded" : report.phase.failure ? "failed" : nil
                try await store.recordRolloutOutcome(
                    rollout.id, serial: serial, bucket: RolloutPlan.bucket(serial: serial, rollout: rollout.id),
                    outcome: outcome)
            }
            let current = try await evaluate(rollout)
            offer = try await target(for: serial, running: report, in: current)
        }
        return UpdateOffer(
            supportEnds: productModel.supportEnds, supportEnded: Self.ended(productModel.supportEnds, now: now),
            target: offer
        ).payload
    }

    /// The rollout's target if `serial` is in its current stage, runs an older version, and has not
    /// already failed with it.
    func target(for serial: DeviceSerial, running report: UpdateReport, in rollout: RolloutRecord) async throws
        -> String?
    {
        guard rollout.state == RolloutState.active.rawValue,
            let plan = try? RolloutPlan(
                stages: rollout.stages, failureThreshold: rollout.failureThreshold, minimumSample: rollout.minimumSample
            ),
            plan.includes(serial: serial, rollout: rollout.id, stage: rollout.stage),
            let release = try await store.release(rollout.target),
            let running = try? FirmwareVersion(report.version), let offered = try? FirmwareVersion(release.version),
            running < offered
        else { return nil }
        // Not while it is installing it, and never again in this rollout to a device that failed
        // with it (even after a restart): the operator decides, with a new rollout.
        if report.target == rollout.target, report.phase != .idle, report.phase != .succeeded { return nil }
        let last = try await store.latestEvent(serial, target: rollout.target, since: rollout.createdAt)
        return last.flatMap { UpdatePhase(rawValue: $0.phase) }?.failure == true ? nil : rollout.target
    }

    /// Applies the rollout policy to the current tally; returns the rollout as it now is.
    @discardableResult
    func evaluate(_ rollout: RolloutRecord) async throws -> RolloutRecord {
        guard
            let plan = try? RolloutPlan(
                stages: rollout.stages, failureThreshold: rollout.failureThreshold, minimumSample: rollout.minimumSample
            ),
            let state = RolloutState(rawValue: rollout.state)
        else { return rollout }
        let tally = try await tally(rollout, plan: plan)
        var next = rollout
        next.updatedAt = time.now()
        let detail: String
        switch RolloutDecision.decide(plan: plan, state: state, stage: rollout.stage, tally: tally) {
        case .none: return rollout
        case .pause(let why):
            next.state = RolloutState.paused.rawValue
            next.note = why
            detail = why
        case .advance(let stage):
            next.stage = stage
            detail = "stage \(stage + 1) of \(plan.stages.count): \(plan.stages[stage])% of devices"
        case .complete:
            next.state = RolloutState.completed.rawValue
            detail = "completed"
        }
        if try await store.updateRollout(
            next, fromState: rollout.state, fromStage: rollout.stage,
            audit: AuditEntry(.rolloutChanged, actor: "policy", subject: rollout.id, detail: detail, at: next.updatedAt)
        ) {
            return next
        }
        return try await store.rollout(rollout.id) ?? rollout
    }

    /// The current stage's devices, and how many of them succeeded and failed (running counts).
    func tally(_ rollout: RolloutRecord, plan: RolloutPlan) async throws -> RolloutTally {
        let now = time.now()
        var count = members.withLock { m -> Int? in
            guard let cached = m[rollout.id], cached.stage == rollout.stage, now.timeIntervalSince(cached.at) < 600
            else { return nil }
            return cached.count
        }
        if count == nil {
            let counted = try await store.devices(model: rollout.model).filter {
                plan.includes(serial: $0, rollout: rollout.id, stage: rollout.stage)
            }.count
            members.withLock { $0[rollout.id] = (rollout.stage, counted, now) }
            count = counted
        }
        let below = plan.stages[min(rollout.stage, plan.stages.count - 1)] * 100
        let outcomes = try await store.rolloutOutcomes(rollout.id, below: below)
        return RolloutTally(members: count ?? 0, succeeded: outcomes.succeeded, failed: outcomes.failed)
    }

    static func ended(_ ends: CalendarDate, now: Date) -> Bool {
        let today = CalendarDate(String(now.formatted(Date.ISO8601FormatStyle().year().month().day()))) ?? ends
        return today > ends
    }

    // MARK: Rollouts (operators)

    public struct RolloutView: Sendable {
        public let rollout: RolloutRecord
        public let tally: RolloutTally
    }

    public func startRollout(target: String, plan: RolloutPlan, actor: String) async throws -> RolloutView {
        guard let release = try await store.release(target) else {
            throw HearthError(.notFound, field: "target", "no released image \(target); import it first")
        }
        let now = time.now()
        let rollout = RolloutRecord(
            id: "RO-" + String(SecureToken.generate().prefix(10)), target: target, model: release.model,
            stages: plan.stages, failureThreshold: plan.failureThreshold,
            minimumSample: plan.minimumSample, state: RolloutState.active.rawValue, stage: 0, note: nil, createdAt: now,
            updatedAt: now
        )
        try await store.createRollout(
            rollout,
            audit: AuditEntry(
                .rolloutCreated, actor: actor, subject: rollout.id,
                detail:
                    "\(target) to \(release.model) in stages \(plan.stages)%, pause over \(Int(plan.failureThreshold * 100))% failures",
                at: now))
        return try await view(rollout.id)
    }

    public enum Control: String, Sendable, CaseIterable { case pause, resume, abort, advance }

    /// An operator's pause, resume, abort or advance. Moves that make no sense (resume an aborted
    /// rollout) are a conflict and change nothing.
    public func control(_ id: String, _ action: Control, actor: String) async throws -> RolloutView {
        guard let rollout = try await store.rollout(id) else {
            throw HearthError(.notFound, field: "id", "no rollout \(id)")
        }
        var next = rollout
        next.updatedAt = time.now()
        switch (action, RolloutState(rawValue: rollout.state)) {
        case (.pause, .active):
            next.state = RolloutState.paused.rawValue
            next.note = "paused by an operator"
        case (.resume, .paused):
            next.state = RolloutState.active.rawValue
            next.note = nil
        case (.abort, .active), (.abort, .paused):
            next.state = RolloutState.aborted.rawValue
            next.note = "aborted by an operator"
        case (.advance, .active), (.advance, .paused):
            if rollout.stage + 1 < rollout.stages.count {
                next.stage += 1
            } else {
                next.state = RolloutState.completed.rawValue
            }
        default:
            throw HearthError(
                .conflict, field: "action", "cannot \(action.rawValue) a rollout that is \(rollout.state)")
        }
        guard
            try await store.updateRollout(
                next, fromState: rollout.state, fromStage: rollout.stage,
                audit: AuditEntry(
                    .rolloutChanged, actor: actor, subject: id, detail: action.rawValue, at: next.updatedAt))
        else {
            throw HearthError(.conflict, "the rollout changed meanwhile; look again")
        }
        return try await view(id)
    }

    public func view(_ id: String) async throws -> RolloutView {
        guard let rollout = try await store.rollout(id) else {
            throw HearthError(.notFound, field: "id", "no rollout \(id)")
        }
        let plan = try RolloutPlan(
            stages: rollout.stages, failureThreshold: rollout.failureThreshold, minimumSample: rollout.minimumSample)
        return RolloutView(rollout: rollout, tally: try await tally(rollout, plan: plan))
    }

    public func rollouts() async throws -> [RolloutView] {
        var out: [RolloutView] = []
        for r in try await store.rollouts(model: nil) { out.append(try await view(r.id)) }
        return out
    }

    // MARK: Support periods

    /// Extends a model's support period; a shortening is refused and audited.
    public func extendSupport(_ rawModel: String, to rawDate: String, actor: String) async throws -> ProductModel {
        guard let model = try? ProductModelID(rawModel) else {
            throw HearthError(.notFound, field: "model", "no product model \(rawModel)")
        }
        guard let date = CalendarDate(rawDate) else { throw HearthError.invalid("supportEnds", "a date, YYYY-MM-DD") }
        let now = time.now()
        try await store.extendSupport(
            model, to: date,
            audit: AuditEntry(
                .supportExtended, actor: actor, subject: model.rawValue, detail: "security updates until \(date)",
                at: now),
            refusedAudit: AuditEntry(
                .supportShorteningRefused, actor: actor, subject: model.rawValue, detail: "asked for \(date)", at: now)
        )
        guard let updated = try await store.model(model) else {
            throw HearthError(.notFound, field: "model", "no product model \(model)")
        }
        return updated
    }

    // MARK: Owners

    public struct DeviceUpdateView: Sendable {
        public let running: String?
        public let latest: UpdateEventRecord?
        public let alerts: [UpdateEventRecord]
        public let release: ReleaseRecord?
        public let supportEnds: CalendarDate
        public let supportEnded: Bool
    }

    /// What an owner sees: the version running, the update in progress or last done with its
    /// release notes, security alerts (tampered software), and the support period.
    public func deviceView(_ device: DeviceRecord) async throws -> DeviceUpdateView {
        let events = try await store.updateEvents(device.serial, limit: 50)
        guard let model = try await store.model(device.model) else {
            throw HearthError(.integrity, "the device's model is missing")
        }
        let latest = events.first
        var release: ReleaseRecord?
        if let target = events.first(where: { $0.target != nil })?.target { release = try await store.release(target) }
        return DeviceUpdateView(
            running: latest?.version, latest: latest,
            alerts: events.filter { UpdatePhase(rawValue: $0.phase)?.alert == true }, release: release,
            supportEnds: model.supportEnds, supportEnded: Self.ended(model.supportEnds, now: time.now())
        )
    }
}
