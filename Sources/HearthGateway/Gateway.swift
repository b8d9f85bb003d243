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
import NIOPosix
import NIOTLS
import ServiceLifecycle
import Synchronization
import X509

/// How the gateway listens and what it allows.
public struct GatewayConfiguration: Sendable {
    /// The mutual-TLS device listener (default 127.0.0.1:8883; a deployment sets 0.0.0.0).
    public var deviceListener: (host: String, port: Int)?
    /// The plaintext development listener: off unless asked for, loopback only.
    public var developmentListener: (host: String, port: Int)?
    public var limits = ConnectionLimits()
    /// The security detectors' thresholds (HearthMonitor, one documented place).
    public var thresholds = Thresholds()
    /// Security monitoring on (the default). Off only to measure what it costs
    /// (`hearth serve --benchmark-monitoring-off`, BENCHMARKS.md).
    public var monitoring = true
    /// Connections open at once; over it a CONNECT gets 0x89 (server busy).
    public var maximumConnections = 50_000
    /// New connections per second (and the burst allowed); over it a CONNECT gets 0x9F.
    public var connectsPerSecond: Double = 500
    public var connectBurst: Double = 1000
    /// How long a device has to finish the TLS handshake.
    public var handshakeTimeout: TimeAmount = .seconds(10)
    /// Sockets one source address may hold open before it authenticates (in the TLS handshake,
    /// or refused and waiting to be closed); more are closed at once. Room for many devices
    /// behind one home router; a cap on one host holding the listener's sockets.
    public var maximumUnauthenticatedPerSource = 256
    /// Topic filters the development listener's clients may not publish to, subscribe to or
    /// receive from (an ACL for local testing, e.g. of refused subscriptions).
    public var developmentDenied: [String] = []

    public init(deviceListener: (host: String, port: Int)? = nil, developmentListener: (host: String, port: Int)? = nil)
    {
        self.deviceListener = deviceListener
        self.developmentListener = developmentListener
    }
}

/// The deployment's credentials for the device listener: its server certificate chain and key, and
/// the device CA that every device certificate must chain to.
public struct DeviceTLSCredentials: Sendable {
    public let serverCertificatePEM: String
    public let serverKeyPEM: String
    public let deviceCAPEM: String

    public init(serverCertificatePEM: String, serverKeyPEM: String, deviceCAPEM: String) {
        self.serverCertificatePEM = serverCertificatePEM
        self.serverKeyPEM = serverKeyPEM
        self.deviceCAPEM = deviceCAPEM
    }

    /// ``TLSPolicy`` with a client certificate from the device CA required (Code of Practice
    /// guideline 5; EN 303 645 5.5-1).
    public func context() throws -> MutualTLSServerContext {
        try MutualTLSServerContext(
            certificateChainPEM: serverCertificatePEM, privateKeyPEM: serverKeyPEM, clientCAPEM: deviceCAPEM)
    }
}

/// Which listener a bound address belongs to.
public enum ListenerKind: Sendable {
    case devices, development
}

/// The MQTT gateway as a service: the mutual-TLS device listener and, when asked for, the plaintext
/// development listener, over one broker. It delivers commands to devices for the HTTPS API.
///
/// Each connection is one channel handler on its event loop (``ConnectionHandler``); the service's
/// own tasks are the listeners' lifetime, the group commits (telemetry, broker state) and the
/// off-loop work connections hand over, all children of ``run()``.
public final class MQTTGateway: Service, DeviceCommandChannel, DeviceDisconnecting, DevicePresence, DevicePolicyChannel,
    DeviceRekeying, DeviceQuarantining, SessionReleasing
{
    public let configuration: GatewayConfiguration
    let credentials: DeviceTLSCredentials?
    let brokerState: (any BrokerStateStore)?
    let flushes: AsyncStream<Void>
    let parts: GatewayParts
    let onBound: @Sendable (ListenerKind, SocketAddress?) async -> Void

    /// - Parameters:
    ///   - credentials: required with a device listener.
    ///   - store: where device identities are checked (unknown or revoked certificates are refused).
    ///   - telemetry: where readings are stored.
    ///   - brokerState: where persistent sessions and retained messages survive a restart.
    /// - Throws: ``GatewayError`` if the development listener is not on loopback, or the device
    ///   listener lacks credentials or a store.
    public init(
        configuration: GatewayConfiguration, credentials: DeviceTLSCredentials? = nil, store: (any HearthStore)? = nil,
        telemetry: (any TelemetryStore)? = nil, brokerState: (any BrokerStateStore)? = nil, logger: Logger,
        metrics: HearthMetrics? = HearthMetrics(),
        onBound: @escaping @Sendable (ListenerKind, SocketAddress?) async -> Void = { _, _ in }
    ) throws {
        if let dev = configuration.developmentListener, !Self.isLoopback(dev.host) {
            throw GatewayError(
                "the development listener is plaintext and binds to loopback only (127.0.0.0/8, ::1, localhost), not \(dev.host)"
            )
        }
        if configuration.deviceListener != nil, credentials == nil || store == nil {
            throw GatewayError("the device listener needs the deployment's TLS credentials and device store")
        }
        self.configuration = configuration
        self.credentials = credentials
        self.brokerState = brokerState
        let counters = Counters(metrics: metrics)
        let (flushes, flushSignal) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        self.flushes = flushes
        let policies = DevicePolicies()
        parts = GatewayParts(
            hub: Hub(
                maximumSubscriptionsPerSession: configuration.limits.maximumSubscriptions,
                maximumQueued: configuration.limits.maximumQueuedPerSession,
                counters: counters, persistent: brokerState != nil, flushSignal: flushSignal,
                developmentDenied: configuration.developmentDenied
            ),
            ingest: telemetry.map { TelemetryIngest(store: $0, counters: counters, logger: logger) },
            updates: ChannelSlot(), resets: ChannelSlot(), certificates: ChannelSlot(),
            counters: counters, limits: configuration.limits,
            admission: Admission(
                maximumConnections: configuration.maximumConnections,
                connectsPerSecond: configuration.connectsPerSecond, burst: configuration.connectBurst,
                maximumUnadmittedPerSource: configuration.maximumUnauthenticatedPerSource
            ),
            authenticator: Authenticator(store: store, policies: policies), policies: policies,
            live: ConnectionRegistry(), offload: Offload(),
            watchers: Watchers(
                thresholds: configuration.thresholds, counters: counters, enabled: configuration.monitoring),
            alerts: ChannelSlot(), recorder: ChannelSlot(), brokerState: brokerState, handoff: ChannelSlot(),
            handshakeTimeout: configuration.handshakeTimeout,
            logger: logger
        )
        self.onBound = onBound
        metrics?.collect { [parts] in
            metrics?.connections.set(Double(parts.live.count))
            metrics?.ingestQueueDepth.set(Double(parts.ingest?.depth ?? 0))
        }
    }

    public static func isLoopback(_ host: String) -> Bool { HostPort.isLoopback(host) }

    public var counters: GatewayCounters { parts.counters.snapshot }

    /// Attaches the server's update service: devices' `devices/S/update` reports go to it.
    public func attach(updates: any DeviceUpdateChannel) { parts.updates.set(updates) }
    /// Attaches the server's account service: devices' `devices/S/reset` messages go to it.
    public func attach(resets: any DeviceResetChannel) { parts.resets.set(resets) }

    /// Attaches the server's alert service: what the detectors find goes to it.
    public func attach(alerts: any DeviceAlertChannel) { parts.alerts.set(alerts) }

    /// Something the server saw a device do (e.g. report firmware the maker never released), for
    /// its detectors.
    public func observe(_ serial: DeviceSerial, _ observation: Observation) {
        parts.watchers.observe(serial, observation)
    }

    /// Attaches the server's certificate service: devices' `devices/S/csr` requests go to it.
    public func attach(certificates: any DeviceCertificateChannel) { parts.certificates.set(certificates) }
    /// Attaches the record of which node holds which device (for nodes sharing a database).
    public func attach(recorder: any ConnectionRecorder) { parts.recorder.set(recorder) }
    /// Attaches what moves device sessions between nodes sharing a database. Attached before
    /// ``run()``, the gateway loads a device's session when the device connects, not at start.
    public func attach(handoff: any SessionHandoff) { parts.handoff.set(handoff) }

    /// The device connected to another node: its connection here ends (0x8E session taken over),
    /// and whatever this node still has of its session is forgotten unwritten (the other node
    /// keeps it; normally this node handed it over already and has nothing left).
    public func takenOver(_ serial: DeviceSerial) {
        parts.hub.forget(PeerIdentity.deviceSessionKey(serial.rawValue))
    }
    public var openConnections: Int { parts.admission.openConnections }
    /// Sockets not authenticated (yet): in the TLS handshake, or refused and about to close.
    public var unauthenticatedConnections: Int { parts.admission.unadmittedConnections }

    public func run() async throws {
        if let brokerState {
            var (sessions, retained) = try await brokerState.load()
            if parts.handoff.channel != nil {
                // Devices' sessions are kept by the node each device is on, and loaded from the
                // store when it connects (development clients' sessions stay with their node).
                sessions = sessions.filter { PeerIdentity.deviceSerial(ofSessionKey: $0.key) == nil }
            }
            parts.hub.restore(sessions: sessions, retained: retained)
            if !sessions.isEmpty || !retained.isEmpty {
                parts.logger.info(
                    "restored MQTT state", metadata: ["sessions": "\(sessions.count)", "retained": "\(retained.count)"])
            }
        }
        var servers: [any Channel] = []
        do {
            var listeners: [(kind: ListenerKind, at: (host: String, port: Int), tls: MutualTLSServerContext?)] = []
            if let at = configuration.deviceListener, let credentials {
                listeners.append((.devices, at, try credentials.context()))
            }
            if let at = configuration.developmentListener { listeners.append((.development, at, nil)) }
            for listener in listeners {
                let server = try await bind(listener.at.host, listener.at.port, tls: listener.tls)
                servers.append(server)
                let address: Logger.Metadata = ["address": "\(server.localAddress.map { "\($0)" } ?? listener.at.host)"]
                if listener.tls != nil {
                    parts.logger.info("MQTT device listener (mutual TLS)", metadata: address)
                } else {
                    parts.logger.warning(
                        "MQTT development listener is plaintext and anonymous; use it only for local testing",
                        metadata: address)
                }
                await onBound(listener.kind, server.localAddress)
            }
        } catch {
            for server in servers { try? await server.close() }
            throw error
        }
        let listening = servers
        let expiry = MultiThreadedEventLoopGroup.singleton.any().scheduleRepeatedTask(
            initialDelay: .seconds(5), delay: .seconds(5)
        ) { [hub = parts.hub] _ in
            hub.expireSessions()
        }
        await withDiscardingTaskGroup { group in
            group.addTask { await self.parts.offload.serve() }
            group.addTask { [parts] in await parts.watchers.deliver { parts.alerts.channel } }
            if let ingest = parts.ingest { group.addTask { await ingest.run() } }
            if let brokerState { group.addTask { await self.flush(to: brokerState) } }
            // Serve until shutdown or cancellation; then stop accepting, end every connection
            // (5.0 clients hear 0x8B), and let the group commits finish what they hold.
            await withTaskCancellationOrGracefulShutdownHandler {
                for server in listening { try? await server.closeFuture.get() }
            } onCancelOrGracefulShutdown: {
                for server in listening { server.close(promise: nil) }
            }
            for connection in parts.live.stop() {
                connection.disconnect(.serverShuttingDown, "the server is shutting down")
            }
            await parts.live.drained(timeout: .seconds(6), timers: MultiThreadedEventLoopGroup.singleton.any())
            expiry.cancel()
            parts.offload.finish()
            parts.watchers.finish()
            parts.ingest?.finish()
            parts.hub.finishSignals()
        }
    }

    /// Writes the hub's persistent changes whenever there are some: one transaction for all that
    /// changed while the previous one was on its way to disk; a last flush when the gateway stops.
    private func flush(to store: any BrokerStateStore) async {
        for await _ in flushes { await flushOnce(to: store) }
        await flushOnce(to: store)
        for done in parts.hub.flushingEnded() { done(false) }
    }

    private func flushOnce(to store: any BrokerStateStore) async {
        guard let (change, generation) = parts.hub.takeChanges() else { return }
        var stored = true
        do { try await store.apply(change) } catch {
            stored = false
            parts.logger.error("could not persist MQTT sessions/retained messages", metadata: ["error": "\(error)"])
        }
        for done in parts.hub.flushed(generation) { done(stored) }
    }

    private func bind(_ host: String, _ port: Int, tls: MutualTLSServerContext?) async throws -> any Channel {
        let parts = self.parts
        return try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // Reads start small and grow with the traffic: most connections are idle devices, and
            // NIO keeps each channel's receive buffer between reads.
            .childChannelOption(
                .recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65536)
            )
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(MutualTLSServerHandler(context: tls)) }
                    try channel.pipeline.syncOperations.addHandler(
                        ConnectionHandler(parts: parts, deviceListener: tls != nil))
                }
            }
            .bind(host: host, port: port).get()
    }

    // MARK: DeviceCommandChannel

    public func send(command: String, parameters: [String: JSONValue], to serial: DeviceSerial, timeout: Duration) async
        -> CommandOutcome
    {
        let id = SecureToken.generate()
        let topic = DeviceTopics(serial).command(command)
        let payload = Array(JSONValue.object(["id": .string(id), "parameters": .object(parameters)]).text.utf8)
        let seconds = UInt32(clamping: max(1, timeout.components.seconds))
        let publish = Publish(
            topic: topic, payload: payload, qos: .atLeastOnce,
            properties: [
                .responseTopic(DeviceTopics(serial).commandResult(command)), .correlationData(Array(id.utf8)),
                .messageExpiryInterval(seconds),
                .contentType("application/json"),
            ])
        return await parts.hub.command(id, serial: serial.rawValue, publish, timeout: timeout)
    }

    // MARK: DevicePolicyChannel

    /// The owner changed what they agree to: the connection refuses withheld fields from its next
    /// reading, and the device is told through its retained policy message.
    public func policyChanged(_ serial: DeviceSerial, _ policy: DevicePolicy) async {
        parts.policies.set(serial, policy)
        parts.retainPolicy(serial, policy)
    }

    /// Asks the device to make a new key: to its session, so it arrives when the device is next
    /// connected if it is not now. Returns once the request is stored with the session (a session
    /// another node kept is taken over first).
    public func requestRekey(_ serial: DeviceSerial, id: String) async {
        do { try await parts.keepSession(serial) } catch {
            parts.logger.warning(
                "could not take a device's MQTT session over from another node",
                metadata: ["serial": "\(serial)", "error": "\(error)"])
        }
        let (_, ticket) = parts.hub.publish(
            from: nil,
            Publish(
                topic: DeviceTopics(serial).rekey, payload: Array(JSONValue.object(["id": .string(id)]).text.utf8),
                qos: .atLeastOnce, properties: [.contentType("application/json")]))
        if let ticket {
            await withCheckedContinuation { (stored: CheckedContinuation<Void, Never>) in
                if !parts.hub.whenFlushed(ticket, { _ in stored.resume() }) { stored.resume() }
            }
        }
    }

    // MARK: SessionReleasing

    public func release(_ serial: DeviceSerial) async {
        await parts.hub.release(PeerIdentity.deviceSessionKey(serial.rawValue))
    }

    // MARK: DeviceQuarantining

    /// From the device's next message: quarantined, only its update, reset and re-key topics; released,
    /// everything again.
    public func quarantineChanged(_ serial: DeviceSerial, reason: String?) async {
        parts.policies.setQuarantine(serial, reason)
    }

    /// Ends a device's live connection (after revocation): 0x87 not authorized.
    public func disconnect(_ serial: DeviceSerial, reason: String) async {
        parts.hub.disconnect(PeerIdentity.deviceSessionKey(serial.rawValue), .notAuthorized, reason)
    }

    // MARK: DevicePresence

    public func connected(_ serials: [DeviceSerial]) async -> Set<DeviceSerial> {
        parts.hub.attached(serials.map { (PeerIdentity.deviceSessionKey($0.rawValue), $0) })
    }

    public func connections(limit: Int) async -> LiveConnections {
        let (newest, count) = parts.hub.attachedDevices(limit: limit)
        return LiveConnections(
            newest: newest.compactMap { serial, since in
                (try? DeviceSerial(serial)).map { LiveConnections.Connection(serial: $0, node: nil, since: since) }
            },
            perNode: count > 0 ? [nil: count] : [:])
    }
}

extension GatewayParts {
    /// With nodes sharing a database: makes this node the keeper of the device's session before
    /// it is used here. The node that kept it writes it to the store and lets it go; then it is
    /// loaded from there. Throws if the store cannot say (the device is told to come back later).
    func keepSession(_ serial: DeviceSerial) async throws {
        guard let handoff = handoff.channel, let brokerState else { return }
        let key = PeerIdentity.deviceSessionKey(serial.rawValue)
        guard try await handoff.handOver(serial) || !hub.hasSession(key) else { return }
        hub.adopt(key, try await brokerState.session(key))
    }

    /// Makes `policy` the device's retained `devices/S/policy` message, unless it already is (a
    /// connect does not rewrite what is stored).
    func retainPolicy(_ serial: DeviceSerial, _ policy: DevicePolicy) {
        let topic = DeviceTopics(serial).policy
        let payload = policy.payload
        guard hub.retainedPayload(topic) != payload else { return }
        hub.publish(
            from: nil,
            Publish(
                topic: topic, payload: payload, qos: .atLeastOnce, retain: true,
                properties: [.contentType("application/json")]))
    }

    /// A factory reset: the server ends the owner's claim; the PUBACK reason.
    func factoryReset(_ payload: [UInt8], device: DeviceContext) async -> ReasonCode {
        await serviced("reset message", resets.channel, device) { channel in
            try await channel.deviceReset(payload, from: device.serial)
        }
    }

    /// An update report: stored by the update service, its answer published to the device's offer
    /// topic; the PUBACK reason.
    func updateReport(_ payload: [UInt8], device: DeviceContext) async -> ReasonCode {
        await serviced("update report", updates.channel, device) { channel in
            let answer = try await channel.received(report: payload, from: device.serial, model: device.model.id)
            hub.publish(from: nil, Publish(topic: device.topics.updateOffer, payload: answer, qos: .atLeastOnce))
        }
    }

    /// A re-keying device's signing request: the certificate service's answer is published to
    /// the device's certificate topic; the PUBACK reason.
    func certificateRequest(_ payload: [UInt8], device: DeviceContext) async -> ReasonCode {
        await serviced("certificate request", certificates.channel, device) { channel in
            let answer = try await channel.certificateRequested(payload, from: device.serial, model: device.model)
            hub.publish(from: nil, Publish(topic: device.topics.certificate, payload: answer, qos: .atLeastOnce))
        }
    }

    /// A device message a server service handles, and the PUBACK reason its outcome makes: a
    /// throttled device 0x97, a refused message 0x99 (logged without its content), a failure of
    /// the server 0x80, no service attached 0x83.
    private func serviced<Channel>(
        _ what: String, _ channel: Channel?, _ device: DeviceContext, _ work: (Channel) async throws -> Void
    ) async -> ReasonCode {
        guard let channel else { return .implementationSpecificError }
        do {
            try await work(channel)
            return .success
        } catch let error as HearthError where error.code == .throttled {
            counters.add(\.updateReportsRateLimited)
            return .quotaExceeded
        } catch let error as HearthError where error.code != .internal && error.code != .unavailable {
            logger.notice(
                "\(what) refused", metadata: ["serial": "\(device.serial)", "why": "\(error.message.prefix(200))"])
            return .payloadFormatInvalid
        } catch {
            logger.error("\(what) not handled", metadata: ["serial": "\(device.serial)", "error": "\(error)"])
            return .unspecifiedError
        }
    }
}

/// Checks a device certificate that chained to the device CA against the deployment's records.
final class Authenticator: Sendable {
    struct Refused: Error, CustomStringConvertible {
        let description: String
        /// The serial its certificate named, when it named one the deployment knows (the
        /// identity was tried: monitoring counts it against that device).
        var serial: DeviceSerial?
        /// The store could not say (it is down): not the device's fault, so it is told to come
        /// back later (CONNACK 0x89 with retry-after), not refused.
        var unavailable = false
    }

    let store: (any HearthStore)?
    let policies: DevicePolicies
    private let models = Mutex<[ProductModelID: ProductModel]>([:])

    init(store: (any HearthStore)?, policies: DevicePolicies) {
        self.store = store
        self.policies = policies
    }

    /// The device behind the client certificate `der` (DER): its CN must be a serial the
    /// deployment provisioned, with exactly this certificate, not revoked.
    func admit(_ der: [UInt8]?) async -> Result<DeviceContext, Refused> {
        guard let der, let store, let parsed = try? Certificate(derEncoded: der),
            let cn = parsed.commonName, let serial = try? DeviceSerial(cn)
        else { return .failure(Refused(description: "no device serial in the certificate")) }
        // Taken before the store is read: a change made meanwhile moves it, and the connection
        // then looks the device up again at its first reading.
        let generation = policies.generation
        do {
            guard let record = try await store.device(serial) else {
                return .failure(Refused(description: "unknown certificate for \(serial)"))
            }
            guard record.revokedAt == nil else {
                return .failure(Refused(description: "\(serial) is revoked", serial: serial))
            }
            if (try? Certificate(pemEncoded: record.certificatePEM)) != parsed {
                // Re-keying: the first connection with the new key's certificate retires the old one.
                guard let pending = record.pendingCertificatePEM, (try? Certificate(pemEncoded: pending)) == parsed,
                    try await store.promoteCertificate(
                        serial, pem: pending,
                        audit: AuditEntry(
                            .deviceCertificateReplaced, actor: "device", subject: serial.rawValue,
                            detail: "connected with the certificate of its new key; the old one is no longer accepted",
                            at: Date()))
                else { return .failure(Refused(description: "unknown certificate for \(serial)", serial: serial)) }
            }
            var model = models.withLock { $0[record.model] }
            if model == nil { model = try await store.model(record.model) }
            guard let model else {
                return .failure(Refused(description: "\(serial) has no product model"))
            }
            models.withLock { $0[record.model] = model }
            // What its current owner agreed to; an unclaimed device sends only what is essential.
            var granted: Set<String> = []
            if let owner = record.owner { granted = try await store.consents(serial, owner: owner).granted }
            let policy = policies.latest(serial) ?? DevicePolicy(model: model, granted: granted)
            var context = DeviceContext(serial: serial, model: model, policy: policy, policyGeneration: generation)
            context.quarantine = policies.quarantine(serial) ?? record.quarantine?.reason
            return .success(context)
        } catch {
            return .failure(Refused(description: "device store unavailable", unavailable: true))
        }
    }
}

/// Holds a server service (updates, resets), attached after the gateway is built (the service
/// needs the store the gateway also uses; neither owns the other).
final class ChannelSlot<Channel: Sendable>: Sendable {
    private let slot = Mutex<Channel?>(nil)
    var channel: Channel? { slot.withLock { $0 } }
    func set(_ channel: Channel) { slot.withLock { $0 = channel } }
}

public struct GatewayError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
