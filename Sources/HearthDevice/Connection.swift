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
        host: String, port: Int, tls: NIOSSLContext, serverHostname: String?, version: MQTTVersion, timeout: TimeAmount
    ) async throws -> MQTTClientConnection {
        let (stream, continuation) = AsyncThrowingStream<MQTTPacket, any Error>.makeStream()
        let handler = MQTTClientHandler(version: version, continuation: continuation)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
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

    var parser: MQTTParser
    var buffer = ByteBuffer()
    let continuation: AsyncThrowingStream<MQTTPacket, any Error>.Continuation
    var first = true

    init(version: MQTTVersion, continuation: AsyncThrowingStream<MQTTPacket, any Error>.Continuation) {
        parser = MQTTParser(version: version)
        self.continuation = continuation
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        buffer.writeBuffer(&bytes)
        // A 3.1.1-only server answers a 5.0 CONNECT with a 3.1.1 CONNACK: 0x20 0x02 flags 0x01.
        if first, parser.version == .v5, buffer.readableBytes >= 4,
            buffer.getBytes(at: buffer.readerIndex, length: 4).map({ $0[0] == 0x20 && $0[1] == 2 && $0[3] == 1 })
                == true
        {
            continuation.finish(throwing: UnsupportedVersion())
            context.close(promise: nil)
            return
        }
        do {
            while let packet = try parser.next(&buffer) {
                first = false
                continuation.yield(packet)
            }
        } catch {
            continuation.finish(throwing: error)
            context.close(promise: nil)
        }
        if buffer.readerIndex > 16_384 { buffer.discardReadBytes() }
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
