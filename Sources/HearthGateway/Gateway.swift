import Foundation
import HearthBroker
import HearthCore
import HearthCrypto
import HearthMQTT
import HearthStorage
import Logging
import NIOCore
import NIOPosix
import NIOSSL
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

    public init(deviceListener: (host: String, port: Int)? = nil, developmentListener: (host: String, port: Int)? = nil) {
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

    /// TLS 1.2+ (1.3 preferred), ECDHE with AES-GCM or ChaCha20-Poly1305, and a client certificate
    /// from the device CA required (Code of Practice guideline 5; EN 303 645 5.5-1).
    public func configuration() throws -> TLSConfiguration {
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(serverCertificatePEM.utf8)).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(serverKeyPEM.utf8), format: .pem))
        )
        tls.minimumTLSVersion = .tlsv12
        tls.cipherSuites = ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305"].joined(separator: ":")
        tls.certificateVerification = .noHostnameVerification
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(deviceCAPEM.utf8)))
        tls.sendCANameList = true
        return tls
    }
}

/// Which listener a bound address belongs to.
public enum ListenerKind: Sendable {
    case devices, development
}

/// The MQTT gateway as a service: the mutual-TLS device listener and, when asked for, the plaintext
/// development listener, over one broker. It delivers commands to devices for the HTTPS API.
public final class MQTTGateway: Service, DeviceCommandChannel, DeviceDisconnecting, DevicePresence {
    public let configuration: GatewayConfiguration
    let credentials: DeviceTLSCredentials?
    let store: (any HearthStore)?
    let brokerState: (any BrokerStateStore)?
    let flushes: AsyncStream<Void>
    let parts: GatewayParts
    let admission: Admission
    let onBound: @Sendable (ListenerKind, SocketAddress?) async -> Void
    private let models = Mutex<[ProductModelID: ProductModel]>([:])
    /// Every open connection, for the shared clock.
    private let live = Mutex<[ObjectIdentifier: Connection]>([:])

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
        onBound: @escaping @Sendable (ListenerKind, SocketAddress?) async -> Void = { _, _ in }
    ) throws {
        if let dev = configuration.developmentListener, !Self.isLoopback(dev.host) {
            throw GatewayError("the development listener is plaintext and binds to loopback only (127.0.0.0/8, ::1, localhost), not \(dev.host)")
        }
        if configuration.deviceListener != nil, credentials == nil || store == nil {
            throw GatewayError("the device listener needs the deployment's TLS credentials and device store")
        }
        self.configuration = configuration
        self.credentials = credentials
        self.store = store
        self.brokerState = brokerState
        let counters = Counters()
        let (flushes, flushSignal) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        self.flushes = flushes
        parts = GatewayParts(
            hub: Hub(
                maximumSubscriptionsPerSession: configuration.limits.maximumSubscriptions, maximumQueued: configuration.limits.maximumQueuedPerSession,
                counters: counters, persistent: brokerState != nil, flushSignal: flushSignal
            ),
            ingest: telemetry.map { TelemetryIngest(store: $0, counters: counters, logger: logger) }, updates: UpdateChannelSlot(),
            counters: counters, limits: configuration.limits, logger: logger
        )
        admission = Admission(
            maximumConnections: configuration.maximumConnections, connectsPerSecond: configuration.connectsPerSecond, burst: configuration.connectBurst,
            maximumUnadmittedPerSource: configuration.maximumUnauthenticatedPerSource
        )
        self.onBound = onBound
    }

    public static func isLoopback(_ host: String) -> Bool {
        if host == "localhost" || host == "::1" { return true }
        let parts = host.split(separator: ".")
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }

    public var counters: GatewayCounters { parts.counters.snapshot }

    /// Attaches the server's update service: devices' `devices/S/update` reports go to it.
    public func attach(updates: any DeviceUpdateChannel) { parts.updates.set(updates) }
    public var openConnections: Int { admission.openConnections }
    /// Sockets not authenticated (yet): in the TLS handshake, or refused and about to close.
    public var unauthenticatedConnections: Int { admission.unadmittedConnections }

    public func run() async throws {
        if let brokerState {
            let (sessions, retained) = try await brokerState.load()
            await parts.hub.restore(sessions: sessions, retained: retained)
            if !sessions.isEmpty || !retained.isEmpty {
                parts.logger.info("restored MQTT state", metadata: ["sessions": "\(sessions.count)", "retained": "\(retained.count)"])
            }
        }
        try await withThrowingDiscardingTaskGroup { group in
            if let brokerState {
                group.addTask { await self.flush(to: brokerState) }
            }
            group.addTask {
                // One clock for every connection (connect timeouts, keep-alive) instead of a timer
                // task each; every fifth second it also ends expired sessions.
                await cancelWhenGracefulShutdown {
                    var second = 0
                    while !Task.isCancelled {
                        try? await Task.sleep(for: .seconds(1))
                        for connection in self.live.withLock({ Array($0.values) }) { await connection.tick() }
                        second += 1
                        if second % 5 == 0 { await self.parts.hub.expireSessions() }
                    }
                }
            }
            if let listener = configuration.deviceListener, let credentials {
                let context = try NIOSSLContext(configuration: try credentials.configuration())
                let server = try await bind(listener.host, listener.port) { channel in
                    let handshake = channel.eventLoop.makePromise(of: NIOSSLCertificate?.self)
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                    try channel.pipeline.syncOperations.addHandler(HandshakeWatcher(promise: handshake))
                    let timeout = channel.eventLoop.scheduleTask(in: self.configuration.handshakeTimeout) {
                        handshake.fail(GatewayError("TLS handshake timed out"))
                    }
                    handshake.futureResult.whenComplete { _ in timeout.cancel() }
                    return handshake.futureResult
                }
                parts.logger.info("MQTT device listener (mutual TLS)", metadata: ["address": "\(server.channel.localAddress.map { "\($0)" } ?? listener.host)"])
                await onBound(.devices, server.channel.localAddress)
                group.addTask { await self.accept(server, device: true) }
            }
            if let listener = configuration.developmentListener {
                let server = try await bind(listener.host, listener.port) { channel in channel.eventLoop.makeSucceededFuture(nil) }
                parts.logger.warning("MQTT development listener is plaintext and anonymous; use it only for local testing", metadata: ["address": "\(server.channel.localAddress.map { "\($0)" } ?? listener.host)"])
                await onBound(.development, server.channel.localAddress)
                group.addTask { await self.accept(server, device: false) }
            }
        }
    }

    /// Writes the hub's persistent changes whenever there are some: one transaction for all that
    /// changed while the previous one was on its way to disk. On shutdown, a last flush.
    private func flush(to store: any BrokerStateStore) async {
        await cancelWhenGracefulShutdown {
            for await _ in self.flushes { await self.flushOnce(to: store) }
        }
        await flushOnce(to: store)
    }

    private func flushOnce(to store: any BrokerStateStore) async {
        guard let (change, generation) = await parts.hub.takeChanges() else { return }
        var stored = true
        do { try await store.apply(change) } catch {
            stored = false
            parts.logger.error("could not persist MQTT sessions/retained messages", metadata: ["error": "\(error)"])
        }
        for done in await parts.hub.flushed(generation) { await done(stored) }
    }

    typealias Accepted = (channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>, handshake: EventLoopFuture<NIOSSLCertificate?>)

    private func bind(_ host: String, _ port: Int, setUp: @escaping @Sendable (any Channel) throws -> EventLoopFuture<NIOSSLCertificate?>) async throws -> NIOAsyncChannel<Accepted, Never> {
        try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handshake = try setUp(channel)
                    return (try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel), handshake)
                }
            }
    }

    /// Serves every accepted connection until the gateway stops. Stopping closes the listening
    /// socket and drains what it had already accepted (closing those at once) instead of cancelling
    /// the accept loop: a connection accepted in the same instant is never dropped unclosed, which
    /// NIO forbids (a thousand devices reconnecting while the server restarts found that).
    private func accept(_ server: NIOAsyncChannel<Accepted, Never>, device: Bool) async {
        let stopping = Mutex(false)
        let loop = Task {
            await withDiscardingTaskGroup { group in
                try? await server.executeThenClose { inbound in
                    for try await accepted in inbound {
                        if stopping.withLock({ $0 }) {
                            group.addTask { try? await accepted.channel.executeThenClose { _, _ in } }
                        } else {
                            group.addTask { await self.serve(accepted, device: device) }
                        }
                    }
                }
                group.cancelAll()
            }
        }
        await withTaskCancellationOrGracefulShutdownHandler {
            await loop.value
        } onCancelOrGracefulShutdown: {
            stopping.withLock { $0 = true }
            server.channel.close(promise: nil)
        }
    }

    /// One connection, start to end. Its failure never reaches other connections.
    ///
    /// On the device listener a socket counts towards the connection cap and the connect-rate
    /// allowance only once its certificate checked out; before that (and when it was refused) it
    /// counts only against its source's unauthenticated sockets. Every way the connection ends,
    /// whoever decides it, closes the socket.
    func serve(_ accepted: Accepted, device: Bool) async {
        let channel = accepted.channel.channel
        let source = channel.remoteAddress?.ipAddress ?? "unknown"
        var refusal: (reason: ReasonCode, retryAfter: Int)?
        let identity: PeerIdentity
        var context: DeviceContext?
        // The development listener has no handshake; a device is authenticated once admitted.
        var authenticated = !device
        if device {
            guard admission.arriveUnadmitted(source) else {
                parts.counters.add(\.unauthenticatedRefused)
                try? await accepted.channel.executeThenClose { _, _ in }
                return
            }
            guard let certificate = try? await accepted.handshake.get() else {
                admission.unadmittedLeft(source)
                try? await accepted.channel.executeThenClose { _, _ in }
                return
            }
            switch await admit(certificate) {
            case .success(let admitted):
                context = admitted
                identity = .device(serial: admitted.serial.rawValue)
                admission.unadmittedLeft(source)
                authenticated = true
            case .failure(let why):
                // Refused with CONNACK 0x87 when it sends CONNECT (so the device learns why),
                // and closed at the connect timeout if it never does.
                parts.counters.add(\.devicesRefused)
                parts.logger.notice("device refused", metadata: ["reason": "\(why)"])
                refusal = (.notAuthorized, 3600)
                identity = .development
            }
        } else {
            identity = .development
        }
        if authenticated { refusal = admission.arrive() }
        defer {
            if authenticated { admission.leave() } else { admission.unadmittedLeft(source) }
        }
        parts.counters.add(refusal == nil ? \.connectionsAccepted : \.connectionsRefused)
        try? await accepted.channel.executeThenClose { inbound, outbound in
            let (mail, mailbox) = AsyncStream<Mail>.makeStream(bufferingPolicy: .bufferingNewest(10_000))
            let connection = Connection(parts: parts, identity: identity, device: context, refusal: refusal, outbound: outbound, transport: channel, mailbox: mailbox)
            let key = ObjectIdentifier(connection)
            live.withLock { $0[key] = connection }
            defer { live.withLock { $0[key] = nil } }
            await withDiscardingTaskGroup { group in
                group.addTask {
                    for await message in mail { await connection.deliver(message) }
                }
                do {
                    for try await bytes in inbound {
                        guard await connection.received(bytes) else { break }
                    }
                } catch {
                    parts.logger.debug("connection ended", metadata: ["error": "\(error)"])
                }
                await connection.finish()
                group.cancelAll()
            }
        }
    }

    struct Refused: Error, CustomStringConvertible {
        let description: String
    }

    /// The device behind a certificate that chained to the device CA: its CN must be a serial the
    /// deployment provisioned, with exactly this certificate, not revoked.
    func admit(_ certificate: NIOSSLCertificate?) async -> Result<DeviceContext, Refused> {
        guard let certificate, let store, let der = try? certificate.toDERBytes(), let parsed = try? Certificate(derEncoded: der),
            let cn = parsed.commonName, let serial = try? DeviceSerial(cn)
        else { return .failure(Refused(description: "no device serial in the certificate")) }
        do {
            guard let record = try await store.device(serial),
                let stored = try? Certificate(pemEncoded: record.certificatePEM), stored == parsed
            else { return .failure(Refused(description: "unknown certificate for \(serial)")) }
            guard record.revokedAt == nil else { return .failure(Refused(description: "\(serial) is revoked")) }
            var model = models.withLock { $0[record.model] }
            if model == nil { model = try await store.model(record.model) }
            guard let model else {
                return .failure(Refused(description: "\(serial) has no product model"))
            }
            models.withLock { $0[record.model] = model }
            return .success(DeviceContext(serial: serial, model: model))
        } catch {
            return .failure(Refused(description: "device store unavailable"))
        }
    }

    // MARK: DeviceCommandChannel

    public func send(command: String, parameters: [String: JSONValue], to serial: DeviceSerial, timeout: Duration) async -> CommandOutcome {
        let id = SecureToken.generate()
        let topic = "\(AccessPolicy.namespace)/\(serial.rawValue)/commands/\(command)"
        let payload = Array(JSONValue.object(["id": .string(id), "parameters": .object(parameters)]).text.utf8)
        let seconds = UInt32(max(1, timeout.components.seconds))
        let publish = Publish(topic: topic, payload: payload, qos: .atLeastOnce, properties: [
            .responseTopic(topic + "/result"), .correlationData(Array(id.utf8)), .messageExpiryInterval(seconds),
            .contentType("application/json"),
        ])
        return await parts.hub.command(id, serial: serial.rawValue, publish, timeout: timeout)
    }

    /// Ends a device's live connection (after revocation): 0x87 not authorized.
    public func disconnect(_ serial: DeviceSerial, reason: String) async {
        await parts.hub.disconnect("device:\(serial.rawValue)", .notAuthorized, reason)
    }

    // MARK: DevicePresence

    public func connected(_ serials: [DeviceSerial]) async -> Set<DeviceSerial> {
        await parts.hub.attached(serials.map { ("device:\($0.rawValue)", $0) })
    }
}

/// Holds the update service, attached after the gateway is built (the service needs the store the
/// gateway also uses; neither owns the other).
final class UpdateChannelSlot: Sendable {
    private let slot = Mutex<(any DeviceUpdateChannel)?>(nil)
    var channel: (any DeviceUpdateChannel)? { slot.withLock { $0 } }
    func set(_ channel: any DeviceUpdateChannel) { slot.withLock { $0 = channel } }
}

/// Fulfils `promise` with the peer's certificate once the TLS handshake completes, or fails it if
/// the connection ends first.
final class HandshakeWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    let promise: EventLoopPromise<NIOSSLCertificate?>

    init(promise: EventLoopPromise<NIOSSLCertificate?>) { self.promise = promise }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSUserEvent, case .handshakeCompleted = event {
            let certificate = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self).peerCertificate
            promise.succeed(certificate)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(GatewayError("the connection closed during the TLS handshake"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(error)
        context.close(promise: nil)
    }
}

public struct GatewayError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
