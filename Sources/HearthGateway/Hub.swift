import Foundation
import HearthBroker
import HearthCore
import HearthMQTT
import HearthStorage
import NIOCore
import NIOPosix
import Synchronization

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

/// The broker shared by every connection: routing state, sessions with each live one's
/// connection, delayed wills, and the commands waiting for a device's answer.
///
/// Not an actor: every call is a short critical section under one lock and never waits for I/O.
/// What it decides for a connection (a delivery, a takeover) goes onto that connection's event
/// loop through its ``ConnectionRef`` after the lock is released, so no connection waits on
/// another and nothing hops through a shared mailbox.
final class Hub: Sendable {
    typealias Done = @Sendable (_ stored: Bool) -> Void

    struct State: Sendable {
        var broker: Broker
        var connections: [String: ConnectionRef] = [:]
        /// When each live connection attached.
        var attachedAt: [String: Date] = [:]
        var sessions: [String: Session] = [:]
        var wills: [String: Scheduled<Void>] = [:]
        /// Connections whose session another took over, not yet gone: whether the new one started
        /// clean (the old session ended: its will goes now) or resumed it (no will).
        var takenOver: [ObjectIdentifier: Bool] = [:]
        var waiting: [String: (serial: String, continuation: CheckedContinuation<CommandOutcome, Never>)] = [:]
        // Persistence (write-behind, group-committed): what changed since the last flush, and who
        // waits for it to be on disk.
        var dirtySessions = Set<String>()
        var dirtyRetained = Set<String>()
        /// Sessions that have a row in the store: only these need a delete when they end, so
        /// clients without a persistent session (most devices) cost no write at all.
        var persistedSessions = Set<String>()
        /// Sessions another node keeps from now (nodes sharing a database): forgotten here once
        /// the next flush has written them.
        var released = Set<String>()
        var openGeneration = 1
        var flushedGeneration = 0
        var afterFlush: [(ticket: Int, done: Done)] = []
        /// The persistence loop ended (the gateway stopped): nothing more will be written.
        var flushingStopped = false
    }

    let counters: Counters
    let maximumQueued: Int
    let persistent: Bool
    let flushSignal: AsyncStream<Void>.Continuation
    /// Where delayed wills and command timeouts are timed.
    let timers: any EventLoop
    private let state: Mutex<State>

    init(
        maximumSubscriptionsPerSession: Int, maximumQueued: Int, counters: Counters, persistent: Bool = false,
        flushSignal: AsyncStream<Void>.Continuation? = nil, developmentDenied: [String] = [],
        timers: any EventLoop = MultiThreadedEventLoopGroup.singleton.any()
    ) {
        var broker = Broker(maximumSubscriptionsPerSession: maximumSubscriptionsPerSession)
        broker.developmentDenied = developmentDenied
        state = Mutex(State(broker: broker))
        self.maximumQueued = maximumQueued
        self.counters = counters
        self.persistent = persistent
        self.flushSignal = flushSignal ?? AsyncStream<Void>.makeStream().continuation
        self.timers = timers
    }

    /// Attaches a connection to `sessionKey`. An earlier connection of the same session is told it
    /// was taken over; a pending delayed will is cancelled. With `cleanStart` (or no live session)
    /// the session starts empty; otherwise its subscriptions, unfinished and queued messages return.
    func attach(
        _ sessionKey: String, cleanStart: Bool, expiry: UInt32, policy: AccessPolicy, connection: ConnectionRef,
        now: Date = Date()
    ) -> Resumed {
        let (resumed, previous) = state.withLock { s -> (Resumed, ConnectionRef?) in
            let previous = s.connections[sessionKey].flatMap { $0 == connection ? nil : $0 }
            if let previous { s.takenOver[previous.id] = cleanStart || s.sessions[sessionKey] == nil }
            s.wills.removeValue(forKey: sessionKey)?.cancel()
            expire(&s, now: now)
            var resumed = Resumed(present: false, flow: nil, queued: [])
            if cleanStart || s.sessions[sessionKey] == nil {
                s.broker.remove(sessionKey)
                s.sessions[sessionKey] = Session(expiry: expiry)
            } else if var session = s.sessions[sessionKey] {
                resumed = Resumed(
                    present: true, flow: session.flow,
                    queued: session.offline.compactMap { Self.aged($0.publish, since: $0.at, now: now) })
                session.flow = nil
                session.offline = []
                session.detachedAt = nil
                session.expiry = expiry
                s.sessions[sessionKey] = session
            }
            s.broker.register(sessionKey, policy: policy)
            s.connections[sessionKey] = connection
            s.attachedAt[sessionKey] = now
            markSession(&s, sessionKey)
            return (resumed, previous)
        }
        previous?.disconnect(.sessionTakenOver, "another connection took over this session")
        return resumed
    }

    /// Detaches a closed connection, unless another connection already took its session over.
    /// A session with an expiry keeps its subscriptions and `flow`; one without ends here.
    func detach(
        _ sessionKey: String, connection: ConnectionRef, flow: OutboundFlow?, expiry: UInt32, now: Date = Date()
    ) {
        state.withLock { s in
            s.takenOver[connection.id] = nil
            guard s.connections[sessionKey] == connection else { return }
            s.connections[sessionKey] = nil
            s.attachedAt[sessionKey] = nil
            guard var session = s.sessions[sessionKey], expiry > 0 else {
                end(&s, sessionKey)
                return
            }
            session.detachedAt = now
            session.flow = flow
            session.expiry = expiry
            s.sessions[sessionKey] = session
            markSession(&s, sessionKey)
        }
    }

    private func end(_ s: inout State, _ sessionKey: String) {
        s.sessions[sessionKey] = nil
        s.broker.remove(sessionKey)
        markSession(&s, sessionKey)
    }

    /// Ends the disconnected sessions whose expiry has passed.
    func expireSessions(now: Date = Date()) {
        state.withLock { expire(&$0, now: now) }
    }

    private func expire(_ s: inout State, now: Date) {
        for (key, session) in s.sessions {
            guard let detachedAt = session.detachedAt, now.timeIntervalSince(detachedAt) >= Double(session.expiry)
            else { continue }
            end(&s, key)
        }
    }

    /// Publishes `will` of `connection` for `sessionKey` after `delay` seconds unless the session
    /// is resumed first (MQTT 5.0 §3.1.3.2.2). A will without a delay goes at once; so does the
    /// will of a connection whose session a clean start replaced, while a connection whose session
    /// was already resumed by another leaves none.
    func scheduleWill(_ sessionKey: String, _ will: Publish, delay: UInt32, connection: ConnectionRef) {
        // Decided and stored under one lock, so that a resume on another event loop either sees
        // the timer (and cancels it) or has already been seen here.
        let now = state.withLock { s -> Bool in
            let takenOver = s.takenOver.removeValue(forKey: connection.id)
            if takenOver == false, delay > 0 { return false }
            guard delay > 0, takenOver == nil else { return true }
            s.wills.removeValue(forKey: sessionKey)?.cancel()
            s.wills[sessionKey] = timers.scheduleTask(in: .seconds(Int64(delay))) { self.fireWill(sessionKey, will) }
            return false
        }
        if now { publish(from: sessionKey, will) }
    }

    private func fireWill(_ sessionKey: String, _ will: Publish) {
        guard state.withLock({ $0.wills.removeValue(forKey: sessionKey) }) != nil else { return }
        publish(from: nil, will)
    }

    /// A queued message as it is delivered later: dropped once its Message Expiry Interval has
    /// passed, otherwise sent with the time left (MQTT 5.0 §3.3.2.3.3).
    static func aged(_ publish: Publish, since: Date, now: Date) -> Publish? {
        guard let interval = publish.properties.messageExpiryInterval else { return publish }
        // Clamped before converting: a restored timestamp far off (or not a number) must not trap.
        let seconds = now.timeIntervalSince(since)
        let elapsed = seconds.isFinite ? UInt32(max(0, min(seconds, Double(UInt32.max)))) : UInt32.max
        guard elapsed < interval else { return nil }
        var p = publish
        p.properties.all = p.properties.all.map {
            if case .messageExpiryInterval = $0 { .messageExpiryInterval(interval - elapsed) } else { $0 }
        }
        return p
    }

    /// The retained message's payload on `topic`, if any.
    func retainedPayload(_ topic: String) -> [UInt8]? { state.withLock { $0.broker.retained[topic]?.payload } }

    func isAttached(_ sessionKey: String) -> Bool { state.withLock { $0.connections[sessionKey] != nil } }

    /// Which of these are attached now, under one lock.
    func attached<T: Hashable & Sendable>(_ keys: [(String, T)]) -> Set<T> {
        state.withLock { s in Set(keys.filter { s.connections[$0.0] != nil }.map(\.1)) }
    }

    /// The live connections of devices: the `limit` newest (when each attached) and how many there are.
    func attachedDevices(limit: Int) -> (newest: [(serial: String, since: Date)], count: Int) {
        let all = state.withLock { s in
            s.attachedAt.compactMap { key, since in
                PeerIdentity.deviceSerial(ofSessionKey: key).map { (serial: $0, since: since) }
            }
        }
        return (Array(all.sorted { $0.since > $1.since }.prefix(max(0, limit))), all.count)
    }

    /// Ends a session's live connection with `reason`.
    func disconnect(_ sessionKey: String, _ reason: ReasonCode, _ message: String) {
        state.withLock { $0.connections[sessionKey] }?.disconnect(reason, message)
    }

    func subscribe(_ sessionKey: String, _ request: Subscribe, now: Date = Date()) -> (
        reasons: [ReasonCode], retained: [Publish]
    ) {
        state.withLock { s in
            defer { if (s.sessions[sessionKey]?.expiry ?? 0) > 0 { markSession(&s, sessionKey) } }
            var (reasons, retained) = s.broker.subscribe(sessionKey, request)
            // A retained message past its Message Expiry Interval is no longer sent (§3.3.2.3.3).
            retained = retained.compactMap { message in
                guard let at = s.broker.retainedAt[message.topic] else { return message }
                return Self.aged(message, since: at, now: now)
            }
            return (reasons, retained)
        }
    }

    func unsubscribe(_ sessionKey: String, _ filters: [String]) -> [ReasonCode] {
        state.withLock { s in
            defer { if (s.sessions[sessionKey]?.expiry ?? 0) > 0 { markSession(&s, sessionKey) } }
            return s.broker.unsubscribe(sessionKey, filters)
        }
    }

    /// Routes a message: to each live receiver's connection, or the queue of a disconnected
    /// session. `ticket` is set when the message changed persistent state (a retained message, a
    /// queued message): acknowledge it only once ``whenFlushed(_:_:)`` says that state is on disk.
    @discardableResult
    func publish(from sessionKey: String?, _ message: Publish, now: Date = Date()) -> (
        result: Broker.PublishResult, ticket: Int?
    ) {
        let (result, ticket, live) = state.withLock { s -> (Broker.PublishResult, Int?, [(ConnectionRef, Publish)]) in
            let result = s.broker.publish(from: sessionKey, message, now: now)
            var ticket: Int?
            if case .routed = result, message.retain, persistent {
                s.dirtyRetained.insert(message.topic)
                ticket = signal(s)
            }
            var live: [(ConnectionRef, Publish)] = []
            for d in result.deliveries {
                if let connection = s.connections[d.sessionKey] {
                    live.append((connection, d.publish))
                } else if queue(&s, d, now: now) {
                    ticket = s.openGeneration
                }
            }
            return (result, ticket, live)
        }
        for (connection, publish) in live { connection.deliver(publish) }
        return (result, ticket)
    }

    /// Queues a delivery for a disconnected session; true if that changed persistent state.
    private func queue(_ s: inout State, _ d: Broker.Delivery, now: Date) -> Bool {
        // QoS 0 is not kept for a disconnected session (as Mosquitto's default).
        guard s.sessions[d.sessionKey] != nil, d.publish.qos != .atMostOnce else { return false }
        s.sessions[d.sessionKey]!.offline.append((d.publish, now))
        if s.sessions[d.sessionKey]!.offline.count > maximumQueued {
            s.sessions[d.sessionKey]!.offline.removeFirst()
            counters.add(\.deliveriesDropped)
        }
        markSession(&s, d.sessionKey)
        return persistent
    }

    // MARK: Persistence

    private func markSession(_ s: inout State, _ key: String) {
        guard persistent, (s.sessions[key]?.expiry ?? 0) > 0 || s.persistedSessions.contains(key) else { return }
        s.dirtySessions.insert(key)
        signal(s)
    }

    @discardableResult
    private func signal(_ s: State) -> Int {
        flushSignal.yield(())
        return s.openGeneration
    }

    /// Runs `done` once everything changed up to `ticket` is on disk; returns false (without
    /// keeping `done`) if it already is.
    func whenFlushed(_ ticket: Int, _ done: @escaping Done) -> Bool {
        state.withLock { s in
            guard ticket > s.flushedGeneration, !s.flushingStopped else { return false }
            s.afterFlush.append((ticket, done))
            return true
        }
    }

    /// The changes since the last flush, as the store takes them, and the generation they close.
    func takeChanges() -> (change: BrokerStateChange, generation: Int)? {
        state.withLock { s in
            guard !s.dirtySessions.isEmpty || !s.dirtyRetained.isEmpty else { return nil }
            var change = BrokerStateChange()
            for key in s.dirtySessions {
                if let session = s.sessions[key], session.expiry > 0 {
                    change.sessions[key] = .some(
                        SessionSnapshot(session, subscriptions: s.broker.subscriptions(of: key)).json)
                    s.persistedSessions.insert(key)
                } else {
                    change.sessions[key] = .some(nil)
                    s.persistedSessions.remove(key)
                }
                // Written as it is now, and another node keeps it from here on.
                if s.released.remove(key) != nil { Self.drop(&s, key) }
            }
            for topic in s.dirtyRetained {
                change.retained[topic] = .some(s.broker.retained[topic].map(SessionSnapshot.encode))
            }
            s.dirtySessions = []
            s.dirtyRetained = []
            let generation = s.openGeneration
            s.openGeneration += 1
            return (change, generation)
        }
    }

    /// `generation` is on disk (or failed to get there): the waiters to tell.
    func flushed(_ generation: Int) -> [Done] {
        state.withLock { s in
            s.flushedGeneration = max(s.flushedGeneration, generation)
            let ready = s.afterFlush.filter { $0.ticket <= generation }
            s.afterFlush.removeAll { $0.ticket <= generation }
            return ready.map(\.done)
        }
    }

    /// Puts back the persisted state after a restart: every session as disconnected now.
    func restore(sessions stored: [String: String], retained: [String: [UInt8]], now: Date = Date()) {
        state.withLock { s in
            for packet in retained.values {
                if let message = SessionSnapshot.decode(packet) { s.broker.restoreRetained(message, at: now) }
            }
            for (key, json) in stored { Self.restore(&s, key, json, now: now) }
        }
    }

    /// Puts back one persisted session as disconnected (nil or unreadable: none).
    private static func restore(_ s: inout State, _ key: String, _ json: String?, now: Date) {
        drop(&s, key)
        guard let json, let snapshot = SessionSnapshot(json: json) else { return }
        let policy: AccessPolicy =
            PeerIdentity.deviceSerial(ofSessionKey: key).map { .device(serial: $0) } ?? .development
        s.broker.register(key, policy: policy)
        for (filter, subscription) in snapshot.subscriptions {
            s.broker.restore(key, filter: filter, subscription)
        }
        var session = Session(
            expiry: snapshot.expiry,
            detachedAt: snapshot.detachedAt.map { Date(timeIntervalSince1970: $0) } ?? now)
        session.offline = snapshot.messages.compactMap { m in
            SessionSnapshot.decode(m.packet).map { ($0, Date(timeIntervalSince1970: m.at)) }
        }
        s.sessions[key] = session
        s.persistedSessions.insert(key)
    }

    // MARK: Sessions kept by one node of several

    /// Forgets a session here without writing anything (its row, if any, stays as it is).
    private static func drop(_ s: inout State, _ key: String) {
        s.sessions[key] = nil
        s.broker.remove(key)
        s.persistedSessions.remove(key)
    }

    func hasSession(_ key: String) -> Bool { state.withLock { $0.sessions[key] != nil } }

    /// Replaces what this node has of a session with what the store has (`json`; nil: none),
    /// after the node that kept it wrote it there. A live connection here keeps what it has.
    func adopt(_ key: String, _ json: String?, now: Date = Date()) {
        state.withLock { s in
            guard s.connections[key] == nil else { return }
            s.dirtySessions.remove(key)
            s.released.remove(key)
            Self.restore(&s, key, json, now: now)
        }
    }

    /// Another node took this session without it being handed over (this node answered too late,
    /// or seemed dead): its connection here ends (0x8E) and the session is dropped unwritten, so a
    /// stale copy can neither be resumed here nor, expiring, delete the keeper's row.
    func forget(_ key: String) {
        let live = state.withLock { s -> ConnectionRef? in
            let connection = s.connections.removeValue(forKey: key)
            if let connection {
                s.takenOver[connection.id] = false
                s.attachedAt[key] = nil
            }
            Self.drop(&s, key)
            s.dirtySessions.remove(key)
            s.released.remove(key)
            return connection
        }
        live?.disconnect(.sessionTakenOver, "the device connected to another node")
    }

    /// Another node keeps this session from now: its live connection here ends (0x8E, as a
    /// takeover that resumes the session), and once the connection has handed back what it had in
    /// flight (at most `wait`), the session is written to the store and forgotten here.
    func release(_ key: String, wait: Duration = .seconds(2)) async {
        let live = state.withLock { s -> ConnectionRef? in
            guard let connection = s.connections[key] else { return nil }
            s.takenOver[connection.id] = false
            return connection
        }
        if let live {
            live.disconnect(.sessionTakenOver, "the device connected to another node")
            let clock = ContinuousClock()
            let deadline = clock.now.advanced(by: wait)
            while isAttached(key), clock.now < deadline { try? await Task.sleep(for: .milliseconds(5)) }
        }
        let ticket = state.withLock { s -> Int? in
            if let stuck = s.connections.removeValue(forKey: key) {
                // Its loop did not answer in time: what it had in flight stays with it.
                s.attachedAt[key] = nil
                s.takenOver[stuck.id] = nil
            }
            guard persistent, s.sessions[key] != nil else {
                Self.drop(&s, key)
                return nil
            }
            s.released.insert(key)
            s.dirtySessions.insert(key)
            return signal(s)
        }
        guard let ticket else { return }
        await withCheckedContinuation { (written: CheckedContinuation<Void, Never>) in
            if !whenFlushed(ticket, { _ in written.resume() }) { written.resume() }
        }
    }

    /// Closes the signal the persistence loop waits on (after the last connection left).
    func finishSignals() { flushSignal.finish() }

    /// The persistence loop wrote its last: whoever still waits hears "not stored".
    func flushingEnded() -> [Done] {
        state.withLock { s in
            s.flushingStopped = true
            defer { s.afterFlush = [] }
            return s.afterFlush.map(\.done)
        }
    }

    // MARK: Commands (request/response)

    /// Publishes `command` to the device and waits for its answer, at most `timeout`.
    func command(_ id: String, serial: String, _ command: Publish, timeout: Duration) async -> CommandOutcome {
        guard isAttached(PeerIdentity.deviceSessionKey(serial)) else { return .offline }
        let (seconds, attoseconds) = timeout.components
        let nanoseconds = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        let wait = TimeAmount.nanoseconds(
            nanoseconds.overflow ? .max : nanoseconds.partialValue &+ attoseconds / 1_000_000_000)
        return await withCheckedContinuation { continuation in
            state.withLock { $0.waiting[id] = (serial, continuation) }
            publish(from: nil, command)
            timers.scheduleTask(in: wait) { self.resolve(id, serial: serial, .timedOut) }
        }
    }

    /// A device answered command `id`; only the device the command went to can answer it.
    func resolve(_ id: String, serial: String, _ outcome: CommandOutcome) {
        let entry = state.withLock { s -> CheckedContinuation<CommandOutcome, Never>? in
            guard let entry = s.waiting[id], entry.serial == serial else { return nil }
            s.waiting[id] = nil
            return entry.continuation
        }
        entry?.resume(returning: outcome)
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
        messages =
            (session.flow?.unfinished ?? []).map { Message(packet: Self.encode($0), at: now) }
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
