import Foundation
import HearthCore
import HearthStorage
import Logging

/// Group commit for telemetry. Readings that arrive while a transaction is on its way to disk wait
/// and go together in the next one; once the transaction has committed, each connection is told
/// (once per batch, with its packet ids in arrival order) and only then sends the PUBACKs. One
/// fsync thus serves every device that published meanwhile: durability without a per-message cost.
actor TelemetryIngest {
    /// Who waits for a reading: the connection and the packet id to acknowledge.
    typealias Waiter = (connection: Connection, packetID: UInt16)

    let store: any TelemetryStore
    let counters: Counters
    let logger: Logger
    let maximumBatch = 8192
    private var pending: [(reading: TelemetryReading, waiter: Waiter?)] = []
    private var refusals: [TelemetryRefusal] = []
    private var writing = false

    init(store: any TelemetryStore, counters: Counters, logger: Logger) {
        self.store = store
        self.counters = counters
        self.logger = logger
    }

    /// Queues a valid reading; `waiter` is told whether it was committed.
    func submit(_ reading: TelemetryReading, waiter: Waiter?) {
        pending.append((reading, waiter))
        startIfIdle()
    }

    /// Counts a refused payload against its device (committed with the next batch).
    func refuse(_ refusal: TelemetryRefusal) {
        refusals.append(refusal)
        startIfIdle()
    }

    private func startIfIdle() {
        guard !writing else { return }
        writing = true
        Task { await self.drain() }
    }

    private func drain() async {
        while !pending.isEmpty || !refusals.isEmpty {
            let batch = Array(pending.prefix(maximumBatch))
            pending.removeFirst(batch.count)
            let counted = refusals
            refusals = []
            var stored = true
            do {
                try await store.append(batch.map(\.reading), refusals: counted)
                counters.add(\.telemetryStored, batch.count)
            } catch {
                stored = false
                logger.error("telemetry commit failed; the readings are not acknowledged", metadata: ["readings": "\(batch.count)", "error": "\(error)"])
            }
            // One call per connection, its ids in the order they arrived.
            var order: [ObjectIdentifier] = []
            var ids: [ObjectIdentifier: (Connection, [UInt16])] = [:]
            for case let (_, waiter?) in batch {
                let key = ObjectIdentifier(waiter.connection)
                if ids[key] == nil { order.append(key); ids[key] = (waiter.connection, []) }
                ids[key]!.1.append(waiter.packetID)
            }
            for key in order { await ids[key]!.0.committed(ids[key]!.1, stored: stored) }
        }
        writing = false
    }
}
