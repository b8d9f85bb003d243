import HearthBroker
import HearthMQTT

/// What a connection's mailbox receives from the rest of the broker.
enum Mail: Sendable {
    case publish(Publish)
    /// Another connection took over this session (MQTT 5.0 0x8E).
    case takenOver
}

/// The broker shared by every connection: routing state and each live session's mailbox.
actor Hub {
    var broker = Broker()
    private var mailboxes: [String: (id: ObjectIdentifier, continuation: AsyncStream<Mail>.Continuation)] = [:]

    /// Attaches a connection to `sessionKey`; an earlier connection of the same session is told it
    /// was taken over. Sessions are not kept across connections yet: every attach starts clean.
    func attach(_ sessionKey: String, policy: AccessPolicy, id: ObjectIdentifier, mailbox: AsyncStream<Mail>.Continuation) {
        if let previous = mailboxes[sessionKey], previous.id != id {
            previous.continuation.yield(.takenOver)
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
            for d in deliveries { mailboxes[d.sessionKey]?.continuation.yield(.publish(d.publish)) }
        }
        return result
    }
}
