import Foundation
import HearthGateway
import HearthMQTT
import HearthTestSupport
import NIOCore
import Testing

/// Each connection is owned by its own handler: what one peer does (never reading, vanishing,
/// being replaced) neither stalls another nor leaves a socket open on the server.
///
/// Its timing bounds are the issue's (1 s beyond the deadline); `.ci/run` runs this suite as a step
/// of its own, since on two cores the other suites' load would otherwise be measured too.
@Suite(.serialized) struct ConnectionOwnershipTests {
    typealias Peer = PacketConformanceTests.Peer

    /// A subscriber that never reads while a flood is routed to it does not delay another
    /// connection's keep-alive disconnect; what cannot be sent to it is bounded and counted.
    @Test func aPeerThatNeverReadsDoesNotDelayAnothersKeepAlive() async throws {
        try await PacketConformanceTests.withGateway({
            $0.limits.publishesPerSecond = 1e6
            $0.limits.bytesPerSecond = 1e9
        }) { gateway, port in
            let stuck = try Peer(port: port, receiveBuffer: 4096)
            await stuck.connect("stuck", properties: [.receiveMaximum(65535)])
            await stuck.subscribe("flood/#", qos: .atLeastOnce)
            let flooder = try Peer(port: port)
            await flooder.connect("flooder")
            let payload = [UInt8](repeating: 0x46, count: 8192)
            let flood = Thread {
                for i in 0..<3000 {
                    flooder.send(
                        .publish(
                            Publish(
                                topic: "flood/\(i % 10)", payload: payload, qos: .atLeastOnce,
                                packetID: UInt16(i % 60000 + 1))))
                }
            }
            flood.start()
            // Let the flood fill the server's send buffer towards `stuck`.
            try await Task.sleep(for: .seconds(1))
            let silent = try Peer(port: port)
            let connack = await silent.connect("silent", keepAlive: 2)
            #expect(connack?.first == 0x20)
            let started = Date()
            let (bytes, closed) = await silent.socket.readUntilClosed(timeout: 30)
            let elapsed = Date().timeIntervalSince(started)
            #expect(closed, "the silent client is closed")
            #expect(bytes.first == 0xE0 && bytes.count >= 3 && bytes[2] == 0x8D, "DISCONNECT 0x8D: \(bytes.prefix(8))")
            #expect(elapsed <= 1.5 * 2 + 1, "closed \(elapsed) s after CONNACK (keep-alive 2 s)")
            #expect(gateway.counters.deliveriesDropped > 0, "the stuck peer's overflow is dropped and counted")
            _ = stuck
        }
    }

    /// A connection whose session another took over is closed at the TCP level, not left open.
    @Test func aTakenOverConnectionIsClosed() async throws {
        try await PacketConformanceTests.withGateway { _, port in
            let first = try Peer(port: port)
            await #expect(first.connect("twin")?.prefix(4) == [0x20, 0x0E, 0x00, 0x00])
            let second = try Peer(port: port)
            await #expect(second.connect("twin")?.prefix(4) == [0x20, 0x0E, 0x00, 0x00])
            let (bytes, closed) = await first.socket.readUntilClosed(timeout: 10)
            #expect(
                bytes.prefix(3) == [0xE0, bytes.count > 1 ? bytes[1] : 0, 0x8E],
                "DISCONNECT 0x8E session taken over: \(bytes)")
            #expect(closed)
        }
    }

    /// Over a limit (here a packet above the server's Maximum Packet Size): DISCONNECT 0x95 and
    /// the socket closed, whatever the client does next.
    @Test func aConnectionOverALimitIsClosed() async throws {
        try await PacketConformanceTests.withGateway({ $0.limits.maximumPacketSize = 1024 }) { _, port in
            let peer = try Peer(port: port)
            await peer.connect("big")
            peer.send(.publish(Publish(topic: "t", payload: [UInt8](repeating: 1, count: 4096))))
            let (bytes, closed) = await peer.socket.readUntilClosed(timeout: 10)
            #expect(bytes.first == 0xE0 && bytes.count >= 3 && bytes[2] == 0x95, "DISCONNECT 0x95: \(bytes)")
            #expect(closed)
        }
    }

    /// A thousand sockets that never send anything are all closed by the server at the connect
    /// timeout, and leave neither a connection nor a descriptor behind.
    @Test func aThousandSilentSocketsLeaveNothingBehind() async throws {
        let before = Self.openDescriptors()
        try await PacketConformanceTests.withGateway({
            // Long enough that all 1,000 are open at once on a loaded machine before the first closes.
            $0.limits.connectTimeout = 5
            $0.connectBurst = 2000
            $0.connectsPerSecond = 2000
        }) { gateway, port in
            let sockets = (0..<1000).compactMap { _ in RawSocket(port: port) }
            #expect(sockets.count == 1000)
            let allOpen = try await ServerClosesTests.eventually(timeout: 30) { gateway.openConnections == 1000 }
            #expect(allOpen, "\(gateway.openConnections) open")
            let started = Date()
            let allClosed = try await ServerClosesTests.eventually(timeout: 60) { gateway.openConnections == 0 }
            #expect(allClosed, "\(gateway.openConnections) still open")
            #expect(Date().timeIntervalSince(started) <= 5 + 1 + 2, "closed at the connect timeout")
            var stillOpen = 0
            for socket in sockets where await !socket.closedByServer(within: 0.05) { stillOpen += 1 }
            #expect(stillOpen == 0, "\(stillOpen) sockets the server did not close")
            for socket in sockets { socket.closeNow() }
        }
        // The server's ends are closed too (other tests of this process may hold a few).
        let after = Self.openDescriptors()
        #expect(after < before + 100, "\(before) descriptors before, \(after) after")
    }

    static func openDescriptors() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
    }
}
