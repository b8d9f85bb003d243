import Foundation

/// How many failures are free, and how the wait grows after that.
public struct ThrottlePolicy: Sendable, Equatable {
    /// Failures allowed before any wait is imposed.
    public var freeFailures: Int
    /// The first wait; each further failure doubles it.
    public var baseDelay: TimeInterval
    /// The longest wait.
    public var maxDelay: TimeInterval
    /// Failures older than this are forgotten when the key is idle.
    public var forgetAfter: TimeInterval

    public init(freeFailures: Int, baseDelay: TimeInterval, maxDelay: TimeInterval, forgetAfter: TimeInterval) {
        self.freeFailures = freeFailures
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
        self.forgetAfter = forgetAfter
    }

    /// Sign-in, per account: 5 free tries, then 2 s, 4 s … up to 15 minutes.
    public static let signInPerAccount = ThrottlePolicy(freeFailures: 5, baseDelay: 2, maxDelay: 900, forgetAfter: 86_400)
    /// Sign-in and sign-up, per source address: more room for shared addresses (NAT).
    public static let perSource = ThrottlePolicy(freeFailures: 20, baseDelay: 1, maxDelay: 900, forgetAfter: 86_400)
    /// Device set-up, per device: 5 free tries, then the set-up window closes for 30 s, 60 s …
    /// up to an hour (Matter closes the commissioning window after 20 failures; this is stricter).
    public static let claimPerDevice = ThrottlePolicy(freeFailures: 5, baseDelay: 30, maxDelay: 3_600, forgetAfter: 86_400)
    /// Device set-up, per account: bounds how many serials one account can probe.
    public static let claimPerAccount = ThrottlePolicy(freeFailures: 10, baseDelay: 30, maxDelay: 3_600, forgetAfter: 86_400)
}

/// The throttle state of one key (an account, an address, a device) as a value.
public struct ThrottleState: Sendable, Equatable {
    public private(set) var failures = 0
    public private(set) var blockedUntil: Date?
    public private(set) var lastFailure: Date?

    public init() {}

    public enum Decision: Equatable, Sendable {
        case allowed
        case wait(seconds: Int)
    }

    /// May an attempt go ahead now?
    public func decide(now: Date) -> Decision {
        if let until = blockedUntil, until > now {
            return .wait(seconds: max(1, Int(until.timeIntervalSince(now).rounded(.up))))
        }
        return .allowed
    }

    /// Records a failed attempt; from the `freeFailures`-th on, the key is blocked for a
    /// doubling delay.
    public mutating func recordFailure(now: Date, policy: ThrottlePolicy) {
        if let last = lastFailure, now.timeIntervalSince(last) > policy.forgetAfter { failures = 0 }
        failures += 1
        lastFailure = now
        let over = failures - policy.freeFailures
        if over >= 0 {
            let delay = min(policy.maxDelay, policy.baseDelay * pow(2, Double(min(over, 40))))
            blockedUntil = now.addingTimeInterval(delay)
        }
    }

    /// Can this state be dropped (no block in force, nothing recent)?
    public func isIdle(now: Date, policy: ThrottlePolicy) -> Bool {
        guard let last = lastFailure else { return true }
        return decide(now: now) == .allowed && now.timeIntervalSince(last) > policy.forgetAfter
    }
}

/// Throttle states for many keys under one policy, bounded in size.
public struct ThrottleBook: Sendable {
    public let policy: ThrottlePolicy
    public let capacity: Int
    private var states: [String: ThrottleState] = [:]

    public init(policy: ThrottlePolicy, capacity: Int = 100_000) {
        self.policy = policy
        self.capacity = capacity
    }

    public func decide(_ key: String, now: Date) -> ThrottleState.Decision {
        states[key]?.decide(now: now) ?? .allowed
    }

    public mutating func recordFailure(_ key: String, now: Date) {
        if states[key] == nil, states.count >= capacity { prune(now: now) }
        states[key, default: ThrottleState()].recordFailure(now: now, policy: policy)
    }

    public mutating func recordSuccess(_ key: String) {
        states[key] = nil
    }

    /// Drops idle keys; if still full, drops the oldest failures first so memory stays bounded.
    mutating func prune(now: Date) {
        states = states.filter { !$0.value.isIdle(now: now, policy: policy) }
        if states.count >= capacity {
            let ordered = states.sorted { ($0.value.lastFailure ?? .distantPast) < ($1.value.lastFailure ?? .distantPast) }
            for (key, _) in ordered.prefix(states.count - capacity / 2) { states[key] = nil }
        }
    }

    public var count: Int { states.count }
}
