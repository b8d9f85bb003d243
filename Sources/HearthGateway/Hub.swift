import Foundation
import HearthBroker
import HearthCore
import HearthMQTT

/// What a connection's mailbox receives from the rest of the broker.
enum Mail: Sendable {
    case publish(Publish)
    /// The server ends this connection (another connection took its session over: 0x8E; the
    /// device was revoked: 0x87; shutdown: 0x8B).
    case disconnect(ReasonCode, String)
}

/// A session while it lives: during its connection and for its expiry interval after.
struct Session: Sendable {
    /// Seconds the session outlives its connection; 0 ends it with the connection.
    var expiry: UInt32
    /// When the connection went; nil while connected.
    var detachedAt: Date?
    /// The outbound messages the last connection had not finished (resent on resume).
    var flow: OutboundFlow?
    /// Messages routed to the session while it had no connection, with when they arrived.
    var offline: [(publish: Publish, at: Date)] = []
}

/// What a resumed session brings back.
struct Resumed: Sendable {
    var present: Bool
    var flow: OutboundFlow?
    var queued: [Publish]
}

/// The broker shared by every connection: routing state, sessions with each live one's mailbox,
/// delayed wills, and the commands waiting for a device's answer.
actor Hub {
    var broker: Broker
    let counters: Counters
    let maximumQueued: Int
    private var mailboxes: [String: (id: ObjectIdentifier, continuation: AsyncStream<Mail>.Continuation)] = [:]
    private(set) var sessions: [String: Session] = [:]
    private var wills: [String: Task<Void, Never>] = [:]
    private var waiting: [String: (serial: String, continuation: CheckedContinuation<CommandOutcome, Never>)] = [:]

    init(maximumSubscriptionsPerSession: Int, maximumQueued: Int, counters: Counters) {
        broker = Broker(maximumSubscriptionsPerSession: maximumSubscriptionsPerSession)
        self.maximumQueued = maximumQueued
        self.counters = counters
    }

    /// Attaches a connection to `sessionKey`. An earlier connection of the same session is told it
    /// was taken over; a pending delayed will is cancelled. With `cleanStart` (or no live session)
    /// the session starts empty; otherwise its subscriptions, unfinished and queued messages return.
    func attach(_ sessionKey: String, cleanStart: Bool, expiry: UInt32, policy: AccessPolicy, id: ObjectIdentifier, mailbox: AsyncStream<Mail>.Continuation, now: Date = Date()) -> Resumed {
        if let previous = mailboxes[sessionKey], previous.id != id {
            previous.continuation.yield(.disconnect(.sessionTakenOver, "another connection took over this session"))
            previous.continuation.finish()
        }
        wills.removeValue(forKey: sessionKey)?.cancel()
        expireSessions(now: now)
        var resumed = Resumed(present: false, flow: nil, queued: [])
        if cleanStart || sessions[sessionKey] == nil {
            broker.remove(sessionKey)
            sessions[sessionKey] = Session(expiry: expiry)
        } else if var session = sessions[sessionKey] {
            resumed = Resumed(present: true, flow: session.flow, queued: session.offline.compactMap { Self.aged($0.publish, since: $0.at, now: now) })
            session.flow = nil
            session.offline = []
            session.detachedAt = nil
            session.expiry = expiry
            sessions[sessionKey] = session
        }
        broker.register(sessionKey, policy: policy)
        mailboxes[sessionKey] = (id, mailbox)
        return resumed
    }

    /// Detaches a closed connection, unless another connection already took its session over.
    /// A session with an expiry keeps its subscriptions and `flow`; one without ends here.
    func detach(_ sessionKey: String, id: ObjectIdentifier, flow: OutboundFlow?, now: Date = Date()) {
        guard mailboxes[sessionKey]?.id == id else { return }
        mailboxes[sessionKey] = nil
        guard var session = sessions[sessionKey], session.expiry > 0 else {
            end(sessionKey)
            return
        }
        session.detachedAt = now
        session.flow = flow
        sessions[sessionKey] = session
    }

    private func end(_ sessionKey: String) {
        sessions[sessionKey] = nil
        broker.remove(sessionKey)
    }

    /// Ends the disconnected sessions whose expiry has passed (and publishes their delayed wills).
    func expireSessions(now: Date = Date()) {
        for (key, session) in sessions {
            guard let detachedAt = session.detachedAt, now.timeIntervalSince(detachedAt) >= Double(session.expiry) else { continue }
            end(key)
        }
    }

    /// Publishes `will` for `sessionKey` after `delay` seconds unless the session is resumed first
    /// (MQTT 5.0 §3.1.3.2.2). A will for a session already taken over with no delay goes at once.
    func scheduleWill(_ sessionKey: String, _ will: Publish, delay: UInt32) {
        guard delay > 0 else {
            _ = publish(from: sessionKey, will)
            return
        }
        wills[sessionKey]?.cancel()
        wills[sessionKey] = Task {
            try? await Task.sleep(for: .seconds(Int(delay)))
            guard !Task.isCancelled else { return }
            self.fireWill(sessionKey, will)
        }
    }

    private func fireWill(_ sessionKey: String, _ will: Publish) {
        guard wills.removeValue(forKey: sessionKey) != nil else { return }
        _ = broker.publish(from: nil, will).deliveries.map { deliver($0) }
    }

    /// A queued message as it is delivered later: dropped once its Message Expiry Interval has
    /// passed, otherwise sent with the time left (MQTT 5.0 §3.3.2.3.3).
    static func aged(_ publish: Publish, since: Date, now: Date) -> Publish? {
        guard let interval = publish.properties.messageExpiryInterval else { return publish }
        let elapsed = UInt32(max(0, now.timeIntervalSince(since)))
        guard elapsed < interval else { return nil }
        var p = publish
        p.properties.all = p.properties.all.map { if case .messageExpiryInterval = $0 { .messageExpiryInterval(interval - elapsed) } else { $0 } }
        return p
    }

    func isAttached(_ sessionKey: String) -> Bool { mailboxes[sessionKey] != nil }

    /// Ends a session's live connection with `reason`.
    func disconnect(_ sessionKey: String, _ reason: ReasonCode, _ message: String) {
        mailboxes[sessionKey]?.continuation.yield(.disconnect(reason, message))
    }

    func subscribe(_ sessionKey: String, _ request: Subscribe) -> (reasons: [ReasonCode], retained: [Publish]) {
        broker.subscribe(sessionKey, request)
    }

    func unsubscribe(_ sessionKey: String, _ filters: [String]) -> [ReasonCode] {
        broker.unsubscribe(sessionKey, filters)
    }

    /// Routes a message: into each live receiver's mailbox, or the queue of a disconnected session.
    func publish(from sessionKey: String?, _ message: Publish) -> Broker.PublishResult {
        let result = broker.publish(from: sessionKey, message)
        for d in result.deliveries { deliver(d) }
        return result
    }

    private func deliver(_ d: Broker.Delivery, now: Date = Date()) {
        if let mailbox = mailboxes[d.sessionKey] {
            if case .dropped = mailbox.continuation.yield(.publish(d.publish)) { counters.add(\.deliveriesDropped) }
        } else if sessions[d.sessionKey] != nil, d.publish.qos != .atMostOnce {
            // QoS 0 is not kept for a disconnected session (as Mosquitto's default).
            sessions[d.sessionKey]!.offline.append((d.publish, now))
            if sessions[d.sessionKey]!.offline.count > maximumQueued {
                sessions[d.sessionKey]!.offline.removeFirst()
                counters.add(\.deliveriesDropped)
            }
        }
    }

    // MARK: Commands (request/response)

    /// Publishes `command` to the device and waits for its answer, at most `timeout`.
    func command(_ id: String, serial: String, _ command: Publish, timeout: Duration) async -> CommandOutcome {
        guard mailboxes["device:\(serial)"] != nil else { return .offline }
        return await withCheckedContinuation { continuation in
            waiting[id] = (serial, continuation)
            _ = publish(from: nil, command)
            Task {
                try? await Task.sleep(for: timeout)
                self.resolve(id, serial: serial, .timedOut)
            }
        }
    }

    /// A device answered command `id`; only the device the command went to can answer it.
    func resolve(_ id: String, serial: String, _ outcome: CommandOutcome) {
        guard let entry = waiting[id], entry.serial == serial else { return }
        waiting[id] = nil
        entry.continuation.resume(returning: outcome)
    }
}
