import Foundation
import HearthCore
import HearthMQTT
import Synchronization

/// Gateway-wide caps: connections open at once and new connections per second (a token bucket).
/// A connection over a cap is still answered properly: its CONNECT gets 0x89 (server busy) or
/// 0x9F (connection rate exceeded) with a retry-after hint, and other clients are unaffected.
final class Admission: Sendable {
    struct State {
        var open = 0
        var bucket: TokenBucket
    }

    let maximumConnections: Int
    private let state: Mutex<State>

    init(maximumConnections: Int, connectsPerSecond: Double, burst: Double) {
        self.maximumConnections = maximumConnections
        state = Mutex(State(bucket: TokenBucket(rate: connectsPerSecond, burst: burst, now: Date())))
    }

    /// A connection arrived; every call is balanced by ``leave()``. Returns the refusal to answer
    /// its CONNECT with, if it is over a cap.
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
}

/// Counters for operators and security monitoring; never labelled with secrets.
public struct GatewayCounters: Sendable, Equatable {
    public var connectionsAccepted = 0
    public var connectionsRefused = 0
    public var devicesRefused = 0
    public var publishesRateLimited = 0
    /// Publishes and subscriptions the access policy refused (a device reaching outside its namespace).
    public var accessRefused = 0
    public var telemetryStored = 0
    public var telemetryRefused = 0
    public var deliveriesDropped = 0
}

final class Counters: Sendable {
    private let value = Mutex(GatewayCounters())
    func add(_ path: WritableKeyPath<GatewayCounters, Int>, _ n: Int = 1) { value.withLock { $0[keyPath: path] += n } }
    var snapshot: GatewayCounters { value.withLock { $0 } }
}
