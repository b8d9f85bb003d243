import Foundation
import HearthCore
import HearthMQTT
import HearthMetrics
import Synchronization

/// Gateway-wide caps: connections open at once and new connections per second (a token bucket).
/// A connection over a cap is still answered properly: its CONNECT gets 0x89 (server busy) or
/// 0x9F (connection rate exceeded) with a retry-after hint, and other clients are unaffected.
final class Admission: Sendable {
    struct State {
        var open = 0
        var bucket: TokenBucket
        /// Connections per source address not (yet) admitted: in the TLS handshake, or refused and
        /// waiting to be closed.
        var unadmitted: [String: Int] = [:]
    }

    let maximumConnections: Int
    let maximumUnadmittedPerSource: Int
    private let state: Mutex<State>

    init(maximumConnections: Int, connectsPerSecond: Double, burst: Double, maximumUnadmittedPerSource: Int) {
        self.maximumConnections = maximumConnections
        self.maximumUnadmittedPerSource = maximumUnadmittedPerSource
        state = Mutex(State(bucket: TokenBucket(rate: connectsPerSecond, burst: burst, now: Date())))
    }

    /// A socket from `source` arrived and is not yet authenticated. False if that source already
    /// has its most such sockets open: the caller closes it at once. A true is balanced by
    /// ``unadmittedLeft(_:)`` (when it authenticates, or when it closes).
    func arriveUnadmitted(_ source: String) -> Bool {
        state.withLock { s in
            guard s.unadmitted[source, default: 0] < maximumUnadmittedPerSource else { return false }
            s.unadmitted[source, default: 0] += 1
            return true
        }
    }

    func unadmittedLeft(_ source: String) {
        state.withLock { s in
            let n = s.unadmitted[source, default: 1] - 1
            s.unadmitted[source] = n > 0 ? n : nil
        }
    }

    /// An authenticated client (a device whose certificate checked out, or a development
    /// client) joins: only these count towards the connection cap and spend the connect-rate
    /// allowance, so sockets that never authenticate cannot use them up. Every call is balanced by
    /// ``leave()``. Returns the refusal to answer its CONNECT with, if it is over a cap.
    func arrive(now: Date = Date()) -> (reason: ReasonCode, retryAfter: Int)? {
        state.withLock { s in
            s.open += 1
            if s.open > maximumConnections { return (.serverBusy, 30) }
            if !s.bucket.take(now: now) { return (.connectionRateExceeded, max(1, Int(s.bucket.wait().rounded(.up)))) }
            return nil
        }
    }

    func leave() { state.withLock { $0.open -= 1 } }

    var openConnections: Int { state.withLock { $0.open } }
    var unadmittedConnections: Int { state.withLock { $0.unadmitted.values.reduce(0, +) } }
}

/// Counters for operators and security monitoring; never labelled with secrets.
public struct GatewayCounters: Sendable, Equatable {
    public var connectionsAccepted = 0
    public var connectionsRefused = 0
    /// Sockets closed at once because their source already had its most unauthenticated ones open.
    public var unauthenticatedRefused = 0
    public var devicesRefused = 0
    public var publishesRateLimited = 0
    /// Update reports refused because one device sent them too fast.
    public var updateReportsRateLimited = 0
    /// Publishes and subscriptions the access policy refused (a device reaching outside its namespace).
    public var accessRefused = 0
    public var telemetryStored = 0
    public var telemetryRefused = 0
    public var deliveriesDropped = 0
    /// What the security detectors found, and any of it dropped because the alert service fell
    /// more than 10,000 behind.
    public var detections = 0
    /// Messages and subscriptions of quarantined devices refused.
    public var quarantineRefused = 0
    public var detectionsDropped = 0
}

/// The gateway's counts, for its tests (``MQTTGateway/counters``) and for `/metrics` (each one also
/// moves its Prometheus series). Only rare events are counted here; per-message counts go straight
/// to their Prometheus counter (atomics, no lock).
final class Counters: Sendable {
    private let value = Mutex(GatewayCounters())
    /// nil: no metrics (only `--benchmark-monitoring-off` measures that).
    let metrics: HearthMetrics?

    init(metrics: HearthMetrics?) { self.metrics = metrics }

    func add(_ path: WritableKeyPath<GatewayCounters, Int>, _ n: Int = 1) {
        value.withLock { $0[keyPath: path] += n }
        guard let metrics else { return }
        switch path {
        case \.connectionsAccepted: metrics.connect(accepted: true)
        case \.connectionsRefused: metrics.connect(accepted: false)
        case \.unauthenticatedRefused: metrics.refused(.unauthenticatedFlood, n)
        case \.devicesRefused: metrics.refused(.deviceRefused, n)
        case \.publishesRateLimited: metrics.refused(.rateLimited, n)
        case \.updateReportsRateLimited: metrics.refused(.updateReportsRateLimited, n)
        case \.accessRefused: metrics.refused(.accessDenied, n)
        case \.telemetryRefused: metrics.refused(.invalidPayload, n)
        case \.quarantineRefused: metrics.refused(.quarantine, n)
        case \.telemetryStored: metrics.readingsStored.increment(by: Int64(n))
        case \.deliveriesDropped: metrics.deliveriesDropped.increment(by: Int64(n))
        case \.detectionsDropped: metrics.detectionsDropped.increment(by: Int64(n))
        default: break
        }
    }

    var snapshot: GatewayCounters { value.withLock { $0 } }
}
