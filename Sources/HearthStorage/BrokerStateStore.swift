/// Changes to the broker's persistent state, applied together: sessions that outlive their
/// connection (as the gateway's JSON snapshot) and retained messages (as encoded PUBLISH packets).
/// Storage does not interpret either.
public struct BrokerStateChange: Sendable, Equatable {
    /// Session key → snapshot; nil: the session ended.
    public var sessions: [String: String?]
    /// Topic → encoded message; nil: the retained message was cleared.
    public var retained: [String: [UInt8]?]

    public init(sessions: [String: String?] = [:], retained: [String: [UInt8]?] = [:]) {
        self.sessions = sessions
        self.retained = retained
    }

    public var isEmpty: Bool { sessions.isEmpty && retained.isEmpty }
}

/// Where persistent sessions and retained messages survive a restart.
///
/// Rules every driver keeps: `apply` is one durable transaction; `load` returns exactly what the
/// applied changes add up to, and `session(_:)` one session of it.
public protocol BrokerStateStore: Sendable {
    func apply(_ change: BrokerStateChange) async throws
    func load() async throws -> (sessions: [String: String], retained: [String: [UInt8]])
    /// One session's snapshot (nodes sharing a database load a device's session when it connects).
    func session(_ key: String) async throws -> String?
}
