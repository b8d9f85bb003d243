import Foundation
import HearthCore
import HearthCrypto
import HearthDevice
import HearthFixtures
import HearthMQTT
import NIOCore
import NIOPosix
import Synchronization
import Testing

/// A broker that speaks only MQTT 3.1.1, as an old one would: a 5.0 CONNECT gets the 3.1.1 refusal
/// "unacceptable protocol version" (CONNACK return code 1); a 3.1.1 CONNECT is accepted.
final class OldBroker: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    /// The protocol levels of the CONNECTs seen, across connections.
    final class Seen: Sendable {
        let levels = Mutex<[UInt8]>([])
    }

    let seen: Seen

    init(seen: Seen) { self.seen = seen }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data).readableBytesView
        // CONNECT: 0x10, remaining length (1 byte here), 00 04 "MQTT", then the protocol level.
        guard bytes.first == 0x10, bytes.count > 8 else { return }
        let level = bytes[bytes.startIndex + 8]
        seen.levels.withLock { $0.append(level) }
        context.writeAndFlush(
            wrapOutboundOut(ByteBuffer(bytes: [0x20, 0x02, 0x00, level == 4 ? 0x00 : 0x01])), promise: nil)
        if level != 4 { context.close(promise: nil) }
    }
}

@Suite("MQTT 3.1.1 fallback")
struct FallbackTests {
    @Test func aDeviceFallsBackTo311WhenTheServerRefuses5() async throws {
        let fixture = try await DeviceFixture(devices: 1)
        let context = try fixture.credentials.context()
        let seen = OldBroker.Seen()
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(MutualTLSServerHandler(context: context))
                    try channel.pipeline.syncOperations.addHandler(OldBroker(seen: seen))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        defer { server.close(promise: nil) }
        let connected = OldBroker.Seen()
        let port = try #require(server.localAddress?.port)
        let device = try makeDevice(
            fixture, fixture.thermostats[0], port: port,
            onEvent: { event in
                if case .connected(let version, _) = event { connected.levels.withLock { $0.append(version.rawValue) } }
            })
        let running = Task { try await device.agent.run() }
        defer { running.cancel() }
        try await eventually("connected") { await device.agent.isConnected }
        #expect(seen.levels.withLock { $0 } == [5, 4], "tried 5.0 first, then 3.1.1")
        #expect(connected.levels.withLock { $0 } == [4], "connected speaking 3.1.1")
    }
}
