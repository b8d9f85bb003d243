import Foundation
import HearthBroker
import HearthCore
import HearthCrypto
import HearthMQTT
import HearthMetrics
import HearthMonitor
import HearthStorage
import Logging
import NIOCore
import NIOTLS
import Synchronization

/// What the gateway knows about an authenticated device for the life of its connection.
struct DeviceContext: Sendable {
    let serial: DeviceSerial
    let model: ProductModel
    let validator: TelemetryValidator
    let topics: DeviceTopics
    /// The fields its owner has not agreed to, as of `policyGeneration` of ``DevicePolicies``.
    var policy: DevicePolicy
    var policyGeneration: Int
    /// Why it is quarantined, if it is (refreshed with the policy).
    var quarantine: String?

    init(serial: DeviceSerial, model: ProductModel, policy: DevicePolicy = .none, policyGeneration: Int = 0) {
        self.serial = serial
        self.model = model
        validator = TelemetryValidator(model: model)
        topics = DeviceTopics(serial)
        self.policy = policy
        self.policyGeneration = policyGeneration
    }
}

/// The devices whose owner changed what they agree to while the gateway runs. A connection
/// compares one counter per reading and looks its device up only when the counter moved.
final class DevicePolicies: Sendable {
    private let policies = Mutex<[DeviceSerial: DevicePolicy]>([:])
    /// Quarantine changes since start: a reason, or an empty string for a release.
    private let quarantines = Mutex<[DeviceSerial: String]>([:])
    private let counter = Atomic<Int>(0)

    var generation: Int { counter.load(ordering: .acquiring) }

    func set(_ serial: DeviceSerial, _ policy: DevicePolicy) {
        policies.withLock { $0[serial] = policy }
        counter.wrappingAdd(1, ordering: .releasing)
    }

    func latest(_ serial: DeviceSerial) -> DevicePolicy? { policies.withLock { $0[serial] } }

    func setQuarantine(_ serial: DeviceSerial, _ reason: String?) {
        quarantines.withLock { $0[serial] = reason ?? "" }
        counter.wrappingAdd(1, ordering: .releasing)
    }

    /// Nil: no change since start (the device record says); "": released; else the reason.
    func quarantineChange(_ serial: DeviceSerial) -> String? { quarantines.withLock { $0[serial] } }

    /// The quarantine reason if a change since start says it is quarantined, nil otherwise.
    func quarantine(_ serial: DeviceSerial) -> String?? {
        quarantineChange(serial).map { $0.isEmpty ? nil : $0 }
    }
}

/// Everything a connection shares with the rest of the gateway.
struct GatewayParts: Sendable {
    let hub: Hub
    let ingest: TelemetryIngest?
    /// The server's update service, once it is attached.
    let updates: ChannelSlot<any DeviceUpdateChannel>
    /// The server's account service, for factory resets, once it is attached.
    let resets: ChannelSlot<any DeviceResetChannel>
    /// The server's certificate service, for re-keying, once it is attached.
    let certificates: ChannelSlot<any DeviceCertificateChannel>
    let counters: Counters
    let limits: ConnectionLimits
    let admission: Admission
    let authenticator: Authenticator
    let policies: DevicePolicies
    let live: ConnectionRegistry
    let offload: Offload
    /// Per-device security detectors, and the server's alert service once attached.
    let watchers: Watchers
    let alerts: ChannelSlot<any DeviceAlertChannel>
    /// Where this node's device connections are recorded for the other nodes, once attached.
    let recorder: ChannelSlot<any ConnectionRecorder>
    /// Where persistent sessions and retained messages are stored.
    let brokerState: (any BrokerStateStore)?
    /// With nodes sharing a database: moves a device's session to this node when it is needed here.
    let handoff: ChannelSlot<any SessionHandoff>
    let handshakeTimeout: TimeAmount
    let logger: Logger
}

/// A `Sendable` handle on one connection. What other parts of the gateway tell it (a delivery, a
/// commit, a takeover) runs on the connection's own event loop, in the order it was told.
final class ConnectionRef: Sendable, Hashable {
    let eventLoop: any EventLoop
    private let handler: NIOLoopBound<ConnectionHandler>

    /// The handler's identity: one connection, however many refs are made for it.
    let id: ObjectIdentifier

    init(_ handler: ConnectionHandler, eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
        self.handler = NIOLoopBound(handler, eventLoop: eventLoop)
        id = ObjectIdentifier(handler)
    }

    private func run(_ body: @escaping @Sendable (ConnectionHandler) -> Void) {
        if eventLoop.inEventLoop {
            body(handler.value)
        } else {
            eventLoop.execute { body(self.handler.value) }
        }
    }

    func deliver(_ publish: Publish) { run { $0.deliver(publish) } }
    func disconnect(_ reason: ReasonCode, _ message: String) { run { $0.disconnect(reason, message) } }
    func committed(_ ids: [UInt16], stored: Bool) { run { $0.committed(ids, stored: stored) } }
    func settle(_ id: UInt16, _ reason: ReasonCode) { run { $0.settleAndFlush(id, reason) } }
    func admitted(_ result: Result<DeviceContext, Authenticator.Refused>) { run { $0.admitted(result) } }

    static func == (a: ConnectionRef, b: ConnectionRef) -> Bool { a.id == b.id }
    func hash(into hasher: inout Hasher) { hasher.combine(id) }
}

/// Every open connection, for shutdown.
final class ConnectionRegistry: Sendable {
    private struct State {
        var connections: [ObjectIdentifier: ConnectionRef] = [:]
        var waiters: [CheckedContinuation<Void, Never>] = []
        var stopping = false
    }

    private let state = Mutex(State())

    /// Registers a connection; false once the gateway stops (the caller closes it at once). A
    /// socket accepted just before the listener closed becomes active only after ``stop()`` took
    /// its list: without this it would stay open until its handshake deadline.
    func add(_ c: ConnectionRef) -> Bool {
        state.withLock { s in
            guard !s.stopping else { return false }
            s.connections[c.id] = c
            return true
        }
    }

    /// The gateway stops: no connection is taken from now on; returns the ones to end.
    func stop() -> [ConnectionRef] {
        state.withLock { s in
            s.stopping = true
            return Array(s.connections.values)
        }
    }

    func remove(_ c: ConnectionRef) {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.connections[c.id] = nil
            guard s.connections.isEmpty else { return [] }
            defer { s.waiters = [] }
            return s.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    var count: Int { state.withLock { $0.connections.count } }

    /// Returns once every connection has gone, or after `timeout` (whichever is first). Not
    /// cancellable: a gateway that is being cancelled still waits for its connections.
    func drained(timeout: TimeAmount, timers: any EventLoop) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let empty = state.withLock { s in
                if s.connections.isEmpty { return true }
                s.waiters.append(continuation)
                return false
            }
            if empty { return continuation.resume() }
            timers.scheduleTask(in: timeout) {
                let waiters = self.state.withLock { s in
                    defer { s.waiters = [] }
                    return s.waiters
                }
                for waiter in waiters { waiter.resume() }
            }
        }
    }
}

/// Async work a connection needs done off its event loop (a store lookup, an update report),
/// run as child tasks of the gateway's service, never as free-standing tasks.
final class Offload: Sendable {
    typealias Job = @Sendable () async -> Void
    private let jobs: AsyncStream<Job>
    private let continuation: AsyncStream<Job>.Continuation

    init() { (jobs, continuation) = AsyncStream<Job>.makeStream() }

    func run(_ job: @escaping Job) { continuation.yield(job) }

    /// Runs jobs until ``finish()``; returns when the last has ended.
    func serve() async {
        await withDiscardingTaskGroup { group in
            for await job in jobs { group.addTask { await job() } }
        }
    }

    func finish() { continuation.finish() }
}

/// One client connection, owned by one channel handler on its event loop: it decodes the bytes
/// as they are read, runs the protocol state machine and message flows, times its own deadlines
/// (connect timeout, keep-alive) and performs every action itself. Nothing else awaits its I/O,
/// and whenever the connection ends, whoever decides it, the socket is closed.
final class ConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let parts: GatewayParts
    /// True on the mutual-TLS device listener: the peer is admitted once its certificate checks out.
    let deviceListener: Bool
    /// The gateway's logger with this connection's id (`connection`), for every line about it.
    private(set) lazy var logger: Logger = {
        var logger = parts.logger
        logger[metadataKey: "connection"] = "\(UInt(bitPattern: ObjectIdentifier(self).hashValue) % 1_000_000_000)"
        return logger
    }()
    private var context: ChannelHandlerContext?
    private var ref: ConnectionRef?
    private var source = "unknown"
    /// Counted against its source's unauthenticated sockets (``Admission/arriveUnadmitted(_:)``).
    private var unadmitted = false
    /// When a device's session was attached (recorded for the other nodes).
    private var connectedSince: Date?
    /// Counted towards the connection cap (``Admission/arrive(now:)``).
    private var authenticated = false

    private var device: DeviceContext?
    /// Its device's detectors, looked up once at admission.
    private var watch: Watchers.Box?
    /// Set once the peer may speak MQTT (at once on the development listener; after the TLS
    /// handshake and the certificate check on the device listener).
    private var machine: ConnectionStateMachine?
    private var framer: MQTTFramer
    /// Bytes that arrived during the certificate check, before the peer may speak MQTT.
    private var pending: ByteBuffer?
    /// The protocol level of the CONNECT (5.0 until one arrives).
    private var version = MQTTVersion.v5
    private var outboundFlow = OutboundFlow()
    private var inboundFlow: InboundFlow
    private var sessionKey: String?
    private var will: Connect.Will?
    private var sessionExpiry: UInt32 = 0
    /// The client's Maximum Packet Size: larger messages are not sent to it (MQTT 5.0 §3.1.2.25).
    private var clientMaximumPacketSize = Int.max
    /// Topic aliases this server assigned towards the client, up to its Topic Alias Maximum
    /// (MQTT 5.0 §3.3.2.3.4): a topic's later messages go with the alias and an empty name.
    private var clientTopicAliasMaximum = 0
    private var outboundAliases: [String: UInt16] = [:]
    /// Acknowledgements owed, in the order the PUBLISHes arrived (MQTT §4.6); `nil` while a
    /// reading waits for its commit.
    private var acks: [(id: UInt16, qos: QoS, reason: ReasonCode?, text: String?)] = []
    private var publishBucket: TokenBucket
    private var byteBucket: TokenBucket
    private var closed = false
    private var output = ByteBuffer()
    private var flushScheduled = false
    private var reading = false
    /// Messages routed here while the socket would not take more; bounded, oldest dropped.
    private var held: [Publish] = []
    private var timer: Scheduled<Void>?

    init(parts: GatewayParts, deviceListener: Bool) {
        self.parts = parts
        self.deviceListener = deviceListener
        let limits = parts.limits
        framer = MQTTFramer(MQTTParser(maximumPacketSize: Int(limits.maximumPacketSize)))
        inboundFlow = InboundFlow(receiveMaximum: Int(limits.receiveMaximum))
        publishBucket = TokenBucket(rate: limits.publishesPerSecond, burst: limits.publishesPerSecond, now: Date())
        byteBucket = TokenBucket(rate: limits.bytesPerSecond, burst: limits.bytesPerSecond, now: Date())
    }

    // MARK: Channel events

    func channelActive(context: ChannelHandlerContext) {
        self.context = context
        let ref = ConnectionRef(self, eventLoop: context.eventLoop)
        self.ref = ref
        guard parts.live.add(ref) else { return close() }
        source = context.channel.remoteAddress?.ipAddress ?? "unknown"
        if deviceListener {
            guard parts.admission.arriveUnadmitted(source) else {
                parts.counters.add(\.unauthenticatedRefused)
                close()
                return
            }
            unadmitted = true
            // The handshake and the certificate check must finish in time.
            timer = context.eventLoop.assumeIsolated().scheduleTask(in: parts.handshakeTimeout) { [self] in
                if machine == nil { close() }
            }
        } else {
            start(identity: .development, device: nil, refusal: nil)
        }
        context.fireChannelActive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSUserEvent, case .handshakeCompleted = event, let ref {
            let der = try? context.pipeline.syncOperations.handler(type: MutualTLSServerHandler.self)
                .peerCertificateDER
            let parts = self.parts
            parts.offload.run {
                var result = await parts.authenticator.admit(der)
                if case .success(let device) = result {
                    do { try await parts.keepSession(device.serial) } catch {
                        parts.logger.warning(
                            "could not take a device's MQTT session over from another node",
                            metadata: ["serial": "\(device.serial)", "error": "\(error)"])
                        result = .failure(
                            Authenticator.Refused(
                                description: "session store unavailable", serial: device.serial, unavailable: true))
                    }
                }
                ref.admitted(result)
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// The certificate check finished.
    func admitted(_ result: Result<DeviceContext, Authenticator.Refused>) {
        guard !closed else { return }
        timer?.cancel()
        switch result {
        case .success(let admitted):
            parts.admission.unadmittedLeft(source)
            unadmitted = false
            start(identity: .device(serial: admitted.serial.rawValue), device: admitted, refusal: nil)
            parts.retainPolicy(admitted.serial, admitted.policy)
            watch = parts.watchers.box(admitted.serial)
            parts.watchers.observe(watch, .connected(source: source))
        case .failure(let why) where why.unavailable:
            // The store is down (a database restart): like a failing commit, come back later.
            logger.warning("device store unavailable; the device is told to come back later")
            start(identity: .development, device: nil, refusal: (.serverBusy, TelemetryIngest.backOff))
        case .failure(let why):
            if let serial = why.serial { parts.watchers.observe(serial, .handshakeFailed(source: source)) }
            // Refused with CONNACK 0x87 when it sends CONNECT (so the device learns why), and
            // closed at the connect timeout if it never does; it stays counted as unauthenticated.
            parts.counters.add(\.devicesRefused)
            logger.notice("device refused", metadata: ["reason": "\(why)"])
            start(identity: .development, device: nil, refusal: (.notAuthorized, 3600))
        }
    }

    private func start(identity: PeerIdentity, device: DeviceContext?, refusal: (reason: ReasonCode, retryAfter: Int)?)
    {
        self.device = device
        var refusal = refusal
        if refusal == nil, device != nil, let wait = parts.ingest?.unavailable() {
            // The store is failing: come back later (the device SDK honours retry-after).
            refusal = (.serverBusy, wait)
        }
        if refusal == nil {
            authenticated = true
            refusal = parts.admission.arrive()
        }
        parts.counters.add(refusal == nil ? \.connectionsAccepted : \.connectionsRefused)
        machine = ConnectionStateMachine(identity: identity, limits: parts.limits, now: Date(), refusal: refusal)
        armTimer()
        // Bytes that arrived during the certificate check.
        if var bytes = pending {
            pending = nil
            process(&bytes)
            flush()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        guard !closed else { return }
        reading = true
        process(&bytes)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        reading = false
        flush()
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, !held.isEmpty {
            let messages = held
            held = []
            for message in messages { deliver(message) }
        }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("connection error", metadata: ["error": "\(error)"])
        close()
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        timer?.cancel()
        finish()
        if authenticated { parts.admission.leave() }
        if unadmitted { parts.admission.unadmittedLeft(source) }
        authenticated = false
        unadmitted = false
        if let ref { parts.live.remove(ref) }
        self.context = nil
        context.fireChannelInactive()
    }

    /// Decodes and handles every complete packet in `bytes`; keeps an incomplete tail.
    private func process(_ bytes: inout ByteBuffer) {
        guard machine != nil else {
            // Still in the certificate check: keep the bytes (at most one packet's worth).
            var kept = pending ?? ByteBuffer()
            kept.writeBuffer(&bytes)
            guard kept.readableBytes <= Int(parts.limits.maximumPacketSize) else { return close() }
            pending = kept
            return
        }
        let now = Date()
        do {
            try framer.decode(&bytes) { packet in
                if case .connect(let connect) = packet { version = connect.version }
                perform(machine!.received(packet, now: now))
                return !closed
            }
        } catch {
            perform(machine!.decodeFailed(error))
        }
    }

    // MARK: Deadlines

    /// Sets the one timer for the state machine's next deadline.
    private func armTimer() {
        timer?.cancel()
        timer = nil
        guard !closed, let context, let deadline = machine?.deadline else { return }
        let delay = max(0, deadline.timeIntervalSinceNow)
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(delay * 1000) + 1)) { [self] in
            guard !closed, machine != nil else { return }
            perform(machine!.tick(now: Date()))
            flush()
            if !closed { armTimer() }
        }
    }

    // MARK: From the rest of the gateway

    func deliver(_ publish: Publish) {
        guard !closed, sessionKey != nil else { return }
        if let context, !context.channel.isWritable {
            // A peer that does not read: its queue is bounded and the drops are counted, and
            // nothing else waits for it.
            held.append(publish)
            if held.count > outboundFlow.queueLimit {
                held.removeFirst()
                parts.counters.add(\.deliveriesDropped)
            }
            return
        }
        run(outboundFlow.enqueue(publish))
        scheduleFlush()
    }

    func disconnect(_ reason: ReasonCode, _ message: String) {
        guard !closed else { return }
        guard machine?.isConnected == true else { return close() }
        perform(machine!.disconnect(reason, message))
        flush()
    }

    /// What messages `ids` waited for (a commit, a flush) is done.
    func committed(_ ids: [UInt16], stored: Bool) {
        guard !closed else { return }
        if !stored, let wait = parts.ingest?.unavailable() {
            // Not acknowledged because the store fails: the device keeps the readings and sends
            // them again. It is told to stay away a while (5.0: DISCONNECT 0x89 server busy with
            // retry-after; 3.1.1 has no reason, the connection just closes), and until the store
            // works again a CONNECT gets CONNACK 0x89, so a fleet does not reconnect into a failing
            // database at once.
            guard machine?.isConnected == true else { return close() }
            perform(
                machine!.disconnect(
                    .serverBusy, "the server cannot store readings now; try again later", retryAfter: wait))
            return flush()
        }
        if !stored, version == .v3_1_1 {
            // A commit cut short by a stop. 3.1.1 has no failure PUBACK: close without
            // acknowledging, so the client sends it again.
            return disconnect(.unspecifiedError, "storage unavailable")
        }
        for id in ids { settle(id, stored ? .success : .unspecifiedError) }
        scheduleFlush()
    }

    func settleAndFlush(_ id: UInt16, _ reason: ReasonCode) {
        guard !closed else { return }
        settle(id, reason)
        scheduleFlush()
    }

    // MARK: Actions

    private func perform(_ actions: [ConnectionStateMachine.Action]) {
        for action in actions {
            switch action {
            case .send(let packet):
                write(packet)
            case .accept(let key, let connect, var connack):
                sessionKey = key
                will = connect.will
                sessionExpiry = machine!.sessionExpiry(for: connect)
                if let max = connect.properties.receiveMaximum { outboundFlow = OutboundFlow(receiveMaximum: Int(max)) }
                if connect.version == .v5, let max = connect.properties.maximumPacketSize {
                    clientMaximumPacketSize = Int(max)
                }
                if connect.version == .v5, let max = connect.properties.topicAliasMaximum {
                    clientTopicAliasMaximum = Int(max)
                }
                let resumed = parts.hub.attach(
                    key, cleanStart: connect.cleanStart, expiry: sessionExpiry,
                    policy: Self.policy(for: machine!.identity), connection: ref!)
                connack.sessionPresent = resumed.present
                write(.connack(connack))
                if let serial = device?.serial, let recorder = parts.recorder.channel {
                    let since = Date()
                    connectedSince = since
                    parts.offload.run { await recorder.connected(serial, since: since) }
                }
                // A resumed session: unacknowledged messages again (same ids, DUP), then what queued.
                if let flow = resumed.flow {
                    outboundFlow = flow
                    run(outboundFlow.resend())
                }
                for message in resumed.queued { run(outboundFlow.enqueue(message)) }
                armTimer()
            case .deliver(let publish):
                handlePublish(publish)
            case .forward(let packet):
                handle(packet)
            case .setSessionExpiry(let expiry):
                sessionExpiry = expiry
            case .close(let sendWill):
                if !sendWill { will = nil }
                flush()
                close()
            }
        }
    }

    /// Settles the will and the session, then closes the socket (the final packets already written
    /// go first): by the time the peer sees the close, a session that was to end has ended, so an
    /// immediate reconnect never finds it (on a loaded machine the loop could otherwise be paused
    /// between the close and ``channelInactive(context:)``).
    private func close() {
        guard let context else { return }
        closed = true
        timer?.cancel()
        finish()
        context.close(mode: .all, promise: nil)
    }

    /// The connection ends (the server closes it, or the transport is gone): publish (or schedule)
    /// the will if owed, and leave the hub, which keeps the session if it has an expiry. Once.
    private func finish() {
        guard let key = sessionKey, let ref else { return }
        if let will {
            let message = Publish(
                topic: will.topic, payload: will.payload, qos: will.qos, retain: will.retain,
                properties: Properties(
                    will.properties.all.filter {
                        if case .willDelayInterval = $0 { false } else { true }
                    }))
            parts.hub.scheduleWill(
                key, message, delay: min(will.properties.willDelayInterval ?? 0, sessionExpiry), connection: ref)
        }
        parts.hub.detach(key, connection: ref, flow: outboundFlow, expiry: sessionExpiry)
        if let serial = device?.serial, let since = connectedSince, let recorder = parts.recorder.channel {
            parts.offload.run { await recorder.disconnected(serial, since: since) }
        }
        connectedSince = nil
        sessionKey = nil
        will = nil
    }

    private func handlePublish(_ publish: Publish) {
        guard let key = sessionKey else { return }
        parts.counters.metrics?.messagesIn.increment()
        let decision: InboundFlow.Decision
        do { decision = try inboundFlow.received(publish) } catch {
            perform(machine!.disconnect(error.reason, error.message))
            return
        }
        // The acknowledgement's place in line is taken now, before anything is awaited.
        if let id = publish.packetID { acks.append((id, publish.qos, nil, nil)) }
        var reason: ReasonCode? = .success
        var text: String?
        if decision == .deliver {
            let now = Date()
            parts.watchers.observe(watch, .published(bytes: publish.payload.count), now: now)
            if let device, let why = refreshed(device).quarantine, !device.topics.allowedInQuarantine(publish.topic) {
                parts.counters.add(\.quarantineRefused)
                reason = .notAuthorized
                text = "quarantined: \(why.prefix(200)); the device may still update itself"
            } else if !publishBucket.take(now: now) || !byteBucket.take(Double(publish.payload.count), now: now) {
                parts.counters.add(\.publishesRateLimited)
                reason = .quotaExceeded
            } else if let device, publish.topic == device.topics.telemetry {
                (reason, text) = ingest(publish, device: device, now: now)
            } else if let device, publish.topic == device.topics.update {
                offloaded(publish) { await $0.updateReport(publish.payload, device: device) }
                reason = nil
            } else if let device, publish.topic == device.topics.reset {
                offloaded(publish) { await $0.factoryReset(publish.payload, device: device) }
                reason = nil
            } else if let device, publish.topic == device.topics.csr {
                offloaded(publish) { await $0.certificateRequest(publish.payload, device: device) }
                reason = nil
            } else {
                let (result, ticket) = parts.hub.publish(from: key, publish)
                if case .refused(let refusal) = result {
                    reason = refusal
                    parts.counters.add(\.accessRefused)
                    parts.watchers.observe(watch, .refusedTopic(publish.topic), now: now)
                    logger.notice(
                        "publish refused", metadata: ["session": "\(key)", "topic": "\(publish.topic.prefix(128))"])
                } else {
                    if let device, device.topics.isCommandResult(publish.topic) { answer(publish, device: device) }
                    // A retained or queued message is acknowledged once it is on disk.
                    if let ticket, let id = publish.packetID, let ref,
                        parts.hub.whenFlushed(ticket, { stored in ref.committed([id], stored: stored) })
                    {
                        reason = nil
                    }
                }
            }
        }
        if let id = publish.packetID, let reason { settle(id, reason, text: text) }
    }

    /// Validates a reading against the model and what the owner agreed to, and hands it to the
    /// group commit. Returns the PUBACK reason (and reason string) now, or nil when the
    /// acknowledgement waits for the commit.
    private func ingest(_ publish: Publish, device: DeviceContext, now: Date) -> (ReasonCode?, String?) {
        guard let ingest = parts.ingest else { return (.implementationSpecificError, nil) }
        do {
            let reading = try device.validator.validate(
                publish.payload, serial: device.serial, receivedAt: now, policy: currentPolicy(device))
            guard let id = publish.packetID, let ref else {
                ingest.submit(reading, waiter: nil)
                return (.success, nil)
            }
            ingest.submit(reading, waiter: (ref, id))
            return (nil, nil)
        } catch {
            parts.counters.add(\.telemetryRefused)
            // Declined fields are a device told late what its owner chose, not misbehaviour.
            if error.kind != .declined { parts.watchers.observe(watch, .refusedPayload, now: now) }
            ingest.refuse(TelemetryRefusal(serial: device.serial, kind: error.kind, at: now))
            logger.notice(
                "telemetry refused",
                metadata: [
                    "serial": "\(device.serial)", "kind": "\(error.kind.rawValue)", "field": "\(error.field ?? "-")",
                ])
            // A field the owner refused is not stored, and the device is told why.
            return error.kind == .declined ? (.notAuthorized, error.message) : (.payloadFormatInvalid, nil)
        }
    }

    /// The device's policy, looked up again only when some owner's choices changed since it was taken.
    private func currentPolicy(_ device: DeviceContext) -> DevicePolicy {
        refreshed(device).policy
    }

    /// The device's policy and quarantine, looked up again only when some device's changed since
    /// they were taken.
    private func refreshed(_ device: DeviceContext) -> DeviceContext {
        let generation = parts.policies.generation
        guard generation != device.policyGeneration else { return device }
        var fresh = device
        fresh.policy = parts.policies.latest(device.serial) ?? device.policy
        if let change = parts.policies.quarantine(device.serial) { fresh.quarantine = change }
        fresh.policyGeneration = generation
        self.device = fresh
        return fresh
    }

    /// A message a server service handles before the PUBACK (an update report, a factory reset):
    /// off the event loop; the acknowledgement follows when it is done.
    private func offloaded(_ publish: Publish, _ work: @escaping @Sendable (GatewayParts) async -> ReasonCode) {
        guard let ref else { return }
        let parts = self.parts
        let id = publish.packetID
        parts.offload.run {
            let reason = await work(parts)
            if let id { ref.settle(id, reason) }
        }
    }

    /// Sets the reason of the oldest unsettled acknowledgement for `id`, then writes what is ready.
    private func settle(_ id: UInt16, _ reason: ReasonCode, text: String? = nil) {
        guard let index = acks.firstIndex(where: { $0.id == id && $0.reason == nil }) else { return }
        acks[index].reason = reason
        acks[index].text = text
        while let first = acks.first, let reason = first.reason {
            acks.removeFirst()
            // 3.1.1 acknowledges without a reason: a refused message is dropped (and counted).
            let wire = version == .v5 ? reason : .success
            let properties: Properties = version == .v5 && first.text != nil ? [.reasonString(first.text!)] : []
            switch first.qos {
            case .atLeastOnce:
                write(.puback(Ack(packetID: first.id, reason: wire, properties: properties)))
                inboundFlow.acknowledged(first.id)
            case .exactlyOnce:
                write(.pubrec(Ack(packetID: first.id, reason: wire, properties: properties)))
                if reason.isError { _ = inboundFlow.released(first.id) }
            case .atMostOnce:
                break
            }
        }
    }

    /// A device's answer to a command: `{"id", "status", "detail"?}`.
    private func answer(_ publish: Publish, device: DeviceContext) {
        guard let json = try? JSONValue.parse(publish.payload),
            let result = try? CommandMessage.resultSchema.validate(json),
            let id = result.string("id"), let status = result.string("status")
        else {
            logger.notice("malformed command result", metadata: ["serial": "\(device.serial)"])
            return
        }
        parts.watchers.observe(watch, status == "ok" ? .commandSucceeded : .commandFailed)
        parts.hub.resolve(
            id, serial: device.serial.rawValue, .answered(status: status, detail: result.string("detail")))
    }

    private func handle(_ packet: MQTTPacket) {
        guard let key = sessionKey else { return }
        switch packet {
        case .subscribe(var s):
            // A quarantined device keeps only the subscriptions that lead out of quarantine; the
            // others are refused (and counted as such, not as probing).
            var held: Set<Int> = []
            if let device, refreshed(device).quarantine != nil {
                held = Set(s.requests.indices.filter { !device.topics.receivableInQuarantine(s.requests[$0].filter) })
                s.requests = s.requests.indices.filter { !held.contains($0) }.map { s.requests[$0] }
                parts.counters.add(\.quarantineRefused, held.count)
            }
            var (reasons, retained) = s.requests.isEmpty ? ([], []) : parts.hub.subscribe(key, s)
            parts.counters.add(\.accessRefused, reasons.filter { $0 == .notAuthorized }.count)
            if let device {
                for (request, reason) in zip(s.requests, reasons) where reason == .notAuthorized {
                    parts.watchers.observe(watch, .refusedTopic(request.filter))
                }
            }
            for i in held.sorted() { reasons.insert(.notAuthorized, at: min(i, reasons.count)) }
            write(.suback(SubAck(packetID: s.packetID, reasons: reasons)))
            for message in retained { run(outboundFlow.enqueue(message)) }
        case .unsubscribe(let u):
            let reasons = parts.hub.unsubscribe(key, u.filters)
            write(.unsuback(SubAck(packetID: u.packetID, reasons: reasons)))
        case .pubrel(let a):
            write(
                .pubcomp(
                    Ack(packetID: a.packetID, reason: version == .v5 ? inboundFlow.released(a.packetID) : .success)))
        case .puback, .pubrec, .pubcomp:
            do {
                run(try outboundFlow.receive(packet))
            } catch  where error.reason == .packetIdentifierNotFound {
                if case .pubrec(let a) = packet {
                    write(.pubrel(Ack(packetID: a.packetID, reason: .packetIdentifierNotFound)))
                }
            } catch {
                perform(machine!.disconnect(error.reason, error.message))
            }
        case .auth:
            perform(machine!.disconnect(.badAuthenticationMethod, "extended authentication is not supported"))
        default:
            break
        }
    }

    private func run(_ actions: [OutboundFlow.Action]) {
        for action in actions {
            switch action {
            case .send(let p): write(.publish(p))
            case .sendRelease(let id): write(.pubrel(Ack(packetID: id)))
            case .dropped:
                parts.counters.add(\.deliveriesDropped)
                logger.notice(
                    "outbound queue full; oldest message dropped", metadata: ["session": "\(sessionKey ?? "-")"])
            }
        }
    }

    // MARK: Output

    /// Encodes a packet into the output buffer; ``flush()`` sends what gathered in one write (one
    /// TLS record and one syscall for all the PUBACKs of a read, say). A message larger than the
    /// client's Maximum Packet Size is dropped instead (MQTT 5.0 §3.1.2.25).
    private func write(_ packet: MQTTPacket) {
        guard !closed || isFinalPacket(packet) else { return }
        var packet = packet
        var assigned: String?
        if case .publish(var p) = packet, clientTopicAliasMaximum > 0, !p.topic.isEmpty {
            if let alias = outboundAliases[p.topic] {
                p.topic = ""
                p.properties.all.append(.topicAlias(alias))
            } else if outboundAliases.count < clientTopicAliasMaximum {
                assigned = p.topic
                p.properties.all.append(.topicAlias(UInt16(outboundAliases.count + 1)))
            }
            packet = .publish(p)
        }
        let mark = output.writerIndex
        packet.write(version: version, to: &output)
        if output.writerIndex - mark > clientMaximumPacketSize {
            output.moveWriterIndex(to: mark)
            parts.counters.add(\.deliveriesDropped)
        } else {
            if case .publish = packet { parts.counters.metrics?.messagesOut.increment() }
            // Only once the client has been told the alias with the name.
            if let assigned { outboundAliases[assigned] = UInt16(outboundAliases.count + 1) }
        }
    }

    private func flush() {
        guard output.readableBytes > 0, let context else { return }
        let chunk = output
        output = context.channel.allocator.buffer(capacity: 0)
        context.writeAndFlush(wrapOutboundOut(chunk), promise: nil)
    }

    /// For output produced outside a read (deliveries, commits): one flush for all that arrives
    /// meanwhile on this event loop.
    private func scheduleFlush() {
        guard !flushScheduled, !reading, let context else { return }
        flushScheduled = true
        context.eventLoop.assumeIsolated().execute { [self] in
            flushScheduled = false
            flush()
        }
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
