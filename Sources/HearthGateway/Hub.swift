import Foundation
import HearthBroker
import HearthCore
import HearthMQTT
import HearthStorage
import NIOCore

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

    // Persistence (write-behind, group-committed): what changed since the last flush, and who
    // waits for it to be on disk.
    typealias Done = @Sendable (_ stored: Bool) async -> Void
    let persistent: Bool
    let flushSignal: AsyncStream<Void>.Continuation
    private var dirtySessions = Set<String>()
    private var dirtyRetained = Set<String>()
    private var openGeneration = 1
    private var flushedGeneration = 0
    private var afterFlush: [(ticket: Int, done: Done)] = []

    init(maximumSubscriptionsPerSession: Int, maximumQueued: Int, counters: Counters, persistent: Bool = false, flushSignal: AsyncStream<Void>.Continuation? = nil) {
        broker = Broker(maximumSubscriptionsPerSession: maximumSubscriptionsPerSession)
        self.maximumQueued = maximumQueued
        self.counters = counters
        self.persistent = persistent
        self.flushSignal = flushSignal ?? AsyncStream<Void>.makeStream().continuation
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
        markSession(sessionKey)
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
        markSession(sessionKey)
    }

    private func end(_ sessionKey: String) {
        sessions[sessionKey] = nil
        broker.remove(sessionKey)
        markSession(sessionKey)
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
        _ = publish(from: nil, will)
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

    /// Which of these are attached now, in one hop onto the hub.
    func attached<T: Hashable & Sendable>(_ keys: [(String, T)]) -> Set<T> {
        Set(keys.filter { mailboxes[$0.0] != nil }.map(\.1))
    }

    /// Ends a session's live connection with `reason`.
    func disconnect(_ sessionKey: String, _ reason: ReasonCode, _ message: String) {
        mailboxes[sessionKey]?.continuation.yield(.disconnect(reason, message))
    }

    func subscribe(_ sessionKey: String, _ request: Subscribe) -> (reasons: [ReasonCode], retained: [Publish]) {
        defer { if (sessions[sessionKey]?.expiry ?? 0) > 0 { markSession(sessionKey) } }
        return broker.subscribe(sessionKey, request)
    }

    func unsubscribe(_ sessionKey: String, _ filters: [String]) -> [ReasonCode] {
        defer { if (sessions[sessionKey]?.expiry ?? 0) > 0 { markSession(sessionKey) } }
        return broker.unsubscribe(sessionKey, filters)
    }

    /// Routes a message: into each live receiver's mailbox, or the queue of a disconnected session.
    /// `ticket` is set when the message changed persistent state (a retained message, a queued
    /// message): acknowledge it only once ``whenFlushed(_:_:)`` says that state is on disk.
    @discardableResult
    func publish(from sessionKey: String?, _ message: Publish) -> (result: Broker.PublishResult, ticket: Int?) {
        let result = broker.publish(from: sessionKey, message)
        var ticket: Int?
        if case .routed = result, message.retain, persistent {
            dirtyRetained.insert(message.topic)
            ticket = signal()
        }
        for d in result.deliveries where deliver(d) { ticket = openGeneration }
        return (result, ticket)
    }

    /// Returns true when the delivery was queued for a disconnected session (persistent state).
    private func deliver(_ d: Broker.Delivery, now: Date = Date()) -> Bool {
        if let mailbox = mailboxes[d.sessionKey] {
            if case .dropped = mailbox.continuation.yield(.publish(d.publish)) { counters.add(\.deliveriesDropped) }
            return false
        }
        // QoS 0 is not kept for a disconnected session (as Mosquitto's default).
        guard sessions[d.sessionKey] != nil, d.publish.qos != .atMostOnce else { return false }
        sessions[d.sessionKey]!.offline.append((d.publish, now))
        if sessions[d.sessionKey]!.offline.count > maximumQueued {
            sessions[d.sessionKey]!.offline.removeFirst()
            counters.add(\.deliveriesDropped)
        }
        markSession(d.sessionKey)
        return persistent
    }

    // MARK: Persistence

    /// Sessions that have a row in the store: only these need a delete when they end, so clients
    /// without a persistent session (most devices) cost no write at all.
    private var persistedSessions = Set<String>()

    private func markSession(_ key: String) {
        guard persistent, (sessions[key]?.expiry ?? 0) > 0 || persistedSessions.contains(key) else { return }
        dirtySessions.insert(key)
        signal()
    }

    @discardableResult
    private func signal() -> Int {
        flushSignal.yield(())
        return openGeneration
    }

    /// Runs `done` once everything changed up to `ticket` is on disk; returns false (without
    /// keeping `done`) if it already is.
    func whenFlushed(_ ticket: Int, _ done: @escaping Done) -> Bool {
        guard ticket > flushedGeneration else { return false }
        afterFlush.append((ticket, done))
        return true
    }

    /// The changes since the last flush, as the store takes them, and the generation they close.
    func takeChanges() -> (change: BrokerStateChange, generation: Int)? {
        guard !dirtySessions.isEmpty || !dirtyRetained.isEmpty else { return nil }
        var change = BrokerStateChange()
        for key in dirtySessions {
            guard let session = sessions[key], session.expiry > 0 else {
                change.sessions[key] = .some(nil)
                persistedSessions.remove(key)
                continue
            }
            change.sessions[key] = .some(SessionSnapshot(session, subscriptions: broker.subscriptions(of: key)).json)
            persistedSessions.insert(key)
        }
        for topic in dirtyRetained {
            change.retained[topic] = .some(broker.retained[topic].map(SessionSnapshot.encode))
        }
        dirtySessions = []
        dirtyRetained = []
        let generation = openGeneration
        openGeneration += 1
        return (change, generation)
    }

    /// `generation` is on disk (or failed to get there): the waiters to tell.
    func flushed(_ generation: Int) -> [Done] {
        flushedGeneration = max(flushedGeneration, generation)
        let ready = afterFlush.filter { $0.ticket <= generation }
        afterFlush.removeAll { $0.ticket <= generation }
        return ready.map(\.done)
    }

    /// Puts back the persisted state after a restart: every session as disconnected now.
    func restore(sessions stored: [String: String], retained: [String: [UInt8]], now: Date = Date()) {
        for packet in retained.values {
            if let message = SessionSnapshot.decode(packet) { broker.restoreRetained(message) }
        }
        for (key, json) in stored {
            guard let snapshot = SessionSnapshot(json: json) else { continue }
            let policy: AccessPolicy = key.hasPrefix("device:") ? .device(serial: String(key.dropFirst(7))) : .development
            broker.register(key, policy: policy)
            for (filter, subscription) in snapshot.subscriptions { broker.restore(key, filter: filter, subscription) }
            var session = Session(expiry: snapshot.expiry, detachedAt: snapshot.detachedAt.map { Date(timeIntervalSince1970: $0) } ?? now)
            session.offline = snapshot.messages.compactMap { m in SessionSnapshot.decode(m.packet).map { ($0, Date(timeIntervalSince1970: m.at)) } }
            sessions[key] = session
            persistedSessions.insert(key)
        }
    }

    // MARK: Commands (request/response)

    /// Publishes `command` to the device and waits for its answer, at most `timeout`.
    func command(_ id: String, serial: String, _ command: Publish, timeout: Duration) async -> CommandOutcome {
        guard mailboxes["device:\(serial)"] != nil else { return .offline }
        return await withCheckedContinuation { continuation in
            waiting[id] = (serial, continuation)
            publish(from: nil, command)
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

/// A session as it is persisted: JSON with its expiry, subscriptions and undelivered messages
/// (each an MQTT 5.0 PUBLISH packet, base64).
struct SessionSnapshot: Codable {
    struct Message: Codable {
        var packet: [UInt8]
        var at: Double
    }

    var expiry: UInt32
    var detachedAt: Double?
    var subscriptions: [String: Broker.Subscription]
    var messages: [Message]

    init(_ session: Session, subscriptions: [String: Broker.Subscription]) {
        expiry = session.expiry
        detachedAt = session.detachedAt?.timeIntervalSince1970
        self.subscriptions = subscriptions
        let now = Date().timeIntervalSince1970
        messages = (session.flow?.unfinished ?? []).map { Message(packet: Self.encode($0), at: now) }
            + session.offline.map { Message(packet: Self.encode($0.publish), at: $0.at.timeIntervalSince1970) }
    }

    init?(json: String) {
        guard let value = try? JSONDecoder().decode(Self.self, from: Data(json.utf8)) else { return nil }
        self = value
    }

    var json: String { String(decoding: (try? JSONEncoder().encode(self)) ?? Data("{}".utf8), as: UTF8.self) }

    static func encode(_ publish: Publish) -> [UInt8] {
        var p = publish
        p.packetID = p.qos == .atMostOnce ? nil : 1
        p.dup = false
        var buffer = ByteBuffer()
        MQTTPacket.publish(p).write(version: .v5, to: &buffer)
        return Array(buffer.readableBytesView)
    }

    static func decode(_ bytes: [UInt8]) -> Publish? {
        var parser = MQTTParser(version: .v5, maximumPacketSize: Int.max)
        var buffer = ByteBuffer(bytes: bytes)
        guard case .publish(var p)? = try? parser.next(&buffer) else { return nil }
        p.packetID = nil
        return p
    }
}
