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
/// Connections hand readings over under a lock (no await on their event loop). ``run()`` works in
/// two stages, so that sealing (CPU) overlaps the commit (disk): one loop prepares what arrives,
/// chunk by chunk, while the other commits everything prepared while the previous commit ran.
/// Both keep arrival order, so positions and PUBACKs follow it.
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
    /// Readings prepared (sealed) and waiting for the next transaction, a chunk per preparation.
    private let ready = Mutex<[Chunk]>([])
    struct Chunk: Sendable {
        var readings: PreparedReadings
        var waiters: [Waiter?]
        var refusals: [TelemetryRefusal]
        /// Could not be prepared: its waiters are told so, in turn with the chunks before it.
        var failed = false
    }
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
    private let readySignals: AsyncStream<Void>
    private let readySignal: AsyncStream<Void>.Continuation

    init(store: any TelemetryStore, counters: Counters, logger: Logger) {
        self.store = store
        self.counters = counters
        self.logger = logger
        (signals, signal) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        (readySignals, readySignal) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
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

    /// Prepares and writes batches until ``finish()``, then what is left.
    func run() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.commitReady() }
            for await _ in signals { await prepareWaiting() }
            await prepareWaiting()
            readySignal.finish()
        }
    }

    func finish() { signal.finish() }

    /// Readings waiting for the next transaction (prepared or not yet).
    var depth: Int {
        pending.withLock { $0.readings.count } + ready.withLock { $0.reduce(0) { $0 + $1.readings.count } }
    }

    /// The first stage: seals what has arrived, in chunks, and hands it to the committing stage.
    private func prepareWaiting() async {
        while true {
            let (batch, refusals) = pending.withLock { p in
                let batch = Array(p.readings.prefix(maximumBatch))
                p.readings.removeFirst(batch.count)
                defer { p.refusals = [] }
                return (batch, p.refusals)
            }
            guard !batch.isEmpty || !refusals.isEmpty else { return }
            var chunk = Chunk(readings: PreparedReadings(), waiters: batch.map(\.waiter), refusals: refusals)
            do {
                chunk.readings = try await store.prepare(batch.map(\.reading))
            } catch {
                failed(error, readings: batch.count)
                chunk.failed = true
            }
            ready.withLock { $0.append(chunk) }
            readySignal.yield()
        }
    }

    /// The second stage: commits every chunk prepared meanwhile (up to ``maximumBatch`` readings)
    /// in one transaction, then tells the connections.
    private func commitReady() async {
        var signals = readySignals.makeAsyncIterator()
        while true {
            let chunks = ready.withLock { ready in
                if let first = ready.first, first.failed { return [ready.removeFirst()] }
                var count = 0
                let taken = ready.prefix { chunk in
                    defer { count += chunk.readings.count }
                    return !chunk.failed && (count == 0 || count + chunk.readings.count <= maximumBatch)
                }
                ready.removeFirst(taken.count)
                return Array(taken)
            }
            if chunks.isEmpty {
                // Wait for the preparing stage; its stream ends once it has handed over everything.
                if await signals.next() == nil, ready.withLock({ $0.isEmpty }) { return }
                continue
            }
            if chunks[0].failed {
                tell(chunks[0].waiters, stored: false)
                continue
            }
            var batch = PreparedReadings()
            for chunk in chunks { batch.append(chunk.readings) }
            let waiters = chunks.flatMap(\.waiters)
            var stored = true
            let clock = ContinuousClock()
            let started = clock.now
            do {
                try await store.append(batch, refusals: chunks.flatMap(\.refusals))
                failingUntil.withLock { $0 = nil }
                counters.add(\.telemetryStored, batch.count)
                counters.metrics?.ingestCommitSeconds.record(clock.now - started)
                counters.metrics?.ingestBatchSize.record(Double(batch.count))
            } catch {
                stored = false
                failed(error, readings: batch.count)
            }
            tell(waiters, stored: stored)
        }
    }

    private func failed(_ error: any Error, readings: Int) {
        // A commit cancelled by a stop is not a failing store: no back-off for it.
        if !(error is CancellationError) {
            failingUntil.withLock { $0 = Date().addingTimeInterval(TimeInterval(Self.backOff)) }
        }
        logger.error(
            "telemetry not stored; the readings are not acknowledged",
            metadata: ["readings": "\(readings)", "error": "\(error)"])
    }

    /// One call per connection, its ids in the order they arrived.
    private func tell(_ waiters: [Waiter?], stored: Bool) {
        var order: [ConnectionRef] = []
        var ids: [ConnectionRef: [UInt16]] = [:]
        for case let waiter? in waiters {
            if ids[waiter.connection] == nil { order.append(waiter.connection) }
            ids[waiter.connection, default: []].append(waiter.packetID)
        }
        for connection in order { connection.committed(ids[connection]!, stored: stored) }
    }
}
