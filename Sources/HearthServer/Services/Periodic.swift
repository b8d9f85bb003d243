import Foundation
import HearthCore
import HearthStorage
import Logging
import ServiceLifecycle

/// This server process among the nodes sharing a database: its host, process and a random part
/// (a restarted process is a new node).
public enum Node {
    public static let id: String = {
        var name = [CChar](repeating: 0, count: 256)
        let host = gethostname(&name, name.count) == 0 ? String(cString: name) : "host"
        return "\(host)/\(getpid())/\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
    }()
}

/// A lease in the store that makes work run on one node of the deployment at a time: the node
/// holding it renews it each round; when that node stops, another takes it once it expires.
public struct Lease: Sendable {
    let store: any HearthStore
    let name: String
    let holder: String

    public init(store: any HearthStore, name: String, holder: String = Node.id) {
        self.store = store
        self.name = name
        self.holder = holder
    }

    /// Takes or renews the lease for `duration`: true if this node holds it now.
    public func hold(for duration: TimeInterval, now: Date = Date()) async throws -> Bool {
        try await store.acquireLease(name, holder: holder, now: now, until: now.addingTimeInterval(duration))
    }
}

/// Housekeeping that runs every `interval` until graceful shutdown; a failed round is logged and
/// the next one runs as planned. With a `lease`, a round runs only on the node holding it (held
/// for two rounds, renewed each), so once across every node sharing the database.
public struct Periodic: Service {
    let interval: Duration
    let logger: Logger
    let failure: String
    let lease: Lease?
    let work: @Sendable () async throws -> Void

    public init(
        every interval: Duration, logger: Logger, failure: String, lease: Lease? = nil,
        work: @escaping @Sendable () async throws -> Void
    ) {
        self.interval = interval
        self.logger = logger
        self.failure = failure
        self.lease = lease
        self.work = work
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    let seconds = Double(interval.components.seconds)
                    if try await lease?.hold(for: 2 * seconds + 30) ?? true { try await work() }
                } catch {
                    logger.error("\(failure)", metadata: ["error": "\(error)"])
                }
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
        Periodic(
            every: interval, logger: logger, failure: "could not remove expired sessions",
            lease: Lease(store: store, name: "sessions")
        ) {
            let now = time.now()
            let removed = try await store.deleteExpiredSessions(now: now)
            if removed > 0 { logger.info("removed expired sessions", metadata: ["count": "\(removed)"]) }
            // Throttle states with nothing left to remember.
            try await store.deleteIdleThrottles(
                now: now, reservedBefore: now.addingTimeInterval(-Throttles.staleAfter),
                failedBefore: now.addingTimeInterval(-Throttles.forgetAfter))
        }
    }

    /// Deletes readings past their declared retention period and history deletions left undone,
    /// and carries out account deletions whose grace period is over.
    public static func retention(hearth: Hearth, interval: Duration = .seconds(3600), logger: Logger) -> Periodic {
        Periodic(
            every: interval, logger: logger, failure: "could not enforce the retention periods",
            lease: Lease(store: hearth.store, name: "retention")
        ) {
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
        Periodic(
            every: interval, logger: logger, failure: "could not renew update metadata",
            lease: Lease(store: repository.store, name: "update-metadata")
        ) {
            let renewed = try await repository.renewIfDue()
            if !renewed.isEmpty {
                logger.info("renewed update metadata", metadata: ["roles": "\(renewed.map(\.rawValue))"])
            }
        }
    }
}
