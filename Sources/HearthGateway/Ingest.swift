import Foundation
import HearthCore
import HearthMetrics
import HearthStorage
import Logging
import Synchronization

/// Group commit for telemetry. Readings that arrive while a transaction is on its way to disk wait
/// and go together in the next one; once the transaction has committed, each connection is told
/// (once per batch, with its packet ids in arrival order) and only then sends the PUBACKs. One
/// fsync thus serves every device that published meanwhile: durability without a per-message cost.
///
/// Connections hand readings over under a lock (no await on their event loop); ``run()`` writes.
final class TelemetryIngest: Sendable {
    /// Who waits for a reading: the connection and the packet id to acknowledge.
    typealias Waiter = (connection: ConnectionRef, packetID: UInt16)

    struct Pending: Sendable {
        var readings: [(reading: TelemetryReading, waiter: Waiter?)] = []
        var refusals: [TelemetryRefusal] = []
    }

    let store: any TelemetryStore
    let counters: Counters
    let logger: Logger
    let maximumBatch = 8192
    private let pending = Mutex(Pending())
    /// Until when the store is taken to be failing (set by a failed commit, cleared by a good one).
    private let failingUntil = Mutex<Date?>(nil)
    /// How long devices are told to stay away after a failed commit.
    static let backOff = 10

    /// Seconds a device should wait before it comes back, while the store is failing; nil when it works.
    func unavailable(now: Date = Date()) -> Int? {
        failingUntil.withLock { until in
            guard let until, until > now else { return nil }
            return max(1, Int(until.timeIntervalSince(now).rounded(.up)))
        }
    }
    private let signals: AsyncStream<Void>
    private let signal: AsyncStream<Void>.Continuation

    init(store: any TelemetryStore, counters: Counters, logger: Logger) {
        self.store = store
        self.counters = counters
        self.logger = logger
        (signals, signal) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// Queues a valid reading; `waiter` is told whether it was committed.
    func submit(_ reading: TelemetryReading, waiter: Waiter?) {
        pending.withLock { $0.readings.append((reading, waiter)) }
        signal.yield()
    }

    /// Counts a refused payload against its device (committed with the next batch).
    func refuse(_ refusal: TelemetryRefusal) {
        pending.withLock { $0.refusals.append(refusal) }
        signal.yield()
    }

    /// Writes batches until ``finish()``, then what is left.
    func run() async {
        for await _ in signals { await drain() }
        await drain()
    }

    func finish() { signal.finish() }

    /// Readings waiting for the next transaction.
    var depth: Int { pending.withLock { $0.readings.count } }

    private func drain() async {
        while true {
            let (batch, refusals) = pending.withLock { p in
                let batch = Array(p.readings.prefix(maximumBatch))
                p.readings.removeFirst(batch.count)
                defer { p.refusals = [] }
                return (batch, p.refusals)
            }
            guard !batch.isEmpty || !refusals.isEmpty else { return }
            var stored = true
            let clock = ContinuousClock()
            let started = clock.now
            do {
                try await store.append(batch.map(\.reading), refusals: refusals)
                failingUntil.withLock { $0 = nil }
                counters.add(\.telemetryStored, batch.count)
                counters.metrics?.ingestCommitSeconds.record(clock.now - started)
                counters.metrics?.ingestBatchSize.record(Double(batch.count))
            } catch {
                stored = false
                // A commit cancelled by a stop is not a failing store: no back-off for it.
                if !(error is CancellationError) {
                    failingUntil.withLock { $0 = Date().addingTimeInterval(TimeInterval(Self.backOff)) }
                }
                logger.error(
                    "telemetry commit failed; the readings are not acknowledged",
                    metadata: ["readings": "\(batch.count)", "error": "\(error)"])
            }
            // One call per connection, its ids in the order they arrived.
            var order: [ConnectionRef] = []
            var ids: [ConnectionRef: [UInt16]] = [:]
            for case (_, let waiter?) in batch {
                if ids[waiter.connection] == nil { order.append(waiter.connection) }
                ids[waiter.connection, default: []].append(waiter.packetID)
            }
            for connection in order { connection.committed(ids[connection]!, stored: stored) }
        }
    }
}
