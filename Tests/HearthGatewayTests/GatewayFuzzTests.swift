import Foundation
import HearthCore
import HearthFixtures
import HearthGateway
import HearthMQTT
import HearthTestSupport
import NIOCore
import Synchronization
import Testing

@Suite struct GatewayFuzzTests {
    static func bytes(_ packet: MQTTPacket, _ version: MQTTVersion) -> [UInt8] {
        var buffer = ByteBuffer()
        packet.write(version: version, to: &buffer)
        return Array(buffer.readableBytesView)
    }

    /// A valid packet, then (mostly) damaged: bytes flipped, cut short, lengths inflated, or noise.
    static func hostile(_ rng: inout SplitMix64, version: MQTTVersion) -> [UInt8] {
        let valid: [MQTTPacket] = [
            .publish(
                Publish(
                    topic: "fuzz/\(rng.next() % 100)", payload: Array("payload".utf8),
                    qos: QoS(rawValue: UInt8(rng.next() % 3))!, packetID: UInt16(1 + rng.next() % 100))),
            .subscribe(
                Subscribe(
                    packetID: UInt16(1 + rng.next() % 100), requests: [.init(filter: "fuzz/#", qos: .atLeastOnce)])),
            .unsubscribe(Unsubscribe(packetID: 7, filters: ["fuzz/+"])),
            .pingreq,
            .puback(Ack(packetID: UInt16(rng.next() % 50))),
        ]
        var packet = bytes(valid[Int(rng.next() % UInt64(valid.count))], version)
        switch rng.next() % 5 {
        case 0:
            for _ in 0..<(1 + rng.next() % 4) {
                packet[Int(rng.next() % UInt64(packet.count))] = UInt8(truncatingIfNeeded: rng.next())
            }
        case 1:
            packet = Array(packet.prefix(Int(rng.next() % UInt64(packet.count))))
        case 2:
            if packet.count > 1 {
                packet[1] = 0xFF
                packet.insert(contentsOf: [0xFF, 0xFF, 0x7F], at: 2)
            }
        case 3:
            packet = (0..<(1 + rng.next() % 64)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        default:
            break  // some stay valid, so the parser goes deeper
        }
        return packet
    }

    /// A raw TCP client that sends bytes and closes (MSG_NOSIGNAL: the server may close first).
    /// Connects, writes `bytes` in one call and closes: the bytes the kernel took, or nil when the
    /// connection failed.
    static func send(_ bytes: [UInt8], port: Int) -> Int? {
        guard let socket = RawSocket(port: port) else { return nil }
        defer { socket.closeNow() }
        return socket.send(bytes)
    }

    @Test func hundredThousandHostilePacketsLeaveOtherClientsServedAndNothingLeaks() async throws {
        let pub = try requiredTool("mosquitto_pub", package: "mosquitto-clients")
        let sub = try requiredTool("mosquitto_sub", package: "mosquitto-clients")
        let fixture = try await DeviceFixture(devices: 0)
        try await fixture.withGateway({
            $0.connectsPerSecond = 1_000_000
            $0.connectBurst = 1_000_000
        }) { gateway, _, port in
            let watcher = try ChildProcess.lineBuffered(
                sub,
                [
                    "-d", "-h", "127.0.0.1", "-p", "\(port)", "-V", "mqttv5", "-q", "1", "-t", "calm/#", "-C", "2",
                    "-F", "%p",
                ])
            #expect(try await watcher.waitForSubscription(), "\(watcher.text)")
            #expect(
                try await ChildProcess.run(
                    pub,
                    ["-h", "127.0.0.1", "-p", "\(port)", "-V", "mqttv5", "-q", "1", "-t", "calm/1", "-m", "before"]
                ).status == 0)
            // 2,000 connections × 50 packets, from 8 workers, each seeded. The sockets block, so the
            // workers are threads of their own, never the cooperative pool the gateway runs on.
            // Every connection must be made and take its whole stream, or the fuzz proves nothing.
            let tally = Tally()
            await withTaskGroup(of: Void.self) { group in
                for worker in 0..<8 {
                    group.addTask {
                        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                            Thread.detachNewThread {
                                var rng = SplitMix64(state: UInt64(worker) &* 7919)
                                for c in 0..<250 {
                                    let version: MQTTVersion = c % 2 == 0 ? .v5 : .v3_1_1
                                    var stream = Self.bytes(
                                        .connect(Connect(version: version, clientID: "fuzz-\(worker)-\(c)")), version)
                                    for _ in 0..<50 { stream += Self.hostile(&rng, version: version) }
                                    let sent = Self.send(stream, port: port)
                                    tally.counts.withLock {
                                        $0.made += stream.count
                                        if let sent {
                                            $0.connections += 1
                                            $0.sent += sent
                                        }
                                    }
                                }
                                done.resume()
                            }
                        }
                    }
                }
            }
            let done = tally.counts.withLock { $0 }
            #expect(done.connections == 2000 && done.sent == done.made, "delivered: \(done)")
            #expect(
                try await ChildProcess.run(
                    pub, ["-h", "127.0.0.1", "-p", "\(port)", "-V", "mqttv5", "-q", "1", "-t", "calm/2", "-m", "after"]
                ).status == 0)
            _ = try await watcher.waitForExit(timeout: 20)
            #expect(watcher.messageLines == ["before", "after"], "\(watcher.text)")
            // Every hostile connection is gone: nothing left open once the watcher left.
            var open = gateway.openConnections
            for _ in 0..<100 where open > 0 {
                try await Task.sleep(for: .milliseconds(100))
                open = gateway.openConnections
            }
            #expect(open == 0, "\(open) connections still open")
        }
    }
}

/// What the fuzz's workers delivered: connections made, bytes the kernel took, bytes generated.
final class Tally: Sendable {
    let counts = Mutex((connections: 0, sent: 0, made: 0))
}
