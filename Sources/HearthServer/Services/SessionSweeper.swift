import HearthCore
import HearthStorage
import Logging
import ServiceLifecycle

/// Deletes expired sessions periodically, so a stolen-but-expired token's row does not linger.
/// Stops at graceful shutdown.
public struct SessionSweeper: Service {
    let store: any HearthStore
    let time: any TimeSource
    let interval: Duration
    let logger: Logger

    public init(store: any HearthStore, time: any TimeSource = SystemTimeSource(), interval: Duration = .seconds(600), logger: Logger) {
        self.store = store
        self.time = time
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    let removed = try await store.deleteExpiredSessions(now: time.now())
                    if removed > 0 { logger.info("removed expired sessions", metadata: ["count": "\(removed)"]) }
                } catch {
                    logger.error("could not remove expired sessions", metadata: ["error": "\(error)"])
                }
                try? await Task.sleep(for: interval)
            }
        }
    }
}
