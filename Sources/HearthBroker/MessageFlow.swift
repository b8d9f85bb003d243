import HearthMQTT

/// The server-to-client half of QoS 1 and 2 for one session (MQTT 5.0 §4.3, §4.4, §4.9):
/// packet identifiers, the in-flight window the client allows (its Receive Maximum), a bounded
/// queue behind it, and what to resend when the session resumes. A value that returns actions;
/// the connection performs them.
public struct OutboundFlow: Sendable {
    public enum Action: Equatable, Sendable {
        case send(Publish)
        case sendRelease(UInt16)
        /// The queue was full: this message (the oldest waiting) was dropped.
        case dropped(Publish)
    }

    enum Stage: Equatable, Sendable {
        case awaitingAck  // QoS 1, waiting for PUBACK
        case awaitingReceived  // QoS 2, waiting for PUBREC
        case awaitingComplete  // QoS 2, PUBREL sent, waiting for PUBCOMP
    }

    /// The client's Receive Maximum: at most this many QoS 1/2 messages unacknowledged.
    public let receiveMaximum: Int
    /// Messages waiting behind a full window; beyond it the oldest is dropped (and counted).
    public let queueLimit: Int
    private var nextID: UInt16 = 1
    private var inflight: [(id: UInt16, publish: Publish, stage: Stage)] = []
    private var idsInFlight = Set<UInt16>()
    private var waiting: [Publish] = []
    private var waitingHead = 0
    public private(set) var droppedCount = 0

    public init(receiveMaximum: Int = 65_535, queueLimit: Int = 1_000) {
        precondition(receiveMaximum > 0 && queueLimit >= 0)
        self.receiveMaximum = min(receiveMaximum, 65_535)
        self.queueLimit = queueLimit
    }

    public var inflightCount: Int { inflight.count }
    public var queuedCount: Int { waiting.count - waitingHead }

    /// A message for this client. QoS 0 goes at once; QoS 1/2 gets a packet id if the window has room.
    public mutating func enqueue(_ publish: Publish) -> [Action] {
        if publish.qos == .atMostOnce { return [.send(publish)] }
        if inflight.count < receiveMaximum, queuedCount == 0 { return [start(publish)] }
        var actions: [Action] = []
        if queuedCount >= queueLimit {
            if queuedCount > 0 {
                actions.append(.dropped(waiting[waitingHead]))
                waitingHead += 1
            } else {
                droppedCount += 1
                return [.dropped(publish)]
            }
            droppedCount += 1
        }
        waiting.append(publish)
        compact()
        return actions
    }

    /// PUBACK, PUBREC or PUBCOMP from the client. Frees window slots and sends what waited.
    public mutating func receive(_ packet: MQTTPacket) throws(MQTTProtocolError) -> [Action] {
        switch packet {
        case .puback(let ack):
            try finish(ack.packetID, expecting: .awaitingAck)
        case .pubrec(let ack):
            guard let i = inflight.firstIndex(where: { $0.id == ack.packetID }) else {
                // Unknown id: answer with PUBREL 0x92 is the gateway's job; nothing changes here.
                throw MQTTProtocolError(.packetIdentifierNotFound, "PUBREC for unknown packet \(ack.packetID)")
            }
            guard inflight[i].stage == .awaitingReceived || inflight[i].stage == .awaitingComplete else {
                throw MQTTProtocolError(.protocolError, "PUBREC for a QoS 1 message")
            }
            if ack.reason.isError {
                // The client refused the message: QoS 2 ends here (§4.3.3).
                idsInFlight.remove(inflight.remove(at: i).id)
                return drain()
            }
            inflight[i].stage = .awaitingComplete
            return [.sendRelease(ack.packetID)]
        case .pubcomp(let ack):
            try finish(ack.packetID, expecting: .awaitingComplete)
        default:
            throw MQTTProtocolError(.protocolError, "not an acknowledgement")
        }
        return drain()
    }

    /// The messages not yet through to the client, oldest first: unacknowledged ones in flight
    /// (not those already received, awaiting PUBCOMP) and those waiting (for persisting a session).
    public var unfinished: [Publish] {
        inflight.filter { $0.stage != .awaitingComplete }.map(\.publish) + waiting[waitingHead...]
    }

    /// On session resume: every unacknowledged PUBLISH again with DUP set, and PUBRELs for those
    /// already received (§4.4). Order is kept.
    public func resend() -> [Action] {
        inflight.map { entry in
            if entry.stage == .awaitingComplete { return .sendRelease(entry.id) }
            var p = entry.publish
            p.dup = true
            return .send(p)
        }
    }

    private mutating func finish(_ id: UInt16, expecting stage: Stage) throws(MQTTProtocolError) {
        guard let i = inflight.firstIndex(where: { $0.id == id }) else {
            throw MQTTProtocolError(.packetIdentifierNotFound, "acknowledgement for unknown packet \(id)")
        }
        guard inflight[i].stage == stage else {
            throw MQTTProtocolError(.protocolError, "acknowledgement out of order for packet \(id)")
        }
        idsInFlight.remove(inflight.remove(at: i).id)
    }

    private mutating func drain() -> [Action] {
        var actions: [Action] = []
        while inflight.count < receiveMaximum, queuedCount > 0 {
            let next = waiting[waitingHead]
            waitingHead += 1
            actions.append(start(next))
        }
        compact()
        return actions
    }

    private mutating func start(_ publish: Publish) -> Action {
        let id = allocateID()
        var p = publish
        p.packetID = id
        p.dup = false
        inflight.append((id, p, p.qos == .exactlyOnce ? .awaitingReceived : .awaitingAck))
        idsInFlight.insert(id)
        return .send(p)
    }

    /// The next identifier not in flight, wrapping 65535 → 1 (0 is never used).
    private mutating func allocateID() -> UInt16 {
        while idsInFlight.contains(nextID) { nextID = nextID == .max ? 1 : nextID + 1 }
        let id = nextID
        nextID = nextID == .max ? 1 : nextID + 1
        return id
    }

    private mutating func compact() {
        if waitingHead > 64, waitingHead * 2 > waiting.count {
            waiting.removeFirst(waitingHead)
            waitingHead = 0
        }
    }
}

/// The client-to-server half: enforces the server's Receive Maximum and makes QoS 2 exactly-once
/// by remembering identifiers until PUBREL (§4.3.3, §4.9).
public struct InboundFlow: Sendable {
    public enum Decision: Equatable, Sendable {
        /// New message: process it, then acknowledge (PUBACK, or PUBREC for QoS 2).
        case deliver
        /// A redelivery of an identifier still in flight: do not process it again. For QoS 2 answer
        /// PUBREC again; for QoS 1 the first copy's PUBACK, once sent, covers it.
        case duplicate
    }

    public let receiveMaximum: Int
    private var unacknowledgedQoS1 = Set<UInt16>()
    private var awaitingRelease = Set<UInt16>()

    public init(receiveMaximum: Int = 100) {
        precondition(receiveMaximum > 0)
        self.receiveMaximum = receiveMaximum
    }

    public var inflightCount: Int { unacknowledgedQoS1.count + awaitingRelease.count }

    public mutating func received(_ publish: Publish) throws(MQTTProtocolError) -> Decision {
        guard let id = publish.packetID else { return .deliver }
        if publish.qos == .exactlyOnce, awaitingRelease.contains(id) { return .duplicate }
        if publish.qos == .atLeastOnce, unacknowledgedQoS1.contains(id) { return .duplicate }
        guard inflightCount < receiveMaximum else {
            throw MQTTProtocolError(
                .receiveMaximumExceeded, "more than \(receiveMaximum) unacknowledged QoS 1/2 messages")
        }
        if publish.qos == .exactlyOnce { awaitingRelease.insert(id) } else { unacknowledgedQoS1.insert(id) }
        return .deliver
    }

    /// The server sent PUBACK for a QoS 1 message.
    public mutating func acknowledged(_ id: UInt16) {
        unacknowledgedQoS1.remove(id)
    }

    /// PUBREL from the client: the reason code for the PUBCOMP (success, or 0x92 if unknown).
    public mutating func released(_ id: UInt16) -> ReasonCode {
        awaitingRelease.remove(id) != nil ? .success : .packetIdentifierNotFound
    }
}
