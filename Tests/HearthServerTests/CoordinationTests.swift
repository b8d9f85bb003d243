import Foundation
import HearthCore
import HearthCrypto
import HearthServer
import HearthStorage
import Synchronization
import Testing

/// Work that must run once across the nodes sharing a database.
@Suite struct CoordinationTests {
    /// Three nodes' housekeeping on one store: only the lease's holder works, round after round;
    /// when it stops renewing (its lease expires), another takes over.
    @Test func periodicWorkRunsOnTheLeaseHolderOnly() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        final class Runs: Sendable { let counts = Mutex<[String: Int]>([:]) }
        let runs = Runs()
        let nodes = ["a", "b", "c"].map { name in
            Periodic(
                every: .milliseconds(20), logger: .init(label: "test"), failure: "failed",
                lease: Lease(store: d.store, name: "housekeeping", holder: name)
            ) { runs.counts.withLock { $0[name, default: 0] += 1 } }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for node in nodes { group.addTask { try await node.run() } }
            // Until one node has worked five rounds (however slow the machine), then a little more.
            let started = ContinuousClock.now
            while runs.counts.withLock({ $0.values.max() ?? 0 }) < 5, ContinuousClock.now - started < .seconds(60) {
                try await Task.sleep(for: .milliseconds(20))
            }
            try await Task.sleep(for: .milliseconds(200))
            group.cancelAll()
        }
        let counted = runs.counts.withLock { $0 }
        #expect(counted.count == 1, "one node worked: \(counted)")
        #expect((counted.values.first ?? 0) >= 5, "round after round: \(counted)")
        let holder = try #require(counted.keys.first)
        // The holder is gone; once its lease has expired, another node's round takes it.
        let later = Date().addingTimeInterval(3600)
        #expect(try await d.store.acquireLease("housekeeping", holder: "d", now: later, until: later + 60))
        #expect(!(try await d.store.acquireLease("housekeeping", holder: holder, now: later + 1, until: later + 61)))
    }

    /// With nodes sharing a database, a claim made on another node reaches this node's data keys
    /// within their time to live: the device's next readings go under the new owner's key.
    @Test func cachedDataKeysExpireWhenOtherNodesChangeOwners() async throws {
        let d = try TestDeployment()
        defer { d.cleanUp() }
        let kek = KeyEncryptionKey.generate().kek
        let keys = DataKeys(store: d.store, kek: kek, time: d.time, ttl: 10)
        let model = ProductModel.demoModels()[0]
        let now = d.time.now()
        try await d.store.createModel(model, at: now, audit: AuditEntry(.modelCreated, at: now))
        var rng = SystemRandomNumberGenerator()
        let serial = DeviceSerial.random(using: &rng)
        try await d.store.addDevices(
            [
                DeviceRecord(
                    serial: serial, model: model.id, certificatePEM: "x", setupCodeHash: "x", provisionedAt: now)
            ],
            audit: AuditEntry(.devicesProvisioned, at: now))
        let unclaimed = try await keys.sealing(serial).id
        // Claimed through "another node" (the store directly; this DataKeys is not told).
        let owner = AccountRecord(
            id: AccountID(), role: .owner, emailIndex: "i", emailSealed: Data(), passwordHash: "x", createdAt: now)
        try await d.store.createAccount(owner, audit: AuditEntry(.accountCreated, at: now))
        #expect(
            try await d.store.claimDevice(
                serial, owner: owner.id, emailIndex: "i", at: now, audit: AuditEntry(.deviceClaimed, at: now)))
        d.time.advance(by: 5)
        #expect(try await keys.sealing(serial).id == unclaimed, "cached within its time to live")
        d.time.advance(by: 6)
        let owned = try await keys.sealing(serial).id
        #expect(owned != unclaimed, "the owner's key once it expired")
        #expect(try await d.store.dataKey(owner: owner.id)?.id == owned)
    }
}
