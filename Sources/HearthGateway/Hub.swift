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

/// The broker shared by every connection: routing state, each live session's mailbox, and the
/// commands waiting for a device's answer.
actor Hub {
    var broker: Broker
    let counters: Counters
    private var mailboxes: [String: (id: ObjectIdentifier, continuation: AsyncStream<Mail>.Continuation)] = [:]
    private var waiting: [String: (serial: String, continuation: CheckedContinuation<CommandOutcome, Never>)] = [:]

    init(maximumSubscriptionsPerSession: Int, counters: Counters) {
        broker = Broker(maximumSubscriptionsPerSession: maximumSubscriptionsPerSession)
        self.counters = counters
    }

    /// Attaches a connection to `sessionKey`; an earlier connection of the same session is told it
    /// was taken over. Sessions are not kept across connections yet: every attach starts clean.
    func attach(_ sessionKey: String, policy: AccessPolicy, id: ObjectIdentifier, mailbox: AsyncStream<Mail>.Continuation) {
        if let previous = mailboxes[sessionKey], previous.id != id {
            previous.continuation.yield(.disconnect(.sessionTakenOver, "another connection took over this session"))
            previous.continuation.finish()
        }
        broker.remove(sessionKey)
        broker.register(sessionKey, policy: policy)
        mailboxes[sessionKey] = (id, mailbox)
    }

    /// Detaches a closed connection, unless another connection already took its session over.
    func detach(_ sessionKey: String, id: ObjectIdentifier) {
        guard mailboxes[sessionKey]?.id == id else { return }
        mailboxes[sessionKey] = nil
        broker.remove(sessionKey)
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

    /// Routes a message and drops it into each receiver's mailbox.
    func publish(from sessionKey: String?, _ message: Publish) -> Broker.PublishResult {
        let result = broker.publish(from: sessionKey, message)
        if case .routed(let deliveries) = result {
            for d in deliveries {
                if case .dropped = mailboxes[d.sessionKey]?.continuation.yield(.publish(d.publish)) {
                    counters.add(\.deliveriesDropped)
                }
            }
        }
        return result
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
