import HearthCore
import HearthStorage
import Logging
import ServiceLifecycle

/// Housekeeping that runs every `interval` until graceful shutdown; a failed round is logged and
/// the next one runs as planned.
public struct Periodic: Service {
    let interval: Duration
    let logger: Logger
    let failure: String
    let work: @Sendable () async throws -> Void

    public init(
        every interval: Duration, logger: Logger, failure: String, work: @escaping @Sendable () async throws -> Void
    ) {
        self.interval = interval
        self.logger = logger
        self.failure = failure
        self.work = work
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do { try await work() } catch { logger.error("\(failure)", metadata: ["error": "\(error)"]) }
                try? await Task.sleep(for: interval)
            }
        }
    }
}

extension Periodic {
    /// Deletes expired sessions periodically, so a stolen-but-expired token's row does not linger.
    public static func sessionSweeper(
        store: any HearthStore, time: any TimeSource = SystemTimeSource(), interval: Duration = .seconds(600),
        logger: Logger
    ) -> Periodic {
        Periodic(every: interval, logger: logger, failure: "could not remove expired sessions") {
            let removed = try await store.deleteExpiredSessions(now: time.now())
            if removed > 0 { logger.info("removed expired sessions", metadata: ["count": "\(removed)"]) }
        }
    }

    /// Deletes readings past their declared retention period and history deletions left undone,
    /// and carries out account deletions whose grace period is over.
    public static func retention(hearth: Hearth, interval: Duration = .seconds(3600), logger: Logger) -> Periodic {
        Periodic(every: interval, logger: logger, failure: "could not enforce the retention periods") {
            let (devices, readings) = try await hearth.enforceRetention()
            if readings > 0 {
                logger.info(
                    "deleted readings past their retention period",
                    metadata: ["readings": "\(readings)", "devices": "\(devices)"])
            }
            let accounts = try await hearth.carryOutDeletions()
            if accounts > 0 {
                logger.info("deleted accounts at their owners' request", metadata: ["count": "\(accounts)"])
            }
        }
    }

    /// Renews the update repository's timestamp and snapshot before they expire.
    public static func repositoryRenewer(
        repository: UpdateRepository, interval: Duration = .seconds(600), logger: Logger
    ) -> Periodic {
        Periodic(every: interval, logger: logger, failure: "could not renew update metadata") {
            let renewed = try await repository.renewIfDue()
            if !renewed.isEmpty {
                logger.info("renewed update metadata", metadata: ["roles": "\(renewed.map(\.rawValue))"])
            }
        }
    }
}
