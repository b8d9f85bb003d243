import Foundation
import HearthBroker
import HearthCore
import HearthMQTT
import HearthStorage
import Logging
import NIOCore

/// What the gateway knows about an authenticated device for the life of its connection.
struct DeviceContext: Sendable {
    let serial: DeviceSerial
    let model: ProductModel
    let validator: TelemetryValidator
    var telemetryTopic: String { "\(AccessPolicy.namespace)/\(serial.rawValue)/telemetry" }
    var updateTopic: String { "\(AccessPolicy.namespace)/\(serial.rawValue)/update" }

    init(serial: DeviceSerial, model: ProductModel) {
        self.serial = serial
        self.model = model
        validator = TelemetryValidator(model: model)
    }

    /// True for `devices/S/commands/NAME/result` (the access policy has already checked the rest).
    func isCommandResult(_ topic: String) -> Bool {
        topic.hasPrefix("\(AccessPolicy.namespace)/\(serial.rawValue)/commands/") && topic.hasSuffix("/result")
    }
}

/// Everything a connection shares with the rest of the gateway.
struct GatewayParts: Sendable {
    let hub: Hub
    let ingest: TelemetryIngest?
    /// The server's update service, once it is attached.
    let updates: UpdateChannelSlot
    let counters: Counters
    let limits: ConnectionLimits
    let logger: Logger
}

/// One client connection: decodes its bytes, runs its protocol state machine and message flows,
/// and talks to the hub. An actor, so inbound packets, deliveries from other clients, commits and
/// timer ticks are handled one at a time.
actor Connection {
    let parts: GatewayParts
    let device: DeviceContext?
    let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    /// The socket itself: closed whenever the server ends the connection (timeouts, refusals,
    /// takeover, revocation, protocol errors), so the inbound side ends too and nothing waits
    /// for bytes a vanished device will never send.
    let transport: any Channel
    let mailbox: AsyncStream<Mail>.Continuation
    var logger: Logger { parts.logger }
    var parser: MQTTParser
    var machine: ConnectionStateMachine
    var outboundFlow = OutboundFlow()
    var inboundFlow: InboundFlow
    var pending = ByteBuffer()
    var sessionKey: String?
    var will: Connect.Will?
    var sessionExpiry: UInt32 = 0
    /// Acknowledgements owed, in the order the PUBLISHes arrived (MQTT §4.6); `nil` while a
    /// reading waits for its commit.
    var acks: [(id: UInt16, qos: QoS, reason: ReasonCode?)] = []
    var publishBucket: TokenBucket
    var byteBucket: TokenBucket
    private(set) var closed = false
    var output = ByteBuffer()
    var flushScheduled = false

    init(parts: GatewayParts, identity: PeerIdentity, device: DeviceContext?, refusal: (reason: ReasonCode, retryAfter: Int)?, outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>, transport: any Channel, mailbox: AsyncStream<Mail>.Continuation) {
        self.parts = parts
        self.device = device
        self.outbound = outbound
        self.transport = transport
        self.mailbox = mailbox
        let limits = parts.limits
        parser = MQTTParser(maximumPacketSize: Int(limits.maximumPacketSize))
        machine = ConnectionStateMachine(identity: identity, limits: limits, now: Date(), refusal: refusal)
        inboundFlow = InboundFlow(receiveMaximum: Int(limits.receiveMaximum))
        publishBucket = TokenBucket(rate: limits.publishesPerSecond, burst: limits.publishesPerSecond, now: Date())
        byteBucket = TokenBucket(rate: limits.bytesPerSecond, burst: limits.bytesPerSecond, now: Date())
    }

    var version: MQTTVersion { parser.version ?? .v5 }

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
        await flushOutput()
        return !closed
    }

    func tick() async {
        await perform(machine.tick(now: Date()))
        await flushOutput()
    }

    func deliver(_ mail: Mail) async {
        switch mail {
        case .publish(let p):
            await run(outboundFlow.enqueue(p))
        case .disconnect(let reason, let message):
            await perform(machine.disconnect(reason, message))
        }
        scheduleFlush()
    }

    /// The transport is gone (or we closed it): publish (or schedule) the will if owed, and leave
    /// the hub, which keeps the session if it has an expiry.
    func finish(sendWill: Bool = true) async {
        if !closed { closed = true }
        mailbox.finish()
        if let key = sessionKey {
            if sendWill, let will {
                let message = Publish(topic: will.topic, payload: will.payload, qos: will.qos, retain: will.retain, properties: Properties(will.properties.all.filter {
                    if case .willDelayInterval = $0 { false } else { true }
                }))
                await parts.hub.scheduleWill(key, message, delay: min(will.properties.willDelayInterval ?? 0, sessionExpiry))
            }
            await parts.hub.detach(key, id: ObjectIdentifier(self), flow: outboundFlow)
        }
        sessionKey = nil
        will = nil
    }

    private func perform(_ actions: [ConnectionStateMachine.Action]) async {
        for action in actions {
            switch action {
            case .send(let packet):
                write(packet)
            case .accept(let key, let connect, var connack):
                sessionKey = key
                will = connect.will
                sessionExpiry = machine.sessionExpiry(for: connect)
                if let max = connect.properties.receiveMaximum { outboundFlow = OutboundFlow(receiveMaximum: Int(max)) }
                let resumed = await parts.hub.attach(key, cleanStart: connect.cleanStart, expiry: sessionExpiry, policy: Self.policy(for: machine.identity), id: ObjectIdentifier(self), mailbox: mailbox)
                connack.sessionPresent = resumed.present
                write(.connack(connack))
                // A resumed session: unacknowledged messages again (same ids, DUP), then what queued.
                if let flow = resumed.flow {
                    outboundFlow = flow
                    await run(outboundFlow.resend())
                }
                for message in resumed.queued { await run(outboundFlow.enqueue(message)) }
            case .deliver(let publish):
                await handlePublish(publish)
            case .forward(let packet):
                await handle(packet)
            case .close(let sendWill):
                closed = true
                if !sendWill { will = nil }
                // A peer that does not read cannot hold the socket open: the close happens after
                // the final packets are written, or after five seconds, whichever comes first.
                let transport = self.transport
                transport.eventLoop.scheduleTask(in: .seconds(5)) { transport.close(mode: .all, promise: nil) }
                await flushOutput()
                outbound.finish()
                transport.close(mode: .all, promise: nil)
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
        // The acknowledgement's place in line is taken now, before anything is awaited.
        if let id = publish.packetID { acks.append((id, publish.qos, nil)) }
        var reason: ReasonCode? = .success
        if decision == .deliver {
            let now = Date()
            if !publishBucket.take(now: now) || !byteBucket.take(Double(publish.payload.count), now: now) {
                parts.counters.add(\.publishesRateLimited)
                reason = .quotaExceeded
            } else if let device, publish.topic == device.telemetryTopic {
                reason = await ingest(publish, device: device, now: now)
            } else if let device, publish.topic == device.updateTopic {
                reason = await update(publish, device: device)
            } else {
                let (result, ticket) = await parts.hub.publish(from: key, publish)
                if case .refused(let refusal) = result {
                    reason = refusal
                    parts.counters.add(\.accessRefused)
                    logger.notice("publish refused", metadata: ["session": "\(key)", "topic": "\(publish.topic.prefix(128))"])
                } else {
                    if let device, device.isCommandResult(publish.topic) { await answer(publish, device: device) }
                    // A retained or queued message is acknowledged once it is on disk.
                    if let ticket, let id = publish.packetID,
                        await parts.hub.whenFlushed(ticket, { [weak self] stored in await self?.committed([id], stored: stored) })
                    {
                        reason = nil
                    }
                }
            }
        }
        if let id = publish.packetID, let reason { await settle(id, reason) }
    }

    /// Validates a reading and hands it to the group commit. Returns the PUBACK reason now, or nil
    /// when the acknowledgement waits for the commit.
    private func ingest(_ publish: Publish, device: DeviceContext, now: Date) async -> ReasonCode? {
        guard let ingest = parts.ingest else { return .implementationSpecificError }
        do {
            let reading = try device.validator.validate(publish.payload, serial: device.serial, receivedAt: now)
            guard let id = publish.packetID else {
                await ingest.submit(reading, waiter: nil)
                return .success
            }
            await ingest.submit(reading, waiter: (self, id))
            return nil
        } catch {
            parts.counters.add(\.telemetryRefused)
            await ingest.refuse(TelemetryRefusal(serial: device.serial, kind: error.kind, at: now))
            logger.notice("telemetry refused", metadata: ["serial": "\(device.serial)", "kind": "\(error.kind.rawValue)", "field": "\(error.field ?? "-")"])
            return .payloadFormatInvalid
        }
    }

    /// An update report: stored by the update service (before the PUBACK), and its answer sent to
    /// the device's offer topic.
    private func update(_ publish: Publish, device: DeviceContext) async -> ReasonCode {
        guard let channel = parts.updates.channel else { return .implementationSpecificError }
        do {
            let answer = try await channel.received(report: publish.payload, from: device.serial, model: device.model.id)
            _ = await parts.hub.publish(from: nil, Publish(topic: device.updateTopic + "/offer", payload: answer, qos: .atLeastOnce))
            return .success
        } catch let error as HearthError where error.code == .throttled {
            parts.counters.add(\.updateReportsRateLimited)
            return .quotaExceeded
        } catch let error as HearthError where error.code != .internal && error.code != .unavailable {
            logger.notice("update report refused", metadata: ["serial": "\(device.serial)", "why": "\(error.message.prefix(200))"])
            return .payloadFormatInvalid
        } catch {
            logger.error("update report not stored", metadata: ["serial": "\(device.serial)", "error": "\(error)"])
            return .unspecifiedError
        }
    }

    /// What messages `ids` waited for (a commit, a flush) is done.
    func committed(_ ids: [UInt16], stored: Bool) async {
        if !stored, version == .v3_1_1 {
            // 3.1.1 has no failure PUBACK: close without acknowledging, so the client sends it again.
            await perform(machine.disconnect(.unspecifiedError, "storage unavailable"))
            return
        }
        for id in ids { await settle(id, stored ? .success : .unspecifiedError) }
        scheduleFlush()
    }

    /// Sets the reason of the oldest unsettled acknowledgement for `id`, then sends what is ready.
    private func settle(_ id: UInt16, _ reason: ReasonCode) async {
        guard let index = acks.firstIndex(where: { $0.id == id && $0.reason == nil }) else { return }
        acks[index].reason = reason
        await flushAcks()
    }

    /// Sends every acknowledgement at the head of the queue that is ready.
    private func flushAcks() async {
        while let first = acks.first, let reason = first.reason {
            acks.removeFirst()
            // 3.1.1 acknowledges without a reason: a refused message is dropped (and counted).
            let wire = version == .v5 ? reason : .success
            switch first.qos {
            case .atLeastOnce:
                write(.puback(Ack(packetID: first.id, reason: wire)))
                inboundFlow.acknowledged(first.id)
            case .exactlyOnce:
                write(.pubrec(Ack(packetID: first.id, reason: wire)))
                if reason.isError { _ = inboundFlow.released(first.id) }
            case .atMostOnce:
                break
            }
        }
    }

    /// A device's answer to a command: `{"id", "status", "detail"?}`.
    private func answer(_ publish: Publish, device: DeviceContext) async {
        guard let json = try? JSONValue.parse(publish.payload), let result = try? CommandMessage.resultSchema.validate(json) else {
            logger.notice("malformed command result", metadata: ["serial": "\(device.serial)"])
            return
        }
        await parts.hub.resolve(result.string("id")!, serial: device.serial.rawValue, .answered(status: result.string("status")!, detail: result.string("detail")))
    }

    private func handle(_ packet: MQTTPacket) async {
        guard let key = sessionKey else { return }
        switch packet {
        case .subscribe(let s):
            let (reasons, retained) = await parts.hub.subscribe(key, s)
            parts.counters.add(\.accessRefused, reasons.filter { $0 == .notAuthorized }.count)
            write(.suback(SubAck(packetID: s.packetID, reasons: reasons)))
            for message in retained { await run(outboundFlow.enqueue(message)) }
        case .unsubscribe(let u):
            let reasons = await parts.hub.unsubscribe(key, u.filters)
            write(.unsuback(SubAck(packetID: u.packetID, reasons: reasons)))
        case .pubrel(let a):
            write(.pubcomp(Ack(packetID: a.packetID, reason: version == .v5 ? inboundFlow.released(a.packetID) : .success)))
        case .puback, .pubrec, .pubcomp:
            do {
                await run(try outboundFlow.receive(packet))
            } catch where error.reason == .packetIdentifierNotFound {
                if case .pubrec(let a) = packet { write(.pubrel(Ack(packetID: a.packetID, reason: .packetIdentifierNotFound))) }
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
            case .send(let p): write(.publish(p))
            case .sendRelease(let id): write(.pubrel(Ack(packetID: id)))
            case .dropped:
                parts.counters.add(\.deliveriesDropped)
                logger.notice("outbound queue full; oldest message dropped", metadata: ["session": "\(sessionKey ?? "-")"])
            }
        }
    }

    /// Encodes a packet into the output buffer; ``flushOutput()`` sends what gathered in one write
    /// (one TLS record and one syscall for all the PUBACKs of a read, say).
    private func write(_ packet: MQTTPacket) {
        guard !closed || isFinalPacket(packet) else { return }
        packet.write(version: version, to: &output)
    }

    private func flushOutput() async {
        while output.readableBytes > 0 {
            let chunk = output
            output.clear()
            do { try await outbound.write(chunk) } catch {
                closed = true
                output.clear()
                transport.close(mode: .all, promise: nil)
                return
            }
        }
    }

    /// For output produced outside a read (commits): one flush for all that arrives meanwhile.
    private func scheduleFlush() {
        guard !flushScheduled else { return }
        flushScheduled = true
        Task { await self.runScheduledFlush() }
    }

    private func runScheduledFlush() async {
        flushScheduled = false
        await flushOutput()
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
