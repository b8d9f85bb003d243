import Foundation
import HearthCore
import HearthCrypto
import HearthMQTT
import HearthUpdate
import NIOCore
import NIOSSL
import ServiceLifecycle

/// Where and how a device connects.
public struct DeviceConfiguration: Sendable {
    public var serial: DeviceSerial
    /// The device's own product model: its telemetry is checked against it before it is queued,
    /// and every command against it before anything is done.
    public var model: ProductModel
    public var host: String
    public var port: Int
    /// The name the server's certificate must carry; nil checks the IP address `host`.
    public var serverHostname: String?
    /// Seconds; the server's Server Keep Alive (5.0) overrides it.
    public var keepAlive: UInt16 = 60
    /// How long the server keeps the session (subscriptions, queued commands) after a disconnect.
    public var sessionExpiry: UInt32 = 86_400
    public var reconnect = ReconnectPolicy()
    public var queue = QueuePolicy()
    /// 5.0 by default; falls back to 3.1.1 by itself when the server refuses 5.0.
    public var version: MQTTVersion = .v5
    public var connectTimeout: TimeInterval = 15
    /// Seeds the reconnect jitter; random unless a test or simulation fixes it.
    public var seed: UInt64 = UInt64.random(in: .min ... .max)
    /// How often the latest update report is sent again while connected, so the device learns of
    /// rollouts started or advanced since (the server answers each report with an offer).
    public var updateCheckInterval: TimeInterval = 3600

    public init(serial: DeviceSerial, model: ProductModel, host: String, port: Int, serverHostname: String? = nil) {
        self.serial = serial
        self.model = model
        self.host = host
        self.port = port
        self.serverHostname = serverHostname
    }
}

/// A command for the device, already checked against its model.
public struct DeviceCommand: Sendable, Equatable {
    public let id: String
    public let name: String
    public let parameters: [String: JSONValue]
}

/// The answers to the last 32 commands, by command id: a QoS 1 redelivery (the device's
/// acknowledgement was lost) gets the same answer without the command running twice.
public struct RecentAnswers: Sendable {
    public static let capacity = 32
    private var items: [(id: String, reply: CommandReply)] = []

    public init() {}

    /// The answer given to command `id`, if it is among the last ``capacity``.
    public func reply(to id: String) -> CommandReply? { items.first { $0.id == id }?.reply }

    /// Remembers the answer to `id`, forgetting the oldest beyond ``capacity``.
    public mutating func remember(_ reply: CommandReply, to id: String) {
        items.append((id, reply))
        if items.count > Self.capacity { items.removeFirst() }
    }
}

/// The device's answer to a command.
public struct CommandReply: Sendable, Equatable {
    public enum Status: String, Sendable {
        case ok, refused, failed
    }

    public let status: Status
    public let detail: String?

    public static let ok = CommandReply(status: .ok, detail: nil)
    public static func refused(_ why: String) -> CommandReply { CommandReply(status: .refused, detail: why) }
    public static func failed(_ why: String) -> CommandReply { CommandReply(status: .failed, detail: why) }

    public init(status: Status, detail: String?) {
        self.status = status
        self.detail = detail.map { String($0.prefix(256)) }
    }
}

/// What the agent did, for the device's log and for simulations.
public enum DeviceEvent: Sendable, Equatable {
    case waiting(seconds: TimeInterval)
    case connected(version: MQTTVersion, sessionPresent: Bool)
    case connectFailed(String)
    case disconnected(String)
    case delivered(sequence: Int64)
    /// The server refused a reading for good (0x99: it does not match the model; 0x87: it carries
    /// a field whose purpose the owner has not agreed to).
    case refusedByServer(sequence: Int64, reason: String)
    case command(name: String, status: CommandReply.Status, detail: String?)
    /// The owner's choices changed: these fields are no longer sent (or are sent again).
    case policy(withheld: [String])
    /// The server heard of a factory reset (the reset's id): it has ended the owner's claim.
    case resetAcknowledged(String)
    /// The device made a new key and installed its certificate; it reconnects with it, and the
    /// server then refuses the old one.
    case rekeyed
    /// A re-key could not be done (the key store cannot make keys, or the answer did not fit).
    case rekeyFailed(String)
}

/// The device side of Hearth: keeps a connection to the gateway over mutual TLS, delivers queued
/// readings at least once and in order, and answers commands. The device's own work (its control
/// loop) never waits for it: ``report(_:)`` only writes to the persistent offline queue
/// (Code of Practice guideline 9: the device keeps working without the network).
public actor DeviceAgent: Service {
    public let configuration: DeviceConfiguration
    /// Made from the key store at start, and again after re-keying.
    var tls: NIOSSLContext
    let keyStore: any SecureKeyStore
    let trustRootsPEM: String
    let queue: OfflineQueue
    let clock: any TimeSource
    let onCommand: @Sendable (DeviceCommand) async -> CommandReply
    let onEvent: @Sendable (DeviceEvent) -> Void
    let onUpdateOffer: @Sendable (UpdateOffer) async -> Void
    /// The latest update report: sent when made, and again at every connect (the server answers
    /// each with an offer).
    var updateReport: UpdateReport?
    let validator: TelemetryValidator
    /// What the owner has not agreed to: those fields are never sent. Until the server's retained
    /// `devices/S/policy` says otherwise, every optional purpose's fields are withheld.
    public private(set) var policy: DevicePolicy

    var version: MQTTVersion
    var machine: ReconnectMachine
    var connection: MQTTClientConnection?
    /// Telemetry in flight: packet id → sequence, and the drop count a reading carries.
    var inflight: [UInt16: Int64] = [:]
    var carried: [Int64: Int] = [:]
    var lastSent: Int64 = 0
    var window = 16
    var nextPacketID: UInt16 = 1
    /// Until when sending waits after the server could not take a reading now. A span of time, so
    /// on the monotonic clock: the injected wall clock may stand still or be set back by a time sync.
    var pausedUntil: ContinuousClock.Instant?
    var pingOutstanding = false
    var wake: AsyncStream<Void>.Continuation?
    /// Answers to recent commands, so a redelivered command is answered again, not run twice.
    var answered = RecentAnswers()
    public private(set) var isConnected = false
    /// Connected and subscribed to its command topic (the SUBACK arrived).
    public private(set) var acceptsCommands = false
    public private(set) var connections = 0
    /// A factory reset the server has not acknowledged yet (kept in `resetPath`, so it survives a
    /// restart), and the packet id it went out with.
    let resetPath: String
    var pendingReset: String?
    var resetPacket: UInt16?

    /// - Parameters:
    ///   - keyStore: the device identity; read at start and after re-keying (a
    ///     ``RenewableKeyStore`` can re-key when the owner asks).
    ///   - trustRootsPEM: the deployment root CA the server's certificate must chain to.
    ///   - queuePath: the offline queue's log file.
    public init(
        configuration: DeviceConfiguration, keyStore: any SecureKeyStore, trustRootsPEM: String, queuePath: String,
        clock: any TimeSource = SystemTimeSource(),
        onEvent: @escaping @Sendable (DeviceEvent) -> Void = { _ in },
        onUpdateOffer: @escaping @Sendable (UpdateOffer) async -> Void = { _ in },
        onCommand: @escaping @Sendable (DeviceCommand) async -> CommandReply
    ) throws {
        self.configuration = configuration
        tls = try Self.tlsContext(keyStore: keyStore, trustRootsPEM: trustRootsPEM)
        self.keyStore = keyStore
        self.trustRootsPEM = trustRootsPEM
        queue = try OfflineQueue(path: queuePath, policy: configuration.queue)
        resetPath = queuePath + ".reset"
        pendingReset = FileManager.default.contents(atPath: resetPath).map { String(decoding: $0, as: UTF8.self) }
        self.clock = clock
        self.onEvent = onEvent
        self.onUpdateOffer = onUpdateOffer
        self.onCommand = onCommand
        validator = TelemetryValidator(model: configuration.model)
        policy = DevicePolicy(model: configuration.model, granted: [])
        version = configuration.version
        machine = ReconnectMachine(policy: configuration.reconnect, seed: configuration.seed)
    }

    static func tlsContext(keyStore: any SecureKeyStore, trustRootsPEM: String) throws -> NIOSSLContext {
        let identity = try keyStore.identity()
        let tls = TLSPolicy.client(
            trustRoots: try NIOSSLCertificate.fromPEMBytes(Array(trustRootsPEM.utf8)),
            certificateChain: identity.certificateChain, privateKey: identity.privateKey)
        return try NIOSSLContext(configuration: tls)
    }

    // MARK: The device's side

    /// Tells the server how an update is going (or that none is); sent now if connected, and
    /// again after every reconnect.
    public func reportUpdate(_ report: UpdateReport) {
        updateReport = report
        if let connection { sendUpdateReport(connection) }
    }

    func sendUpdateReport(_ conn: MQTTClientConnection) {
        guard let updateReport else { return }
        conn.send(
            .publish(
                Publish(
                    topic: DeviceTopics(configuration.serial).update, payload: updateReport.payload, qos: .atLeastOnce,
                    packetID: allocatePacketID())))
    }

    /// Integrity-failure mode (Code of Practice guideline 7): one connection to the gateway that
    /// only publishes `report` (an alert for the owner), waits for its acknowledgement and
    /// disconnects. Nothing else is contacted.
    public static func raiseAlert(
        _ report: UpdateReport, configuration: DeviceConfiguration, keyStore: any SecureKeyStore, trustRootsPEM: String
    ) async throws {
        let tls = try tlsContext(keyStore: keyStore, trustRootsPEM: trustRootsPEM)
        let conn = try await MQTTClientConnection.open(
            host: configuration.host, port: configuration.port, tls: tls, serverHostname: configuration.serverHostname,
            version: .v5,
            timeout: .milliseconds(Int64(configuration.connectTimeout * 1000))
        )
        defer { conn.close() }
        conn.send(
            .connect(
                Connect(
                    version: .v5, clientID: configuration.serial.rawValue, cleanStart: true, keepAlive: 30,
                    properties: [])))
        var packets = conn.packets.makeAsyncIterator()
        guard case .connack(let ack)? = try await packets.next(), ack.reason == .success else {
            throw DeviceError("the gateway refused the alert connection")
        }
        conn.send(
            .publish(
                Publish(
                    topic: DeviceTopics(configuration.serial).update, payload: report.payload, qos: .atLeastOnce,
                    packetID: 1)))
        while let packet = try await packets.next() {
            if case .puback(let a) = packet, a.packetID == 1 {
                conn.send(.disconnect(ReasonPacket()))
                guard !a.reason.isError else { throw DeviceError("the gateway refused the alert: \(a.reason)") }
                return
            }
        }
        throw DeviceError("the gateway closed the connection before acknowledging the alert")
    }

    /// Factory reset (EN 303 645 5.11-1), of what this agent holds: the queued readings, the
    /// remembered command answers and the owner's privacy policy are erased; the identity, the
    /// certificate and the firmware stay. The server is told (now if connected, otherwise first
    /// thing at the next connection; the reset's id is kept on disk until the server acknowledges
    /// it, so a restart does not lose it) and ends the owner's claim, after which the label's code
    /// claims the device again. Works offline. The device's own settings are its caller's to
    /// erase (``ReferenceDevice/factoryReset()`` does both). Returns the reset's id.
    @discardableResult
    public func factoryReset() throws -> String {
        let id = UUID().uuidString
        try OfflineQueue.writeFile(resetPath, Array(id.utf8), flags: O_WRONLY | O_CREAT | O_TRUNC)
        pendingReset = id
        try queue.erase()
        inflight.removeAll()
        carried.removeAll()
        lastSent = 0
        answered = RecentAnswers()
        policy = DevicePolicy(model: configuration.model, granted: [])
        if let connection { sendReset(connection) }
        return id
    }

    func sendReset(_ conn: MQTTClientConnection) {
        guard let pendingReset else { return }
        let id = allocatePacketID()
        resetPacket = id
        conn.send(
            .publish(
                Publish(
                    topic: DeviceTopics(configuration.serial).reset,
                    payload: Array(JSONValue.object(["reset": .string(pendingReset)]).text.utf8), qos: .atLeastOnce,
                    packetID: id)))
    }

    /// Queues a reading for delivery, durably, after checking it against the model (a device
    /// validates what it sends, too). Returns at once; delivery happens when connected.
    @discardableResult
    public func report(_ values: [String: JSONValue]) throws -> QueuedReading {
        do { try validator.check(values) } catch {
            throw DeviceError("reading refused on the device: \(error.message)")
        }
        let reading = try queue.append(values: values, at: clock.now())
        wake?.yield()
        return reading
    }

    /// Readings waiting for the server's acknowledgement.
    public var queued: [QueuedReading] { Array(queue.readings) }
    /// Drops at the queue's bound not yet reported to the server.
    public var unreportedDrops: Int { queue.unreportedDrops }

    // MARK: Connection loop

    /// Connects, keeps connected and reconnects (``ReconnectMachine``) until cancelled or a
    /// graceful shutdown, then disconnects cleanly.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await self.loop()
        }
    }

    /// Where the reconnect state machine is.
    public var connectionState: ReconnectMachine.State { machine.state }

    func loop() async {
        var action = machine.start(now: clock.now())
        while !Task.isCancelled {
            switch action {
            case .wait(let until):
                let seconds = until.timeIntervalSince(clock.now())
                if seconds > 0 {
                    onEvent(.waiting(seconds: seconds))
                    try? await Task.sleep(for: .seconds(seconds))
                }
                action = machine.timerFired(now: max(until, clock.now()))
            case .connect:
                switch await session() {
                case .failed(let hint):
                    action = machine.failed(now: clock.now(), hint: hint)
                case .ended(let hint):
                    action = machine.disconnected(now: clock.now(), hint: hint)
                }
            case .none:
                action = .wait(until: clock.now().addingTimeInterval(1))
            }
        }
    }

    enum SessionOutcome {
        case failed(ServerHint)
        case ended(ServerHint)
    }

    /// One connection, from CONNECT until it ends.
    func session() async -> SessionOutcome {
        let conn: MQTTClientConnection
        do {
            conn = try await MQTTClientConnection.open(
                host: configuration.host, port: configuration.port, tls: tls,
                serverHostname: configuration.serverHostname,
                version: version, timeout: .milliseconds(Int64(configuration.connectTimeout * 1000))
            )
        } catch {
            onEvent(.connectFailed("\(error)"))
            return .failed(ServerHint())
        }
        let v5 = version == .v5
        conn.send(
            .connect(
                Connect(
                    version: version, clientID: configuration.serial.rawValue, cleanStart: false,
                    keepAlive: configuration.keepAlive,
                    properties: v5 ? [.sessionExpiryInterval(configuration.sessionExpiry), .receiveMaximum(32)] : []
                )))
        let timeout = conn.channel.eventLoop.scheduleTask(in: .milliseconds(Int64(configuration.connectTimeout * 1000)))
        { conn.close() }
        var packets = conn.packets.makeAsyncIterator()
        let first: MQTTPacket?
        do {
            first = try await packets.next(isolation: self)
        } catch is UnsupportedVersion {
            timeout.cancel()
            onEvent(.connectFailed("the server does not speak MQTT 5.0; falling back to 3.1.1"))
            version = .v3_1_1
            return await session()
        } catch {
            timeout.cancel()
            onEvent(.connectFailed("\(error)"))
            return .failed(ServerHint())
        }
        timeout.cancel()
        guard case .connack(let ack) = first else {
            conn.close()
            onEvent(.connectFailed("no CONNACK"))
            return .failed(ServerHint())
        }
        let reason = v5 ? ack.reason : ReasonCode(connectReturnCode311: ack.reason.rawValue)
        guard reason == .success else {
            conn.close()
            if reason == .unsupportedProtocolVersion, v5 {
                version = .v3_1_1
                return await session()
            }
            let hint = ServerHint(reason: reason, properties: ack.properties)
            onEvent(.connectFailed("refused: \(reason)\(hint.retryAfter.map { ", retry after \(Int($0)) s" } ?? "")"))
            return .failed(hint)
        }
        machine.connected(now: clock.now())
        begin(conn, ack)
        let (wakeups, wakeup) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        wake = wakeup
        wakeup.yield()
        let keepAlive = v5 ? ack.properties.serverKeepAlive ?? configuration.keepAlive : configuration.keepAlive
        var hint = ServerHint()
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.drain(wakeups, conn) }
            if keepAlive > 0 { group.addTask { await self.ping(conn, every: Double(keepAlive) * 0.75) } }
            group.addTask { await self.recheckUpdates(conn) }
            do {
                while let packet = try await packets.next(isolation: self) {
                    if let ended = await handle(packet, conn) { hint = ended }
                }
                onEvent(
                    .disconnected(
                        hint.reason.map { "the server ended the connection: \($0)" } ?? "the connection closed"))
            } catch {
                onEvent(.disconnected("\(error)"))
            }
            group.cancelAll()
        }
        if Task.isCancelled { conn.send(.disconnect(ReasonPacket())) }
        conn.close()
        wake?.finish()
        wake = nil
        connection = nil
        isConnected = false
        acceptsCommands = false
        return .ended(hint)
    }

    /// After CONNACK: subscribe to commands, and resume or restart what was in flight.
    func begin(_ conn: MQTTClientConnection, _ ack: ConnAck) {
        connection = conn
        isConnected = true
        connections += 1
        pausedUntil = nil
        pingOutstanding = false
        window = max(1, min(32, Int(ack.properties.receiveMaximum ?? 32)))
        let waiting = Set(queue.readings.map(\.sequence))
        carried = carried.filter { waiting.contains($0.key) }
        inflight = inflight.filter { waiting.contains($0.value) }
        let commands = DeviceTopics(configuration.serial).commands
        let offers = DeviceTopics(configuration.serial).updateOffer
        conn.send(
            .subscribe(
                Subscribe(
                    packetID: allocatePacketID(),
                    requests: [
                        Subscribe.Request(filter: commands, qos: .atLeastOnce),
                        Subscribe.Request(filter: offers, qos: .atLeastOnce),
                        Subscribe.Request(filter: DeviceTopics(configuration.serial).policy, qos: .atLeastOnce),
                        Subscribe.Request(filter: DeviceTopics(configuration.serial).rekey, qos: .atLeastOnce),
                        Subscribe.Request(filter: DeviceTopics(configuration.serial).certificate, qos: .atLeastOnce),
                    ])))
        resetPacket = nil
        sendReset(conn)
        // A new key still without its certificate (the answer was lost, or the device restarted):
        // ask again; the old certificate works until the new one is used.
        if (keyStore as? any RenewableKeyStore)?.renewalPending == true {
            sendRenewalRequest(conn, id: UUID().uuidString)
        }
        sendUpdateReport(conn)
        onEvent(.connected(version: conn.version, sessionPresent: ack.sessionPresent))
        if ack.sessionPresent {
            // MQTT 4.4: a resumed session resends unacknowledged PUBLISHes with their packet ids.
            for (id, sequence) in inflight.sorted(by: { $0.value < $1.value }) {
                if let reading = queue.readings.first(where: { $0.sequence == sequence }) {
                    conn.send(.publish(telemetry(reading, id: id, dup: true)))
                }
            }
            lastSent = inflight.values.max() ?? 0
        } else {
            inflight.removeAll()
            lastSent = 0
        }
    }

    /// Sends queued readings, oldest first, at most `window` unacknowledged, paced at the queue
    /// policy's drain rate.
    nonisolated func drain(_ wakeups: AsyncStream<Void>, _ conn: MQTTClientConnection) async {
        let pace = 1 / configuration.queue.drainRate
        for await _ in wakeups {
            while !Task.isCancelled {
                let next = await sendNext(conn)
                if next < 0 { break }
                try? await Task.sleep(for: .seconds(max(pace, next)))
            }
        }
    }

    /// Sends the next reading if the window allows: returns 0 if it sent one, a pause in seconds
    /// if the server asked for one, or -1 if there is nothing to do until the next wake-up.
    func sendNext(_ conn: MQTTClientConnection) -> TimeInterval {
        guard connection?.channel === conn.channel else { return -1 }
        if let until = pausedUntil {
            let rest = ContinuousClock.now.duration(to: until)
            if rest > .zero { return rest.timeInterval }
            pausedUntil = nil
        }
        let readings = queue.readings
        guard inflight.count < window, let next = readings.firstIndex(where: { $0.sequence > lastSent }) else {
            return -1
        }
        let reading = readings[next]
        if carried[reading.sequence] == nil, carried.isEmpty, queue.unreportedDrops > 0 {
            carried[reading.sequence] = min(queue.unreportedDrops, Int(TelemetryValidator.maximumDropped))
        }
        let id = allocatePacketID()
        inflight[id] = reading.sequence
        lastSent = reading.sequence
        conn.send(.publish(telemetry(reading, id: id, dup: false)))
        return 0
    }

    func telemetry(_ reading: QueuedReading, id: UInt16, dup: Bool) -> Publish {
        Publish(
            topic: DeviceTopics(configuration.serial).telemetry,
            payload: reading.envelope(dropped: carried[reading.sequence] ?? 0, withheld: policy.withheld),
            qos: .atLeastOnce, dup: dup, packetID: id
        )
    }

    nonisolated func recheckUpdates(_ conn: MQTTClientConnection) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(configuration.updateCheckInterval))
            guard !Task.isCancelled else { return }
            await sendUpdateReport(conn)
        }
    }

    nonisolated func ping(_ conn: MQTTClientConnection, every seconds: Double) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(seconds))
            guard !Task.isCancelled else { return }
            await pingOnce(conn)
        }
    }

    func pingOnce(_ conn: MQTTClientConnection) {
        if pingOutstanding {
            // No PINGRESP within the keep-alive: the link is dead even if TCP has not noticed.
            onEvent(.disconnected("no answer to the keep-alive ping"))
            conn.close()
            return
        }
        pingOutstanding = true
        conn.send(.pingreq)
    }

    /// One packet from the server; returns the server's hint if it ended the connection.
    func handle(_ packet: MQTTPacket, _ conn: MQTTClientConnection) async -> ServerHint? {
        switch packet {
        case .puback(let ack) where ack.packetID == resetPacket:
            resetPacket = nil
            // A refusal is retried at the next connection; the server ignores a reset it has seen.
            if !ack.reason.isError, let id = pendingReset {
                pendingReset = nil
                unlink(resetPath)
                onEvent(.resetAcknowledged(id))
            }
        case .puback(let ack):
            guard let sequence = inflight.removeValue(forKey: ack.packetID) else { return nil }
            // Refused for good: not valid for the model, or carrying a field the owner refused.
            if !ack.reason.isError || ack.reason == .payloadFormatInvalid || ack.reason == .notAuthorized {
                do {
                    try queue.acknowledge(sequence, reportedDrops: carried.removeValue(forKey: sequence) ?? 0)
                } catch {
                    onEvent(.disconnected("\(error)"))
                }
                onEvent(
                    ack.reason.isError
                        ? .refusedByServer(
                            sequence: sequence, reason: "\(ack.reason) \(ack.properties.reasonString ?? "")")
                        : .delivered(sequence: sequence))
            } else {
                // Quota or a passing failure: send it again after a pause, in order.
                lastSent = min(lastSent, sequence - 1)
                pausedUntil = .now + .seconds(1)
            }
            wake?.yield()
        case .publish(let publish) where publish.topic == DeviceTopics(configuration.serial).updateOffer:
            if let id = publish.packetID, publish.qos == .atLeastOnce { conn.send(.puback(Ack(packetID: id))) }
            if let offer = try? UpdateOffer(payload: publish.payload) { await onUpdateOffer(offer) }
        case .publish(let publish) where publish.topic == DeviceTopics(configuration.serial).rekey:
            if let id = publish.packetID, publish.qos == .atLeastOnce { conn.send(.puback(Ack(packetID: id))) }
            guard case .object(let o)? = try? JSONValue.parse(publish.payload), case .string(let id)? = o["id"] else {
                return nil
            }
            sendRenewalRequest(conn, id: id)
        case .publish(let publish) where publish.topic == DeviceTopics(configuration.serial).certificate:
            if let id = publish.packetID, publish.qos == .atLeastOnce { conn.send(.puback(Ack(packetID: id))) }
            return installCertificate(publish.payload, conn)
        case .publish(let publish) where publish.topic == DeviceTopics(configuration.serial).policy:
            if let id = publish.packetID, publish.qos == .atLeastOnce { conn.send(.puback(Ack(packetID: id))) }
            if let policy = try? DevicePolicy(payload: publish.payload), policy != self.policy {
                self.policy = policy
                onEvent(.policy(withheld: policy.withheld.keys.sorted()))
            }
        case .publish(let publish):
            await command(publish, conn)
        case .pingresp:
            pingOutstanding = false
        case .disconnect(let d):
            return ServerHint(reason: d.reason, properties: d.properties)
        case .suback(let ack):
            acceptsCommands = !ack.reasons.contains(where: \.isError)
            if !acceptsCommands { onEvent(.disconnected("the server refused the command subscription")) }
        default:
            break
        }
        return nil
    }

    // MARK: Re-keying

    /// Makes (or keeps) the new key and sends its signing request to `devices/S/csr`.
    func sendRenewalRequest(_ conn: MQTTClientConnection, id: String) {
        guard let store = keyStore as? any RenewableKeyStore else {
            onEvent(.rekeyFailed("this device's key store cannot make new keys"))
            return
        }
        do {
            let csr = try store.renewalRequest(serial: configuration.serial)
            conn.send(
                .publish(
                    Publish(
                        topic: DeviceTopics(configuration.serial).csr,
                        payload: Array(
                            JSONValue.object(["id": .string(String(id.prefix(64))), "csr": .string(csr)]).text.utf8),
                        qos: .atLeastOnce, packetID: allocatePacketID())))
        } catch {
            onEvent(.rekeyFailed("\(error)"))
        }
    }

    /// The new key's certificate arrived: installed, then the connection is ended so the next one
    /// uses the new identity (the server then refuses the old certificate).
    func installCertificate(_ payload: [UInt8], _ conn: MQTTClientConnection) -> ServerHint? {
        guard let store = keyStore as? any RenewableKeyStore, store.renewalPending,
            case .object(let o)? = try? JSONValue.parse(payload), case .string(let pem)? = o["certificate"]
        else { return nil }
        do {
            try store.installRenewedCertificate(pem)
            tls = try Self.tlsContext(keyStore: keyStore, trustRootsPEM: trustRootsPEM)
        } catch {
            onEvent(.rekeyFailed("\(error)"))
            return nil
        }
        onEvent(.rekeyed)
        conn.send(.disconnect(ReasonPacket()))
        conn.close()
        return ServerHint()
    }

    /// A command: checked against the model, answered on its result topic, then acknowledged.
    func command(_ publish: Publish, _ conn: MQTTClientConnection) async {
        defer { if let id = publish.packetID, publish.qos == .atLeastOnce { conn.send(.puback(Ack(packetID: id))) } }
        let prefix = DeviceTopics(configuration.serial).commandPrefix
        guard publish.topic.hasPrefix(prefix) else { return }
        let name = String(publish.topic.dropFirst(prefix.count))
        guard case .object(let body)? = try? JSONValue.parse(publish.payload), case .string(let id)? = body["id"],
            !id.isEmpty, id.utf8.count <= 64
        else {
            onEvent(.command(name: String(name.prefix(64)), status: .refused, detail: "not a command envelope"))
            return
        }
        let reply: CommandReply
        if let earlier = answered.reply(to: id) {
            reply = earlier
        } else {
            var parameters: [String: JSONValue] = [:]
            switch body["parameters"] {
            case .object(let p)?: parameters = p
            case nil, .null?: break
            default:
                return answer(.refused("parameters must be an object"), id: id, name: name, publish, conn)
            }
            do {
                _ = try CommandMessage.validate(name, parameters: parameters, model: configuration.model)
                reply = await onCommand(DeviceCommand(id: id, name: name, parameters: parameters))
            } catch {
                reply = .refused(error.message)
            }
            answered.remember(reply, to: id)
        }
        answer(reply, id: id, name: name, publish, conn)
    }

    func answer(_ reply: CommandReply, id: String, name: String, _ publish: Publish, _ conn: MQTTClientConnection) {
        var result: [String: JSONValue] = ["id": .string(id), "status": .string(reply.status.rawValue)]
        if let detail = reply.detail { result["detail"] = .string(detail) }
        let topic = publish.topic + "/result"
        var properties: Properties = []
        if let correlation = publish.properties.correlationData { properties.all.append(.correlationData(correlation)) }
        conn.send(
            .publish(
                Publish(
                    topic: topic, payload: Array(JSONValue.object(result).text.utf8), qos: .atLeastOnce,
                    packetID: allocatePacketID(), properties: version == .v5 ? properties : [])))
        onEvent(.command(name: name, status: reply.status, detail: reply.detail))
    }

    func allocatePacketID() -> UInt16 {
        repeat {
            nextPacketID = nextPacketID == .max ? 1 : nextPacketID + 1
        } while inflight[nextPacketID] != nil
        return nextPacketID
    }
}
