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

    /// A success forgets the key's failures (the person proved who they are); otherwise only
    /// time does.
    public var resetOnSuccess: Bool

    public init(
        freeFailures: Int, baseDelay: TimeInterval, maxDelay: TimeInterval, forgetAfter: TimeInterval,
        resetOnSuccess: Bool = false
    ) {
        self.freeFailures = freeFailures
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
        self.forgetAfter = forgetAfter
        self.resetOnSuccess = resetOnSuccess
    }

    /// Sign-in, per account and source address: 5 free tries, then 2 s, 4 s … up to 15 minutes.
    /// Keyed by both, so a stranger's wrong guesses never lock the owner out from their own address.
    public static let signInPerAccountAndSource = ThrottlePolicy(
        freeFailures: 5, baseDelay: 2, maxDelay: 900, forgetAfter: 86_400, resetOnSuccess: true)
    /// Sign-in, per account from everywhere: a ceiling far higher than one source's, against
    /// guessing spread over many addresses. Only time forgets it.
    public static let signInPerAccount = ThrottlePolicy(
        freeFailures: 100, baseDelay: 60, maxDelay: 900, forgetAfter: 86_400)
    /// Sign-in and sign-up, per source address: more room for shared addresses (NAT).
    public static let perSource = ThrottlePolicy(freeFailures: 20, baseDelay: 1, maxDelay: 900, forgetAfter: 86_400)
    /// Device set-up, per device and account: 5 free tries, then 30 s, 60 s … up to an hour
    /// (Matter closes the commissioning window after 20 failures; this is stricter).
    public static let claimPerDeviceAndAccount = ThrottlePolicy(
        freeFailures: 5, baseDelay: 30, maxDelay: 3_600, forgetAfter: 86_400, resetOnSuccess: true)
    /// Device set-up, per device from every account: a far higher ceiling against guessing spread
    /// over many accounts, so that a few wrong codes from a stranger never block the label's holder.
    public static let claimPerDevice = ThrottlePolicy(
        freeFailures: 100, baseDelay: 30, maxDelay: 3_600, forgetAfter: 86_400)
    /// Device set-up, per account: bounds how many serials one account can probe.
    public static let claimPerAccount = ThrottlePolicy(
        freeFailures: 10, baseDelay: 30, maxDelay: 3_600, forgetAfter: 86_400)
}

/// The throttle state of one key (an account, an address, a device) as a value.
///
/// An attempt is one atomic step: ``reserve(now:policy:)`` counts it before any work is done,
/// and ``settle(failed:now:policy:)`` records its outcome. While the free failures last, as many
/// attempts may run at once as there are free failures left (counting those in flight); after
/// that, one at a time and only once the wait is over. So N parallel wrong attempts are never
/// all evaluated: exactly the allowed number are.
public struct ThrottleState: Sendable, Equatable {
    public private(set) var failures = 0
    /// Attempts reserved and not yet settled.
    public private(set) var inFlight = 0
    public private(set) var blockedUntil: Date?
    public private(set) var lastFailure: Date?

    public init() {}

    /// A state as stored (shared between the nodes of a deployment).
    public init(failures: Int, inFlight: Int, blockedUntil: Date?, lastFailure: Date?) {
        self.failures = max(0, failures)
        self.inFlight = max(0, inFlight)
        self.blockedUntil = blockedUntil
        self.lastFailure = lastFailure
    }

    /// The same state with no attempt in flight: for reservations whose node stopped before it
    /// could settle them.
    public var withoutAttemptsInFlight: ThrottleState {
        ThrottleState(failures: failures, inFlight: 0, blockedUntil: blockedUntil, lastFailure: lastFailure)
    }

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

    /// May an attempt be reserved now? Waits for the block in force, or a second when the free
    /// attempts are all taken by attempts still in flight.
    public func admits(now: Date, policy: ThrottlePolicy) -> Decision {
        if case .wait(let seconds) = decide(now: now) { return .wait(seconds: seconds) }
        let counted = isForgotten(now: now, policy: policy) ? 0 : failures
        if inFlight > 0, counted + inFlight >= policy.freeFailures { return .wait(seconds: 1) }
        return .allowed
    }

    /// Reserves an attempt if ``admits(now:policy:)`` allows it.
    public mutating func reserve(now: Date, policy: ThrottlePolicy) -> Decision {
        let decision = admits(now: now, policy: policy)
        if decision == .allowed { inFlight += 1 }
        return decision
    }

    /// Records the outcome of a reserved attempt.
    public mutating func settle(failed: Bool, now: Date, policy: ThrottlePolicy) {
        inFlight = max(0, inFlight - 1)
        if failed {
            recordFailure(now: now, policy: policy)
        } else if policy.resetOnSuccess {
            failures = 0
            blockedUntil = nil
            lastFailure = nil
        }
    }

    private func isForgotten(now: Date, policy: ThrottlePolicy) -> Bool {
        lastFailure.map { now.timeIntervalSince($0) > policy.forgetAfter } ?? false
    }

    /// Records a failed attempt; from the `freeFailures`-th on, the key is blocked for a
    /// doubling delay.
    public mutating func recordFailure(now: Date, policy: ThrottlePolicy) {
        if isForgotten(now: now, policy: policy) { failures = 0 }
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
        guard inFlight == 0 else { return false }
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

    public func admits(_ key: String, now: Date) -> ThrottleState.Decision {
        states[key]?.admits(now: now, policy: policy) ?? .allowed
    }

    /// Reserves an attempt for `key` (see ``ThrottleState``).
    public mutating func reserve(_ key: String, now: Date) -> ThrottleState.Decision {
        if states[key] == nil, states.count >= capacity { prune(now: now) }
        return states[key, default: ThrottleState()].reserve(now: now, policy: policy)
    }

    /// Records the outcome of an attempt reserved for `key`.
    public mutating func settle(_ key: String, failed: Bool, now: Date) {
        if states[key] == nil, states.count >= capacity { prune(now: now) }
        states[key, default: ThrottleState()].settle(failed: failed, now: now, policy: policy)
        if states[key]?.isIdle(now: now, policy: policy) == true, states[key]?.failures == 0 { states[key] = nil }
    }

    /// Drops idle keys; if still full, drops the oldest failures first so memory stays bounded.
    mutating func prune(now: Date) {
        states = states.filter { !$0.value.isIdle(now: now, policy: policy) }
        if states.count >= capacity {
            let ordered = states.filter { $0.value.inFlight == 0 }.sorted {
                ($0.value.lastFailure ?? .distantPast) < ($1.value.lastFailure ?? .distantPast)
            }
            for (key, _) in ordered.prefix(states.count - capacity / 2) { states[key] = nil }
        }
    }

    public var count: Int { states.count }
}
