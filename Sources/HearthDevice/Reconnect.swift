import Foundation
import HearthCore
import HearthMQTT

/// How a device spreads its connection attempts (Code of Practice guideline 9: a fleet that lost
/// its server must not come back as one wave and knock it over again; ETSI EN 303 645 5.9-3).
///
/// Full jitter (every delay drawn uniformly from zero to the bound) with a capped exponential
/// bound: after a loss the first attempt falls anywhere in `[0, window]`, the next in
/// `[0, 2·window]`, and so on up to `cap`.
public struct ReconnectPolicy: Sendable, Equatable {
    /// After power-on, the first attempt waits a random time in `[0, startupDelay]`, so a street
    /// whose power comes back does not connect all at once.
    public var startupDelay: TimeInterval
    /// The bound of the first attempt after a connection is lost.
    public var window: TimeInterval
    /// The largest bound.
    public var cap: TimeInterval
    /// A connection counts as stable after this long; only then does the backoff start over.
    public var stableAfter: TimeInterval

    public init(
        startupDelay: TimeInterval = 10, window: TimeInterval = 30, cap: TimeInterval = 600,
        stableAfter: TimeInterval = 60
    ) {
        self.startupDelay = max(0, startupDelay)
        self.window = max(0.001, window)
        self.cap = max(self.window, cap)
        self.stableAfter = max(0, stableAfter)
    }
}

/// What the server said when it refused or ended a connection.
public struct ServerHint: Sendable, Equatable {
    public var reason: ReasonCode?
    /// Seconds, from the gateway's `retry-after` user property.
    public var retryAfter: TimeInterval?

    public init(reason: ReasonCode? = nil, retryAfter: TimeInterval? = nil) {
        self.reason = reason
        self.retryAfter = retryAfter
    }

    /// Reads the `retry-after` user property of a CONNACK or DISCONNECT (whole seconds, ≤ 1 day).
    public init(reason: ReasonCode, properties: Properties) {
        self.reason = reason
        retryAfter = properties.userProperties.first { $0.0 == "retry-after" }.flatMap { TimeInterval($0.1) }.flatMap {
            $0.isFinite ? min(max($0, 0), 86_400) : nil
        }
    }
}

/// When to (re)connect, as a value: events in, the next action out. The caller owns the clock and
/// the timer, so tests step through hours of outages without sleeping.
public struct ReconnectMachine: Sendable {
    public enum State: Sendable, Equatable {
        case idle
        case waiting(until: Date)
        case connecting
        case connected(since: Date)
    }

    public enum Action: Sendable, Equatable {
        /// Set a timer; call ``timerFired(now:)`` when it is due.
        case wait(until: Date)
        /// Open a connection now; report ``connected(now:)`` or ``failed(now:hint:)``.
        case connect
        case none
    }

    public let policy: ReconnectPolicy
    public private(set) var state: State = .idle
    /// Attempts that failed (or connections that did not last) since the last stable connection.
    public private(set) var failures = 0
    var random: SplitMix64

    public init(policy: ReconnectPolicy, seed: UInt64) {
        self.policy = policy
        random = SplitMix64(state: seed)
    }

    /// Power-on: wait a random part of the start-up delay.
    public mutating func start(now: Date) -> Action {
        wait(now, uniform(policy.startupDelay))
    }

    public mutating func timerFired(now: Date) -> Action {
        guard case .waiting(let until) = state, now >= until else { return .none }
        state = .connecting
        return .connect
    }

    public mutating func connected(now: Date) {
        state = .connected(since: now)
    }

    /// The attempt failed: refused by the server (with its hint) or no server at all.
    public mutating func failed(now: Date, hint: ServerHint = ServerHint()) -> Action {
        failures += 1
        return backoff(now, hint)
    }

    /// A connection ended. A stable one starts the backoff over; one that did not last counts as
    /// a failure, so a server that accepts and then drops a device sees it back off.
    public mutating func disconnected(now: Date, hint: ServerHint = ServerHint()) -> Action {
        if case .connected(let since) = state, now.timeIntervalSince(since) >= policy.stableAfter {
            failures = 0
        } else {
            failures += 1
        }
        return backoff(now, hint)
    }

    /// The bound the next delay is drawn under: `window · 2^(failures-1)`, at most `cap`.
    public var bound: TimeInterval {
        let exponent = Double(max(0, failures - 1))
        return min(policy.cap, policy.window * pow(2, min(exponent, 30)))
    }

    mutating func backoff(_ now: Date, _ hint: ServerHint) -> Action {
        switch hint.reason {
        case .some(.notAuthorized), .some(.banned), .some(.badUserNameOrPassword), .some(.clientIdentifierNotValid):
            // Refused for who it is (revoked, unknown): retrying soon cannot help; try rarely.
            return wait(now, policy.cap / 2 + uniform(policy.cap / 2))
        default:
            // Busy (0x89), quota (0x97), rate (0x9F), shutting down, or no answer: the server's
            // retry-after first, then the usual full-jitter spread on top of it.
            return wait(now, (hint.retryAfter ?? 0) + uniform(bound))
        }
    }

    mutating func wait(_ now: Date, _ seconds: TimeInterval) -> Action {
        let until = now.addingTimeInterval(seconds)
        state = .waiting(until: until)
        return .wait(until: until)
    }

    mutating func uniform(_ upTo: TimeInterval) -> TimeInterval {
        upTo <= 0 ? 0 : Double.random(in: 0...upTo, using: &random)
    }
}
