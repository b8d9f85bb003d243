import Foundation
import HearthMQTT
import NIOCore
import NIOPosix
import NIOSSL

/// One MQTT connection over mutual TLS, with Hearth's codec: bytes in become packets on
/// ``packets``; ``send(_:)`` encodes and writes.
struct MQTTClientConnection: Sendable {
    let channel: any Channel
    let packets: AsyncThrowingStream<MQTTPacket, any Error>
    let version: MQTTVersion

    /// Connects and completes the TLS handshake (the server's certificate is verified against the
    /// trust roots in `tls`, by host name or IP address).
    static func open(
        host: String, port: Int, tls: NIOSSLContext, serverHostname: String?, version: MQTTVersion, timeout: TimeAmount,
        from localAddress: SocketAddress? = nil
    ) async throws -> MQTTClientConnection {
        let (stream, continuation) = AsyncThrowingStream<MQTTPacket, any Error>.makeStream()
        let handler = MQTTClientHandler(version: version, continuation: continuation)
        var bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        if let localAddress { bootstrap = bootstrap.bind(to: localAddress) }
        let channel =
            try await bootstrap
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        NIOSSLClientHandler(context: tls, serverHostname: serverHostname))
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
            .connect(host: host, port: port).get()
        return MQTTClientConnection(channel: channel, packets: stream, version: version)
    }

    func send(_ packets: MQTTPacket...) {
        var buffer = channel.allocator.buffer(capacity: 256)
        for packet in packets { packet.write(version: version, to: &buffer) }
        channel.writeAndFlush(buffer, promise: nil)
    }

    func close() {
        channel.close(promise: nil)
    }
}

/// The server refused MQTT 5.0 in 3.1.1's words (CONNACK return code 1): the agent falls back.
struct UnsupportedVersion: Error {}

final class MQTTClientHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer

    var framer: MQTTFramer
    let continuation: AsyncThrowingStream<MQTTPacket, any Error>.Continuation
    var first = true

    init(version: MQTTVersion, continuation: AsyncThrowingStream<MQTTPacket, any Error>.Continuation) {
        framer = MQTTFramer(MQTTParser(version: version))
        self.continuation = continuation
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        // A 3.1.1-only server answers a 5.0 CONNECT with a 3.1.1 CONNACK: 0x20 0x02 flags 0x01.
        if first, framer.version == .v5, framer.bufferedBytes == 0, bytes.readableBytes >= 4,
            bytes.getBytes(at: bytes.readerIndex, length: 4).map({ $0[0] == 0x20 && $0[1] == 2 && $0[3] == 1 })
                == true
        {
            continuation.finish(throwing: UnsupportedVersion())
            context.close(promise: nil)
            return
        }
        do {
            try framer.decode(&bytes) { packet in
                continuation.yield(packet)
                return true
            }
            first = false
        } catch {
            continuation.finish(throwing: error)
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        continuation.finish()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        continuation.finish(throwing: error)
        context.close(promise: nil)
    }
}
