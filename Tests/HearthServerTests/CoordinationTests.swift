import Foundation
import HearthCore
import HearthServer
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
            try await Task.sleep(for: .milliseconds(600))
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
}
