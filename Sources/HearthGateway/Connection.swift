import Foundation
import HearthBroker
import HearthMQTT
import Logging
import NIOCore

/// One client connection: decodes its bytes, runs its protocol state machine and message flows,
/// and talks to the hub. An actor, so inbound packets, deliveries from other clients and timer
/// ticks are handled one at a time.
actor Connection {
    let hub: Hub
    let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    let mailbox: AsyncStream<Mail>.Continuation
    let logger: Logger
    var parser: MQTTParser
    var machine: ConnectionStateMachine
    var outboundFlow = OutboundFlow()
    var inboundFlow: InboundFlow
    var pending = ByteBuffer()
    var sessionKey: String?
    var will: Connect.Will?
    private(set) var closed = false

    init(hub: Hub, identity: PeerIdentity, limits: ConnectionLimits, outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>, mailbox: AsyncStream<Mail>.Continuation, logger: Logger) {
        self.hub = hub
        self.outbound = outbound
        self.mailbox = mailbox
        self.logger = logger
        parser = MQTTParser(maximumPacketSize: Int(limits.maximumPacketSize))
        machine = ConnectionStateMachine(identity: identity, limits: limits, now: Date())
        inboundFlow = InboundFlow(receiveMaximum: Int(limits.receiveMaximum))
    }

    /// Bytes from the client. Returns false once the connection is to be closed.
    func received(_ bytes: ByteBuffer) async -> Bool {
        var bytes = bytes
        pending.writeBuffer(&bytes)
        while !closed {
            do {
                guard let packet = try parser.next(&pending) else { break }
                await perform(machine.received(packet, now: Date()))
            } catch {
                await perform(machine.decodeFailed(error))
            }
        }
        if pending.readerIndex > 4096 { pending.discardReadBytes() }
        return !closed
    }

    func tick() async {
        await perform(machine.tick(now: Date()))
    }

    func deliver(_ mail: Mail) async {
        switch mail {
        case .publish(let p):
            await run(outboundFlow.enqueue(p))
        case .takenOver:
            await perform(machine.disconnect(.sessionTakenOver, "another connection took over this session"))
        }
    }

    /// The transport is gone (or we closed it): publish the will if owed, leave the hub.
    func finish(sendWill: Bool = true) async {
        if !closed { closed = true }
        mailbox.finish()
        if let key = sessionKey {
            if sendWill, let will { await publishWill(will, from: key) }
            await hub.detach(key, id: ObjectIdentifier(self))
        }
        sessionKey = nil
        will = nil
    }

    private func publishWill(_ will: Connect.Will, from key: String) async {
        _ = await hub.publish(from: key, Publish(topic: will.topic, payload: will.payload, qos: will.qos, retain: will.retain, properties: Properties(will.properties.all.filter {
            if case .willDelayInterval = $0 { false } else { true }
        })))
    }

    private func perform(_ actions: [ConnectionStateMachine.Action]) async {
        for action in actions {
            switch action {
            case .send(let packet):
                await write(packet)
            case .accept(let key, let connect, let connack):
                sessionKey = key
                will = connect.will
                if let max = connect.properties.receiveMaximum { outboundFlow = OutboundFlow(receiveMaximum: Int(max)) }
                await hub.attach(key, policy: Self.policy(for: machine.identity), id: ObjectIdentifier(self), mailbox: mailbox)
                await write(.connack(connack))
            case .deliver(let publish):
                await handlePublish(publish)
            case .forward(let packet):
                await handle(packet)
            case .close(let sendWill):
                closed = true
                if !sendWill { will = nil }
                outbound.finish()
            }
        }
    }

    private func handlePublish(_ publish: Publish) async {
        guard let key = sessionKey else { return }
        let decision: InboundFlow.Decision
        do { decision = try inboundFlow.received(publish) } catch {
            await perform(machine.disconnect(error.reason, error.message))
            return
        }
        var reason = ReasonCode.success
        if decision == .deliver, case .refused(let refusal) = await hub.publish(from: key, publish) {
            reason = refusal
            logger.notice("publish refused", metadata: ["session": "\(key)", "topic": "\(publish.topic.prefix(128))"])
        }
        guard let id = publish.packetID else { return }
        let v5 = parser.version == .v5
        switch publish.qos {
        case .atLeastOnce:
            await write(.puback(Ack(packetID: id, reason: v5 ? reason : .success)))
            inboundFlow.acknowledged(id)
        case .exactlyOnce:
            await write(.pubrec(Ack(packetID: id, reason: v5 ? reason : .success)))
            if reason.isError { _ = inboundFlow.released(id) }
        case .atMostOnce:
            break
        }
    }

    private func handle(_ packet: MQTTPacket) async {
        guard let key = sessionKey else { return }
        switch packet {
        case .subscribe(let s):
            let (reasons, retained) = await hub.subscribe(key, s)
            await write(.suback(SubAck(packetID: s.packetID, reasons: reasons)))
            for message in retained { await run(outboundFlow.enqueue(message)) }
        case .unsubscribe(let u):
            await write(.unsuback(SubAck(packetID: u.packetID, reasons: await hub.unsubscribe(key, u.filters))))
        case .pubrel(let a):
            await write(.pubcomp(Ack(packetID: a.packetID, reason: parser.version == .v5 ? inboundFlow.released(a.packetID) : .success)))
        case .puback, .pubrec, .pubcomp:
            do {
                await run(try outboundFlow.receive(packet))
            } catch where error.reason == .packetIdentifierNotFound {
                if case .pubrec(let a) = packet { await write(.pubrel(Ack(packetID: a.packetID, reason: .packetIdentifierNotFound))) }
            } catch {
                await perform(machine.disconnect(error.reason, error.message))
            }
        case .auth:
            await perform(machine.disconnect(.badAuthenticationMethod, "extended authentication is not supported"))
        default:
            break
        }
    }

    private func run(_ actions: [OutboundFlow.Action]) async {
        for action in actions {
            switch action {
            case .send(let p): await write(.publish(p))
            case .sendRelease(let id): await write(.pubrel(Ack(packetID: id)))
            case .dropped: logger.notice("outbound queue full; oldest message dropped", metadata: ["session": "\(sessionKey ?? "-")"])
            }
        }
    }

    private func write(_ packet: MQTTPacket) async {
        guard !closed || isFinalPacket(packet) else { return }
        var buffer = ByteBuffer()
        packet.write(version: parser.version ?? .v5, to: &buffer)
        do { try await outbound.write(buffer) } catch { closed = true }
    }

    private func isFinalPacket(_ packet: MQTTPacket) -> Bool {
        switch packet {
        case .disconnect, .connack: true
        default: false
        }
    }

    static func policy(for identity: PeerIdentity) -> AccessPolicy {
        switch identity {
        case .device(let serial): .device(serial: serial)
        case .development: .development
        }
    }
}
