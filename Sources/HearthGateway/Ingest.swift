import Foundation
import HearthCore
import HearthStorage
import Logging

/// Group commit for telemetry. Readings that arrive while a transaction is on its way to disk wait
/// and go together in the next one; each reading's `done` runs (in arrival order) once its
/// transaction has committed, and only then is the device's PUBACK sent. One fsync thus serves
/// every device that published meanwhile: durability without a per-message cost.
actor TelemetryIngest {
    typealias Done = @Sendable (_ stored: Bool) async -> Void

    let store: any TelemetryStore
    let counters: Counters
    let logger: Logger
    let maximumBatch = 8192
    private var pending: [(reading: TelemetryReading, done: Done?)] = []
    private var refusals: [TelemetryRefusal] = []
    private var writing = false

    init(store: any TelemetryStore, counters: Counters, logger: Logger) {
        self.store = store
        self.counters = counters
        self.logger = logger
    }

    /// Queues a valid reading; `done` is told whether it was committed.
    func submit(_ reading: TelemetryReading, done: Done?) {
        pending.append((reading, done))
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
            for item in batch { await item.done?(stored) }
        }
        writing = false
    }
}
