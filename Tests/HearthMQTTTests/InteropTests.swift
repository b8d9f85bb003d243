import Foundation
import HearthMQTT
import HearthTestSupport
import NIOCore
import NIOPosix
import Testing

/// The codec against clients no one here wrote: mosquitto_pub and mosquitto_sub (3.1.1 and 5.0)
/// talk to a minimal loopback peer built on `MQTTParser` and the serialiser. The peer answers
/// CONNECT, PUBLISH (all QoS), SUBSCRIBE and DISCONNECT as a broker would, records what it decoded,
/// and publishes one message to each subscriber. It is a test harness, not the broker.
@Suite(.serialized) struct InteropTests {
    @Test(
        .enabled(if: toolsPresentOrRequired("mosquitto_pub")),
        arguments: [("mqttv311", MQTTVersion.v3_1_1), ("mqttv5", .v5)])
    func mosquittoPubIsDecodedAtEveryQoS(_ flag: String, _ version: MQTTVersion) async throws {
        let pub = try requiredTool("mosquitto_pub", package: "mosquitto-clients")
        let peer = try await Peer.start()
        defer { peer.stop() }
        for qos in 0...2 {
            var args = [
                "-h", "127.0.0.1", "-p", "\(peer.port)", "-V", flag, "-i", "client-\(qos)", "-q", "\(qos)", "-t",
                "sensors/room\(qos)/temp", "-m", "{\"t\":21.\(qos)}",
            ]
            if version == .v5 {
                args += [
                    "-D", "publish", "user-property", "unit", "C", "-D", "publish", "message-expiry-interval", "60",
                    "-D", "connect", "session-expiry-interval", "30",
                ]
            }
            let r = try await ChildProcess.run(pub, args)
            #expect(r.status == 0, "mosquitto_pub -q \(qos): \(r.output)")
        }
        let packets = peer.decoded
        let connects = packets.compactMap { if case .connect(let c) = $0 { c } else { nil } }
        let publishes = packets.compactMap { if case .publish(let p) = $0 { p } else { nil } }
        #expect(connects.map(\.clientID) == ["client-0", "client-1", "client-2"])
        #expect(connects.allSatisfy { $0.version == version })
        #expect(publishes.map(\.qos) == [.atMostOnce, .atLeastOnce, .exactlyOnce])
        #expect(publishes.map(\.topic) == ["sensors/room0/temp", "sensors/room1/temp", "sensors/room2/temp"])
        #expect(String(decoding: publishes[1].payload, as: UTF8.self) == "{\"t\":21.1}")
        if version == .v5 {
            #expect(connects[0].properties.sessionExpiryInterval == 30)
            #expect(publishes[2].properties.userProperties.first.map { "\($0.0)=\($0.1)" } == "unit=C")
            #expect(publishes[2].properties.messageExpiryInterval == 60)
        }
        #expect(packets.contains(.pubrel(Ack(packetID: publishes[2].packetID!))), "QoS 2 completed its exchange")
        #expect(peer.errors.isEmpty, "\(peer.errors)")
    }

    @Test(
        .enabled(if: toolsPresentOrRequired("mosquitto_sub")),
        arguments: [("mqttv311", MQTTVersion.v3_1_1), ("mqttv5", .v5)])
    func mosquittoSubReadsWhatTheSerialiserWrites(_ flag: String, _ version: MQTTVersion) async throws {
        let sub = try requiredTool("mosquitto_sub", package: "mosquitto-clients")
        let peer = try await Peer.start()
        defer { peer.stop() }
        let format = version == .v5 ? "%t|%q|%p|%P" : "%t|%q|%p"
        let r = try await ChildProcess.run(
            sub,
            [
                "-h", "127.0.0.1", "-p", "\(peer.port)", "-V", flag, "-t", "cmd/#", "-q", "1", "-C", "1", "-W", "10",
                "-F", format,
            ])
        #expect(r.status == 0, "\(r.output)")
        let expected = version == .v5 ? "cmd/lock|1|{\"on\":true}|reply:yes" : "cmd/lock|1|{\"on\":true}"
        #expect(r.output.trimmingCharacters(in: .whitespacesAndNewlines) == expected)
        // The client exits right after its PUBACK; give the peer a moment to read it.
        for _ in 0..<100 where !peer.decoded.contains(.puback(Ack(packetID: 1))) {
            try await Task.sleep(for: .milliseconds(20))
        }
        let packets = peer.decoded
        #expect(
            packets.contains {
                if case .subscribe(let s) = $0 {
                    s.requests.first?.filter == "cmd/#" && s.requests.first?.qos == .atLeastOnce
                } else {
                    false
                }
            })
        #expect(packets.contains(.puback(Ack(packetID: 1))), "the client acknowledged our QoS 1 PUBLISH")
        #expect(peer.errors.isEmpty, "\(peer.errors)")
    }
}

/// A loopback MQTT peer for the interop tests.
final class Peer: @unchecked Sendable {
    let channel: any Channel
    private let lock = NSLock()
    private var packets: [MQTTPacket] = []
    private var problems: [String] = []

    var port: Int { channel.localAddress?.port ?? 0 }
    var decoded: [MQTTPacket] { lock.withLock { packets } }
    var errors: [String] { lock.withLock { problems } }

    private init(channel: any Channel) { self.channel = channel }

    static func start() async throws -> Peer {
        let box = PeerBox()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandler(PeerHandler(peer: box.peer!))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let peer = Peer(channel: channel)
        box.peer = peer
        return peer
    }

    func record(_ packet: MQTTPacket) { lock.withLock { packets.append(packet) } }
    func record(_ problem: String) { lock.withLock { problems.append(problem) } }
    func stop() { channel.close(promise: nil) }
}

final class PeerBox: @unchecked Sendable { var peer: Peer? }

final class PeerHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let peer: Peer
    var parser = MQTTParser()
    var pending = ByteBuffer()

    init(peer: Peer) { self.peer = peer }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        pending.writeBuffer(&bytes)
        do {
            while let packet = try parser.next(&pending) {
                peer.record(packet)
                for reply in replies(to: packet) { send(reply, context: context) }
                if case .disconnect = packet { context.close(promise: nil) }
            }
        } catch {
            peer.record("\(error)")
            context.close(promise: nil)
        }
    }

    func replies(to packet: MQTTPacket) -> [MQTTPacket] {
        switch packet {
        case .connect: return [.connack(ConnAck())]
        case .publish(let p) where p.qos == .atLeastOnce: return [.puback(Ack(packetID: p.packetID!))]
        case .publish(let p) where p.qos == .exactlyOnce: return [.pubrec(Ack(packetID: p.packetID!))]
        case .pubrel(let a): return [.pubcomp(Ack(packetID: a.packetID))]
        case .subscribe(let s):
            return [
                .suback(
                    SubAck(packetID: s.packetID, reasons: s.requests.map { ReasonCode(rawValue: $0.qos.rawValue) })),
                .publish(
                    Publish(
                        topic: "cmd/lock", payload: Array("{\"on\":true}".utf8), qos: .atLeastOnce, packetID: 1,
                        properties: [.userProperty("reply", "yes")])),
            ]
        case .pingreq: return [.pingresp]
        default: return []
        }
    }

    func send(_ packet: MQTTPacket, context: ChannelHandlerContext) {
        var out = context.channel.allocator.buffer(capacity: 64)
        packet.write(version: parser.version ?? .v5, to: &out)
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
    }
}
