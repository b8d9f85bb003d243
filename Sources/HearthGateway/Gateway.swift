import Foundation
import HearthBroker
import HearthMQTT
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// The MQTT gateway as a service. Today it runs the **development listener**: plaintext, for
/// anonymous local clients on topics outside the device namespace, loopback only (the mutual-TLS
/// device listener is the next step of the gateway issue).
public struct MQTTGateway: Service {
    public let host: String
    public let port: Int
    public let limits: ConnectionLimits
    let logger: Logger
    let onBound: @Sendable (SocketAddress?) async -> Void
    let hub = Hub()

    /// - Throws: if `host` is not a loopback address: the plaintext listener never faces a network.
    public init(developmentHost host: String, port: Int, limits: ConnectionLimits = ConnectionLimits(), logger: Logger, onBound: @escaping @Sendable (SocketAddress?) async -> Void = { _ in }) throws {
        guard Self.isLoopback(host) else {
            throw GatewayError("the development listener is plaintext and binds to loopback only (127.0.0.0/8, ::1, localhost), not \(host)")
        }
        self.host = host
        self.port = port
        self.limits = limits
        self.logger = logger
        self.onBound = onBound
    }

    public static func isLoopback(_ host: String) -> Bool {
        if host == "localhost" || host == "::1" { return true }
        let parts = host.split(separator: ".")
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }

    public func run() async throws {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        logger.warning("MQTT development listener is plaintext and anonymous; use it only for local testing", metadata: ["address": "\(server.channel.localAddress.map { "\($0)" } ?? host)"])
        await onBound(server.channel.localAddress)
        await cancelWhenGracefulShutdown {
            try? await server.executeThenClose { inbound in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await child in inbound {
                        group.addTask { await self.serve(child, identity: .development) }
                    }
                }
            }
        }
    }

    /// One connection, start to end. Its failure never reaches other connections.
    func serve(_ channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>, identity: PeerIdentity) async {
        try? await channel.executeThenClose { inbound, outbound in
            let (mail, mailbox) = AsyncStream<Mail>.makeStream(bufferingPolicy: .bufferingNewest(10_000))
            let connection = Connection(hub: hub, identity: identity, limits: limits, outbound: outbound, mailbox: mailbox, logger: logger)
            await withDiscardingTaskGroup { group in
                group.addTask {
                    for await message in mail { await connection.deliver(message) }
                }
                group.addTask {
                    while !Task.isCancelled, await !connection.closed {
                        try? await Task.sleep(for: .milliseconds(500))
                        await connection.tick()
                    }
                }
                do {
                    for try await bytes in inbound {
                        guard await connection.received(bytes) else { break }
                    }
                } catch {
                    logger.debug("connection ended", metadata: ["error": "\(error)"])
                }
                await connection.finish()
                group.cancelAll()
            }
        }
    }
}

public struct GatewayError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
