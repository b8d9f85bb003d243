import Foundation
import HearthCore
import HearthStorage

/// The behaviour every `UpdateStore` driver must show, each case on a fresh store.
public enum UpdateContract {
    typealias Store = any HearthStore & UpdateStore
    public struct Case: Sendable, CustomStringConvertible {
        public let description: String
        public let run: @Sendable (any HearthStore & UpdateStore) async throws -> Void
    }

    static func require(_ condition: Bool, _ message: String, line: Int = #line) throws {
        try StoreContract.require(condition, message, line: line)
    }
    public static let t0 = StoreContract.t0

    static func model(_ store: Store) async throws -> ProductModel {
        let model = ProductModel.demoModels()[0]
        try await store.createModel(model, at: t0, audit: StoreContract.audit(.modelCreated))
        return model
    }

    static func release(_ target: String, model: ProductModelID) -> ReleaseRecord {
        ReleaseRecord(
            target: target, model: model, version: "1.1.0", length: 10, sha256: String(repeating: "a", count: 64),
            custom: "{}", publishedAt: t0)
    }

    static func rollout(_ id: String, target: String, model: ProductModelID, state: String = "active") -> RolloutRecord
    {
        RolloutRecord(
            id: id, target: target, model: model, stages: [1, 10, 100], failureThreshold: 0.2, minimumSample: 3,
            state: state, stage: 0, note: nil, createdAt: t0, updatedAt: t0)
    }

    public static let cases: [Case] = [
        Case(description: "rollout outcomes are running counts by bucket, the latest per device") { store in
            let a = StoreContract.device(ProductModel.demoModels()[0]).serial
            let b = StoreContract.device(ProductModel.demoModels()[0]).serial
            let c = StoreContract.device(ProductModel.demoModels()[0]).serial
            try await store.recordRolloutOutcome("RO-1", serial: a, bucket: 10, outcome: "failed")
            try await store.recordRolloutOutcome("RO-1", serial: a, bucket: 10, outcome: "succeeded")
            try await store.recordRolloutOutcome("RO-1", serial: b, bucket: 500, outcome: "failed")
            try await store.recordRolloutOutcome("RO-1", serial: c, bucket: 9_999, outcome: "succeeded")
            try await store.recordRolloutOutcome("RO-2", serial: a, bucket: 5, outcome: "failed")
            var counts = try await store.rolloutOutcomes("RO-1", below: 100)
            try require(counts == (1, 0), "stage 1%: only a, its latest outcome: \(counts)")
            counts = try await store.rolloutOutcomes("RO-1", below: 10_000)
            try require(counts == (2, 1), "every bucket: \(counts)")
            try await store.recordRolloutOutcome("RO-1", serial: b, bucket: 500, outcome: nil)
            counts = try await store.rolloutOutcomes("RO-1", below: 10_000)
            try require(counts == (2, 0), "nil removes (installing again): \(counts)")
            try require(try await store.rolloutOutcomes("RO-3", below: 10_000) == (0, 0), "another rollout")
        },
        Case(description: "TUF documents: root versions follow one by one, others only go up, nothing is half stored") {
            store in
            try await store.publish(
                [
                    TUFDocument(role: "root", version: 1, bytes: [1]),
                    TUFDocument(role: "targets", version: 1, bytes: [2]),
                ], releases: [], audit: [])
            try await StoreContract.requireThrows(.conflict, "root v3 after v1") {
                try await store.publish([TUFDocument(role: "root", version: 3, bytes: [3])], releases: [], audit: [])
            }
            try await StoreContract.requireThrows(.conflict, "targets not going up") {
                try await store.publish(
                    [
                        TUFDocument(role: "snapshot", version: 1, bytes: [4]),
                        TUFDocument(role: "targets", version: 1, bytes: [5]),
                    ], releases: [], audit: [])
            }
            try require(try await store.tufDocument("snapshot", version: nil) == nil, "a refused batch stored nothing")
            try await store.publish(
                [TUFDocument(role: "targets", version: 5, bytes: [6])], releases: [],
                audit: [StoreContract.audit(.updateMetadataPublished)])
            try require(try await store.tufDocument("targets", version: nil)?.bytes == [6], "newest targets")
            try require(try await store.tufDocument("targets", version: 1)?.bytes == [2], "a given version")
            try require(
                try await store.auditRecords().last?.kind == "update.metadata_published", "audited with the change")
        },
        Case(description: "an online key is stored once; a second one returns the first") { store in
            let first = try await store.storeOnlineKey(
                "timestamp", sealed: Data([1]), audit: StoreContract.audit(.updateKeyCreated))
            let second = try await store.storeOnlineKey(
                "timestamp", sealed: Data([2]), audit: StoreContract.audit(.updateKeyCreated))
            let stored = try await store.onlineKey("timestamp")
            try require(first == Data([1]) && second == Data([1]) && stored == Data([1]), "kept the first")
            try require(
                try await store.auditRecords().filter { $0.kind == "update.online_key_created" }.count == 1,
                "audited once")
        },
        Case(description: "releases; one live rollout per model; rollouts move only from the state they are in") {
            store in
            let model = try await model(store).id
            try await store.publish([], releases: [release("a.img", model: model)], audit: [])
            try await StoreContract.requireThrows(.conflict, "a release twice") {
                try await store.publish([], releases: [release("a.img", model: model)], audit: [])
            }
            try require(try await store.releases(model: model).map(\.target) == ["a.img"], "listed")
            try await store.createRollout(
                rollout("RO-1", target: "a.img", model: model), audit: StoreContract.audit(.rolloutCreated))
            try await StoreContract.requireThrows(.conflict, "a second live rollout") {
                try await store.createRollout(
                    rollout("RO-2", target: "a.img", model: model), audit: StoreContract.audit(.rolloutCreated))
            }
            var paused = try requireValueHelper(try await store.rollout("RO-1"))
            paused.state = "paused"
            try require(
                try await store.updateRollout(
                    paused, fromState: "active", fromStage: 0, audit: StoreContract.audit(.rolloutChanged)), "moved")
            let stale = try await store.updateRollout(
                paused, fromState: "active", fromStage: 0, audit: StoreContract.audit(.rolloutChanged))
            try require(!stale, "not from a state it left")
            paused.state = "aborted"
            try require(
                try await store.updateRollout(
                    paused, fromState: "paused", fromStage: 0, audit: StoreContract.audit(.rolloutChanged)), "aborted")
            try await store.createRollout(
                rollout("RO-3", target: "a.img", model: model), audit: StoreContract.audit(.rolloutCreated))
            try require(try await store.rollouts(model: model).count == 2, "an aborted rollout frees the model")
        },
        Case(description: "update events: newest first per device, a device's latest for a target") { store in
            let model = try await model(store)
            let a = StoreContract.device(model)
            let b = StoreContract.device(model)
            try await store.addDevices([a, b], audit: StoreContract.audit(.devicesProvisioned))
            for (serial, phase, target) in [
                (a.serial, "downloading", "x.img"), (a.serial, "failed", "x.img"), (b.serial, "succeeded", "x.img"),
                (b.serial, "idle", "y.img"),
            ] {
                try await store.appendUpdateEvent(
                    UpdateEventRecord(
                        serial: serial, at: t0, phase: phase, version: "1.0.0", target: target, reason: nil))
            }
            try require(
                try await store.updateEvents(a.serial, limit: 10).map(\.phase) == ["failed", "downloading"],
                "newest first")
            try require(
                try await store.latestEvent(b.serial, target: "x.img", since: t0)?.phase == "succeeded",
                "latest per device")
            try require(
                try await store.latestEvent(a.serial, target: "x.img", since: t0.addingTimeInterval(1)) == nil,
                "only since the given time")
            try require(
                try await store.latestEvent(a.serial, target: "x.img", since: t0)?.phase == "failed",
                "one device's latest for a target")
            try require(
                try await store.latestEvent(b.serial, target: "y.img", since: t0)?.phase == "idle", "per target")
            try require(try await store.latestEvent(a.serial, target: "y.img", since: t0) == nil, "none")
            try require(Set(try await store.devices(model: model.id)) == [a.serial, b.serial], "devices of the model")
            try require(try await store.runningVersions(model: model.id) == ["1.0.0": 2], "both on 1.0.0")
            let c = StoreContract.device(model)
            try await store.addDevices([c], audit: StoreContract.audit(.devicesProvisioned))
            _ = try await store.appendUpdateEvent(
                UpdateEventRecord(
                    serial: b.serial, at: t0, phase: "succeeded", version: "1.1.0", target: nil, reason: nil))
            try require(
                try await store.runningVersions(model: model.id) == ["1.0.0": 1, "1.1.0": 1],
                "each device counted once, at its latest report; one that never reported not at all")
        },
        Case(
            description:
                "update events: a repeated report moves the newest row's time and adds none; a transition adds one"
        ) { store in
            let model = try await model(store)
            let a = StoreContract.device(model)
            try await store.addDevices([a], audit: StoreContract.audit(.devicesProvisioned))
            let added = try await store.appendUpdateEvent(
                UpdateEventRecord(serial: a.serial, at: t0, phase: "idle", version: "1.0.0", target: nil, reason: nil))
            try require(added, "the first report adds a row")
            for i in 1...500 {
                let repeated = try await store.appendUpdateEvent(
                    UpdateEventRecord(
                        serial: a.serial, at: t0.addingTimeInterval(Double(i)), phase: "idle", version: "1.0.0",
                        target: nil, reason: nil))
                try require(!repeated, "a repeat adds no row")
            }
            try require(
                try await store.updateEvents(a.serial, limit: 1000).count == 1, "one row for 501 identical reports")
            try require(
                try await store.updateEvents(a.serial, limit: 1)[0].at == t0.addingTimeInterval(500),
                "the row carries the latest time")
            try require(
                try await store.appendUpdateEvent(
                    UpdateEventRecord(
                        serial: a.serial, at: t0.addingTimeInterval(501), phase: "downloading", version: "1.0.0",
                        target: "x.img", reason: nil)), "a transition adds a row")
            try require(
                try await store.appendUpdateEvent(
                    UpdateEventRecord(
                        serial: a.serial, at: t0.addingTimeInterval(502), phase: "idle", version: "1.0.0", target: nil,
                        reason: nil)), "and so does going back")
            try require(
                try await store.latestEvent(a.serial, target: "x.img", since: t0.addingTimeInterval(501))?.phase
                    == "downloading", "latest since still sees it")
            try require(try await store.updateEvents(a.serial, limit: 1000).count == 3, "three transitions, three rows")
        },
        Case(description: "support periods extend, never shorten; a shortening is audited and changes nothing else") {
            store in
            let model = try await model(store)
            let later = CalendarDate("2040-01-01")!
            try await store.extendSupport(
                model.id, to: later, audit: StoreContract.audit(.supportExtended),
                refusedAudit: StoreContract.audit(.supportShorteningRefused))
            try require(try await store.model(model.id)?.supportEnds == later, "extended")
            try await StoreContract.requireThrows(.conflict, "shortened") {
                try await store.extendSupport(
                    model.id, to: CalendarDate("2039-12-31")!, audit: StoreContract.audit(.supportExtended),
                    refusedAudit: StoreContract.audit(.supportShorteningRefused))
            }
            try require(try await store.model(model.id)?.supportEnds == later, "unchanged")
            try require(
                try await store.auditRecords().map(\.kind).suffix(2) == [
                    "model.support_extended", "model.support_shortening_refused",
                ], "both audited")
            try await StoreContract.requireThrows(.notFound, "unknown model") {
                try await store.extendSupport(
                    try ProductModelID("nope-x"), to: later, audit: StoreContract.audit(.supportExtended),
                    refusedAudit: StoreContract.audit(.supportShorteningRefused))
            }
        },
    ]
}

func requireValueHelper<T>(_ value: T?) throws -> T {
    guard let value else { throw StoreContract.Failure(description: "missing value") }
    return value
}
